"""Every task: its declared baseline (Monte Carlo), an oracle on its evidence, seeding, shapes."""

import math

import pytest
import torch

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
from study.train import TrainSettings, train

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
def test_declared_baseline_matches_monte_carlo(name):
    """Loss of the best memoryless predictor: per loss position, the mean target (regression,
    loss = variance) or the marginal label distribution (classification, loss = entropy)."""
    task, g = TASKS[name](), torch.Generator().manual_seed(0)
    ys = torch.cat([task.sample(10_000, g).y for _ in range(10)]).double()
    if task.kind == "regression":
        sq = (ys - ys.mean(0)).pow(2).mean(dim=(1, 2))  # per-example loss of the best constant
        est, se = sq.mean().item(), sq.std().item() / len(sq) ** 0.5
    else:
        nll = torch.zeros(len(ys), dtype=torch.float64)
        for k in range(ys.shape[1]):
            p = torch.bincount(ys[:, k].long(), minlength=task.output_size).double() / len(ys)
            nll += -p[ys[:, k].long()].log() / ys.shape[1]
        est, se = nll.mean().item(), nll.std().item() / len(nll) ** 0.5
        se += task.output_size / (2 * len(ys))  # the plug-in entropy's small-sample bias
    assert abs(est - task.baseline) < 4 * se + 1e-12, (est, task.baseline, se)


@pytest.mark.parametrize("name", TASKS)
def test_oracle_on_the_evidence_positions_reaches_zero_loss(name):
    task = TASKS[name]()
    b = task.sample(256, torch.Generator().manual_seed(1))
    pred = oracle(name, task, b)
    loss = task.loss(pred, b)
    assert float(loss.max()) < 1e-10
    assert float(task.metric(pred, b).min()) == 1.0
    assert task.solved(float(loss.mean()), float(task.metric(pred, b).mean()))


@pytest.mark.parametrize("name", TASKS)
def test_seeding_shapes_and_dtypes(name):
    task = TASKS[name]()
    a = task.sample(8, torch.Generator().manual_seed(5))
    b = task.sample(8, torch.Generator().manual_seed(5))
    c = task.sample(8, torch.Generator().manual_seed(6))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    B, T, I = a.x.shape
    assert (B, I) == (8, task.input_size) and a.x.dtype == torch.float32
    K = task.loss_window
    if task.kind == "regression":
        assert a.y.shape == (8, K, task.output_size) and a.y.dtype == torch.float32
    else:
        assert a.y.shape == (8, K) and a.y.dtype == torch.long
        assert int(a.y.max()) < task.output_size
    assert a.evidence.dtype == torch.long and a.evidence.shape[0] == 8
    assert int(a.evidence.max()) < T
    if a.valid is not None:  # left padding: every sequence ends at T-1, padding is all zero
        assert a.valid.shape == (8, T) and bool(a.valid[:, -1].all())
        assert float(a.x[~a.valid].abs().sum()) == 0.0
        assert bool(a.valid.gather(1, a.evidence).all())


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
    records = train(model, task, opt, settings, seed=0, probes=probes, progress=False)
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
    from study.job import input_length
    from study.tasks.adding import Adding
    from study.tasks.copy_memory import CopyMemory

    assert input_length(CopyMemory(30)) == 10 + 29 + 1 + 10
    assert input_length(Adding(30, variant="hochreiter1997")) == 30 + 3
    assert input_length(Adding(30)) == 30
