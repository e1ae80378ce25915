"""The training loop, for one model or a seed ensemble: seeded on-the-fly batches, optimiser steps,
and records at step 0 and every `log_every` steps (losses, global gradient norm, gradient flow).
Knows nothing of Hydra or files."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from study.checks import require_bool, require_int, require_number
from study.model.ensemble import Ensemble, Single
from study.probes import ProbeResult, ProbeSettings, run_probes
from study.tasks.base import Batch, Task

logger = logging.getLogger(
    __name__
)  # train.log of each run (study/runs/job.py): one line per evaluation


@dataclass
class TrainSettings:
    steps: int = 2000  # optimiser updates; 0 = analyse the initialisation only
    batch_size: int = 64  # sequences per update
    log_every: int = 100  # record metrics and gradient flow at step 0, every log_every, and the end
    eval_size: int = 10_000  # fixed evaluation sequences per seed
    eval_chunk: int = 1_000  # evaluation batch size (bounds memory at long T)
    clip_norm: float | None = 1.0  # clip the global gradient norm to this; None = no clipping
    checkpoint_every: int = 500  # save a resumable checkpoint every this many steps; 0 = never
    stop_on_solve: bool | None = None  # stop at the first evaluation where the task is solved
    stream_window: int | None = None  # stop once the last N training sequences were all correct
    stream_loss: float | None = None  # ... and their mean loss is below this (the 1997 rule)

    def __post_init__(self):
        checks = {
            "steps": (self.steps, 0),
            "batch_size": (self.batch_size, 1),
            "log_every": (self.log_every, 1),
            "eval_size": (self.eval_size, 1),
            "eval_chunk": (self.eval_chunk, 1),
            "checkpoint_every": (self.checkpoint_every, 0),
        }
        for key, (value, low) in checks.items():
            require_int(f"train.{key}", value, low)
        if self.clip_norm is not None:
            require_number("train.clip_norm", self.clip_norm, 0, strict=True)
        if self.stop_on_solve is not None:
            require_bool("train.stop_on_solve", self.stop_on_solve)
        if (self.stream_window is None) != (self.stream_loss is None):
            raise ValueError(
                "train.stream_window and train.stream_loss go together: set both or neither"
            )
        if self.stream_window is not None:
            require_int("train.stream_window", self.stream_window, 1)
            require_number("train.stream_loss", self.stream_loss, 0, strict=True)


@dataclass
class Records:
    """What a run produced: its status and two tidy tables."""

    status: str = "completed"  # completed | diverged
    metrics: list[dict] = field(default_factory=list)  # rows (step, name, value)
    flow: list[pd.DataFrame] = field(default_factory=list)  # per-position probe rows
    evidence: list[pd.DataFrame] = field(default_factory=list)  # gradient at evidence positions
    weights: list[pd.DataFrame] = field(default_factory=list)  # spectra of W_hh
    lyapunov: list[pd.DataFrame] = field(default_factory=list)  # Lyapunov exponents
    final: dict = field(default_factory=dict)  # last evaluation and whether the task is solved
    solved_step: int | None = None  # the first evaluated step at which the task was solved

    def tables(self) -> dict[str, pd.DataFrame]:
        """The run's tables by name (study.runs.rundir.TABLES)."""
        return {
            "metrics": self.metrics_frame(),
            "grad_flow": self.flow_frame(),
            "evidence": self.evidence_frame(),
            "weights": self.weights_frame(),
            "lyapunov": self.lyapunov_frame(),
        }

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics, columns=["step", "name", "value"])

    def flow_frame(self) -> pd.DataFrame:
        return _concat(self.flow)

    def evidence_frame(self) -> pd.DataFrame:
        return _concat(self.evidence)

    def weights_frame(self) -> pd.DataFrame:
        return _concat(self.weights)

    def lyapunov_frame(self) -> pd.DataFrame:
        return _concat(self.lyapunov)

    FRAMES = ("flow", "evidence", "weights", "lyapunov")

    def to_plain(self) -> dict:
        """The records as tensors, lists, strings and numbers only: what a checkpoint loaded
        with torch.load(weights_only=True) may hold, so that no results folder can run code.
        from_plain gives back equal records (dtypes and values exact)."""
        plain = {"status": self.status, "solved_step": self.solved_step}
        plain["final"] = {k: _scalar(v) for k, v in self.final.items()}
        plain["metrics"] = [{k: _scalar(v) for k, v in row.items()} for row in self.metrics]
        for name in self.FRAMES:
            plain[name] = [_frame_to_plain(f) for f in getattr(self, name)]
        return plain

    @classmethod
    def from_plain(cls, plain: dict) -> Records:
        frames = {name: [_frame_from_plain(f) for f in plain[name]] for name in cls.FRAMES}
        return cls(plain["status"], plain["metrics"], final=plain["final"],
                   solved_step=plain["solved_step"], **frames)  # fmt: skip


def _scalar(value):
    """A numpy scalar as the Python number it holds (weights_only admits no numpy types)."""
    return value.item() if isinstance(value, np.generic) else value


def _frame_to_plain(frame: pd.DataFrame) -> dict:
    """A table as {"columns": names, "values": one tensor per numeric column, a list of
    strings per other}."""
    values = []
    for name in frame.columns:
        col = frame[name]
        numeric = pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
        values.append(torch.from_numpy(col.to_numpy().copy()) if numeric else col.tolist())
    return {"columns": list(frame.columns), "values": values}


def _frame_from_plain(plain: dict) -> pd.DataFrame:
    data = {n: v.numpy() if isinstance(v, Tensor) else v for n, v in zip(*plain.values())}
    return pd.DataFrame(data, columns=plain["columns"])


def stopped(records: Records, settings: TrainSettings) -> bool:
    """Whether stop-on-solve or the stream rule has ended this member's training."""
    stops = settings.stop_on_solve or settings.stream_window is not None
    return bool(stops) and records.solved_step is not None


class Stream:
    """Hochreiter & Schmidhuber's (1997) stopping rule on the training stream: the last `window`
    training sequences (as the model met them, before its update) were all correct (the task's
    per-sequence metric is 1) and their mean loss is below `loss`."""

    def __init__(self, window: int, loss: float):
        self.window, self.loss = window, loss
        self.recent: deque[tuple[float, float]] = deque(maxlen=window)

    def holds_after(self, losses: Tensor, metrics: Tensor) -> bool:
        """Add one batch of sequences; whether the rule holds now."""
        self.recent.extend(zip(losses.tolist(), metrics.tolist()))
        if len(self.recent) < self.window:
            return False
        return all(m == 1.0 for _, m in self.recent) and (
            sum(lo for lo, _ in self.recent) / self.window < self.loss
        )


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


Members = Single | Ensemble  # one model, or a seed ensemble (study/model/ensemble.py)


class Checkpoint(Protocol):
    """Where a run keeps its resumable state (see study.runs.checkpoint.CheckpointFile)."""

    def load(self) -> dict | None: ...
    def save(self, state: dict) -> None: ...


def stream_seed(seed: int, stream: str) -> int:
    """Independent, reproducible seeds for the data streams of one run seed."""
    words = [seed, *map(ord, stream)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def data_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


def cut_draws(cut, batches: list[Batch], seeds: list[int], step: int) -> list[Tensor] | None:
    """A stochastic gradient-path cut's s_t for each member's update at `step`, each from its
    own stream of (seed, step), so that a run draws the same cuts alone, in an ensemble and
    after a resume; None for no cut or a deterministic one (study/model/cut.py)."""
    if cut is None or cut.prob == 1.0:
        return None
    return [
        cut.scales(b.x.shape[1], data_generator(seed, f"cut-{step}"))
        for b, seed in zip(batches, seeds)
    ]


def clip_(grads: list[Tensor], max_norm: float | None) -> Tensor:
    """Scale one member's gradients in place as torch.nn.utils.clip_grad_norm_ does (the same
    arithmetic, on tensors that may be views into stacked gradients); return their total norm
    before clipping. max_norm None: no clipping."""
    total = torch.nn.utils.get_total_norm(grads)
    if max_norm is not None:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef)
    return total


def gradient_step(
    members: Members,
    task: Task,
    optimizer: torch.optim.Optimizer,
    batches: list[Batch],
    clip_norm: float | None,
    per_example: bool = False,
    scales: list[Tensor] | None = None,
    on: list[int] | None = None,
) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]] | None]:
    """The gradient half of one training step, as the loop and the benchmark run it: each
    member's mean loss on its own batch, one backward pass of their sum (members share no
    parameter, so each gets exactly its own gradient), each member's gradient clipped on its
    own. Returns the losses and the gradient norms before clipping, and with `per_example`
    each member's per-sequence losses and metrics (detached; None otherwise);
    `optimizer.step()` (after the loop has checked them for divergence) completes the step.
    scales: a stochastic gradient-path cut's s_t per member for this update (study/model/cut.py).
    on: the members that still train (batches and scales are theirs, in this order); the
    others are not computed (their gradient is zero). None: every member."""
    ys = members.predict([b.x for b in batches], [b.valid for b in batches], scales, on)
    per_loss = [task.loss(task.select(y), b) for y, b in zip(ys, batches)]
    losses = [loss.mean() for loss in per_loss]
    optimizer.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()
    on = range(members.size) if on is None else on
    norms = [clip_(members.member_grads(e), clip_norm) for e in on]
    if not per_example:
        return losses, norms, None
    with torch.no_grad():
        metrics = [task.metric(task.select(y), b) for y, b in zip(ys, batches)]
    return losses, norms, [(lo.detach(), m) for lo, m in zip(per_loss, metrics)]


def train_step(members, task, optimizer, batches, clip_norm) -> None:
    """One whole training step (what the benchmark times): gradient_step, then the update."""
    gradient_step(members, task, optimizer, batches, clip_norm)
    optimizer.step()


@torch.no_grad()
def evaluate(
    members: Members, task: Task, batches: list[Batch], chunk: int, on: list[int] | None = None
) -> list[tuple[float, float]]:
    """Each member's mean loss and metric over its own (large) evaluation batch, `chunk`
    sequences at a time. on: only these members (batches are theirs); None: every member."""
    sums = np.zeros((len(batches), 2))
    n = batches[0].x.shape[0]
    for start in range(0, n, chunk):
        parts = [b[start : start + chunk] for b in batches]
        ys = members.predict([p.x for p in parts], [p.valid for p in parts], None, on)
        for e, (y, part) in enumerate(zip(ys, parts)):
            y_hat = task.select(y)
            sums[e, 0] += task.loss(y_hat, part).double().sum().item()
            sums[e, 1] += task.metric(y_hat, part).double().sum().item()
    return [(loss / n, metric / n) for loss, metric in sums]


def train(
    members: Members,
    task: Task,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    settings: TrainSettings,
    seeds: list[int],
    probes: ProbeSettings | None = None,
    progress: bool | None = None,
    checkpoints: list[Checkpoint | None] | None = None,
    device: str | torch.device = "cpu",
) -> list[Records]:
    """Train one model (`Single`: an ensemble of one) or a seed ensemble, initialised from
    `seeds`, member e on the data of seeds[e]; a member's records are those it gets alone (in
    an ensemble up to float rounding: batched matmuls sum in another order). A step: sample ->
    gradient -> probe if due -> stream rule -> evaluate if due -> record -> update ->
    checkpoint if due. A member stops when it diverges, with `stop_on_solve` at its first
    evaluation that solves the task, with `stream_window` where the stream rule holds (an
    evaluation is added there); it leaves the stack (it is not sampled, computed or evaluated
    again) and the others go on.

    progress: True/False forces the bar; None shows it only when stderr is a terminal.
    checkpoints: one per member (or None); a run resumes only when every member has one, from
    the same step, and ends with exactly the records of an uninterrupted run.
    device: where the models train; batches are generated on the CPU (seeded) and moved there.
    """
    s, probes, E = settings, probes or ProbeSettings(), members.size
    members.to(device)
    optimizer = make_optimizer(list(members.parameters()))
    gens = [data_generator(seed, "train") for seed in seeds]
    evals = [task.sample(s.eval_size, data_generator(seed, "eval")).to(device) for seed in seeds]
    checkpoints = checkpoints or [None] * E
    records, start, streams = resume(members, optimizer, gens, checkpoints, s)
    active = [r.status == "completed" and not stopped(r, s) for r in records]

    disable = None if progress is None else not progress
    bar = tqdm(range(start, s.steps + 1), desc="train", initial=start, total=s.steps + 1,
               disable=disable)  # fmt: skip
    for step in bar:
        # members that stopped (solved, diverged, the stream rule) leave the stack: only the
        # others sample, compute and record; the stopped ones' records are final
        on = [e for e in range(E) if active[e]]
        subset = None if len(on) == E else on
        batches = [task.sample(s.batch_size, gens[e]).to(device) for e in on]
        scales = cut_draws(members.cut, batches, [seeds[e] for e in on], step)
        losses, norms, per = gradient_step(
            members, task, optimizer, batches, s.clip_norm, streams is not None, scales, subset
        )
        steps = [None] * E  # the active members' Step at their index
        for i, e in enumerate(on):
            steps[e] = Step(step, losses[i].item(), norms[i].item())
        everyone = [None] * E
        for i, e in enumerate(on):
            everyone[e] = batches[i]
        probe_members(members, task, everyone, steps, seeds, active, probes, s)
        for i, e in enumerate(on):
            steps[e].stream_hit = bool(streams) and streams[e].holds_after(*per[i])
        hit = any(steps[e].stream_hit for e in on)
        if step % s.log_every == 0 or step == s.steps or hit:
            results = evaluate(members, task, [evals[e] for e in on], s.eval_chunk, subset)
            for e, ev in zip(on, results):
                steps[e].eval_loss, steps[e].eval_metric = ev
        for e in on:
            active[e] = record(records[e], steps[e], task, s, seeds[e], streams is not None)
        show(bar, [steps[e] for e in on])

        if step == s.steps or not any(active):
            break
        optimizer.step()
        if s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
            save_checkpoints(checkpoints, step + 1, members, optimizer, gens, records, streams)
    bar.close()
    return records


@dataclass
class Step:
    """One member at one step: what the loop measured, for `record`."""

    step: int
    train_loss: float
    grad_norm: float
    probe: ProbeResult | None = None  # the probes, where due and the member is finite
    stream_hit: bool = False  # the stream rule holds after this step's batch
    eval_loss: float | None = None  # the evaluation, where due
    eval_metric: float | None = None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.train_loss) and math.isfinite(self.grad_norm)


def resume(members, optimizer, gens, checkpoints, s: TrainSettings):
    """Fresh records from step 0, or, when every member has a checkpoint of the same step, the
    models, optimiser, data streams, records and stream windows saved there."""
    saved = [c.load() if c is not None else None for c in checkpoints]
    streams = [Stream(s.stream_window, s.stream_loss) for _ in gens] if s.stream_window else None
    if not (all(x is not None for x in saved) and len({x["next_step"] for x in saved}) == 1):
        return [Records() for _ in gens], 0, streams
    members.load_states(saved, optimizer)
    for gen, x in zip(gens, saved):
        gen.set_state(x["generator"])
    for stream, x in zip(streams or [], saved):  # a resumed run refills the window it had
        stream.recent.extend(x.get("stream", []))
    return [x["records"] for x in saved], saved[0]["next_step"], streams


def probe_members(members, task, batches, steps, seeds, active, probes, s: TrainSettings):
    """Where probes are due: probe each active member as it is before this step's update, and
    keep its tables. A member whose loss or gradient is not finite diverges unprobed: no probe
    (an SVD, an eigensolver) ever sees a non-finite state."""
    step = next(x.step for x in steps if x is not None)
    due, jacobians = probes.due(step, s.steps, s.log_every)
    if not due:
        return
    for e in range(members.size):
        if active[e] and steps[e].finite:
            data = data_generator(seeds[e], f"probe-{step}")  # SNR draws, apart from training
            steps[e].probe = run_probes(members.member(e), task, batches[e], step, probes,
                                        jacobians, data)  # fmt: skip


def record(rec: Records, x: Step, task: Task, s: TrainSettings, seed: int, streams: bool) -> bool:
    """Add one active member's step to its records; whether it goes on (False once it has
    diverged, or stopped on solving)."""
    losses = [{"step": x.step, "name": "train_loss", "value": x.train_loss},
              {"step": x.step, "name": "grad_norm", "value": x.grad_norm}]  # fmt: skip
    if not x.finite:
        rec.metrics += losses
        rec.status, rec.final = "diverged", {"diverged_at_step": x.step}
        what = f"train loss {x.train_loss}, gradient norm {x.grad_norm}"
        logger.warning("seed %d diverged at step %d (%s)", seed, x.step, what,
                       extra={"seed": seed})  # fmt: skip
        return False
    if x.probe is not None:
        for name in Records.FRAMES:
            getattr(rec, name).append(getattr(x.probe, name))
    evaluated = x.eval_loss is not None
    if evaluated:
        solved = bool(task.solved(x.eval_loss, x.eval_metric))
        rec.metrics += losses + [
            {"step": x.step, "name": "eval_loss", "value": x.eval_loss},
            {"step": x.step, "name": "eval_metric", "value": x.eval_metric},
            {"step": x.step, "name": "solved", "value": float(solved)},
        ]
        if solved and rec.solved_step is None and not streams:
            rec.solved_step = x.step
        if x.stream_hit:  # the stream rule holds: the 1997 criterion of success
            rec.metrics.append({"step": x.step, "name": "stream_solved", "value": 1.0})
            rec.solved_step = x.step
    if x.probe is not None:
        rec.metrics += [{"step": x.step, "name": k, "value": v} for k, v in x.probe.scalars.items()]
    if not evaluated:
        return True
    metric = f"{task.metric_name} {x.eval_metric:.3g}"
    now = f"train loss {x.train_loss:.4g}, eval loss {x.eval_loss:.4g}"
    logger.debug("step %d/%d: %s, %s", x.step, s.steps, now, metric, extra={"seed": seed})
    rec.final = {"step": x.step, "eval_loss": x.eval_loss, "eval_metric": x.eval_metric,
                 "solved": solved, "solved_step": rec.solved_step}  # fmt: skip
    return not stopped(rec, s)  # stop-on-solve: this member is done


def show(bar, steps: list[Step]) -> None:
    """The progress bar's losses: the mean over the members still training, at evaluations."""
    if steps and steps[0].eval_loss is not None:
        train_loss = np.mean([x.train_loss for x in steps])
        eval_loss = np.mean([x.eval_loss for x in steps])
        bar.set_postfix(loss=f"{train_loss:.4f}", eval=f"{eval_loss:.4f}", refresh=False)


def save_checkpoints(checkpoints, next_step, members, optimizer, gens, records, streams) -> None:
    """Each member's resumable state: model and optimiser, data stream, records, stream window."""
    for e, checkpoint in enumerate(checkpoints):
        if checkpoint is not None:
            checkpoint.save(
                {
                    "next_step": next_step,
                    **members.member_state(e, optimizer),
                    "generator": gens[e].get_state(),
                    "records": records[e],
                    "stream": list(streams[e].recent) if streams else [],
                }
            )
