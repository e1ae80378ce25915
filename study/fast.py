"""Fast paths for training and evaluation: the functions of the explicit cells, computed faster.

    native   torch.nn.RNN/LSTM/GRU run on the cell's own parameters (cuDNN on CUDA, oneDNN's fused
             LSTM kernel on CPU)
    fast     CUDA: native for every cell. CPU: native for the LSTM (its fused kernel beat every
             hand-written loop measured here); for the RNN and GRU, which torch.nn does not fuse on
             CPU, a whole-sequence autograd.Function with a hand-written backward through time

Both return the hidden states h_t of every step, (B, T, H). They do not expose the per-step state
gradients: the probes always run the explicit cells (study/probes.py), on their own schedule.
Variable-length batches (left padding) and the LSTM without a forget gate use the explicit cells.
tests/test_fast.py checks every path against the explicit cells and torch.nn in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from study.cells import Cell

IMPLS = ("explicit", "fast", "native")


def supports(cell: Cell, impl: str) -> bool:
    """Whether `impl` can compute this cell (otherwise the explicit loop is used)."""
    if impl == "explicit":
        return False
    return not (cell.kind == "lstm" and not cell.forget_gate)


def hidden_states(cell: Cell, x: Tensor, impl: str) -> Tensor:
    """h_t for every step, (B, T, H), by the native or the fast path (see the module docstring)."""
    if impl == "native" or x.is_cuda or cell.kind == "lstm":
        return native_module(cell)(x)[0]
    gx = cell.project_inputs(x)
    if cell.kind == "gru":
        return GRUSequence.apply(gx, cell.weight_hh_l0, cell.bias_hh_l0)
    relu = cell.nonlinearity == "relu"
    return RNNSequence.apply(gx, cell.weight_hh_l0, cell.bias_hh_l0, relu)


def native_module(cell: Cell) -> nn.RNNBase:
    """A torch.nn.RNN/LSTM/GRU whose parameters *are* the cell's (the same Parameter objects), so
    gradients land on the cell. Built once per cell and kept outside the module tree, so that
    the parameters are not registered twice."""
    native = cell.__dict__.get("_native")
    if native is None:
        kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell.kind]
        kwargs = {"nonlinearity": cell.nonlinearity} if cell.kind == "rnn" else {}
        native = kind(cell.input_size, cell.hidden_size, batch_first=True, **kwargs)
        cell.__dict__["_native"] = native
    for name, p in cell.named_parameters():  # RNNBase.__setattr__ refreshes its flat weights
        if getattr(native, name) is not p:
            setattr(native, name, p)
    return native


def _tanh(a: Tensor) -> Tensor:
    # tanh(a) = 2 sigmoid(2a) - 1 exactly; torch.tanh is ~10x slower than sigmoid on this CPU
    # (shared/notes/cpu-performance.md).
    return torch.sigmoid(2 * a).mul_(2).sub_(1)


class RNNSequence(torch.autograd.Function):
    """h_t = phi(gx_t + W_hh h_{t-1} + b_hh) over a whole sequence; gx = W_ih x + b_ih precomputed.

    Backward through time by hand: with delta_t = dL/dh_t (the output gradient plus what comes
    back from step t+1), da_t = delta_t * phi'(a_t) and dL/dh_{t-1} gets da_t W_hh. phi' for
    every step is computed before the loop, and the weight gradient is one matmul at the end.
    """

    @staticmethod
    def forward(ctx, gx: Tensor, W_hh: Tensor, b_hh: Tensor, relu: bool) -> Tensor:
        gx = gx.transpose(0, 1) + b_hh  # time-major (T, B, H): contiguous per-step slices
        T, B, H = gx.shape
        W_t = W_hh.t().contiguous()
        hs = gx.new_empty(T, B, H)
        h = gx.new_zeros(B, H)
        for t in range(T):
            a = torch.addmm(gx[t], h, W_t)
            if relu:
                torch.clamp_min(a, 0, out=hs[t])
            else:  # tanh(a) = 2 sigmoid(2a) - 1, written straight into hs[t]
                torch.sigmoid(a.mul_(2), out=hs[t]).mul_(2).sub_(1)
            h = hs[t]
        ctx.relu = relu
        ctx.save_for_backward(hs, W_hh)
        return hs.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_hs: Tensor):
        hs, W_hh = ctx.saved_tensors
        # a private time-major copy: the loop accumulates into it in place
        grad_hs = grad_hs.transpose(0, 1).clone(memory_format=torch.contiguous_format)
        T, B, H = hs.shape
        dphi = (hs > 0).to(hs.dtype) if ctx.relu else 1 - hs * hs  # phi'(a_t), all steps at once
        da = torch.empty_like(hs)
        back = hs.new_zeros(B, H)  # dL/dh_t arriving from step t+1
        for t in range(T - 1, -1, -1):
            torch.mul(grad_hs[t].add_(back), dphi[t], out=da[t])
            back = torch.mm(da[t], W_hh)
        h_prev = torch.cat([hs.new_zeros(1, B, H), hs[:-1]])
        grad_W = da.reshape(-1, H).t() @ h_prev.reshape(-1, H)
        return da.transpose(0, 1), grad_W, da.sum(dim=(0, 1)), None


class GRUSequence(torch.autograd.Function):
    """The GRU (torch's convention, see cells.GRUCell) over a whole sequence, gx precomputed.

    Forward saves r, z, n and W_hn h + b_hn per step. Backward, with delta = dL/dh_t:
        dn = delta (1 - z),  dz = delta (h_{t-1} - n),  da_n = dn (1 - n^2)
        da_r = da_n (W_hn h + b_hn) r (1 - r),  da_z = dz z (1 - z)
        dL/dh_{t-1} = delta z + [da_r, da_z, da_n r] W_hh
    The factors that do not depend on delta are computed for all steps before the loop.
    """

    @staticmethod
    def forward(ctx, gx: Tensor, W_hh: Tensor, b_hh: Tensor) -> Tensor:
        gx = gx.transpose(0, 1).contiguous()
        T, B, G = gx.shape
        H = G // 3
        W_t = W_hh.t().contiguous()
        hs, r_s, z_s, n_s, hn_s = (gx.new_empty(T, B, H) for _ in range(5))
        h = gx.new_zeros(B, H)
        for t in range(T):
            gh = torch.addmm(b_hh, h, W_t)
            x_r, x_z, x_n = gx[t].split(H, dim=1)
            h_r, h_z, h_n = gh.split(H, dim=1)
            r = torch.sigmoid(x_r + h_r, out=r_s[t])
            z = torch.sigmoid(x_z + h_z, out=z_s[t])
            n = torch.sigmoid(torch.addcmul(x_n, r, h_n).mul_(2), out=n_s[t]).mul_(2).sub_(1)
            torch.addcmul(n, z, h - n, out=hs[t])  # (1 - z) n + z h
            hn_s[t] = h_n
            h = hs[t]
        ctx.save_for_backward(hs, r_s, z_s, n_s, hn_s, W_hh)
        return hs.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_hs: Tensor):
        hs, r, z, n, hn, W_hh = ctx.saved_tensors
        # a private time-major copy: the loop accumulates into it in place
        grad_hs = grad_hs.transpose(0, 1).clone(memory_format=torch.contiguous_format)
        T, B, H = hs.shape
        h_prev = torch.cat([hs.new_zeros(1, B, H), hs[:-1]])
        k_n = (1 - z) * (1 - n * n)  # da_n = delta k_n
        k_z = (h_prev - n) * z * (1 - z)  # da_z = delta k_z
        k_r = hn * r * (1 - r)  # da_r = da_n k_r
        d_gh = hs.new_empty(T, B, 3 * H)  # [da_r, da_z, da_n * r]
        d_xn = hs.new_empty(T, B, H)  # da_n (the input half of the n gate has no r)
        back = hs.new_zeros(B, H)
        for t in range(T - 1, -1, -1):
            delta = grad_hs[t].add_(back)
            d_r, d_z, d_n = d_gh[t].split(H, dim=1)
            torch.mul(delta, k_n[t], out=d_xn[t])
            torch.mul(d_xn[t], k_r[t], out=d_r)
            torch.mul(delta, k_z[t], out=d_z)
            torch.mul(d_xn[t], r[t], out=d_n)
            back = torch.addmm(delta * z[t], d_gh[t], W_hh)
        d_gx = torch.cat([d_gh[..., : 2 * H], d_xn], dim=2)
        grad_W = d_gh.reshape(-1, 3 * H).t() @ h_prev.reshape(-1, H)
        return d_gx.transpose(0, 1), grad_W, d_gh.sum(dim=(0, 1))
