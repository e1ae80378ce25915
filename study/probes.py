"""Gradient-flow probes: per-example norms of dL/ds_t for each state s and position t, as tidy rows.

"Total" gradient means everything that reaches s_t from the loss: through the readout at this
and later steps and back through the recurrence. For the LSTM, dL/dc_t includes the same-step
path through h_t = o_t * tanh(c_t), as in the usual BPTT delta. Norms are per example (the
gradient of that example's own loss, not of the batch mean) so they do not depend on the batch
size, then summarised over the batch by mean, median and the 10th/90th percentiles.
Left-padded positions are left out. Probes run in float64 on a copy of the model, on the batch
of the step they describe.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from study.model import SequenceModel, Trajectory
from study.tasks.base import Batch, Task

STATS = {"mean": None, "median": 0.5, "q10": 0.1, "q90": 0.9}  # statistic -> quantile


def batch_summary(values: Tensor, valid: Tensor | None = None) -> dict[str, np.ndarray]:
    """values: (B, T) per-example numbers -> {stat: (T,)} over the batch, ignoring padding."""
    v = values.detach().double()
    if valid is not None:
        v = v.masked_fill(~valid, float("nan"))
    out = {}
    for stat, q in STATS.items():
        s = v.nanmean(dim=0) if q is None else v.nanquantile(q, dim=0)
        out[stat] = s.cpu().numpy()
    return out


def tidy(step: int, quantity: str, summaries: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """{state: {stat: (T,)}} -> rows (step, quantity, state, position, lag, stat, value)."""
    frames = []
    for state, by_stat in summaries.items():
        for stat, values in by_stat.items():
            T = len(values)
            frames.append(
                pd.DataFrame(
                    {
                        "step": step,
                        "quantity": quantity,
                        "state": state,
                        "position": np.arange(T),
                        "lag": T - 1 - np.arange(T),
                        "stat": stat,
                        "value": values,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def gradient_flow(
    model: SequenceModel, task: Task, batch: Batch, dtype: torch.dtype = torch.float64
) -> tuple[Trajectory, dict[str, Tensor]]:
    """Per-example ||dl_b/ds_t||, (B, T) for every state s, on a copy of the model in `dtype`.

    float64 by default: a tanh RNN's gradient shrinks by ~0.5 per step at initialisation, which
    leaves float32's range (~1e-38) within about a hundred steps; the probe reports the value of
    the derivative, not where float32 happens to flush it to zero. Training is untouched: it
    does its own float32 backward pass. Differentiating the *sum* of per-example losses gives
    each example's own gradient, since s_t of example b influences only l_b.
    """
    probe_model = copy.deepcopy(model).to(dtype)
    cast = lambda t: t.to(dtype) if t is not None and t.is_floating_point() else t  # noqa: E731
    b = Batch(*(cast(getattr(batch, k)) for k in batch.__dataclass_fields__))
    traj = probe_model(b.x, b.valid)
    loss_sum = task.loss(task.select(traj.y), b).sum()
    names = list(traj.states)
    grads = torch.autograd.grad(loss_sum, [s for name in names for s in traj.states[name]])
    T = b.x.shape[1]
    norms = {
        name: torch.stack([g.norm(dim=-1) for g in grads[k * T : (k + 1) * T]], dim=1)
        for k, name in enumerate(names)
    }
    return traj, norms
