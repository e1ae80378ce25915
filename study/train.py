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
from study.ensemble import Ensemble, Single
from study.model import SequenceModel
from study.probes import ProbeSettings, run_probes
from study.tasks.base import Batch, Task

logger = logging.getLogger(
    __name__
)  # train.log of each run (study/job.py): one line per evaluation


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
        """The run's tables by name (study.rundir.TABLES)."""
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


Members = Single | Ensemble  # one model, or a seed ensemble (study/ensemble.py)


class Checkpoint(Protocol):
    """Where a run keeps its resumable state (see study.checkpoint.CheckpointFile)."""

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
    after a resume; None for no cut or a deterministic one (study/cut.py)."""
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
) -> tuple[list[Tensor], list[Tensor], list[tuple[Tensor, Tensor]] | None]:
    """The gradient half of one training step, as the loop and the benchmark run it: each
    member's mean loss on its own batch, one backward pass of their sum (members share no
    parameter, so each gets exactly its own gradient), each member's gradient clipped on its
    own. Returns the losses and the gradient norms before clipping, and with `per_example`
    each member's per-sequence losses and metrics (detached; None otherwise);
    `optimizer.step()` (after the loop has checked them for divergence) completes the step.
    scales: a stochastic gradient-path cut's s_t per member for this update (study/cut.py)."""
    ys = members.predict([b.x for b in batches], [b.valid for b in batches], scales)
    per_loss = [task.loss(task.select(y), b) for y, b in zip(ys, batches)]
    losses = [loss.mean() for loss in per_loss]
    optimizer.zero_grad(set_to_none=True)
    torch.stack(losses).sum().backward()
    norms = [clip_(members.member_grads(e), clip_norm) for e in range(members.size)]
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
    members: Members, task: Task, batches: list[Batch], chunk: int
) -> list[tuple[float, float]]:
    """Each member's mean loss and metric over its own (large) evaluation batch, `chunk`
    sequences at a time."""
    sums = np.zeros((members.size, 2))
    n = batches[0].x.shape[0]
    for start in range(0, n, chunk):
        parts = [b[start : start + chunk] for b in batches]
        ys = members.predict([p.x for p in parts], [p.valid for p in parts])
        for e, (y, part) in enumerate(zip(ys, parts)):
            y_hat = task.select(y)
            sums[e, 0] += task.loss(y_hat, part).double().sum().item()
            sums[e, 1] += task.metric(y_hat, part).double().sum().item()
    return [(loss / n, metric / n) for loss, metric in sums]


def train(
    model: SequenceModel,
    task: Task,
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    settings: TrainSettings,
    seed: int,
    probes: ProbeSettings | None = None,
    progress: bool | None = None,
    checkpoint: Checkpoint | None = None,
    device: str | torch.device = "cpu",
) -> Records:
    """Train `model` on `task`. The model must already be initialised from `seed`.

    progress: True/False forces the bar; None shows it only when stderr is a terminal.
    checkpoint: where to save and resume from. A resumed run continues from its last checkpoint
    (model, optimiser, data stream and records so far) and ends with exactly the records of an
    uninterrupted run.
    device: where the model trains; batches are generated on the CPU (seeded) and moved there.
    """
    members, checkpoints = Single(model), [checkpoint]
    args = (task, make_optimizer, settings, [seed], probes, progress, checkpoints, device)
    return train_members(members, *args)[0]


def train_members(
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
    """Train one model (`Single`) or a seed ensemble, member e on the data of seeds[e]; each
    member's records are those `train` gives its model alone (for an ensemble, up to float
    rounding: batched matmuls sum in another order). A member that diverges stops recording;
    the others go on. With `settings.stop_on_solve`, a member stops (status completed) at the
    first evaluation where the task is solved, with `settings.stream_window` at the first step
    where the stream rule holds (an evaluation is added there); the others go on. Checkpoints:
    one per member, in `train`'s format; a run resumes only when every member has one, from the
    same step."""
    s, probes, E = settings, probes or ProbeSettings(), members.size
    gens = [data_generator(seed, "train") for seed in seeds]
    members.to(device)
    evals_data = [task.sample(s.eval_size, data_generator(seed, "eval")) for seed in seeds]
    eval_batches = [b.to(device) for b in evals_data]
    params = list(members.parameters())
    optimizer = make_optimizer(params)
    records, start = [Records() for _ in seeds], 0
    checkpoints = checkpoints or [None] * E
    saved = [c.load() if c is not None else None for c in checkpoints]
    if all(x is not None for x in saved) and len({x["next_step"] for x in saved}) == 1:
        members.load_states(saved, optimizer)
        for gen, x in zip(gens, saved):
            gen.set_state(x["generator"])
        records, start = [x["records"] for x in saved], saved[0]["next_step"]
    # a diverged member records no more; with stop_on_solve neither does a solved one
    active = [r.status == "completed" and not stopped(r, s) for r in records]
    window = s.stream_window
    streams = [Stream(window, s.stream_loss) for _ in seeds] if window else None
    if streams and start:  # a resumed run refills the window it had
        for stream, x in zip(streams, saved):
            stream.recent.extend(x.get("stream", []))

    disable = None if progress is None else not progress
    bar = tqdm(
        range(start, s.steps + 1), desc="train", initial=start, total=s.steps + 1, disable=disable
    )
    for step in bar:
        batches = [task.sample(s.batch_size, gen).to(device) for gen in gens]
        log = step % s.log_every == 0 or step == s.steps
        probe, costly = probes.due(step, s.steps, s.log_every)
        scales = cut_draws(members.cut, batches, seeds, step)
        losses, norms, per = gradient_step(
            members, task, optimizer, batches, s.clip_norm, streams is not None, scales
        )
        probed = [None] * E
        if probe:  # probe the models as they are before this step's update (not yet made)
            # a member whose loss or gradient is not finite diverges below, unprobed: no probe
            # (an SVD, an eigensolver) ever sees a non-finite state
            finite = [math.isfinite(lo.item()) and math.isfinite(n.item()) for lo, n in
                      zip(losses, norms)]  # fmt: skip
            for e in filter(lambda e: active[e] and finite[e], range(E)):
                model = members.member(e)
                data = data_generator(seeds[e], f"probe-{step}")  # SNR draws, apart from training
                probed[e] = run_probes(model, task, batches[e], step, probes, costly, data)
                records[e].flow.append(probed[e].flow)
                records[e].evidence.append(probed[e].evidence)
                records[e].weights.append(probed[e].weights)
                records[e].lyapunov.append(probed[e].lyapunov)
        hit = [False] * E
        if streams:
            for e in filter(active.__getitem__, range(E)):
                hit[e] = streams[e].holds_after(*per[e])
            log = log or any(hit)  # evaluate where the rule stops a member
        evals = evaluate(members, task, eval_batches, s.eval_chunk) if log else None

        for e in filter(active.__getitem__, range(E)):
            rec, train_loss, grad_norm = records[e], losses[e].item(), norms[e].item()
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                rec.metrics += [
                    {"step": step, "name": "train_loss", "value": train_loss},
                    {"step": step, "name": "grad_norm", "value": grad_norm},
                ]
                rec.status, rec.final, active[e] = "diverged", {"diverged_at_step": step}, False
                what = f"train loss {train_loss}, gradient norm {grad_norm}"
                logger.warning(
                    "seed %d diverged at step %d (%s)",
                    seeds[e],
                    step,
                    what,
                    extra={"seed": seeds[e]},
                )
                continue
            if log:
                eval_loss, eval_metric = evals[e]
                solved = bool(task.solved(eval_loss, eval_metric))
                rec.metrics += [
                    {"step": step, "name": "train_loss", "value": train_loss},
                    {"step": step, "name": "grad_norm", "value": grad_norm},
                    {"step": step, "name": "eval_loss", "value": eval_loss},
                    {"step": step, "name": "eval_metric", "value": eval_metric},
                    {"step": step, "name": "solved", "value": float(solved)},
                ]
                if solved and rec.solved_step is None and not streams:
                    rec.solved_step = step
                if hit[e]:  # the stream rule holds: the 1997 criterion of success
                    rec.metrics.append({"step": step, "name": "stream_solved", "value": 1.0})
                    rec.solved_step = step
            if probed[e] is not None:
                rec.metrics += [
                    {"step": step, "name": k, "value": v} for k, v in probed[e].scalars.items()
                ]
            if log:
                metric = f"{task.metric_name} {eval_metric:.3g}"
                losses_now = f"train loss {train_loss:.4g}, eval loss {eval_loss:.4g}"
                logger.debug(
                    "step %d/%d: %s, %s",
                    step,
                    s.steps,
                    losses_now,
                    metric,
                    extra={"seed": seeds[e]},
                )
                rec.final = {
                    "step": step,
                    "eval_loss": eval_loss,
                    "eval_metric": eval_metric,
                    "solved": solved,
                    "solved_step": rec.solved_step,
                }
                if stopped(rec, s):  # stop-on-solve: this member is done
                    active[e] = False
        if log and any(active):
            shown = [e for e in range(E) if active[e]]
            train_loss = np.mean([losses[e].item() for e in shown])
            eval_loss = np.mean([evals[e][0] for e in shown])
            bar.set_postfix(loss=f"{train_loss:.4f}", eval=f"{eval_loss:.4f}", refresh=False)

        if step == s.steps or not any(active):
            break
        optimizer.step()
        if s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
            for e, checkpoint in enumerate(checkpoints):
                if checkpoint is not None:
                    checkpoint.save(
                        {
                            "next_step": step + 1,
                            **members.member_state(e, optimizer),
                            "generator": gens[e].get_state(),
                            "records": records[e],
                            "stream": list(streams[e].recent) if streams else [],
                        }
                    )

    bar.close()
    return records
