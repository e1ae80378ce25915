"""study.contract, the check a user runs on a task or cell of their own: every built-in cell
passes it, and each way of breaking the contract is caught by the check that names it."""

import math

import pytest
import torch

from study.contract import ContractError, check_cell, check_task
from study.model import CELLS
from study.model.cells import Cell, hold
from study.tasks.adding import Adding
from study.tasks.base import Batch, Task


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_built_in_cell_keeps_the_contract(cell):
    ran = check_cell(CELLS[cell])
    assert ran[:4] == ["states", "padding", "gradient", "jacobian"]
    assert ("fast path" in ran) == hasattr(CELLS[cell], "scan")


class Leaky(Cell):
    """h_t = (1 - a) h_{t-1} + a tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    n_gates, kind, block_names = 1, "leaky", "h"

    def __init__(self, input_size, hidden_size, leak=0.5, use_hold=True, jacobian_off=0.0):
        self.leak, self.use_hold, self.jacobian_off = leak, use_hold, jacobian_off
        super().__init__(input_size, hidden_size)

    def step(self, gx, state, keep=None):
        (h,) = state
        a = torch.addmm(gx + self.bias_hh_l0, h, self.weight_hh_l0.t())
        new = (1 - self.leak) * h + self.leak * torch.tanh(a)
        return ((hold(new, h, keep) if self.use_hold else new),), {}

    def step_jacobian(self, gx, state, keep=None):
        if not self.jacobian_off:
            return None  # forward mode, as for any cell without a closed form
        (h,) = state
        a = torch.addmm(gx + self.bias_hh_l0, h, self.weight_hh_l0.t())
        d = self.leak * (1 - torch.tanh(a) ** 2)
        eye = torch.eye(self.hidden_size, dtype=h.dtype)
        return (1 - self.leak) * eye + d[:, :, None] * self.weight_hh_l0 + self.jacobian_off


def test_an_outside_cell_passes_and_each_break_is_named():
    assert check_cell(Leaky, leak=0.3) == ["states", "padding", "gradient", "jacobian"]
    assert check_cell(Leaky, jacobian_off=1e-15)[3] == "jacobian"  # within rounding: a pass
    with pytest.raises(ContractError, match="^padding: keep=False changed the state"):
        check_cell(Leaky, use_hold=False)
    with pytest.raises(ContractError, match="^jacobian: the probes' step Jacobian is off"):
        check_cell(Leaky, jacobian_off=1e-3)


LOG2 = math.log(2)


class Coin(Task):
    """The last step outputs the first input's sign bit; settings break one rule each."""

    input_size, output_size, kind = 1, 2, "classification"
    metric_name, citation, solved_criterion = "accuracy", "a test", "accuracy >= 0.99"

    def __init__(self, length, baseline=LOG2, global_rng=False, long_x=False):
        super().__init__(length)
        self._baseline, self.global_rng, self.long_x = baseline, global_rng, long_x

    @property
    def baseline(self):
        return self._baseline

    def sample(self, batch_size, generator):
        g = None if self.global_rng else generator
        bits = torch.randint(0, 2, (batch_size, self.length), generator=g)
        x = bits.long() if self.long_x else bits.float()
        return Batch(x=x.unsqueeze(2), y=bits[:, :1], evidence=torch.zeros(batch_size, 1).long())

    def solved(self, eval_loss, eval_metric):
        return eval_metric >= 0.99


def coin_oracle(batch):
    return torch.nn.functional.one_hot(batch.x[:, :1, 0].long(), 2).float() * 60


def test_a_task_passes_and_each_break_is_named():
    assert check_task(Coin(10), coin_oracle) == ["shapes", "seeding", "baseline", "oracle"]
    with pytest.raises(ContractError, match="^baseline: declared 0.5, Monte Carlo 0.693"):
        check_task(Coin(10, baseline=0.5))
    with pytest.raises(ContractError, match="^seeding: one generator seed gave two batches"):
        check_task(Coin(10, global_rng=True))
    with pytest.raises(ContractError, match="^shapes: x is torch.int64, not float32"):
        check_task(Coin(10, long_x=True))
    with pytest.raises(ContractError, match="^oracle: loss"):
        check_task(Coin(10), lambda b: torch.zeros(len(b.x), 1, 2))


def test_the_adding_problems_baseline_holds_and_a_wrong_one_is_caught():
    assert check_task(Adding(40)) == ["shapes", "seeding", "baseline"]

    class Wrong(Adding):
        baseline = 0.2  # the Arjovsky form's is 1/6 ~ 0.167: a 20 % error

    with pytest.raises(ContractError, match="^baseline"):
        check_task(Wrong(40))
