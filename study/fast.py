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
        hs = gx.new_empty(T, B, H)
        if relu:
            W_t, h = W_hh.t().contiguous(), gx.new_zeros(B, H)
            for t in range(T):
                h = torch.clamp_min(torch.addmm(gx[t], h, W_t), 0, out=hs[t])
        else:
            # tanh(a) = 2 sigmoid(2a) - 1 (sigmoid is ~10x cheaper than tanh on this CPU). Carry
            # s_t = sigmoid(2 a_t) instead of h_t = 2 s_t - 1: then
            #   2 a_{t+1} = 2 (gx_{t+1} + b_hh - W_hh 1) + 4 W_hh s_t,
            # one addmm and one sigmoid per step; h = 2 s - 1 for all steps after the loop.
            u0 = 2 * (gx - W_hh.sum(dim=1))
            W4_t = (4 * W_hh).t().contiguous()
            s = torch.sigmoid(2 * gx[0], out=hs[0])  # h_{-1} = 0: the first step has no W term
            for t in range(1, T):
                s = torch.sigmoid(torch.addmm(u0[t], s, W4_t), out=hs[t])
            hs.mul_(2).sub_(1)
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
        da = grad_hs.mul_(dphi)  # the output gradient's part of da_t, all steps at once
        back = hs.new_zeros(B, H)  # dL/dh_t arriving from step t+1
        for t in range(T - 1, -1, -1):
            torch.addcmul(da[t], back, dphi[t], out=da[t])  # da_t = (g_t + back) phi'(a_t)
            back = torch.mm(da[t], W_hh)
        # dW_hh = sum_t da_t^T h_{t-1}; step 0 contributes nothing (h_{-1} = 0)
        grad_W = da[1:].reshape(-1, H).t() @ hs[:-1].reshape(-1, H)
        return da.transpose(0, 1), grad_W, da.sum(dim=(0, 1)), None


class GRUSequence(torch.autograd.Function):
    """The GRU (torch's convention, see cells.GRUCell) over a whole sequence, gx precomputed.

    Forward saves r, z, n and W_hn h + b_hn per step. Backward, with delta = dL/dh_t:
        dn = delta (1 - z),  dz = delta (h_{t-1} - n),  da_n = dn (1 - n^2)
        da_r = da_n (W_hn h + b_hn) r (1 - r),  da_z = dz z (1 - z)
        dL/dh_{t-1} = delta z + [da_r, da_z, da_n r] W_hh
    The factors that do not depend on delta are computed for all steps before the loop, so each
    step is one broadcast multiply and one matmul.
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
        # a private time-major copy; the loop turns delta[t] into dL/dh_t in place
        delta = grad_hs.transpose(0, 1).clone(memory_format=torch.contiguous_format)
        T, B, H = hs.shape
        h_prev_minus_n = torch.empty_like(n)
        h_prev_minus_n[0] = -n[0]  # h_{-1} = 0
        torch.sub(hs[:-1], n[1:], out=h_prev_minus_n[1:])
        k_n = (1 - z) * (1 - n * n)  # da_n = delta k_n
        # what multiplies delta in each block of the recurrent pre-activation [r, z, n]:
        # da_r = delta k_n (W_hn h + b_hn) r (1 - r),  da_z = delta (h_prev - n) z (1 - z),  da_n r
        K = torch.stack([k_n * hn * r * (1 - r), h_prev_minus_n * z * (1 - z), k_n * r], dim=2)
        d_gh = hs.new_empty(T, B, 3, H)
        back = hs.new_zeros(B, H)
        for t in range(T - 1, -1, -1):
            d = delta[t].add_(back)
            torch.mul(d.unsqueeze(1), K[t], out=d_gh[t])  # all three blocks in one op
            back = torch.addmm(d * z[t], d_gh[t].view(B, 3 * H), W_hh)
        d_gh = d_gh.view(T, B, 3 * H)
        d_gx = torch.cat([d_gh[..., : 2 * H], delta * k_n], dim=2)
        # dW_hh = sum_t d_gh_t^T h_{t-1}; step 0 contributes nothing (h_{-1} = 0)
        grad_W = d_gh[1:].reshape(-1, 3 * H).t() @ hs[:-1].reshape(-1, H)
        return d_gx.transpose(0, 1), grad_W, d_gh.sum(dim=(0, 1))
