"""Any cell inside the block its modern papers build it in (`model.block=glu`, `model.layers=N`).

The LRU paper (Orvieto et al. 2023, Sec. 4, Fig. 1) never uses the recurrence bare: every layer
is norm -> recurrence -> GELU -> GLU -> skip, stacked over a linear encoder. So are minGRU and
minLSTM in their official models (a norm before the recurrence, a residual after it). Here, for
layer l = 1..L on the residual stream x (width H, the cell's hidden size):

    u_t = LayerNorm(x_t)                           normalised per step (no statistics over time)
    h_t = cell(u_t, state_{t-1})                    the cell as it is, with its own W_ih u_t + b_ih
    v_t = GELU(h_t)
    x_t <- x_t + (W_a v_t + b_a) * sigmoid(W_b v_t + b_b)   the GLU, then the residual

from x_t = W_in x_in + b_in (the encoder, this Cell's own input projection), and the model's
shared linear readout reads the last layer's x_t. Without a block the LRU's model is linear in
its input and cannot form the adding target's product; the GELU and the GLU's gate are where
the block multiplies.

As a Cell, the stack is one recurrence whose state is every layer's: "h" is the stream after
the last layer (what the readout reads; like the LRU's h, computed from this step's states and
not carried), then each layer's own states with its number ("h1", "s1", "h2", "s2" for two LRU
layers). So every probe of study/probes runs on it unchanged and reports each layer's states by
name; the state Jacobian is that of the whole stack (forward mode, study/probes/jacobians.py).
The probe that follows a cell's linear path alone (Cell.linear_path) has no single path to
follow through a stack and is not reported for it, and gradient-path cuts do not apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from study.model.cells import Cell, hold
from study.model.fast import choose_path, hidden_states

BLOCKS = ("glu",)  # what model.block takes (null: the cell bare, as every other model)


class GLULayer(nn.Module):
    """One layer: LayerNorm -> cell -> GELU -> GLU -> residual (module docstring)."""

    def __init__(self, cell: Cell):
        super().__init__()
        H = cell.hidden_size
        self.norm = nn.LayerNorm(H)
        self.cell = cell
        self.glu = nn.Linear(H, 2 * H)  # [W_a; W_b]: value and gate of the GLU

    def out(self, x: Tensor, h: Tensor) -> Tensor:
        """The residual stream after the layer, from its input x and the cell's output h."""
        value, gate = self.glu(F.gelu(h)).chunk(2, dim=-1)
        return x + value * torch.sigmoid(gate)

    def step(self, x: Tensor, state: tuple[Tensor, ...], keep: Tensor | None):
        gu = self.cell.project_inputs(self.norm(x).unsqueeze(1)).squeeze(1)
        new, gates = self.cell.step(gu, state, keep)
        return self.out(x, new[self.cell.state_names.index("h")]), new, gates

    def scan(self, x: Tensor) -> Tensor:
        """The layer over a whole sequence (B, T, H), the cell by its fastest path."""
        u, cell = self.norm(x), self.cell
        path = choose_path(cell, "fast", x.device, False, 1)
        if path != "explicit":
            return self.out(x, hidden_states(cell, u, path))
        state, hs = cell.initial_state(len(x)), []  # a cell from outside, without a fast path
        for gu in cell.project_inputs(u).unbind(dim=1):
            state, _ = cell.step(gu, state)
            hs.append(state[cell.state_names.index("h")])
        return self.out(x, torch.stack(hs, dim=1))


class GLUBlocks(Cell):
    """`layers` GLU layers of one cell class over a linear encoder, as one Cell (module
    docstring). The cell's own options and init keys go to every layer's cell."""

    n_gates, kind, recurrent_weights = 1, "block", False  # W_ih, b_ih: the encoder W_in, b_in

    def __init__(self, input_size: int, hidden_size: int, cell: type[Cell], layers: int = 1,
                 **options):  # fmt: skip
        super().__init__(input_size, hidden_size)
        self.layers = nn.ModuleList(
            GLULayer(cell(hidden_size, hidden_size, **options)) for _ in range(layers)
        )
        inner = self.layers[0].cell
        numbered = lambda names: tuple(f"{n}{l}" for l in range(1, layers + 1) for n in names)  # noqa: E731
        self.state_names = ("h", *numbered(inner.state_names))
        self.gate_names = numbered(inner.gate_names)
        self.memory = f"{inner.memory}1"  # the first layer's memory: where every input enters
        self.inner_kind = inner.kind

    def reset_parameters(self) -> None:
        """The encoder as Cell's default (every entry ~ U(-1/sqrt(H), 1/sqrt(H))); each layer's
        cell, norm and GLU keep their own initialisation."""
        bound = 1.0 / self.hidden_size**0.5
        nn.init.uniform_(self.weight_ih_l0, -bound, bound)
        nn.init.uniform_(self.bias_ih_l0, -bound, bound)

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, *(s for layer in self.layers for s in layer.cell.state_sizes))

    def inner_cells(self) -> tuple[Cell, ...]:
        return tuple(layer.cell for layer in self.layers)

    @torch.no_grad()
    def initialise(self, recurrent_init: str = "default", recurrent_gain: float = 1.0, **init):
        """The cell's init options, applied to every layer's cell."""
        for cell in self.inner_cells():
            cell.initialise(recurrent_init, recurrent_gain, **init)

    def step(self, gx: Tensor, state: tuple[Tensor, ...], keep: Tensor | None = None):
        x, per_layer = gx, len(self.layers[0].cell.state_names)
        new_states, gates = [], {}
        for l, layer in enumerate(self.layers):
            own = state[1 + l * per_layer : 1 + (l + 1) * per_layer]
            x, new, layer_gates = layer.step(x, own, keep)
            new_states += new
            gates.update({f"{name}{l + 1}": g for name, g in layer_gates.items()})
        return (hold(x, state[0], keep), *new_states), gates

    def scan(self, x: Tensor) -> Tensor:
        """The stream after the last layer for every step, (B, T, H), layer by layer."""
        stream = self.project_inputs(x)
        for layer in self.layers:
            stream = layer.scan(stream)
        return stream


def wrap(kind: type[Cell], block: str | None, layers: int):
    """The constructor of the recurrence: the cell class itself without a block, else a
    constructor of its stack with the same (input_size, hidden_size, **options) signature."""
    if block is None:
        return kind
    return lambda input_size, hidden_size, **options: GLUBlocks(
        input_size, hidden_size, kind, layers, **options
    )
