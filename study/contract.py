"""The contract a task or a cell of one's own must keep, checked against independent references
(the same checks the repository's own tasks and cells pass in tests/):

    from study.contract import check_task, check_cell
    check_task(MyTask(40), oracle=lambda batch: predictions_from(batch.x, batch.evidence))
    check_cell("mypackage.cells.LeakyCell", leak=0.3)

Each returns the names of the checks it ran and raises ContractError, naming the check and what
it saw, at the first that fails.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from study.model import build_model, cell_class
from study.model.cells import Cell
from study.probes.jacobians import rollout, step_jacobians
from study.tasks.base import Batch, Task


class ContractError(AssertionError):
    """A task or cell breaks the contract; the message names the check."""


def _require(ok: bool, check: str, seen: str) -> None:
    if not ok:
        raise ContractError(f"{check}: {seen}")


# ---- tasks -----------------------------------------------------------------------------------
def check_task(
    task: Task, oracle: Callable[[Batch], torch.Tensor] | None = None, samples: int = 100_000
) -> list[str]:
    """Shapes and dtypes of a sampled batch; seeding (same generator seed, same batch; another
    seed, another batch); the declared `baseline` against a Monte Carlo estimate over `samples`
    sequences (within 4 standard errors); and, given an `oracle` that predicts from the inputs
    alone, reading only the positions in `batch.evidence`, that it reaches zero loss, full metric
    and `solved`."""
    checks = [_task_shapes(task), _task_seeding(task), _task_baseline(task, samples)]
    if oracle is not None:
        checks.append(_task_oracle(task, oracle))
    return checks


def _task_shapes(task: Task) -> str:
    b = task.sample(8, torch.Generator().manual_seed(5))
    B, T, I = b.x.shape
    _require((B, I) == (8, task.input_size), "shapes", f"x {tuple(b.x.shape)}, input_size {I}")
    _require(b.x.dtype == torch.float32, "shapes", f"x is {b.x.dtype}, not float32")
    K = task.loss_window
    if task.kind == "regression":
        want = (8, K, task.output_size)
        _require(
            tuple(b.y.shape) == want and b.y.dtype == torch.float32,
            "shapes",
            f"y {tuple(b.y.shape)} {b.y.dtype}; regression: (B, K, O) float32",
        )
    else:
        _require(
            tuple(b.y.shape) == (8, K) and b.y.dtype == torch.long,
            "shapes",
            f"y {tuple(b.y.shape)} {b.y.dtype}; classification: (B, K) long",
        )
        _require(int(b.y.max()) < task.output_size, "shapes", "a label >= output_size")
    _require(
        b.evidence.dtype == torch.long and b.evidence.shape[0] == 8,
        "shapes",
        f"evidence {tuple(b.evidence.shape)} {b.evidence.dtype}; want (B, P) long",
    )
    _require(
        0 <= int(b.evidence.min()) and int(b.evidence.max()) < T,
        "shapes",
        "an evidence position outside 0..T-1",
    )
    if b.valid is not None:  # left padding: every sequence ends at T-1, padding is all zero
        _require(
            tuple(b.valid.shape) == (8, T) and bool(b.valid[:, -1].all()),
            "padding",
            "valid must be (B, T) and true at T-1 (left padding)",
        )
        _require(float(b.x[~b.valid].abs().sum()) == 0.0, "padding", "padding is not all zero")
        _require(bool(b.valid.gather(1, b.evidence).all()), "padding", "evidence in the padding")
    return "shapes"


def _task_seeding(task: Task) -> str:
    a, b = (task.sample(8, torch.Generator().manual_seed(5)) for _ in range(2))
    c = task.sample(8, torch.Generator().manual_seed(6))
    same = torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    _require(same, "seeding", "one generator seed gave two batches: draw from `generator` only")
    _require(not torch.equal(a.x, c.x), "seeding", "two generator seeds gave the same inputs")
    return "seeding"


def _task_baseline(task: Task, samples: int) -> str:
    """Loss of the best memoryless predictor: per loss position, the mean target (regression,
    loss = variance) or the marginal label distribution (classification, loss = entropy)."""
    g, chunk = torch.Generator().manual_seed(0), 10_000
    ys = torch.cat([task.sample(chunk, g).y for _ in range(max(1, samples // chunk))]).double()
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
    _require(
        abs(est - task.baseline) < 4 * se + 1e-12,
        "baseline",
        f"declared {task.baseline:.6g}, Monte Carlo {est:.6g} ± {se:.2g} (s.e.)",
    )
    return "baseline"


def _task_oracle(task: Task, oracle: Callable[[Batch], torch.Tensor]) -> str:
    b = task.sample(256, torch.Generator().manual_seed(1))
    pred = oracle(b)
    loss, metric = task.loss(pred, b), task.metric(pred, b)
    _require(float(loss.max()) < 1e-10, "oracle", f"loss {float(loss.max()):.3g}, not 0")
    _require(float(metric.min()) == 1.0, "oracle", f"{task.metric_name} {float(metric.min())}")
    _require(
        task.solved(float(loss.mean()), float(metric.mean())),
        "oracle",
        "the oracle's predictions do not meet `solved`",
    )
    return "oracle"


# ---- cells -----------------------------------------------------------------------------------
def check_cell(
    cell: str | type[Cell],
    input_size: int = 3,
    hidden_size: int = 5,
    *,
    block: str | None = None,
    layers: int | None = None,
    **options,
) -> list[str]:
    """A cell (a Cell subclass or its import path) with its constructor's `options`, in float64
    (inside `layers` blocks of kind `block` where given, study/model/block.py):
    the states' shapes; left padding holds the state; the model's gradient against central
    finite differences (torch.autograd.gradcheck); the step Jacobian the probes use (the cell's
    closed form, or forward mode) against autograd's jacobian of one step; and, where the cell
    has a fast path (`scan`), that path against its explicit loop."""
    path = cell if isinstance(cell, str) else f"{cell.__module__}.{cell.__qualname__}"
    cell_class(path)  # one line for an import path that is not a Cell
    torch.manual_seed(0)
    model = build_model(
        path, input_size, 1, hidden_size=hidden_size, options=options or None, block=block,
        layers=layers,
    )  # fmt: skip
    model = model.double()
    x = torch.randn(2, 6, input_size, dtype=torch.float64)
    return [
        _cell_states(model.cell, x),
        _cell_padding(model.cell, x),
        _cell_gradient(model, x),
        _cell_jacobian(model.cell, x),
        *_cell_fast_path(model, x),
    ]


def _cell_states(cell: Cell, x: torch.Tensor) -> str:
    state = cell.initial_state(len(x))
    sizes = tuple(s.shape[1] for s in state)
    _require(
        sizes == tuple(cell.state_sizes) and len(state) == len(cell.state_names),
        "states",
        f"initial_state widths {sizes}, state_sizes {tuple(cell.state_sizes)}",
    )
    new, _ = cell.step(cell.project_inputs(x)[:, 0], state)
    got = tuple(tuple(s.shape) for s in new)
    _require(got == tuple(tuple(s.shape) for s in state), "states", f"step returned {got}")
    return "states"


def _cell_padding(cell: Cell, x: torch.Tensor) -> str:
    state = tuple(torch.randn_like(s) for s in cell.initial_state(len(x)))
    keep = torch.zeros(len(x), 1, dtype=torch.bool)
    new, _ = cell.step(cell.project_inputs(x)[:, 0], state, keep)
    held = all(torch.equal(a, b) for a, b in zip(new, state))
    _require(held, "padding", "keep=False changed the state: pass each new state through hold()")
    return "padding"


def _cell_gradient(model, x: torch.Tensor) -> str:
    def output(inputs):
        return model(inputs).y.sum(dim=(1, 2))

    ok = torch.autograd.gradcheck(output, (x.clone().requires_grad_(),), raise_exception=False)
    _require(ok, "gradient", "autograd's gradient differs from finite differences in float64")
    return "gradient"


def _cell_jacobian(cell: Cell, x: torch.Tensor) -> str:
    gx = cell.project_inputs(x)[:, :1].detach()
    s0 = torch.cat([torch.randn_like(s) * 0.5 for s in cell.initial_state(len(x))], dim=1)
    got = step_jacobians(cell, gx, s0.unsqueeze(1), None)[:, 0].detach()
    want = torch.stack(
        [_autograd_step_jacobian(cell, gx[n : n + 1], s0[n : n + 1]) for n in range(len(x))]
    )
    err = float((got - want).abs().max())
    _require(err < 1e-9, "jacobian", f"the probes' step Jacobian is off autograd's by {err:.2g}")
    return "jacobian"


def _autograd_step_jacobian(cell: Cell, gx: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """d s_1 / d s_0 of one example over one step, (S, S), by reverse-mode autograd."""

    def one_step(state: torch.Tensor) -> torch.Tensor:
        return rollout(cell, gx, state, None)

    return torch.autograd.functional.jacobian(one_step, s)[0, :, 0].detach()


def _cell_fast_path(model, x: torch.Tensor) -> list[str]:
    if not hasattr(model.cell, "scan"):
        return []
    with torch.no_grad():
        err = float((model.predict(x) - model(x).y).abs().max())
    _require(err < 1e-9, "fast path", f"scan() differs from the explicit loop by {err:.2g}")
    return ["fast path"]
