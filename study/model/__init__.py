"""The models. This folder: the cells (cells: RNN, LSTM, GRU; linear_cells: minGRU, minLSTM, LRU),
their fused fast paths (fast), seed ensembles trained stacked (ensemble) and gradient-path cuts
(cut). This module: the sequence model every cell shares, input projection -> recurrence ->
linear readout.

Only the recurrence differs between cells. `build_model` is the Hydra `_target_` of `conf/model/`:
it applies the initialisation options and, with `match_params`, picks the hidden size that makes
the total parameter count as close as possible to the target.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from study.checks import require_at_most, require_bool, require_int, require_number
from study.model.block import BLOCKS, wrap
from study.model.cells import CELLS as CLASSIC
from study.model.cells import Cell
from study.model.cut import Cut, StepCut, make_cut
from study.model.fast import IMPLS, choose_path, hidden_states, left_padded
from study.model.linear_cells import LRUCell, MinGRUCell, MinLSTMCell


@dataclass
class Trajectory:
    """One forward pass: readout at every step plus every state and gate, still in the graph."""

    y: Tensor  # (B, T, output_size), readout of h_t at every step
    states: dict[str, list[Tensor]]  # "h" (and "c"): T tensors (B, H), the ones the recurrence used
    gates: dict[str, list[Tensor]]  # gate activations per step, e.g. "f": T tensors (B, H)
    cut: tuple[str, Tensor] | None = None  # the gradient-path cut it ran with: (path, s_t (T,))


class SequenceModel(nn.Module):
    def __init__(
        self, cell: Cell, output_size: int, impl: str = "explicit", cut: Cut | None = None
    ):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"model.impl={impl!r} is unknown: allowed {', '.join(IMPLS)}")
        self.cell = cell
        self.readout = nn.Linear(cell.hidden_size, output_size)  # identical for every cell
        self.impl = impl  # how `predict` computes the recurrence; `forward` is always explicit
        self.cut = cut  # a gradient-path cut (study/model/cut.py): changes the backward pass only

    def cut_scales(self, T: int, scales: Tensor | None = None) -> tuple[str, Tensor] | None:
        """(path, s_t (T,)) of this model's cut: the given per-step scales (a stochastic cut's
        draw for one update), else the expected ones; None without a cut."""
        if self.cut is None:
            return None
        return self.cut.path, self.cut.scales(T) if scales is None else scales

    def predict(self, x: Tensor, valid: Tensor | None = None, scales: Tensor | None = None):
        """Readout at every step, (B, T, O), by the fastest path that computes this exact
        function (study/model/fast.py); what training and evaluation call. scales: a stochastic
        cut's s_t for this update (study/model/cut.py); None: the expected ones."""
        cut = self.cut_scales(x.shape[1], scales)
        padded, left = valid is not None, left_padded(valid)
        path = choose_path(self.cell, self.impl, x.device, padded, 1, cut is not None, left)
        if path == "explicit":
            return self(x, valid, scales).y
        return self.readout(hidden_states(self.cell, x, path, cut, valid))

    def forward(
        self, x: Tensor, valid: Tensor | None = None, scales: Tensor | None = None
    ) -> Trajectory:
        """The explicit loop over the cell's equations, every state kept for the probes.
        x: (B, T, input_size). valid: optional (B, T) bool; where False (left padding of a
        shorter sequence) the state is carried over unchanged, so every sequence ends at T-1.
        scales: as in `predict`; the probes run with the expected ones (study/model/cut.py)."""
        B, T, _ = x.shape
        gx = self.cell.project_inputs(x)
        state = self.cell.initial_state(B)
        states = {name: [] for name in self.cell.state_names}
        gates = {name: [] for name in self.cell.gate_names}
        cut = self.cut_scales(T, scales)
        # unbind, not gx[:, t]: the backward of each slice would allocate a zero tensor the size
        # of all of gx, making backpropagation quadratic in T.
        for t, gx_t in enumerate(gx.unbind(dim=1)):
            keep = None if valid is None else valid[:, t, None]
            # a cell from outside without cuts takes no `cut` argument: pass it only when set
            step_cut = {} if cut is None else {"cut": StepCut(cut[0], cut[1][t])}
            state, gate_values = self.cell.step(gx_t, state, keep, **step_cut)
            for name, s in zip(self.cell.state_names, state):
                states[name].append(s)
            for name, g in gate_values.items():
                gates[name].append(g)
        y = self.readout(torch.stack(states["h"], dim=1))
        return Trajectory(y=y, states=states, gates=gates, cut=cut)

    def n_params(self) -> int:
        return self.cell.n_params() + sum(p.numel() for p in self.readout.parameters())


CELLS: dict[str, type[Cell]] = {  # the built-in recurrences, by the name `model.cell` takes
    **CLASSIC,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
    "lru": LRUCell,
}


def cell_class(cell: str) -> type[Cell]:
    """A built-in cell by name, or any Cell subclass by its import path ("mypkg.cells.MyCell"):
    a cell added from outside the repository needs no registry entry."""
    if isinstance(cell, str) and cell in CELLS:
        return CELLS[cell]
    allowed = f"allowed {', '.join(CELLS)}, or the import path of a study.model.cells.Cell subclass"
    if not isinstance(cell, str) or "." not in cell:
        raise ValueError(f"model.cell={cell!r} is unknown: {allowed}")
    module, _, name = cell.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.cell={cell!r} cannot be imported ({e}): {allowed}") from None
    if not (isinstance(found, type) and issubclass(found, Cell)):
        raise ValueError(f"model.cell={cell!r} is not a study.model.cells.Cell subclass")
    return found


def count_params(
    cell: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    block: str | None = None,
    layers: int = 1,
    **options,
) -> int:
    """SequenceModel.n_params() of a cell at this size (in `layers` blocks of kind `block`, if
    one), built on the meta device (no memory, no initialisation): what `match_params` solves
    over. `options` go to the cell."""
    with torch.device("meta"):
        recurrence = wrap(cell_class(cell), block, layers)(input_size, hidden_size, **options)
    return recurrence.n_params() + hidden_size * output_size + output_size


def matched_hidden_size(
    cell: str,
    input_size: int,
    output_size: int,
    target: int,
    block: str | None = None,
    layers: int = 1,
    **options,
) -> int:
    """The hidden size whose total parameter count is closest to `target` (ties: the smaller).
    The count grows with H: bisect for the first H above the target, then take the closer of
    it and the one before."""
    count = lambda H: count_params(cell, input_size, H, output_size, block, layers, **options)  # noqa: E731
    high = 1
    while count(high) <= target:
        high *= 2
    low = high // 2  # count(low) <= target < count(high), or low = 0
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if count(mid) <= target else (low, mid)
    if low == 0:
        return 1
    return low if target - count(low) <= count(high) - target else high


MAX_HIDDEN = 8192  # 4H x H float32 weights of an LSTM: 1 GB at H = 8192
MAX_PARAMS = 250_000_000  # float32: 1 GB


def build_model(
    cell: str,
    input_size: int,
    output_size: int,
    hidden_size: int = 128,
    match_params: int | None = None,
    nonlinearity: str = "tanh",
    recurrent_init: str = "default",
    recurrent_gain: float = 1.0,
    forget_bias: float | None = None,
    forget_gate: bool = True,
    chrono: float | None = None,
    input_bias: float | list[float] | None = None,
    options: dict | None = None,
    block: str | None = None,
    layers: int | None = None,
    impl: str = "fast",
    cut: str | None = None,
    cut_scale: float | None = None,
    cut_prob: float | None = None,
) -> SequenceModel:
    """Build a SequenceModel. `cell` names a built-in recurrence (CELLS) or the import path of a
    Cell subclass. Initialisation options (each one config key):

    recurrent_init: default (PyTorch's uniform) | orthogonal | identity (IRNN, Le et al. 2015);
        the non-default ones are scaled by `recurrent_gain`, which is then the spectral radius.
        For gated cells they apply to every gate block of W_hh (cells with a W_hh only).
    nonlinearity, forget_gate, forget_bias, chrono, input_bias: keys that belong to particular
        cells (CELL_KEYS); each cell says what they mean, checks them (`Cell.check_keys`) and
        applies the init ones (`Cell.initialise`): nonlinearity the RNN's, forget_gate,
        forget_bias and input_bias the LSTM's, chrono the LSTM's and the GRU's. A key set for a
        cell that does not take it is an error naming the cell's own keys.
    options: the cell's own keys, by name: its constructor's keywords (the LRU: r_min, r_max,
        max_phase) and its `init_keys` (what a top-level key above passes is the same).
    block: null (the cell bare) | glu: the cell inside the LRU paper's layer, norm -> cell ->
        GELU -> GLU -> residual over a linear encoder (study/model/block.py), `layers` of them
        (null = 1; more needs a block); the cell's keys go to every layer's cell.
    cut: a recurrent path whose gradient is stopped, the forward pass unchanged (study/model/cut.py;
        the cell's `cut_paths`: LSTM cell | hidden, GRU linear | hidden, the others their one
        path); cut_scale alpha in [0, 1] scales it instead (null = 0, stopped); cut_prob p cuts
        each step with probability p (null = 1, every step; h-detach).
    """
    require_int("model.hidden_size", hidden_size, 1)
    require_at_most("model.hidden_size", hidden_size, MAX_HIDDEN, "W_hh alone would exceed 1 GB")
    if match_params is not None:
        require_int("model.match_params", match_params, 1)
        require_at_most("model.match_params", match_params, MAX_PARAMS, "about 1 GB of weights")
    require_number("model.recurrent_gain", recurrent_gain)
    require_bool("model.forget_gate", forget_gate)
    layers = 1 if layers is None else layers  # null in the config (not identity): one
    check_block(block, layers, cut)
    if recurrent_init not in ("default", "orthogonal", "identity"):
        allowed = "default, orthogonal, identity"
        raise ValueError(f"model.recurrent_init={recurrent_init!r} is invalid: allowed {allowed}")
    kind = cell_class(cell)
    if recurrent_init != "default" and not kind.recurrent_weights:
        raise ValueError(f"model.recurrent_init={recurrent_init!r}: cell={cell} has no W_hh")
    given = dict(nonlinearity=nonlinearity, forget_gate=forget_gate, forget_bias=forget_bias,
                 chrono=chrono, input_bias=input_bias)  # fmt: skip
    keys, options = cell_keys(cell, kind, given), dict(options or {})
    for key in set(keys) & set(options):
        raise ValueError(f"model.{key} is set twice, also as model.options.{key}: keep one")
    keys = kind.check_keys({**options, **keys})  # one mechanism: top-level keys and options
    init = {k: v for k, v in keys.items() if k in kind.init_keys}  # for cell.initialise
    options = {k: v for k, v in keys.items() if k not in init}  # for the cell's constructor
    try:
        if match_params is not None:
            hidden_size = matched_hidden_size(
                cell, input_size, output_size, match_params, block, layers, **options
            )
            if hidden_size < 2:
                smallest = count_params(cell, input_size, 2, output_size, block, layers, **options)
                raise ValueError(
                    f"model.match_params={match_params} is too small for cell={cell}: it gives"
                    f" H = {hidden_size}; H = 2 needs {smallest} parameters"
                )
        recurrence = wrap(kind, block, layers)(input_size, hidden_size, **options)
    except TypeError as e:  # an option the cell does not take
        raise ValueError(f"model.options do not fit cell={cell}: {e}") from None
    path_cut = make_cut(kind, cut, cut_scale, cut_prob)
    if path_cut is not None and impl == "native":
        raise ValueError("model.impl=native cannot cut a gradient path: use fast or explicit")
    model = SequenceModel(recurrence, output_size, impl, path_cut)
    model.cell.initialise(recurrent_init, recurrent_gain, **init)
    return model


def check_block(block: str | None, layers: int, cut: str | None) -> None:
    if block is not None and block not in BLOCKS:
        raise ValueError(f"model.block={block!r} is unknown: allowed null, {', '.join(BLOCKS)}")
    require_int("model.layers", layers, 1)
    require_at_most("model.layers", layers, 64, "a deeper stack than any study here uses")
    if layers > 1 and block is None:
        raise ValueError(f"model.layers={layers} needs a block to stack: set model.block=glu")
    if block is not None and cut is not None:
        raise ValueError(f"model.cut={cut!r} does not apply with model.block={block}: a stack has"
                         " no single path to cut")  # fmt: skip


# model.* keys that belong to particular cells, each with the value that means "not set"
CELL_KEYS = {"nonlinearity": "tanh", "forget_gate": True, "forget_bias": None, "chrono": None,
             "input_bias": None}  # fmt: skip


def cell_keys(cell: str, kind: type[Cell], given: dict) -> dict:
    """The cell keys that are set (not at their "not set" value), each checked to be one the
    cell takes: a keyword of its constructor or one of its init_keys."""
    takes = set(inspect.signature(kind.__init__).parameters) | set(kind.init_keys)
    keys = {k: v for k, v in given.items() if not _equal(v, CELL_KEYS[k])}
    for key, value in keys.items():
        if key not in takes:
            own = ", ".join(k for k in CELL_KEYS if k in takes) or "none of them"
            raise ValueError(
                f"model.{key}={value!r} does not apply to cell={cell} (its keys of"
                f" {', '.join(CELL_KEYS)}: {own})"
            )
    return keys


def _equal(value, unset) -> bool:
    return value is None if unset is None else value is unset or value == unset
