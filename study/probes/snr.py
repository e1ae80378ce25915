"""Gradient signal-to-noise per lag: is the long-lag gradient small, or small and drowned in noise?

The gradient of a minibatch's mean loss with respect to the cell's parameters is a sum over the
steps at which the parameters are used, g = sum_t g_t. g_t is what the graph would give with
every other step's use of the parameters cut; it carries the error that travelled back
k = T-1-t steps from the end (the last position, where the adding problem's loss is) before it
changed a weight.

Over M independent minibatches j of the task,

    signal_k = ||mean_j g_{j,t}||,    noise_k = sqrt(mean_j ||g_{j,t} - mean_j g_{j,t}||^2),

and SNR_k = signal_k / noise_k (NaN where no gradient arrives at all, as at padding). A lag
whose g_t averages to zero (pure noise) still gives SNR ~ 1/sqrt(M), since the mean of M draws
keeps 1/sqrt(M) of their spread.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from study.model import SequenceModel
from study.model.cut import StepCut
from study.tasks.base import Batch, Task


class _Step(nn.Module):
    """One step of a cell from the raw input x_t: its input projection and its recurrence, so
    that a vector-Jacobian product with respect to the cell's parameters covers both."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, x_t: Tensor, state: tuple[Tensor, ...], keep: Tensor | None, cut) -> Tensor:
        gx_t = self.cell.project_inputs(x_t.unsqueeze(1)).squeeze(1)
        return self.cell.step(gx_t, state, keep, **cut)[0]


def per_step_gradients(model: SequenceModel, task: Task, batch: Batch) -> Tensor:
    """(T, P): row t is the gradient of the batch's mean loss with respect to the cell's P
    parameters (flattened in `named_parameters` order) through their use at step t alone.

    Each step reads the parameters through its own zero offset, theta + z_t, so the gradient
    with respect to z_t is exactly step t's share, for all t in one backward pass."""
    cell = model.cell
    B, T, _ = batch.x.shape
    step = _Step(cell)
    params = {f"cell.{n}": p for n, p in cell.named_parameters()}
    offsets = {
        n: torch.zeros((T, *p.shape), dtype=p.dtype, requires_grad=True) for n, p in params.items()
    }
    per_step = {n: z.unbind(0) for n, z in offsets.items()}  # unbind: no T-sized zeros per step
    state, hs = cell.initial_state(B), []
    cut = model.cut_scales(T)  # a gradient-path cut (study/model/cut.py): its expected scales
    for t, x_t in enumerate(batch.x.unbind(dim=1)):
        keep = None if batch.valid is None else batch.valid[:, t, None]
        p_t = {n: p + per_step[n][t] for n, p in params.items()}
        step_cut = {} if cut is None else {"cut": StepCut(cut[0], cut[1][t])}
        state = functional_call(step, p_t, (x_t, state, keep, step_cut))
        hs.append(state[cell.state_names.index("h")])
    y = model.readout(torch.stack(hs, dim=1))
    loss = task.loss(task.select(y), batch).mean()
    grads = torch.autograd.grad(loss, list(offsets.values()))
    return torch.cat([g.reshape(T, -1) for g in grads], dim=1)


def gradient_snr(model: SequenceModel, task: Task, batches: list[Batch]) -> dict[str, Tensor]:
    """{"signal", "noise", "snr"}: each (T,), by position t (lag T-1-t), over the minibatches
    given (independent draws of the task, each of the training batch size)."""
    total, square = None, None
    for batch in batches:
        g = per_step_gradients(model, task, batch).detach()
        total = g if total is None else total + g
        sq = g.pow(2).sum(dim=1)
        square = sq if square is None else square + sq
    M = len(batches)
    signal = (total / M).norm(dim=1)
    # mean ||g - mean||^2 = mean ||g||^2 - ||mean||^2 (rounding can dip it below 0)
    noise = (square / M - signal**2).clamp_min(0).sqrt()
    snr = torch.where(noise > 0, signal / noise.clamp_min(1e-300), float("nan"))  # NaN: no data
    return {"signal": signal, "noise": noise, "snr": snr}
