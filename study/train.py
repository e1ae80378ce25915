"""The training loop: seeded on-the-fly batches, optimiser steps, and records at step 0 and every
`log_every` steps (losses, global gradient norm, gradient flow). Knows nothing of Hydra or files."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from study.model import SequenceModel
from study.probes import ProbeSettings, run_probes
from study.tasks.base import Batch, Task


@dataclass
class TrainSettings:
    steps: int = 2000  # optimiser updates; 0 = analyse the initialisation only
    batch_size: int = 64  # sequences per update
    log_every: int = 100  # record metrics and gradient flow at step 0, every log_every, and the end
    eval_size: int = 10_000  # fixed evaluation sequences per seed
    eval_chunk: int = 1_000  # evaluation batch size (bounds memory at long T)
    clip_norm: float | None = 1.0  # clip the global gradient norm to this; None = no clipping
    checkpoint_every: int = 500  # save a resumable checkpoint every this many steps; 0 = never

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
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"train.{key}={value!r} is invalid: must be an integer >= {low}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"train.clip_norm={self.clip_norm!r} is invalid: must be > 0 or null")


@dataclass
class Records:
    """What a run produced: its status and two tidy tables."""

    status: str = "completed"  # completed | diverged
    metrics: list[dict] = field(default_factory=list)  # rows (step, name, value)
    flow: list[pd.DataFrame] = field(default_factory=list)  # per-position probe rows
    evidence: list[pd.DataFrame] = field(default_factory=list)  # gradient at evidence positions
    weights: list[pd.DataFrame] = field(default_factory=list)  # spectra of W_hh
    final: dict = field(default_factory=dict)  # last evaluation and whether the task is solved

    def metrics_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.metrics, columns=["step", "name", "value"])

    def flow_frame(self) -> pd.DataFrame:
        return _concat(self.flow)

    def evidence_frame(self) -> pd.DataFrame:
        return _concat(self.evidence)

    def weights_frame(self) -> pd.DataFrame:
        return _concat(self.weights)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class Checkpoint(Protocol):
    """Where a run keeps its resumable state (see rundir.CheckpointFile)."""

    def load(self) -> dict | None: ...
    def save(self, state: dict) -> None: ...


def stream_seed(seed: int, stream: str) -> int:
    """Independent, reproducible seeds for the data streams of one run seed."""
    words = [seed, *map(ord, stream)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def data_generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream))


@torch.no_grad()
def evaluate(model: SequenceModel, task: Task, batch: Batch, chunk: int) -> tuple[float, float]:
    """Mean loss and metric over a (large) evaluation batch, `chunk` sequences at a time."""
    loss_sum = metric_sum = 0.0
    n = batch.x.shape[0]
    for start in range(0, n, chunk):
        part = batch[start : start + chunk]
        y_hat = task.select(model.predict(part.x, part.valid))
        loss_sum += task.loss(y_hat, part).double().sum().item()
        metric_sum += task.metric(y_hat, part).double().sum().item()
    return loss_sum / n, metric_sum / n


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
    s, probes = settings, probes or ProbeSettings()
    gen = data_generator(seed, "train")
    model.to(device)
    eval_batch = task.sample(s.eval_size, data_generator(seed, "eval")).to(device)
    params = list(model.parameters())
    optimizer = make_optimizer(params)
    records, start = Records(), 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        records, start = saved["records"], saved["next_step"]

    disable = None if progress is None else not progress
    bar = tqdm(
        range(start, s.steps + 1), desc="train", initial=start, total=s.steps + 1, disable=disable
    )
    for step in bar:
        batch = task.sample(s.batch_size, gen).to(device)
        log = step % s.log_every == 0 or step == s.steps
        ends = step in (0, s.steps)
        probe = log if probes.every == 0 else ends or step % probes.every == 0
        probed = None
        if probe:  # probe the model as it is before this step's update
            every = probes.jacobian_every
            jac = ends or (every > 0 and step % every == 0)
            probed = run_probes(model, task, batch, step, probes, jacobians=jac)
            records.flow.append(probed.flow)
            records.evidence.append(probed.evidence)
            records.weights.append(probed.weights)
        loss = task.loss(task.select(model.predict(batch.x, batch.valid)), batch).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

        if s.clip_norm is None:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, s.clip_norm)
        train_loss, grad_norm = loss.item(), grad_norm.item()

        if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
            records.metrics += [
                {"step": step, "name": "train_loss", "value": train_loss},
                {"step": step, "name": "grad_norm", "value": grad_norm},
            ]
            records.status = "diverged"
            records.final = {"diverged_at_step": step}
            break

        if log:
            eval_loss, eval_metric = evaluate(model, task, eval_batch, s.eval_chunk)
            records.metrics += [
                {"step": step, "name": "train_loss", "value": train_loss},
                {"step": step, "name": "grad_norm", "value": grad_norm},
                {"step": step, "name": "eval_loss", "value": eval_loss},
                {"step": step, "name": "eval_metric", "value": eval_metric},
            ]
        if probed is not None:
            records.metrics += [
                {"step": step, "name": k, "value": v} for k, v in probed.scalars.items()
            ]
        if log:
            records.final = {
                "step": step,
                "eval_loss": eval_loss,
                "eval_metric": eval_metric,
                "solved": bool(task.solved(eval_loss, eval_metric)),
            }
            bar.set_postfix(loss=f"{train_loss:.4f}", eval=f"{eval_loss:.4f}", refresh=False)

        if step == s.steps:
            break
        optimizer.step()
        if checkpoint is not None and s.checkpoint_every and (step + 1) % s.checkpoint_every == 0:
            checkpoint.save(
                {
                    "next_step": step + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state(),
                    "records": records,
                }
            )

    bar.close()
    return records
