"""Recurrences whose whole state path is linear and diagonal: minGRU, minLSTM and the LRU.

The LSTM made one path linear and gated: c_t = f_t * c_{t-1} + ... . These cells make the
entire state path so, with gates that read only the input, which lets them train in parallel
over time. Each has the sequential `step` (what the probes differentiate, same interface as
study/model/cells.py) and `scan`, the same function computed for all steps at once:

    minGRU, minLSTM   log-space cumulative sums (Feng et al. 2024, Sec. 3.1, "Were RNNs All We
                      Needed?"): h_t = sum_k (prod_{j=k+1..t} a_j) b_k with a, b > 0, so
                      log h_t = A_t + logcumsumexp_k(log b_k - A_k), A_t = sum_{j<=t} log a_j
                      on CUDA; on the CPU a step loop with its backward written out
                      (LinearRecurrence) from a and b themselves: there the log-space sums'
                      extra work (softplus, exp, logcumsumexp at every step) costs more than
                      the parallelism saves (a training step about 3x faster at H = 32, T = 200)
    LRU               an associative scan (doubling) of s_t = lambda s_{t-1} + b_t: lambda is
                      the same at every step, so after the pass with offset d each s_t sums a
                      window of 2d inputs: s_t += lambda^d s_{t-d}, d = 1, 2, 4, ...

Inputs and readout follow the other cells: W_ih x_t + b_ih for all steps (project_inputs), the
shared linear readout of h_t (study/model/__init__.py). The initial state is zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from study.checks import require_number
from study.model.cells import Cell, hold
from study.model.cut import no_cut, step_scales


def g(x: Tensor) -> Tensor:
    """Feng et al.'s activation for the candidate state: x + 0.5 for x >= 0, sigmoid(x) below;
    continuous, always positive (the log-space scan needs h~ > 0)."""
    return torch.where(x >= 0, F.relu(x) + 0.5, torch.sigmoid(x))


def log_g(x: Tensor) -> Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


def log_space_scan(log_a: Tensor, log_b: Tensor) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t from h_{-1} = 0, for every t at once, from log a and log b
    (B, T, H): h_t = exp(A_t + logcumsumexp_{k<=t}(log b_k - A_k)), A_t = sum_{j<=t} log a_j."""
    A = log_a.cumsum(dim=1)
    return torch.exp(A + torch.logcumsumexp(log_b - A, dim=1))


class LinearRecurrence(torch.autograd.Function):
    """h_t = a_t * h_{t-1} + b_t from h_{-1} = 0, (B, T, H), one step at a time, with the
    backward written out: the gradient runs the same recurrence in reverse,
    g_t = dL/dh_t + a_{t+1} * g_{t+1}, and then dL/db_t = g_t, dL/da_t = g_t * h_{t-1}.
    `scales` (T,), optional: a gradient-path cut's s_t (study/model/cut.py) on h_{t-1}: g_t then
    gets s_{t+1} a_{t+1} g_{t+1}."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scales: Tensor | None = None) -> Tensor:
        a, b = a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous()  # time first
        h = torch.empty_like(b)
        h[0] = b[0]  # h_{-1} = 0
        for t in range(1, len(b)):
            torch.addcmul(b[t], a[t], h[t - 1], out=h[t])
        # a cut (study/model/cut.py) of h_{t-1} in a_t * h_{t-1}: the gradient carried back through
        # it is scaled by s_t; dL/da_t = g_t h_{t-1} is not (it does not pass through h_{t-1})
        carry = a if scales is None else a * step_scales(scales, a)
        ctx.save_for_backward(carry, h)
        return h.transpose(0, 1)

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        carry, h = ctx.saved_tensors
        grad_h = grad_h.transpose(0, 1)
        grad_b = torch.empty_like(h)  # g_t, which is dL/db_t
        grad_b[-1] = grad_h[-1]
        for t in reversed(range(len(h) - 1)):
            torch.addcmul(grad_h[t], carry[t + 1], grad_b[t + 1], out=grad_b[t])
        grad_a = torch.zeros_like(h)
        grad_a[1:] = grad_b[1:] * h[:-1]  # h_{-1} = 0: a_0 gets no gradient
        return grad_a.transpose(0, 1), grad_b.transpose(0, 1), None


def over_batch(fn, *tensors: Tensor) -> Tensor:
    """fn of (N, T, H) tensors applied to (..., T, H) ones: every leading dimension (batch, and
    an ensemble's members before it) as one batch."""
    lead = tensors[0].shape[:-2]
    out = fn(*(t.reshape(-1, *t.shape[-2:]) for t in tensors))
    return out.view(*lead, *out.shape[-2:])


def stacked_inputs(x: Tensor, p: dict[str, Tensor]) -> Tensor:
    """W_ih x_t + b_ih of E members at once: x (E, B, T, I), p the cell's parameters stacked
    (E, ...) -> (E, B, T, G), one batched matmul."""
    E, B, T, I = x.shape
    W, b = p["weight_ih_l0"].transpose(1, 2), p["bias_ih_l0"].unsqueeze(1)
    return torch.baddbmm(b, x.reshape(E, B * T, I), W).view(E, B, T, -1)


class GatedLinearCell(Cell):
    """What minGRU and minLSTM share: h_t = a_t * h_{t-1} + b_t with a, b > 0 from x_t alone,
    computed for all steps at once by each one's `recurrence(gx, log_space, scales)` from the
    projected inputs gx (..., T, G)."""

    def scan(self, x: Tensor, log_space: bool | None = None, scales: Tensor | None = None):
        """h_t for every t, (B, T, H): in log space on CUDA, step by step on the CPU and
        wherever a cut's `scales` are given (the log-space sums cannot carry them)."""
        log_space = x.is_cuda if log_space is None else log_space
        return self.recurrence(self.project_inputs(x), log_space, scales)

    def stacked_scan(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """scan for the E members of an ensemble at once: x (E, B, T, I), p the members' cell
        parameters stacked (E, ...) -> (E, B, T, H)."""
        return self.recurrence(stacked_inputs(x, p), x.is_cuda)


class MinGRUCell(GatedLinearCell):
    """minGRU (Feng et al. 2024, Alg. 5): the GRU with gates of the input alone, no reset gate.

    z_t  = sigmoid(W_z x_t + b_z)          update gate
    h~_t = g(W_h x_t + b_h)                candidate (g > 0, as the paper's log-space form)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t   <- linear, diagonal: dh_t/dh_{t-1} = diag(1 - z_t)
    """

    n_gates, kind, recurrent_weights = 2, "mingru", False
    gate_names = ("z",)
    cut_paths = ("linear",)  # its one path: cut, no credit reaches earlier steps
    linear_path_cut = "linear"

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        (h,) = state
        a_z, a_h = gx.chunk(2, dim=1)
        z = torch.sigmoid(a_z)
        h_new = (1 - z) * cut("linear", h) + z * g(a_h)
        return (hold(h_new, h, keep),), {"z": z}

    @staticmethod
    def recurrence(gx: Tensor, log_space: bool, scales: Tensor | None = None) -> Tensor:
        """h_t for every t from the projected inputs (..., T, 2H)."""
        a_z, a_h = gx.chunk(2, dim=-1)
        if scales is None and log_space:
            # all steps at once: log(1 - z) = -softplus(a_z), log z = -softplus(-a_z), no log
            # of a rounded sigmoid
            return over_batch(log_space_scan, -F.softplus(a_z), -F.softplus(-a_z) + log_g(a_h))
        z = torch.sigmoid(a_z)  # the CPU: one step at a time (module docstring)
        step_loop = lambda a, b: LinearRecurrence.apply(a, b, scales)  # noqa: E731
        return over_batch(step_loop, 1 - z, z * g(a_h))

    def linear_path(self, traj, direct_h: Tensor):
        """The whole state path is linear: the gradient along it alone is the total."""
        z = traj.gates["z"]
        return "h", direct_h, lambda grad, t: (1 - z[t]) * grad


class MinLSTMCell(GatedLinearCell):
    """minLSTM (Feng et al. 2024, Alg. 7): forget and input gates of the input alone,
    normalised so that they sum to one (time-independent scale of h).

        f_t = sigmoid(W_f x_t + b_f),  i_t = sigmoid(W_i x_t + b_i)
        f'_t = f_t / (f_t + i_t),      i'_t = i_t / (f_t + i_t)
        h~_t = g(W_h x_t + b_h)
        h_t  = f'_t * h_{t-1} + i'_t * h~_t      <- linear, diagonal: dh_t/dh_{t-1} = diag(f'_t)

    The gates recorded for the probes are the normalised f' and i'. `forget_bias_shift`
    (model.options): a number added to b_f at initialisation, as the official code's
    `forget_bias_init_scale` (BorealisAI/minRNNs, models/minRNNs.py; its minGRU has none), so
    that f' starts near 1 and h keeps its past.
    """

    n_gates, kind, recurrent_weights = 3, "minlstm", False
    gate_names = ("f", "i")
    cut_paths = ("linear",)  # its one path: cut, no credit reaches earlier steps
    linear_path_cut = "linear"
    init_keys = ("forget_bias_shift",)

    @classmethod
    def check_keys(cls, keys: dict) -> dict:
        if "forget_bias_shift" in keys:
            require_number("model.options.forget_bias_shift", keys["forget_bias_shift"])
        return keys

    @torch.no_grad()
    def initialise(self, recurrent_init="default", recurrent_gain=1.0, forget_bias_shift=None):
        super().initialise(recurrent_init, recurrent_gain)
        if forget_bias_shift is not None:
            self.bias_ih_l0[: self.hidden_size] += forget_bias_shift  # the f block (f, i, h)

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        (h,) = state
        a_f, a_i, a_h = gx.chunk(3, dim=1)
        f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
        f, i = f / (f + i), i / (f + i)
        h_new = f * cut("linear", h) + i * g(a_h)
        return (hold(h_new, h, keep),), {"f": f, "i": i}

    @staticmethod
    def recurrence(gx: Tensor, log_space: bool, scales: Tensor | None = None) -> Tensor:
        """h_t for every t from the projected inputs (..., T, 3H)."""
        a_f, a_i, a_h = gx.chunk(3, dim=-1)
        if scales is None and log_space:
            # f' = sigmoid(log f - log i) = sigmoid(-diff), i' = sigmoid(diff) (the paper's form)
            diff = F.softplus(-a_f) - F.softplus(-a_i)
            return over_batch(log_space_scan, -F.softplus(diff), -F.softplus(-diff) + log_g(a_h))
        f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)  # the CPU: one step at a time
        step_loop = lambda a, b: LinearRecurrence.apply(a, b, scales)  # noqa: E731
        return over_batch(step_loop, f / (f + i), i / (f + i) * g(a_h))

    def linear_path(self, traj, direct_h: Tensor):
        """The whole state path is linear: the gradient along it alone is the total."""
        f = traj.gates["f"]
        return "h", direct_h, lambda grad, t: f[t] * grad


class LRUCell(Cell):
    """Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for
    Long Sequences", Sec. 3), with a complex state s of N = H units stored as [Re s; Im s]:

        lambda_j = exp(-exp(nu_j) + i * theta_j),  theta_j = exp(theta_log_j)   |lambda_j| < 1
        s_t = lambda * s_{t-1} + gamma * (B x_t + b)   <- linear, diagonal: ds_t/ds_{t-1} = Lambda
        gamma_j = exp(gamma_log_j), initialised to sqrt(1 - |lambda_j|^2) (the normalisation)
        h_t = Re(C s_t) + D x_t + d                    (read by the shared readout)

    Ring initialisation (Sec. 3.3): |lambda| uniform on the ring r_min <= |lambda| <= r_max
    (uniform in area), phase uniform in [0, max_phase]. B and C complex Gaussian (variance
    1/(2 I) and 1/N per part, as the paper), D ~ N(0, 1/I). The input projection W_ih stacks
    [Re B; Im B; D] (so `project_inputs` serves it as for the other cells); its bias b_ih,
    zero at initialisation, is a bias on B x (the paper has none) and the output bias d.
    """

    n_gates, kind, recurrent_weights = 3, "lru", False
    state_names = ("h", "s")
    memory = "s"  # the loss at the last step reaches earlier steps through s only
    cut_paths = ("linear",)  # its one path (s_{t-1} into s_t): cut, no credit through time
    linear_path_cut = "linear"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 2 * math.pi,
    ):
        for key, value in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
            require_number(f"model.options.{key}", value)
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(f"model.options: need 0 <= r_min < r_max <= 1, got {r_min}, {r_max}")
        if not 0 < max_phase <= 2 * math.pi:
            raise ValueError(f"model.options.max_phase={max_phase!r} is invalid: in (0, 2 pi]")
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        N = hidden_size
        super().__init__(input_size, hidden_size)
        self.nu_log = nn.Parameter(torch.empty(N))
        self.theta_log = nn.Parameter(torch.empty(N))
        self.gamma_log = nn.Parameter(torch.empty(N))
        self.C_re = nn.Parameter(torch.empty(hidden_size, N))
        self.C_im = nn.Parameter(torch.empty(hidden_size, N))
        self.reset_parameters()

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, 2 * self.hidden_size)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if not hasattr(self, "C_re"):  # Cell.__init__ calls this before the LRU's own exist
            return
        N, H, I = self.hidden_size, self.hidden_size, self.input_size
        u1, u2 = torch.rand(N), torch.rand(N)
        r2 = u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2  # |lambda|^2, uniform in area
        self.nu_log.copy_(torch.log(-0.5 * torch.log(r2.clamp_min(1e-30))))
        self.theta_log.copy_(torch.log((self.max_phase * u2).clamp_min(1e-30)))
        self.gamma_log.copy_(0.5 * torch.log1p(-r2.clamp_max(1 - 1e-12)))
        B_re, B_im, D = self.weight_ih_l0.split([N, N, H], dim=0)
        B_re.normal_(0, 1 / math.sqrt(2 * I))
        B_im.normal_(0, 1 / math.sqrt(2 * I))
        D.normal_(0, 1 / math.sqrt(I))
        self.bias_ih_l0.zero_()
        self.C_re.normal_(0, 1 / math.sqrt(N))
        self.C_im.normal_(0, 1 / math.sqrt(N))

    def eigenvalues(self) -> tuple[Tensor, Tensor, Tensor]:
        """(Re lambda, Im lambda, gamma), each (N,)."""
        return lru_eigenvalues(self.nu_log, self.theta_log, self.gamma_log)

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        h, s = state
        N = self.hidden_size
        bx_re, bx_im, dx = gx.split([N, N, N], dim=1)
        lam_re, lam_im, gamma = self.eigenvalues()
        s_re, s_im = cut("linear", s).chunk(2, dim=1)
        s_new = torch.cat(
            [
                lam_re * s_re - lam_im * s_im + gamma * bx_re,  # Re(lambda s) + gamma Re(B x)
                lam_re * s_im + lam_im * s_re + gamma * bx_im,  # Im(lambda s) + gamma Im(B x)
            ],
            dim=1,
        )
        s_new = hold(s_new, s, keep)
        re, im = s_new.chunk(2, dim=1)
        h_new = hold(re @ self.C_re.t() - im @ self.C_im.t() + dx, h, keep)  # Re(C s) + D x
        return (h_new, s_new), {}

    def scan(self, x: Tensor) -> Tensor:
        params = (self.nu_log, self.theta_log, self.gamma_log, self.C_re, self.C_im)
        return lru_scan(self.project_inputs(x), *params)

    def stacked_scan(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """scan for the E members of an ensemble at once: x (E, B, T, I), p the members' cell
        parameters stacked (E, ...) -> (E, B, T, H)."""
        per_unit = [p[n][:, None, None] for n in ("nu_log", "theta_log", "gamma_log")]
        C = [p[n][:, None] for n in ("C_re", "C_im")]  # (E, 1, H, N): one per member
        return lru_scan(stacked_inputs(x, p), *per_unit, *C)

    def linear_path(self, traj, direct_h: Tensor):
        """The whole state path is linear: ds_t/ds_{t-1} = Lambda, so the gradient goes back
        multiplied by conj(lambda) (on [Re; Im]); it enters through h_t = Re(C s_t)."""
        lam_re, lam_im, _ = self.eigenvalues()
        inject = torch.cat([direct_h @ self.C_re, -(direct_h @ self.C_im)], dim=-1)

        def carry(grad: Tensor, t: int) -> Tensor:
            g_re, g_im = grad.chunk(2, dim=-1)
            return torch.cat([lam_re * g_re + lam_im * g_im, lam_re * g_im - lam_im * g_re], -1)

        return "s", inject, carry

    @torch.no_grad()
    def exact_exponents(self) -> Tensor:
        """A = d[h, s]_t / d[h, s]_{t-1} = [[0, C Lambda], [0, Lambda]] at every step: its
        eigenvalues are lambda_j and conj(lambda_j) (the [Re; Im] pair) and 0 for h, which reads
        s_t and forgets h_{t-1}."""
        lam_re, lam_im, _ = self.eigenvalues()
        log_modulus = 0.5 * torch.log(lam_re**2 + lam_im**2)
        h = log_modulus.new_full((self.hidden_size,), -math.inf)
        return torch.cat([h, log_modulus.repeat(2)])

    @torch.no_grad()
    def recurrent_spectra(self) -> dict[str, dict[str, float]]:
        """Lambda is diagonal (normal): its largest singular value is its spectral radius."""
        lam_re, lam_im, _ = self.eigenvalues()
        radius = float(torch.sqrt(lam_re**2 + lam_im**2).max())
        normal = {"commutator": 0.0, "henrici": 0.0}  # diagonal: normal by construction
        return {"lambda": {"sigma_max": radius, "spectral_radius": radius, **normal}}


def lru_eigenvalues(nu_log: Tensor, theta_log: Tensor, gamma_log: Tensor):
    """(Re lambda, Im lambda, gamma) from the LRU's parameters (any leading dimensions)."""
    modulus, theta = torch.exp(-torch.exp(nu_log)), torch.exp(theta_log)
    return modulus * torch.cos(theta), modulus * torch.sin(theta), torch.exp(gamma_log)


def lru_scan(gx, nu_log, theta_log, gamma_log, C_re, C_im) -> Tensor:
    """The LRU's h_t for every t from the projected inputs gx (..., T, 3N), by the doubling
    scan (module docstring); the parameters broadcast against (..., T, N) (an ensemble's carry
    a member dimension)."""
    N = gx.shape[-1] // 3
    bx_re, bx_im, dx = gx.split([N, N, N], dim=-1)
    lam_re, lam_im, gamma = lru_eigenvalues(nu_log, theta_log, gamma_log)
    s = torch.complex(gamma * bx_re, gamma * bx_im)  # (..., T, N): window of one input
    T, d, power = s.shape[-2], 1, torch.complex(lam_re, lam_im)
    while d < T:  # now each s_t sums a window of d inputs; double it
        s = torch.cat([s[..., :d, :], s[..., d:, :] + power * s[..., :-d, :]], dim=-2)
        d, power = 2 * d, power * power
    return s.real @ C_re.transpose(-1, -2) - s.imag @ C_im.transpose(-1, -2) + dx
