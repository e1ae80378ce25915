"""The three recurrences, written from their equations: vanilla RNN, LSTM and GRU.

Each cell owns only its recurrence. Parameters carry torch.nn's single-layer names and shapes
(`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, gate blocks stacked in torch's order),
so a cell loads the `state_dict` of `torch.nn.RNN/LSTM/GRU(num_layers=1)` and vice versa.

The input half of every gate, W_ih x_t + b_ih, does not depend on the state, so `project_inputs`
computes it for all time steps in one matmul; `step` does only the recurrent part. A state is a
tuple of tensors (h,) or (h, c); `step` also returns the gate activations so that probes can
read them without re-running the cell.

`cut` (study/model/cut.py), optional: the gradient-path cut of this step; `step` passes the previous
state through cut(path, s_{t-1}) where it enters each of the cell's `cut_paths`, which changes
the gradient along that path and nothing in the forward pass.

`keep` (B, 1) bool, optional: where False (a left-padded step of a shorter sequence) the state is
carried over unchanged. It is applied inside the step, to c before h = o * tanh(c) reads it, so that
the state a probe differentiates is the very tensor the next step and the readout use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from study.checks import require_number
from study.model.cut import no_cut

CHRONO_MAX = 1e7
"""The largest chrono T_max: a keep-gate bias log(T_max) above ~16 rounds sigmoid to 1 in
float32, so any larger T_max initialises the same network."""


def hold(new: Tensor, old: Tensor, keep: Tensor | None) -> Tensor:
    """The new state where `keep`, the old one elsewhere (left padding holds the state)."""
    return new if keep is None else torch.where(keep, new, old)


class Cell(nn.Module):
    """What every cell shares: the input projection, the zero initial state, the default init.

    A new cell (study/model/linear_cells.py, or one outside the repository) subclasses this: it sets
    `n_gates`, `kind`, the names of its states and gates, and writes `step`; with
    `recurrent_weights = False` it has no W_hh. `memory` names the state that carries
    information across steps (what the effective horizon reads)."""

    n_gates: int  # how many H-sized blocks the weights stack (1 RNN, 4 LSTM, 3 GRU)
    state_names: tuple[str, ...] = ("h",)
    gate_names: tuple[str, ...] = ()
    block_names: str = ""  # names of W_hh's H x H blocks, in order (for the weights table)
    recurrent_weights: bool = True  # False: no W_hh, b_hh (the linear-recurrence cells)
    memory: str = "h"
    cut_paths: tuple[str, ...] = ()  # the recurrent paths `model.cut` can cut (study/model/cut.py)
    linear_path_cut: str | None = None  # which of them is the path `linear_path` follows
    init_keys: tuple[str, ...] = ()  # the model.* keys `initialise` takes besides recurrent_*
    kind: str

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        G = self.n_gates * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(G, input_size))
        if self.recurrent_weights:
            self.weight_hh_l0 = nn.Parameter(torch.empty(G, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(G))
        if self.recurrent_weights:
            self.bias_hh_l0 = nn.Parameter(torch.empty(G))
        self.reset_parameters()

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """The width of each state in `state_names` (H each unless a cell says otherwise)."""
        return (self.hidden_size,) * len(self.state_names)

    def reset_parameters(self) -> None:
        """PyTorch's default for all recurrent layers: every entry ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def check_keys(cls, keys: dict) -> dict:
        """The model.* keys set for this cell (its constructor's and its init_keys), checked
        together before anything is built; returned normalised. A cell with keys that depend on
        each other checks them here."""
        return keys

    @torch.no_grad()
    def initialise(self, recurrent_init: str = "default", recurrent_gain: float = 1.0) -> None:
        """The init options, applied once the whole model is built (so that the readout's draws
        come where they always did). recurrent_init orthogonal | identity (IRNN, Le et al. 2015)
        sets every H x H gate block of W_hh, scaled by recurrent_gain; identity also zeroes the
        biases. A cell with init_keys takes them here too."""
        H = self.hidden_size
        if recurrent_init == "default":
            return
        for block in self.weight_hh_l0.split(H, dim=0):  # one H x H block per gate
            if recurrent_init == "orthogonal":
                nn.init.orthogonal_(block, gain=recurrent_gain)
            else:
                block.copy_(recurrent_gain * torch.eye(H))
        if recurrent_init == "identity":  # IRNN: biases start at zero
            self.bias_ih_l0.zero_()
            self.bias_hh_l0.zero_()

    def project_inputs(self, x: Tensor) -> Tensor:
        """W_ih x_t + b_ih for every step at once: (B, T, I) -> (B, T, n_gates*H)."""
        B, T, I = x.shape
        # addmm with a contiguous transposed weight: F.linear's backward is very slow on CPU
        # when the input has only a couple of features (docs/speed.md, CPU performance notes).
        gx = torch.addmm(self.bias_ih_l0, x.reshape(B * T, I), self.weight_ih_l0.t().contiguous())
        return gx.view(B, T, -1)

    def initial_state(self, batch_size: int) -> tuple[Tensor, ...]:
        w = self.weight_ih_l0
        return tuple(w.new_zeros(batch_size, n) for n in self.state_sizes)

    def linear_path(self, traj, direct_h: Tensor):
        """The cell's linear state path, for the probe that follows the gradient along it alone
        (study.probes.cell_path_gradient): (state name, injection (B, T, S), carry) where
        carry(g, t) maps the gradient at step t to step t-1 along that path, and the injection
        is what arrives at step t from the readout (direct_h = dl/dh_t through the readout).
        None: the cell has no such path (the RNN)."""
        return None

    def step_jacobian(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None):
        """A = d s_t / d s_{t-1} in closed form, (B, S, S) over the flat state, or None: then
        study/probes/jacobians.py forms it with S forward-mode products of `step` (S times the cost
        of a step; the closed forms of the classic cells cost about one)."""
        return None

    def exact_exponents(self) -> Tensor | None:
        """The Lyapunov exponents, (S,) in any order, where the state Jacobian is one constant
        matrix A at every step: then they are exactly log|eigenvalues of A| (-inf for a zero
        eigenvalue), and study/probes/jacobians.py uses them instead of its QR estimate, whose
        start-up bias is largest exactly where the exponents crowd near zero. None: a
        state-dependent Jacobian, estimated."""
        return None

    def inner_cells(self) -> tuple[Cell, ...]:
        """The cells a composite recurrence is made of (the layers of study/model/block.py),
        for the probes that read each one's weights; () for a cell that is one recurrence."""
        return ()

    def n_params(self) -> int:
        """Parameters the recurrence actually uses (what `match_params` counts)."""
        return sum(p.numel() for p in self.parameters())


def check_chrono(chrono) -> None:
    require_number("model.chrono", chrono)
    if not 2 < chrono <= CHRONO_MAX:
        raise ValueError(f"model.chrono={chrono!r} is invalid: T_max in (2, {CHRONO_MAX:.0e}]")


def chrono_bias(H: int, chrono: float) -> Tensor:
    """The chrono initialisation (Tallec & Ollivier 2018) of a keep gate's total bias:
    b ~ log U(1, T_max - 1), so that the memory time 1 / (1 - f) at zero input is uniform in
    [2, T_max]."""
    return torch.log(1 + (chrono - 2) * torch.rand(H))


def held(A: Tensor, keep: Tensor | None) -> Tensor:
    """The step Jacobian where `keep`, the identity where a padded step holds the state."""
    if keep is None:
        return A
    eye = torch.eye(A.shape[1], dtype=A.dtype, device=A.device)
    return torch.where(keep[:, :, None], A, eye)


def rows(d: Tensor, W: Tensor) -> Tensor:
    """diag(d) W for every example: d (B, H), W (H, K) -> (B, H, K)."""
    return d[:, :, None] * W


class RNNCell(Cell):
    """Elman RNN:  h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),  phi = tanh or relu."""

    n_gates, kind, block_names = 1, "rnn", "h"
    cut_paths = ("hidden",)  # its one path: cut, no credit reaches earlier steps

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"model.nonlinearity={nonlinearity!r} is invalid: allowed tanh, relu")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size)

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        (h,) = state
        a = torch.addmm(gx + self.bias_hh_l0, cut("hidden", h), self.weight_hh_l0.t())
        h_new = torch.tanh(a) if self.nonlinearity == "tanh" else torch.relu(a)
        return (hold(h_new, h, keep),), {}

    def step_jacobian(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None):
        """dh_t/dh_{t-1} = diag(phi'(a_t)) W_hh."""
        (h,) = state
        a = torch.addmm(gx + self.bias_hh_l0, h, self.weight_hh_l0.t())
        slope = 1 - torch.tanh(a) ** 2 if self.nonlinearity == "tanh" else (a > 0).to(a.dtype)
        return held(rows(slope, self.weight_hh_l0), keep)


class LSTMCell(Cell):
    """LSTM (Hochreiter & Schmidhuber 1997; forget gate of Gers et al. 2000), torch's gate order.

        i = sigmoid(.)   input gate        c_t = f * c_{t-1} + i * g    <- the linear memory path:
        f = sigmoid(.)   forget gate                                       dc_t/dc_{t-1} = diag(f)
        g = tanh(.)      cell candidate    h_t = o * tanh(c_t)
        o = sigmoid(.)   output gate

    With `forget_gate=False` f is fixed to 1 (the 1997 LSTM, the "constant error carousel"):
    dc_t/dc_{t-1} = I along the cell path. The f block of the weights then exists (so torch.nn
    state_dicts still load) but is unused, and `n_params` does not count it.
    """

    n_gates, kind, block_names = 4, "lstm", "ifgo"
    state_names = ("h", "c")
    gate_names = ("i", "f", "o")
    memory = "h"  # the horizon reads h, as for the other cells (c feeds h at every step)
    cut_paths = ("cell", "hidden")  # c_{t-1} into c_t; h_{t-1} into the gates and g
    linear_path_cut = "cell"
    init_keys = ("forget_bias", "chrono", "input_bias")

    def __init__(self, input_size: int, hidden_size: int, forget_gate: bool = True):
        self.forget_gate = forget_gate
        super().__init__(input_size, hidden_size)

    @classmethod
    def check_keys(cls, keys: dict) -> dict:
        """forget_bias: the total forget-gate bias (b_ih + b_hh on the f block), e.g. 1 (Gers et
        al. 2000) or 3; forget_gate: False fixes f = 1 (the 1997 LSTM); chrono: T_max of the
        chrono init, the input gate's bias then -b; input_bias: the total input-gate bias, or a
        list that splits the cells into that many equal blocks, one bias each (the 1997 paper's
        [-3, -6], so that cells write little until the gates learn to open)."""
        keys = dict(keys)
        if "forget_bias" in keys:
            require_number("model.forget_bias", keys["forget_bias"])
            if not keys.get("forget_gate", True):
                raise ValueError(
                    f"model.forget_bias={keys['forget_bias']!r} has no effect with"
                    " model.forget_gate=false (f = 1): drop one of them"
                )
        if "chrono" in keys:
            check_chrono(keys["chrono"])
            if "forget_bias" in keys:
                raise ValueError(f"model.chrono={keys['chrono']!r} is invalid with forget_bias")
        if "input_bias" in keys:
            value = keys["input_bias"]
            # a YAML list arrives as a ListConfig (a Sequence); a number or a string as itself
            blocks = [value] if isinstance(value, str) or not isinstance(value, Sequence) else value
            if not list(blocks):
                raise ValueError("model.input_bias=[] is invalid: a number, or a non-empty list")
            for b in blocks:
                require_number("model.input_bias", b)
            if "chrono" in keys:
                raise ValueError("model.input_bias applies to cell=lstm without chrono")
            keys["input_bias"] = list(blocks)
        return keys

    @torch.no_grad()
    def initialise(self, recurrent_init="default", recurrent_gain=1.0, forget_bias=None,
                   chrono=None, input_bias=None) -> None:  # fmt: skip
        super().initialise(recurrent_init, recurrent_gain)
        H = self.hidden_size
        i, f = slice(0, H), slice(H, 2 * H)  # torch's LSTM order is i, f, g, o
        if input_bias is not None and len(input_bias) > H:
            raise ValueError(f"model.input_bias has {len(input_bias)} blocks for H={H} cells")
        if forget_bias is not None:
            self.bias_ih_l0[f] = forget_bias
            self.bias_hh_l0[f] = 0.0
        if chrono is not None:  # the whole bias on b_ih, b_hh's block zero; the input gate -b
            b = chrono_bias(H, chrono)
            self.bias_ih_l0[f], self.bias_hh_l0[f] = b, 0.0
            self.bias_ih_l0[i], self.bias_hh_l0[i] = -b, 0.0
        if input_bias is not None:  # one bias per block of cells
            blocks = torch.arange(H).tensor_split(len(input_bias))  # contiguous, sizes differ <= 1
            for cells, value in zip(blocks, input_bias):
                self.bias_ih_l0[cells] = float(value)  # rows 0..H-1: the input gate i
            self.bias_hh_l0[i] = 0.0

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        h, c = state
        a = torch.addmm(gx + self.bias_hh_l0, cut("hidden", h), self.weight_hh_l0.t())
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        i, g, o = torch.sigmoid(a_i), torch.tanh(a_g), torch.sigmoid(a_o)
        f = torch.sigmoid(a_f) if self.forget_gate else torch.ones_like(c)
        c_new = hold(f * cut("cell", c) + i * g, c, keep)
        h_new = hold(o * torch.tanh(c_new), h, keep)
        return (h_new, c_new), {"i": i, "f": f, "o": o}

    def step_jacobian(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None):
        """d[h_t, c_t] / d[h_{t-1}, c_{t-1}]: the gates' slopes times their rows of W_hh.

        dc/dh = diag(g i(1-i)) W_i + diag(c f(1-f)) W_f + diag(i (1-g^2)) W_g,   dc/dc = diag(f)
        dh/dh = diag(tanh(c_t) o(1-o)) W_o + diag(o (1-tanh^2 c_t)) dc/dh,      dh/dc = ... f
        """
        h, c = state
        a = torch.addmm(gx + self.bias_hh_l0, h, self.weight_hh_l0.t())
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        W_i, W_f, W_g, W_o = self.weight_hh_l0.chunk(4, dim=0)
        i, g, o = torch.sigmoid(a_i), torch.tanh(a_g), torch.sigmoid(a_o)
        dc_dh = rows(g * i * (1 - i), W_i) + rows(i * (1 - g**2), W_g)
        if self.forget_gate:
            f = torch.sigmoid(a_f)
            dc_dh = dc_dh + rows(c * f * (1 - f), W_f)
        else:
            f = torch.ones_like(c)
        tanh_c = torch.tanh(f * c + i * g)
        through_c = o * (1 - tanh_c**2)  # dh_t/dc_t
        dh_dh = rows(tanh_c * o * (1 - o), W_o) + through_c[:, :, None] * dc_dh
        top = torch.cat([dh_dh, torch.diag_embed(through_c * f)], dim=2)
        bottom = torch.cat([dc_dh, torch.diag_embed(f)], dim=2)
        return held(torch.cat([top, bottom], dim=1), keep)

    def linear_path(self, traj, direct_h: Tensor):
        """c_t = f_t * c_{t-1} + ...: the gradient along the cell path alone, carried by f,
        injected through h_t = o_t * tanh(c_t)."""
        c = torch.stack(traj.states["c"], dim=1)
        o = torch.stack(traj.gates["o"], dim=1)
        f = traj.gates["f"]
        return "c", direct_h * o * (1 - torch.tanh(c) ** 2), lambda g, t: f[t] * g

    def n_params(self) -> int:
        n = super().n_params()
        if not self.forget_gate:  # one of the four blocks of each weight and bias is never used
            n -= sum(p.numel() for p in self.parameters()) // 4
        return n


class GRUCell(Cell):
    """GRU (Cho et al. 2014) in torch's convention, gate order r, z, n.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)        reset gate
    z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)        update gate
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))     candidate (b_hn sits inside the product)
    h_t = (1 - z) * n + z * h_{t-1}                   <- the direct path: dh_t/dh_{t-1} ∋ diag(z)
    """

    n_gates, kind, block_names = 3, "gru", "rzn"
    gate_names = ("r", "z")
    cut_paths = ("linear", "hidden")  # h_{t-1} in z * h_{t-1}; h_{t-1} inside r, z and n
    linear_path_cut = "linear"
    init_keys = ("chrono",)

    @classmethod
    def check_keys(cls, keys: dict) -> dict:
        """chrono: T_max of the chrono init of the update gate z, the GRU's keep gate."""
        if "chrono" in keys:
            check_chrono(keys["chrono"])
        return keys

    @torch.no_grad()
    def initialise(self, recurrent_init="default", recurrent_gain=1.0, chrono=None) -> None:
        super().initialise(recurrent_init, recurrent_gain)
        if chrono is not None:  # z (order r, z, n): h_t = (1 - z) n + z h_{t-1}; bias on b_ih
            z = slice(self.hidden_size, 2 * self.hidden_size)
            self.bias_ih_l0[z], self.bias_hh_l0[z] = chrono_bias(self.hidden_size, chrono), 0.0

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None, cut=no_cut):
        (h,) = state
        gh = torch.addmm(self.bias_hh_l0, cut("hidden", h), self.weight_hh_l0.t())
        x_r, x_z, x_n = gx.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h_new = (1 - z) * n + z * cut("linear", h)
        return (hold(h_new, h, keep),), {"r": r, "z": z}

    def step_jacobian(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None):
        """dh_t/dh_{t-1} = diag(z) + diag(h_{t-1} - n) dz/dh + diag(1 - z) dn/dh, with
        dz/dh = diag(z(1-z)) W_z and dn/dh = diag(1-n^2) (diag(W_hn h + b_hn) dr/dh + diag(r) W_n).
        """
        (h,) = state
        gh = torch.addmm(self.bias_hh_l0, h, self.weight_hh_l0.t())
        x_r, x_z, x_n = gx.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        W_r, W_z, W_n = self.weight_hh_l0.chunk(3, dim=0)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        dn_dh = rows((1 - n**2) * h_n * r * (1 - r), W_r) + rows((1 - n**2) * r, W_n)
        A = torch.diag_embed(z) + rows((h - n) * z * (1 - z), W_z) + (1 - z)[:, :, None] * dn_dh
        return held(A, keep)

    def linear_path(self, traj, direct_h: Tensor):
        """h_t = z_t * h_{t-1} + ...: the direct path alone, carried by z."""
        z = traj.gates["z"]
        return "h", direct_h, lambda g, t: z[t] * g


CELLS: dict[str, type[Cell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
