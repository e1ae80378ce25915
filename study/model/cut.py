"""Gradient-path cuts: keep the forward pass bit for bit, stop (or scale) the gradient along one
recurrent path. The study's causal test (docs/study.md, "The causal test").

A cell names its recurrent paths in `cut_paths`; a cut acts on the use of the previous state
s_{t-1} inside step t, never on the state itself:

    LSTM  cell     c_t = f_t * sg(c_{t-1}) + i_t * g_t       no credit along the linear cell path
          hidden   sg(h_{t-1}) in every gate and in g        credit along the cell path only
                                                             (the 1997 paper's truncated gradient)
    GRU   linear   h_t = (1 - z_t) * n_t + z_t * sg(h_{t-1})  no credit along the direct path
          hidden   sg(h_{t-1}) inside r, z and n             credit along the direct path only
    RNN   hidden   the one path: no credit through time at all (the control)
    minGRU, minLSTM, LRU   linear   the one path: the same control

`linear` names every gated cell's linear path (the LSTM's `cell`), so one sweep over
`model.cut=null,linear,hidden` covers the LSTM and the GRU alike. sg is a stop-gradient. The
dose: `scale` alpha in [0, 1] multiplies the cut path's gradient (0 = stopped), and with `prob`
p < 1 each step is cut with probability p and left whole otherwise (h-detach, Kanuparthi et al.
2019, has p per step and alpha = 0). So each step t has a gradient scale s_t: alpha where cut,
1 where not.

Every path computes the same s_t: the explicit cells through `ScaleGrad` at the point where
s_{t-1} enters the step, the whole-sequence Functions (study/model/fast.py,
study/model/linear_cells.py) by multiplying the gradient they carry from step t to t-1 by s_t.
Training draws a stochastic cut's s_t afresh at every update from its own stream (study/train.py);
evaluation needs none (the forward pass does not depend on s); the probes use E[s_t] = 1 - p (1 -
alpha) at every step, which gives the *expected* gradient exactly: the gradient is a sum of products
over steps, each product linear in each s_t, and the s_t are independent.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class ScaleGrad(torch.autograd.Function):
    """The identity forward (the same tensor values, bit for bit); backward multiplies the
    gradient by `scale`: at scale 0 this is a stop-gradient, sg(x)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype), None


def no_cut(path: str, x: Tensor) -> Tensor:
    """What a cell's step calls where no cut is set: every path whole."""
    return x


class StepCut:
    """The cut of one step, as a cell's `step` calls it: cut(path, s_prev) -> s_prev, its
    gradient scaled by this step's s_t when `path` is the cut path."""

    def __init__(self, path: str, scale: Tensor):
        self.path, self.scale = path, scale

    def __call__(self, path: str, x: Tensor) -> Tensor:
        return ScaleGrad.apply(x, self.scale) if path == self.path else x


@dataclass(frozen=True)
class Cut:
    """A cut: which path, its gradient scale alpha where cut, and the probability p per step."""

    path: str
    scale: float = 0.0
    prob: float = 1.0

    def expected(self) -> float:
        """E[s_t] = p alpha + (1 - p): the per-step scale of the expected gradient."""
        return 1.0 - self.prob * (1.0 - self.scale)

    def scales(self, T: int, generator: torch.Generator | None = None) -> Tensor:
        """s_t for t = 0..T-1, float64 (T,): drawn from `generator` for a stochastic cut, the
        expected scale without one (exact where p = 1)."""
        if generator is None or self.prob == 1.0:
            return torch.full((T,), self.expected(), dtype=torch.float64)
        cut = torch.rand(T, generator=generator, dtype=torch.float64) < self.prob
        return torch.where(cut, self.scale, 1.0).to(torch.float64)


def make_cut(cell_class, path, scale, prob) -> Cut | None:
    """The model's cut from its config keys (model.cut, model.cut_scale, model.cut_prob), or
    None; a bad value raises ValueError naming the key and what is allowed."""
    if path is None:
        if scale is not None or prob is not None:
            raise ValueError("model.cut_scale / model.cut_prob need model.cut (the path to cut)")
        return None
    allowed = getattr(cell_class, "cut_paths", ())
    linear = getattr(cell_class, "linear_path_cut", None)
    if linear is not None and "linear" not in allowed:
        allowed = (*allowed, "linear")  # every gated cell's linear path (the LSTM's cell path)
    name = getattr(cell_class, "kind", cell_class.__name__)
    if path not in allowed:
        paths = ", ".join(allowed) if allowed else "none (this cell has no cut)"
        raise ValueError(f"model.cut={path!r} is not a path of cell={name}: allowed {paths}")
    for key, value, default in (("cut_scale", scale, 0.0), ("cut_prob", prob, 1.0)):
        ok = value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
        )
        if not ok:
            bad = f"model.{key}={value!r} is invalid"
            raise ValueError(f"{bad}: a number in [0, 1] (null = {default})")
    if path == "linear":
        path = linear
    scale = 0.0 if scale is None else float(scale)
    prob = 1.0 if prob is None else float(prob)
    if prob == 0.0 or scale == 1.0:
        raise ValueError(
            f"model.cut={path} with cut_scale={scale}, cut_prob={prob} cuts nothing: "
            "set cut_scale < 1 and cut_prob > 0, or drop model.cut"
        )
    return Cut(path, scale, prob)


def step_scales(scales: Tensor | None, like: Tensor) -> Tensor | None:
    """s_t laid out for the Functions' backward loops: (*members, T) -> (*members, T, 1, 1) in
    the dtype and on the device of `like`, so that scales[..., t, :, :] broadcasts over (B, H)."""
    if scales is None:
        return None
    return scales.to(dtype=like.dtype, device=like.device)[..., None, None]
