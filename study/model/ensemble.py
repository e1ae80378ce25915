"""Seed ensembles: E models of one architecture trained in one process, their weights stacked.

Member e is the model of its own seed. Every parameter of the ensemble is the members'
parameters stacked on a new leading dimension, so one batched matmul per step serves every
member (study/model/fast.py). Members share no parameter: with the loss summed over members, each
one's gradient is exactly that of its own loss, and elementwise optimisers (Adam, SGD, ...)
update each as if it trained alone. The training loop (study/train.py) sees one interface with
two implementations: `Single` (one model, E = 1) and `Ensemble`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from study.model import SequenceModel
from study.model.fast import NATIVE, choose_path, left_padded, native_module, sequence

CELL_PARAMS = ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")  # sequence()'s order


class Single:
    """One model behind the members interface: what `train` runs, unchanged."""

    size = 1

    def __init__(self, model: SequenceModel):
        self.model = model

    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    @property
    def cut(self):
        return self.model.cut

    def to(self, device) -> Single:
        self.model.to(device)
        return self

    def predict(self, xs: list[Tensor], valids: list[Tensor | None], scales=None, on=None):
        """The model's readout, [(B, T, O)]; `on` is the ensembles' (a lone model is always on)."""
        return [self.model.predict(xs[0], valids[0], None if scales is None else scales[0])]

    def member(self, e: int) -> SequenceModel:
        return self.model

    def member_grads(self, e: int) -> list[Tensor]:
        return [p.grad for p in self.model.parameters()]

    def member_state(self, e: int, optimizer: torch.optim.Optimizer) -> dict:
        return {"model": self.model.state_dict(), "optimizer": optimizer.state_dict()}

    def load_states(self, states: list[dict], optimizer: torch.optim.Optimizer) -> None:
        self.model.load_state_dict(states[0]["model"])
        optimizer.load_state_dict(states[0]["optimizer"])


class Predictor(nn.Module):
    """A model whose forward is its `predict`: what torch.func.functional_call runs per member
    (functional_call calls forward, and a SequenceModel's forward is the explicit loop)."""

    def __init__(self, model: SequenceModel):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, valid: Tensor | None = None, scales: Tensor | None = None):
        return self.model.predict(x, valid, scales)


class Ensemble(nn.Module):
    """E SequenceModels of one architecture with their parameters stacked: `stacked[k]` is the
    k-th parameter of every member, (E, *shape), in the members' own parameter order."""

    def __init__(self, models: list[SequenceModel], stack_scans: bool | None = None):
        """stack_scans: whether linear-recurrence members run as one stacked scan (choose_path's
        `stack`; None = where it was measured to pay)."""
        super().__init__()
        self.stack_scans = stack_scans
        first = models[0]
        self.names = [name for name, _ in first.named_parameters()]
        for m in models[1:]:
            shapes = [(n, p.shape) for n, p in m.named_parameters()]
            if shapes != [(n, p.shape) for n, p in first.named_parameters()]:
                raise ValueError("ensemble members must share one architecture")
        self.size = len(models)
        self.stacked = nn.ParameterList(
            nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in models]))
            for n in self.names
        )
        # a copy of one member that is not a submodule (its parameters are not the ensemble's):
        # it runs the explicit cells for the fallback path and hands out members for the probes
        object.__setattr__(self, "template", copy.deepcopy(first))
        cell = first.cell
        nonlinearity = getattr(cell, "nonlinearity", "tanh")
        forget = getattr(cell, "forget_gate", True)
        self.recurrence = sequence(cell.kind, nonlinearity, forget) if cell.kind in NATIVE else None

    @property
    def cut(self):
        return self.template.cut  # one architecture: every member has the same cut

    def params(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.stacked))

    def predict(
        self, xs: list[Tensor], valids: list[Tensor | None], scales=None, on=None
    ) -> list[Tensor]:
        """Every member's readout at every step, member e on its own batch xs[e]. scales: a
        stochastic cut's s_t per member for this update (study/model/cut.py), or None. on: the
        indices of the members xs are for (members that stopped are left out: the others'
        parameters are taken from the stack, and only they are computed); None: all."""
        p, cell = self.params(), self.template.cell
        if on is not None:
            p = {name: v[on] for name, v in p.items()}  # a copy of their rows, in the graph
        padded = any(v is not None for v in valids)
        scales = scales or [None] * len(xs)
        cuts = [self.template.cut_scales(x.shape[1], s) for x, s in zip(xs, scales)]
        cut = None if cuts[0] is None else (cuts[0][0], torch.stack([c[1] for c in cuts]))
        impl, device = self.template.impl, xs[0].device
        valid = None
        if padded:  # one (E, B, T) mask; a member without one has every step valid
            whole = [torch.ones_like(x[..., 0], dtype=torch.bool) for x in xs]
            valid = torch.stack([w if v is None else v for v, w in zip(valids, whole)])
        left = left_padded(valid)
        path = choose_path(
            cell, impl, device, padded, self.size, cut is not None, left, self.stack_scans
        )
        if path != "explicit":
            hs = self._hidden_states(torch.stack(xs), p, path, cut, valid)  # (E, B, T, H)
            W_out, b_out = p["readout.weight"].transpose(1, 2), p["readout.bias"].unsqueeze(1)
            # the readout in the states' memory order (the Functions return them time-major)
            time_major = not hs.is_contiguous()
            h = hs.transpose(1, 2) if time_major else hs
            y = torch.baddbmm(b_out, h.flatten(1, 2), W_out).unflatten(1, h.shape[1:3])
            return list((y.transpose(1, 2) if time_major else y).unbind(0))
        # no stacked path (padded batches, impl=explicit, the linear-recurrence cells where
        # stacking does not pay, the blocks, cells from outside): member by member on slices of
        # the stacked parameters (gradients flow into them), each by the path it takes alone (a
        # scan, a block's layer by layer), which computes the same function as the explicit loop
        predictor = Predictor(self._template(xs[0].device))
        call = torch.func.functional_call
        return [
            call(predictor, {f"model.{n}": v[e] for n, v in p.items()}, (x, valid, s))
            for e, (x, valid, s) in enumerate(zip(xs, valids, scales))
        ]

    def _hidden_states(self, x: Tensor, p: dict[str, Tensor], path: str, cut=None, valid=None):
        """h_t of every member, (E, B, T, H), from the stacked cell parameters."""
        if path == "scan":  # the linear-recurrence cells: every member in one scan
            cell = {n.removeprefix("cell."): v for n, v in p.items() if n.startswith("cell.")}
            return self.template.cell.stacked_scan(x, cell)
        weights = {n: p[f"cell.{n}"] for n in CELL_PARAMS}
        if path == "native":
            # torch.nn's kernel for each member in turn, on views of the stacked weights. On
            # CPU the fused LSTM runs near the matmul floor already, and a stacked LSTM measured
            # slower (docs/speed.md), so impl=fast takes this path for the LSTM there.
            native = native_module(self._template(x.device).cell)
            call = torch.func.functional_call
            h = [
                call(native, {n: w[e] for n, w in weights.items()}, x[e])[0] for e in range(len(x))
            ]
            return torch.stack(h)
        if self.template.cell.kind == "lstm":  # its Function also takes the padding mask
            return self.recurrence(x, *weights.values(), cut=cut, valid=valid)
        return self.recurrence(x, *weights.values(), cut=cut)

    def member(self, e: int) -> SequenceModel:
        """A standalone copy of member e with its current weights (for probes, checkpoints)."""
        device = self.stacked[0].device
        model = copy.deepcopy(self._template(device))
        model.load_state_dict({n: v[e].detach() for n, v in self.params().items()})
        return model

    def member_grads(self, e: int) -> list[Tensor]:
        """Views of member e's gradients: scaling them in place clips that member alone."""
        return [p.grad[e] for p in self.stacked]

    def member_state(self, e: int, optimizer: torch.optim.Optimizer) -> dict:
        """Member e's model and optimiser state in the format of a single run's checkpoint."""
        state = optimizer.state_dict()
        sliced = {
            k: {name: self._slice(v, self.stacked[k], e) for name, v in per_param.items()}
            for k, per_param in state["state"].items()
        }
        model = {n: v[e].detach().clone() for n, v in self.params().items()}
        return {"model": model, "optimizer": {**state, "state": sliced}}

    def load_states(self, states: list[dict], optimizer: torch.optim.Optimizer) -> None:
        """Stack the members' states (each in a single run's format) back into the ensemble."""
        with torch.no_grad():
            for name, p in self.params().items():
                p.copy_(torch.stack([s["model"][name] for s in states]))
        first = states[0]["optimizer"]
        stacked = {}
        for k, per_param in first["state"].items():
            stacked[k] = {
                name: (
                    torch.stack([s["optimizer"]["state"][k][name] for s in states])
                    if self._per_element(v, self.stacked[k])
                    else v
                )
                for name, v in per_param.items()
            }
        optimizer.load_state_dict({**first, "state": stacked})

    @staticmethod
    def _per_element(value, param: Tensor, stacked: bool = False) -> bool:
        """Whether an optimiser state entry holds one number per parameter element (Adam's
        moments) rather than one per parameter (its step count)."""
        shape = param.shape if stacked else param.shape[1:]
        return isinstance(value, Tensor) and value.dim() > 0 and value.shape == shape

    def _slice(self, value, param: Tensor, e: int):
        return value[e].clone() if self._per_element(value, param, stacked=True) else value

    def _template(self, device) -> SequenceModel:
        if next(self.template.parameters()).device != torch.device(device):
            self.template.to(device)
        return self.template
