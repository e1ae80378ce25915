"""The sequence model every cell shares: input projection -> recurrence -> linear readout.

Only the recurrence differs between cells. `build_model` is the Hydra `_target_` of `conf/model/`:
it applies the initialisation options and, with `match_params`, picks the hidden size that makes
the total parameter count as close as possible to the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from study.cells import CELLS, Cell
from study.checks import require_bool, require_int, require_number
from study.fast import IMPLS, choose_path, hidden_states


@dataclass
class Trajectory:
    """One forward pass: readout at every step plus every state and gate, still in the graph."""

    y: Tensor  # (B, T, output_size), readout of h_t at every step
    states: dict[str, list[Tensor]]  # "h" (and "c"): T tensors (B, H), the ones the recurrence used
    gates: dict[str, list[Tensor]]  # gate activations per step, e.g. "f": T tensors (B, H)


class SequenceModel(nn.Module):
    def __init__(self, cell: Cell, output_size: int, impl: str = "explicit"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"model.impl={impl!r} is unknown: allowed {', '.join(IMPLS)}")
        self.cell = cell
        self.readout = nn.Linear(cell.hidden_size, output_size)  # identical for every cell
        self.impl = impl  # how `predict` computes the recurrence; `forward` is always explicit

    def predict(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Readout at every step, (B, T, O), by the fastest path that computes this exact
        function (study/fast.py); what training and evaluation call."""
        path = choose_path(self.cell, self.impl, x.device, valid is not None, members=1)
        if path == "explicit":
            return self(x, valid).y
        return self.readout(hidden_states(self.cell, x, path))

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Trajectory:
        """The explicit loop over the cell's equations, every state kept for the probes.
        x: (B, T, input_size). valid: optional (B, T) bool; where False (left padding of a
        shorter sequence) the state is carried over unchanged, so every sequence ends at T-1."""
        B, T, _ = x.shape
        gx = self.cell.project_inputs(x)
        state = self.cell.initial_state(B)
        states = {name: [] for name in self.cell.state_names}
        gates = {name: [] for name in self.cell.gate_names}
        # unbind, not gx[:, t]: the backward of each slice would allocate a zero tensor the size
        # of all of gx, making backpropagation quadratic in T.
        for t, gx_t in enumerate(gx.unbind(dim=1)):
            keep = None if valid is None else valid[:, t, None]
            state, gate_values = self.cell.step(gx_t, state, keep)
            for name, s in zip(self.cell.state_names, state):
                states[name].append(s)
            for name, g in gate_values.items():
                gates[name].append(g)
        y = self.readout(torch.stack(states["h"], dim=1))
        return Trajectory(y=y, states=states, gates=gates)

    def n_params(self) -> int:
        return self.cell.n_params() + sum(p.numel() for p in self.readout.parameters())


def count_params(
    cell: str, input_size: int, hidden_size: int, output_size: int, forget_gate: bool = True
) -> int:
    """Closed form of SequenceModel.n_params(), used to solve for a matched hidden size."""
    blocks = CELLS[cell].n_gates - (0 if forget_gate or cell != "lstm" else 1)
    H, I, O = hidden_size, input_size, output_size
    return blocks * (H * I + H * H + 2 * H) + H * O + O


def matched_hidden_size(
    cell: str, input_size: int, output_size: int, target: int, forget_gate: bool = True
) -> int:
    """The hidden size whose total parameter count is closest to `target` (ties: the smaller)."""
    best, H = 1, 1
    while True:
        n = count_params(cell, input_size, H, output_size, forget_gate)
        best_n = count_params(cell, input_size, best, output_size, forget_gate)
        if abs(n - target) < abs(best_n - target):
            best = H
        if n > target:  # the count grows with H, so nothing larger can be closer
            return best
        H += 1


def build_model(
    cell: str,
    input_size: int,
    output_size: int,
    hidden_size: int = 128,
    match_params: int | None = None,
    nonlinearity: str = "tanh",
    recurrent_init: str = "default",
    recurrent_gain: float = 1.0,
    forget_bias: float | None = None,
    forget_gate: bool = True,
    impl: str = "fast",
) -> SequenceModel:
    """Build a SequenceModel. Initialisation options (each one config key):

    recurrent_init: default (PyTorch's uniform) | orthogonal | identity (IRNN, Le et al. 2015);
        the non-default ones are scaled by `recurrent_gain`, which is then the spectral radius.
        For gated cells they apply to every gate block of W_hh.
    forget_bias: LSTM only; None keeps PyTorch's init, a number sets the total forget-gate bias
        (b_ih + b_hh on the f block) to it, e.g. 1 (Gers et al. 2000) or 3.
    forget_gate: LSTM only; False fixes f = 1 (the 1997 LSTM without a forget gate).
    """
    require_int("model.hidden_size", hidden_size, 1)
    if match_params is not None:
        require_int("model.match_params", match_params, 1)
    require_number("model.recurrent_gain", recurrent_gain)
    if forget_bias is not None:
        require_number("model.forget_bias", forget_bias)
    require_bool("model.forget_gate", forget_gate)
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"model.cell={cell!r} is unknown: allowed {', '.join(CELLS)}")
    if cell != "rnn" and nonlinearity != "tanh":
        raise ValueError(f"model.nonlinearity={nonlinearity!r} applies only to cell=rnn")
    if cell != "lstm" and (forget_bias is not None or not forget_gate):
        raise ValueError("model.forget_bias / model.forget_gate apply only to cell=lstm")
    if recurrent_init not in ("default", "orthogonal", "identity"):
        allowed = "default, orthogonal, identity"
        raise ValueError(f"model.recurrent_init={recurrent_init!r} is invalid: allowed {allowed}")
    if match_params is not None:
        hidden_size = matched_hidden_size(cell, input_size, output_size, match_params, forget_gate)

    kwargs = {"rnn": {"nonlinearity": nonlinearity}, "lstm": {"forget_gate": forget_gate}}
    recurrence = CELLS[cell](input_size, hidden_size, **kwargs.get(cell, {}))
    model = SequenceModel(recurrence, output_size, impl)
    _initialise(model.cell, recurrent_init, recurrent_gain, forget_bias)
    return model


@torch.no_grad()
def _initialise(cell: Cell, recurrent_init: str, gain: float, forget_bias: float | None) -> None:
    H = cell.hidden_size
    if recurrent_init != "default":
        for block in cell.weight_hh_l0.split(H, dim=0):  # one H x H block per gate
            if recurrent_init == "orthogonal":
                nn.init.orthogonal_(block, gain=gain)
            else:
                block.copy_(gain * torch.eye(H))
        if recurrent_init == "identity":  # IRNN: biases start at zero
            cell.bias_ih_l0.zero_()
            cell.bias_hh_l0.zero_()
    if forget_bias is not None:
        f = slice(H, 2 * H)  # torch's LSTM order is i, f, g, o
        cell.bias_ih_l0[f] = forget_bias
        cell.bias_hh_l0[f] = 0.0
