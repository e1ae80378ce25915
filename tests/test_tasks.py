"""Every task: the contract (study.contract: shapes, seeding, the baseline against Monte Carlo, an
oracle on its evidence), variable lengths, training end to end."""

import math

import pytest
import torch

from study.contract import check_task
from study.model import build_model
from study.probes import ProbeSettings
from study.tasks.adding import Adding
from study.tasks.base import Task
from study.tasks.copy_memory import CopyMemory
from study.tasks.latching import Latching
from study.tasks.memorization import NoiselessMemorization, RandomPermutation
from study.tasks.multiplication import Multiplication
from study.tasks.selective_copy import SelectiveCopy
from study.tasks.temporal_order import TemporalOrder
from study.train import TrainSettings
from tests.conftest import train_one

TASKS = {
    "adding": lambda: Adding(40),
    "adding-hochreiter1997": lambda: Adding(40, "hochreiter1997"),
    "adding-pascanu2013": lambda: Adding(40, "pascanu2013"),
    "adding-tcn2018": lambda: Adding(40, "tcn2018"),
    "multiplication": lambda: Multiplication(40),
    "copy_memory": lambda: CopyMemory(30),
    "temporal_order-2": lambda: TemporalOrder(40, bits=2),
    "temporal_order-3": lambda: TemporalOrder(40, bits=3),
    "noiseless_memorization": lambda: NoiselessMemorization(30),
    "random_permutation": lambda: RandomPermutation(30, vocab=20),
    "latching": lambda: Latching(30),
    "selective_copy": lambda: SelectiveCopy(40, tokens=6, vocab=8),
}


def oracle(name: str, task: Task, b):
    """Predictions computed from the inputs alone, reading only what the task says matters."""
    x = b.x
    if name.startswith("adding") or name == "multiplication":
        marked = x[..., 1] == 1
        assert torch.equal(marked.sum(1), torch.full((len(x),), 2))
        assert torch.equal(torch.where(marked)[1].view(-1, 2), b.evidence)
        v = x[..., 0][marked].view(-1, 2)
        target = {
            "adding-hochreiter1997": 0.5 + v.sum(1) / 4,
            "adding-pascanu2013": v.mean(1),
            "multiplication": v.prod(1),
        }.get(name, v.sum(1))
        return target.view(-1, 1, 1)
    sym = x.argmax(-1)
    if name == "copy_memory":
        labels = torch.zeros_like(b.y)
        labels[:, -10:] = sym[:, :10]
    elif name.startswith("temporal_order"):
        bits = sym.gather(1, b.evidence) - 6  # X = 6, Y = 7
        labels = (bits * 2 ** torch.arange(bits.shape[1] - 1, -1, -1)).sum(1, keepdim=True)
    elif name == "noiseless_memorization":
        labels = sym[:, : task.bits]
    elif name == "random_permutation":
        labels = sym[:, :1]
    elif name == "latching":
        labels = (x[:, :1, 0] > 0).long()
    elif name == "selective_copy":
        is_token = sym[:, : task.length] < task.vocab
        assert torch.equal(torch.where(is_token)[1].view(len(x), -1), b.evidence)
        labels = sym.gather(1, b.evidence)
    return torch.nn.functional.one_hot(labels, task.output_size).float() * 60  # ~certain logits


@pytest.mark.parametrize("name", TASKS)
def test_every_task_keeps_the_contract(name):
    """study.contract.check_task, the check a user runs on a task of their own: shapes and
    dtypes, seeding, the declared baseline against Monte Carlo (the best memoryless predictor:
    per loss position the mean target, loss = variance, or the marginal label distribution,
    loss = entropy) and this file's oracle, which reads only the evidence, at zero loss."""
    task = TASKS[name]()
    ran = check_task(task, lambda b: oracle(name, task, b))
    assert ran == ["shapes", "seeding", "baseline", "oracle"]


def test_variable_lengths_cover_the_declared_range():
    task = Adding(50, "hochreiter1997")
    b = task.sample(4000, torch.Generator().manual_seed(2))
    lengths = b.valid.sum(1)
    assert int(lengths.min()) == 50 and int(lengths.max()) == 55
    start = b.valid.float().argmax(1)
    first = b.evidence[:, 0] - start
    assert int(first.min()) == 0 and int(first.max()) == 9
    assert int((b.evidence[:, 1] - start).max()) == 24


@pytest.mark.parametrize("name", TASKS)
def test_every_task_trains_end_to_end(name):
    task = TASKS[name]()
    torch.manual_seed(0)
    model = build_model("gru", task.input_size, task.output_size, hidden_size=8)
    settings = TrainSettings(steps=2, batch_size=4, log_every=1, eval_size=16)
    probes = ProbeSettings(jacobian_examples=1, snr_batches=2)
    opt = lambda p: torch.optim.Adam(p)  # noqa: E731
    records = train_one(model, task, opt, settings, seed=0, probes=probes, progress=False)
    assert records.status == "completed"
    flow = records.flow_frame()
    # positions where every example of the probe batch is padding have no value (NaN)
    real = flow.lag < task.length
    assert flow[real].value.notna().all() and math.isfinite(records.final["eval_loss"])


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: Adding(100, "graves2014"), "task.variant='graves2014' is unknown: allowed"),
        (lambda: Adding(10, "hochreiter1997"), "task.length=10 is invalid for hochreiter1997"),
        (lambda: TemporalOrder(100, bits=4), "task.bits=4 is invalid: allowed 2, 3"),
        (lambda: SelectiveCopy(5, tokens=6), "task.tokens=6 is invalid"),
        (lambda: CopyMemory(1), "task.length=1 is invalid"),
    ],
)
def test_bad_task_options_name_the_key(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_run_json_input_length_follows_each_tasks_layout():
    """Copy memory reads 10 symbols, T-1 blanks, a delimiter and 10 blanks: T + 20 steps; the
    1997 adding variant pads to its longest length T + T//10; the Arjovsky form reads T."""
    from study.runs.job import input_length
    from study.tasks.adding import Adding
    from study.tasks.copy_memory import CopyMemory

    assert input_length(CopyMemory(30)) == 10 + 29 + 1 + 10
    assert input_length(Adding(30, variant="hochreiter1997")) == 30 + 3
    assert input_length(Adding(30)) == 30
