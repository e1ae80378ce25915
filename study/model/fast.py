"""Fast paths for training and evaluation: the functions of the explicit cells, computed faster.

    native   torch.nn.RNN/LSTM/GRU run on the cell's own parameters (cuDNN on CUDA, oneDNN's fused
             LSTM kernel on CPU)
    fast     CUDA: native for every cell. CPU: native for the LSTM (its fused kernel beat every
             hand-written loop measured, docs/speed.md); for the RNN and GRU, which torch.nn does
             not fuse on CPU, a whole-sequence autograd.Function with a hand-written backward
             through time; the linear-recurrence cells' `scan` (a step loop on CPU)

The whole-sequence Functions (RNNSequence, GRUSequence, LSTMSequence) take the input and the
cell's four parameters and return h_t for every step. Every tensor may carry a leading *member*
dimension E: then E models with stacked weights run as one (batched matmuls), which is how seed
ensembles train (study/model/ensemble.py). Inside, tensors are laid out (*members, T, B, features):
each step's slice is one contiguous block per member.

Each Function takes the gradient-path cuts of its cell (study/model/cut.py) as optional per-step
scales s_t, (*members, T): the gradient it carries from step t back to step t-1 along the cut path
is multiplied by s_t; the forward pass does not read them.

They do not expose the per-step state gradients: the probes always run the explicit cells
(study.probes), on their own schedule. LSTMSequence also takes the LSTM without a forget gate
(f = 1) and left-padded batches: a padded step holds the zero initial state, so masking c_t is
the explicit cells' hold exactly. Other variable-length batches use the explicit cells.
tests/test_fast.py checks every path against the explicit cells and torch.nn in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from study.model.cells import Cell
from study.model.cut import step_scales

IMPLS = ("explicit", "fast", "native")
NATIVE = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}  # the cells torch.nn also has


def left_padded(valid: Tensor | None) -> bool:
    """Whether a (..., B, T) validity mask pads only at the start of each sequence (False ... False
    True ... True): there the state is held at its zero initial value, which a mask on c_t
    reproduces exactly (LSTMSequence)."""
    return valid is not None and bool((valid[..., 1:] >= valid[..., :-1]).all())


STACKED_SCAN_CPU = ("mingru",)
"""The linear-recurrence cells whose ensembles train faster on the CPU as one stacked scan than
member by member: a gain above 1 at both sizes of study-bench's study_ensemble table (H = 32,
T = 200 and H = 64, T = 1000; tests/test_bench.py checks this against results/bench)."""


def choose_path(
    cell: Cell,
    impl: str,
    device: torch.device,
    padded: bool,
    members: int,
    cut: bool = False,
    left: bool = False,
    stack: bool | None = None,
) -> str:
    """Which code computes the recurrence: the one place where `model.impl` is decided, for a
    single model (members=1) and for a seed ensemble alike.

    explicit  the cell's own loop (study/model/cells.py): impl=explicit, padded batches (but the
              LSTM's left-padded ones: `left`), the LSTM without a forget gate with
              impl=native; cells torch.nn lacks, where they have no scan (or, in an ensemble,
              no stacked one on this device: then each member alone) or with impl=native
    scan      the linear-recurrence cells' `scan` over all steps (study/model/linear_cells.py;
              parallel on CUDA, a step loop with a written-out backward on the CPU); in an
              ensemble on CUDA their `stacked_scan`, every member in one scan
    native    torch.nn on the cell's parameters: impl=native; for impl=fast, the LSTM on CPU
              (oneDNN's fused kernel; ensemble members take turns through it) and, for a single
              model, every cell on CUDA (cuDNN)
    sequence  the whole-sequence Function with a hand-written BPTT: impl=fast otherwise (the RNN
              and GRU on CPU; every cell of an ensemble on CUDA, members stacked), every
              classic cell with a gradient-path cut (torch.nn's kernels cannot cut a path), and
              the LSTM without a forget gate or on left-padded batches (torch.nn has neither)

    With a cut (study/model/cut.py), minGRU/minLSTM's scan runs its step loop on every device, and
    the LRU, whose doubling scan has no per-step gradient to scale, runs the explicit loop.
    stack: whether an ensemble of linear-recurrence cells takes their stacked scan; None = where
    it was measured to pay (STACKED_SCAN_CPU on the CPU, every such cell on CUDA); the benchmark
    times both.
    """
    if impl not in IMPLS:
        raise ValueError(f"model.impl={impl!r} is unknown: allowed {', '.join(IMPLS)}")
    lstm = cell.kind == "lstm"
    if impl == "explicit" or (padded and not (lstm and left)):
        return "explicit"
    if lstm and (padded or not cell.forget_gate):  # what only LSTMSequence computes
        return "explicit" if impl == "native" else "sequence"
    if cell.kind not in NATIVE:  # the linear-recurrence cells: their parallel scan over time
        alone = members == 1 and not (cut and cell.kind == "lru")
        # an ensemble's members in one scan where that was measured to pay, else each alone
        if stack is None:
            stack = torch.device(device).type == "cuda" or cell.kind in STACKED_SCAN_CPU
        stacked = hasattr(cell, "stacked_scan") and not cut and stack
        scan = hasattr(cell, "scan") and impl == "fast" and (alone or stacked)
        return "scan" if scan else "explicit"  # (a cell from outside, a block in an ensemble)
    if impl == "native":
        if cut:
            raise ValueError("model.impl=native cannot cut a gradient path: use fast or explicit")
        return "native"
    if cut:
        return "sequence"
    cuda = torch.device(device).type == "cuda"
    if cell.kind == "lstm" and not cuda:
        return "native"
    return "native" if cuda and members == 1 else "sequence"


def hidden_states(cell: Cell, x: Tensor, path: str, cut=None, valid=None) -> Tensor:
    """h_t for every step, (B, T, H), by the native, sequence or scan path (see choose_path).
    cut: None, or (path name, scales (T,)) of a gradient-path cut (study/model/cut.py). valid: the
    left-padding mask (B, T), on the sequence path of the LSTM only."""
    if path == "scan":
        return cell.scan(x) if cut is None else cell.scan(x, scales=cut[1])
    if path == "native":
        return native_module(cell)(x)[0]
    params = (x, cell.weight_ih_l0, cell.bias_ih_l0, cell.weight_hh_l0, cell.bias_hh_l0)
    if cell.kind == "lstm":
        return sequence("lstm", forget_gate=cell.forget_gate)(*params, cut=cut, valid=valid)
    return sequence(cell.kind, cell.nonlinearity if cell.kind == "rnn" else "tanh")(
        *params, cut=cut
    )


CUT_PATHS = {"rnn": ("hidden",), "lstm": ("hidden", "cell"), "gru": ("hidden", "linear")}
"""The cuttable paths of each Function, in the order of its scale arguments."""


def sequence(kind: str, nonlinearity: str = "tanh", forget_gate: bool = True):
    """The whole-sequence Function of a cell: f(x, W_ih, b_ih, W_hh, b_hh, cut=None) -> hs, each
    with an optional leading member dimension; x is (*members, B, T, I), hs is
    (*members, B, T, H); cut: None or (path name, scales (*members, T)), study/model/cut.py. The
    LSTM's also takes valid=None or a left-padding mask (*members, B, T), and forget_gate."""

    def scales(cut) -> list[Tensor | None]:
        return [cut[1] if cut is not None and cut[0] == p else None for p in CUT_PATHS[kind]]

    if kind == "rnn":
        relu = nonlinearity == "relu"
        return lambda *params, cut=None: RNNSequence.apply(*params, relu, *scales(cut))
    # inside forward, ctx.needs_input_grad is True even under no_grad: ask here whether the
    # factors for the backward are needed at all (evaluation runs without them)
    grad = torch.is_grad_enabled
    if kind == "gru":
        return lambda *params, cut=None: GRUSequence.apply(*params, grad(), *scales(cut))

    def lstm(*params, cut=None, valid=None):
        return LSTMSequence.apply(*params, grad(), *scales(cut), forget_gate, valid)

    return lstm


def native_module(cell: Cell) -> nn.RNNBase:
    """A torch.nn.RNN/LSTM/GRU whose parameters *are* the cell's (the same Parameter objects), so
    gradients land on the cell. Built once per cell and kept outside the module tree, so that
    the parameters are not registered twice."""
    native = cell.__dict__.get("_native")
    if native is None:
        kind = NATIVE[cell.kind]
        kwargs = {"nonlinearity": cell.nonlinearity} if cell.kind == "rnn" else {}
        native = kind(cell.input_size, cell.hidden_size, batch_first=True, **kwargs)
        cell.__dict__["_native"] = native
    for name, p in cell.named_parameters():  # RNNBase.__setattr__ refreshes its flat weights
        if getattr(native, name) is not p:
            setattr(native, name, p)
    weights = native._flat_weights
    if weights[0].is_cuda and len({w.untyped_storage().data_ptr() for w in weights}) > 1:
        # cuDNN reads the weights from one buffer; given separate tensors it copies them at every
        # call (and warns). flatten_parameters moves them into one buffer in place (set_), so the
        # Parameter objects the cell and the optimiser hold stay the same
        native.flatten_parameters()
    return native


# ---- helpers shared by the Functions; every one works with or without a member dimension ----


def _addmm(bias: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """bias + a @ b, for single models (2-d) and stacked members (3-d, batched matmul)."""
    return torch.addmm(bias, a, b) if a.dim() == 2 else torch.baddbmm(bias, a, b)


def _t(w: Tensor) -> Tensor:
    """A contiguous transposed weight (what the matmul kernels run fastest on)."""
    return w.transpose(-2, -1).contiguous()


def _row(b: Tensor) -> Tensor:
    """A bias (*members, G) as a row (*members, 1, G) that broadcasts over the batch."""
    return b.unsqueeze(-2)


def _time_major(x: Tensor) -> Tensor:
    """(*members, B, T, I) -> (*members, T*B, I), contiguous: rows ordered by step, then example."""
    xt = x.transpose(-3, -2).contiguous()
    return xt.flatten(-3, -2)


def _steps(y: Tensor, T: int) -> Tensor:
    """(*members, T*B, F) -> (*members, T, B, F)."""
    return y.unflatten(-2, (T, -1))


def _batch_major(hs: Tensor) -> Tensor:
    """(*members, T, B, H) -> (*members, B, T, H), a view."""
    return hs.transpose(-3, -2)


def _private_time_major(grad_hs: Tensor) -> Tensor:
    """A time-major copy of the incoming gradient that backward may modify in place. Always a
    copy: the incoming tensor can be shared (an add passes one gradient to both its inputs)."""
    return _batch_major(grad_hs).clone(memory_format=torch.contiguous_format)


def _sum_outer(d: Tensor, h: Tensor) -> Tensor:
    """sum over steps and examples of d_tb^T h_tb: (*m, T, B, G), (*m, T, B, H) -> (*m, G, H).
    Computed as (h^T d)^T: with few input features, d^T h ran ~15x slower (on a 2-core x86 CPU,
    torch 2.13)."""
    return (h.flatten(-3, -2).transpose(-2, -1) @ d.flatten(-3, -2)).transpose(-2, -1)


def _input_grads(ctx, D: Tensor, xt: Tensor, W_ih: Tensor):
    """Gradients of x, W_ih and b_ih from D = dL/d(W_ih x_t + b_ih), (*m, T, B, G)."""
    T = D.shape[-3]
    grad_x = None
    if ctx.needs_input_grad[0]:
        grad_x = _batch_major(_steps(D.flatten(-3, -2) @ W_ih, T))
    return grad_x, _sum_outer(D, _steps(xt, T)), D.sum(dim=(-3, -2))


class RNNSequence(torch.autograd.Function):
    """h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) over a whole sequence.

    Backward through time by hand: with delta_t = dL/dh_t (the output gradient plus what comes
    back from step t+1), da_t = delta_t * phi'(a_t) and dL/dh_{t-1} gets da_t W_hh. phi' for
    every step is computed before the loop, and the weight gradients are one matmul each.
    """

    @staticmethod
    def forward(ctx, x, W_ih, b_ih, W_hh, b_hh, relu: bool, hidden=None):
        T = x.shape[-2]
        xt = _time_major(x)
        if relu:
            u = _steps(_addmm(_row(b_ih + b_hh), xt, _t(W_ih)), T)  # input part of a_t, all t
            W_t = _t(W_hh)
            hs = torch.empty_like(u)
            h = u.new_zeros(u[..., 0, :, :].shape)
            for t in range(T):
                h = torch.clamp_min(_addmm(u[..., t, :, :], h, W_t), 0, out=hs[..., t, :, :])
        else:
            # tanh(a) = 2 sigmoid(2a) - 1 (sigmoid ran ~10x cheaper than tanh on 2 CPU cores). Carry
            # s_t = sigmoid(2 a_t) instead of h_t = 2 s_t - 1: then
            #   2 a_t = [2 W_ih x_t + 2 (b_ih + b_hh) - 2 W_hh 1] + 4 W_hh s_{t-1},
            # the bracket for all steps in one matmul, one addmm and one sigmoid per step, and
            # h = 2 s - 1 for all steps after the loop. h_{-1} = 0 is s_{-1} = 1/2.
            bias = 2 * (b_ih + b_hh - W_hh.sum(dim=-1))
            u = _steps(_addmm(_row(bias), xt, _t(2 * W_ih)), T)
            W4_t = _t(4 * W_hh)
            hs = torch.empty_like(u)
            s = u.new_full(u[..., 0, :, :].shape, 0.5)
            for t in range(T):
                s = torch.sigmoid(_addmm(u[..., t, :, :], s, W4_t), out=hs[..., t, :, :])
            hs.mul_(2).sub_(1)
        ctx.relu, ctx.hidden = relu, step_scales(hidden, hs)
        ctx.save_for_backward(xt, W_ih, W_hh, hs)
        return _batch_major(hs)

    @staticmethod
    def backward(ctx, grad_hs):
        xt, W_ih, W_hh, hs = ctx.saved_tensors
        # a private time-major copy: the loop accumulates into it in place
        da = _private_time_major(grad_hs)
        T = hs.shape[-3]
        dphi = (hs > 0).to(hs.dtype) if ctx.relu else 1 - hs * hs  # phi'(a_t), all steps at once
        da.mul_(dphi)  # the output gradient's part of da_t, all steps at once
        back = torch.zeros_like(hs[..., 0, :, :])  # dL/dh_t arriving from step t+1
        for t in range(T - 1, -1, -1):
            da_t = da[..., t, :, :]
            torch.addcmul(da_t, back, dphi[..., t, :, :], out=da_t)  # (delta_t + back) phi'
            back = da_t @ W_hh
            if ctx.hidden is not None:  # the cut of h_{t-1}: its gradient scaled by s_t
                back = back * ctx.hidden[..., t, :, :]
        # dW_hh = sum_t da_t^T h_{t-1}; step 0 contributes nothing (h_{-1} = 0)
        grad_W_hh = _sum_outer(da[..., 1:, :, :], hs[..., :-1, :, :])
        grad_x, grad_W_ih, grad_b = _input_grads(ctx, da, xt, W_ih)
        return grad_x, grad_W_ih, grad_b, grad_W_hh, grad_b.clone(), None, None


class GRUSequence(torch.autograd.Function):
    """The GRU (torch's convention, see cells.GRUCell) over a whole sequence.

    Backward, with delta = dL/dh_t:
        dn = delta (1 - z),  dz = delta (h_{t-1} - n),  da_n = dn (1 - n^2)
        da_r = da_n (W_hn h + b_hn) r (1 - r),  da_z = dz z (1 - z)
        dL/dh_{t-1} = delta z + [da_r, da_z, da_n r] W_hh
    The factors that multiply delta are computed in the forward loop, while they are in cache,
    into K = [k_n r, k_r, k_z, k_n] per step. One broadcast multiply delta * K then gives, in
    one buffer D, both gradients that differ only in the n block: D[0:3] = [da_n r, da_r, da_z]
    (the recurrent pre-activation, against W_hh with its rows in the order n, r, z) and
    D[1:4] = [da_r, da_z, da_n] (the input projection, in torch's order r, z, n).
    """

    @staticmethod
    def forward(ctx, x, W_ih, b_ih, W_hh, b_hh, grad: bool, hidden=None, linear=None):
        T, H = x.shape[-2], W_hh.shape[-1]
        xt = _time_major(x)
        # n = tanh(a_n) = 2 sigmoid(2 a_n) - 1, so the n block runs doubled: 2 a_n =
        # 2 (W_in x + b_in) + r * 2 (W_hn h + b_hn). b_hr and b_hz join the input part.
        one, two = torch.ones_like(b_ih[..., :H]), torch.full_like(b_ih[..., :H], 2.0)
        scale = torch.cat([one, one, two], dim=-1)  # per row of the weights: 1, 1, 2
        zero = torch.zeros_like(b_hh[..., :H])
        gx_bias = scale * (b_ih + torch.cat([b_hh[..., : 2 * H], zero], dim=-1))
        gx = _steps(_addmm(_row(gx_bias), xt, _t(scale.unsqueeze(-1) * W_ih)), T)
        gh_bias = _row(torch.cat([zero, zero, 2 * b_hh[..., 2 * H :]], dim=-1))
        W_t = _t(scale.unsqueeze(-1) * W_hh)

        hs = gx.new_empty(gx.shape[:-1] + (H,))
        rz_s = gx.new_empty(gx.shape[:-1] + (2 * H,))  # r and z of every step
        K = gx.new_empty(gx.shape[:-1] + (4, H)) if grad else None
        ones = torch.ones_like(hs[..., 0, :, :])
        h = torch.zeros_like(ones)
        for t, (gx_t, h_t, rz) in enumerate(zip(*(a.unbind(-3) for a in (gx, hs, rz_s)))):
            gh = _addmm(gh_bias, h, W_t)  # [W_hr h, W_hz h, 2 (W_hn h + b_hn)]
            torch.sigmoid(torch.add(gx_t[..., : 2 * H], gh[..., : 2 * H]), out=rz)
            r, z, gh_n = rz[..., :H], rz[..., H:], gh[..., 2 * H :]
            n = torch.sigmoid(torch.addcmul(gx_t[..., 2 * H :], r, gh_n)).mul_(2).sub_(1)
            h_minus_n = h - n
            if grad:
                k_nr, k_r, k_z, k_n = K[..., t, :, :, :].unbind(-2)
                one_minus_n2 = torch.addcmul(ones, n, n, value=-1)
                torch.addcmul(one_minus_n2, z, one_minus_n2, value=-1, out=k_n)  # (1-z)(1-n^2)
                torch.mul(k_n, r, out=k_nr)
                d_rz = torch.addcmul(rz, rz, rz, value=-1)  # sigmoid' = s (1 - s)
                torch.mul(k_n, gh_n, out=k_r).mul_(d_rz[..., :H]).mul_(0.5)  # gh_n is doubled
                torch.mul(h_minus_n, d_rz[..., H:], out=k_z)
            h = torch.addcmul(n, z, h_minus_n, out=h_t)  # (1 - z) n + z h
        if grad:
            ctx.save_for_backward(xt, W_ih, W_hh, hs, rz_s, K)
            ctx.hidden, ctx.linear = step_scales(hidden, hs), step_scales(linear, hs)
        return _batch_major(hs)

    @staticmethod
    def backward(ctx, grad_hs):
        xt, W_ih, W_hh, hs, rz, K = ctx.saved_tensors
        H = W_hh.shape[-1]
        # a private time-major copy; the loop turns delta[t] into dL/dh_t in place
        delta = _private_time_major(grad_hs)
        W_nrz = torch.cat([W_hh[..., 2 * H :, :], W_hh[..., : 2 * H, :]], dim=-2)
        D = torch.empty_like(K)
        back = torch.zeros_like(hs[..., 0, :, :])
        steps = zip(delta.unbind(-3), rz[..., H:].unbind(-3), K.unbind(-4), D.unbind(-4))
        cut = ctx.hidden is not None or ctx.linear is not None
        for t, (d, z, K_t, D_t) in reversed(list(enumerate(steps))):
            d.add_(back)
            torch.mul(d.unsqueeze(-2), K_t, out=D_t)  # all four blocks in one op
            if not cut:
                back = _addmm(d * z, D_t[..., :3, :].flatten(-2), W_nrz)
                continue
            # a cut: the direct term d z (path "linear") and the term through r, z and n
            # (path "hidden") reach h_{t-1} each scaled by its own s_t
            direct, gates = d * z, D_t[..., :3, :].flatten(-2) @ W_nrz
            if ctx.linear is not None:
                direct = direct * ctx.linear[..., t, :, :]
            if ctx.hidden is not None:
                gates = gates * ctx.hidden[..., t, :, :]
            back = direct + gates
        D_h = D[..., :3, :].flatten(-2)  # [da_n r, da_r, da_z]: rows n, r, z of W_hh
        D_x = D[..., 1:, :].flatten(-2)  # [da_r, da_z, da_n]: dL/d(W_ih x + b_ih)
        # dW_hh = sum_t D_h,t^T h_{t-1}; step 0 contributes nothing (h_{-1} = 0)
        grad_W_hh = _sum_outer(D_h[..., 1:, :, :], hs[..., :-1, :, :]).roll(-H, dims=-2)
        grad_b_hh = D_h.sum(dim=(-3, -2)).roll(-H, dims=-1)  # back to the order r, z, n
        grad_x, grad_W_ih, grad_b_ih = _input_grads(ctx, D_x, xt, W_ih)
        return grad_x, grad_W_ih, grad_b_ih, grad_W_hh, grad_b_hh, None, None, None


class LSTMSequence(torch.autograd.Function):
    """The LSTM (torch's order i, f, g, o) over a whole sequence. The single model trains
    through torch.nn.LSTM (oneDNN's fused kernel) where it can; this is for stacked members,
    cuts, the LSTM without a forget gate (forget_gate=False: f = 1, its block unused) and
    left-padded batches (valid: a padded step keeps c = 0, hence h = o tanh(0) = 0: the zero
    initial state held, as the explicit cell's hold; its gradient is masked alike).

    Backward, with dh = dL/dh_t and the cell path's carry dc' = dL/dc_{t+1} f_{t+1}:
        dc = dc' + dh o (1 - tanh^2 c)
        da_i = dc g i (1 - i),  da_f = dc c_{t-1} f (1 - f),  da_g = dc i (1 - g^2),
        da_o = dh tanh(c) o (1 - o),  dL/dh_{t-1} = da W_hh,  carry dc f to step t-1.
    The forward loop stores what multiplies dc and dh: K = [g i(1-i), c_{t-1} f(1-f), i(1-g^2),
    tanh(c) o(1-o)] and k_c = o (1 - tanh^2 c).
    """

    @staticmethod
    def forward(
        ctx, x, W_ih, b_ih, W_hh, b_hh, grad: bool, hidden=None, cell=None, forget_gate=True,
        valid=None,
    ):  # fmt: skip
        T, H = x.shape[-2], W_hh.shape[-1]
        xt = _time_major(x)
        # the left-padding mask, time-major (*members, T, B, 1), in x's dtype
        keep = None if valid is None else valid.transpose(-2, -1).unsqueeze(-1).to(x.dtype)
        # g = tanh(a_g) = 2 sigmoid(2 a_g) - 1: the g block runs doubled, so that one sigmoid
        # covers all four gates.
        one = torch.ones_like(b_ih[..., :H])
        scale = torch.cat([one, one, 2 * one, one], dim=-1)
        gx = _steps(_addmm(_row(scale * (b_ih + b_hh)), xt, _t(scale.unsqueeze(-1) * W_ih)), T)
        W_t = _t(scale.unsqueeze(-1) * W_hh)

        hs = gx.new_empty(gx.shape[:-1] + (H,))
        if grad:
            f_s, k_c = torch.empty_like(hs), torch.empty_like(hs)
            K = gx.new_empty(gx.shape[:-1] + (4, H))
        h = torch.zeros_like(hs[..., 0, :, :])
        c = torch.zeros_like(h)
        for t in range(T):
            a = torch.sigmoid(_addmm(gx[..., t, :, :], h, W_t))
            i, f, g, o = a.unflatten(-1, (4, H)).unbind(dim=-2)
            if not forget_gate:
                f = torch.ones_like(f)
            g = g.mul(2).sub_(1)
            c_prev, c = c, torch.addcmul(f * c, i, g)
            if keep is not None:
                c = c.mul_(keep[..., t, :, :])  # a padded step holds the zero state
            sc = torch.sigmoid(2 * c)
            tc = sc.mul(2).sub_(1)  # tanh(c)
            h = torch.mul(o, tc, out=hs[..., t, :, :])
            if grad:
                K_t = K[..., t, :, :, :]
                d_a = a * (1 - a)  # sigmoid' of every gate (the g block's is unused)
                torch.mul(g, d_a[..., :H], out=K_t[..., 0, :])
                torch.mul(c_prev, d_a[..., H : 2 * H], out=K_t[..., 1, :])
                if not forget_gate:
                    K_t[..., 1, :] = 0  # f = 1 is no function of its block
                torch.mul(i, 1 - g * g, out=K_t[..., 2, :])
                torch.mul(tc, d_a[..., 3 * H :], out=K_t[..., 3, :])
                torch.mul(o, sc * (1 - sc), out=k_c[..., t, :, :]).mul_(4)  # 1-tanh^2 = 4 s(1-s)
                f_s[..., t, :, :] = f
        if grad:
            ctx.save_for_backward(xt, W_ih, W_hh, hs, f_s, k_c, K)
            ctx.hidden, ctx.cell = step_scales(hidden, hs), step_scales(cell, hs)
            ctx.keep = keep
        return _batch_major(hs)

    @staticmethod
    def backward(ctx, grad_hs):
        xt, W_ih, W_hh, hs, f, k_c, K = ctx.saved_tensors
        T = hs.shape[-3]
        delta = _private_time_major(grad_hs)  # private copy: dh accumulates in place
        D = torch.empty_like(K)
        back = torch.zeros_like(hs[..., 0, :, :])
        carry = torch.zeros_like(back)  # dL/dc_{t+1} f_{t+1}
        for t in range(T - 1, -1, -1):
            dh = delta[..., t, :, :].add_(back)
            dc = torch.addcmul(carry, dh, k_c[..., t, :, :])
            if ctx.keep is not None:
                dc.mul_(ctx.keep[..., t, :, :])  # c_t = keep * (f c + i g)
            K_t, D_t = K[..., t, :, :, :], D[..., t, :, :, :]
            torch.mul(dc.unsqueeze(-2), K_t[..., :3, :], out=D_t[..., :3, :])
            torch.mul(dh, K_t[..., 3, :], out=D_t[..., 3, :])
            carry = dc.mul_(f[..., t, :, :])
            back = D_t.flatten(-2) @ W_hh
            if ctx.cell is not None:  # the cut of c_{t-1} in f_t * c_{t-1}: scaled by s_t
                carry.mul_(ctx.cell[..., t, :, :])
            if ctx.hidden is not None:  # the cut of h_{t-1} in the gates and g
                back = back * ctx.hidden[..., t, :, :]
        D = D.flatten(-2)  # dL/da for a = W_ih x + b_ih + W_hh h + b_hh
        grad_W_hh = _sum_outer(D[..., 1:, :, :], hs[..., :-1, :, :])
        grad_x, grad_W_ih, grad_b = _input_grads(ctx, D, xt, W_ih)
        return grad_x, grad_W_ih, grad_b, grad_W_hh, grad_b.clone(), None, None, None, None, None
