"""The task interface: what a long-lag task declares and how its batches look.

A task is one class plus one YAML file under `conf/task/` whose `_target_` names the class.
The training loop knows nothing about a task beyond this interface.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from study.checks import require_int


@dataclass
class Batch:
    """One batch of sequences, all of length T (shorter ones are left-padded, see `valid`)."""

    x: Tensor  # (B, T, input_size) float inputs
    y: Tensor  # targets at the loss positions: (B, K, output_size) float, or (B, K) long classes
    evidence: Tensor  # (B, P) long: the P positions of the inputs that set the target, ascending
    valid: Tensor | None = None  # (B, T) bool, False on left padding; None: every step is real
    loss_mask: Tensor | None = None  # (B, K) bool: which loss positions count; None: all

    def apply(self, fn) -> Batch:
        """A new Batch with fn applied to every tensor field (None stays None)."""
        return Batch(
            *(None if (t := getattr(self, k)) is None else fn(t) for k in self.__dataclass_fields__)
        )

    def to(self, device) -> Batch:
        return self.apply(lambda t: t.to(device))

    def __getitem__(self, idx) -> Batch:
        return self.apply(lambda t: t[idx])


class Task:
    """Base class. A subclass sets the class attributes below and implements `sample`.

    The loss applies to the last `loss_window` steps (1: last step; the full length: every step).
    `baseline` is the analytic loss of the best memoryless predictor (one that sees no input
    before the loss positions); tests check it against a Monte-Carlo estimate.
    """

    input_size: int
    output_size: int
    kind: str  # "regression" (per-example MSE) or "classification" (per-example cross-entropy)
    metric_name: str  # what `metric` returns, per example (higher is better)
    citation: str

    def __init__(self, length: int):
        require_int("task.length", length, 2)
        self.length = length

    # -- what a subclass declares ---------------------------------------------------------
    @property
    def loss_window(self) -> int:
        return 1

    @property
    def baseline(self) -> float:
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def solved(self, eval_loss: float, eval_metric: float) -> bool:
        """The success criterion, on evaluation-set aggregates. Default: the metric (accuracy, or
        the share of sequences with |error| < 0.04) on at least 99 % of the evaluation set; a
        task whose source states another criterion overrides this."""
        return eval_metric >= 0.99

    metric_window: int | None = None  # positions the metric reads (last K); None = loss_window
    solved_criterion: str  # the success criterion, in words, with its source

    # -- shared behaviour -------------------------------------------------------------------
    def check(self, batch: Batch) -> None:
        """Raise ValueError unless a sampled batch has the sizes the task declares (a task added
        from outside the repository is checked before any run starts)."""
        name = type(self).__name__
        B, T, I = batch.x.shape
        problems = []
        if I != self.input_size:
            problems.append(f"x has {I} input features, input_size is {self.input_size}")
        if self.kind == "regression":
            if batch.y.dim() != 3 or batch.y.shape[-1] != self.output_size:
                problems.append(f"y is {tuple(batch.y.shape)}, want (B, K, {self.output_size})")
        elif self.kind == "classification":
            if batch.y.dtype != torch.long or batch.y.dim() != 2:
                problems.append(f"y is {batch.y.dtype} {tuple(batch.y.shape)}, want long (B, K)")
            elif not 0 <= int(batch.y.min()) <= int(batch.y.max()) < self.output_size:
                problems.append(f"y holds classes outside 0..{self.output_size - 1}")
        else:
            problems.append(f"kind is {self.kind!r}, want regression or classification")
        K = batch.y.shape[1] if batch.y.dim() >= 2 else -1
        if K != self.loss_window or K > T:
            problems.append(f"y has {K} loss positions, loss_window is {self.loss_window} (T={T})")
        if batch.valid is not None and tuple(batch.valid.shape) != (B, T):
            problems.append(f"valid is {tuple(batch.valid.shape)}, want {(B, T)}")
        if batch.evidence.dim() != 2 or batch.evidence.shape[0] != B:
            problems.append(f"evidence is {tuple(batch.evidence.shape)}, want (B, P)")
        if problems:
            problems = "; ".join(problems)
            raise ValueError(f"task {name} does not match its declared sizes: {problems}")

    def select(self, y_all: Tensor) -> Tensor:
        """The model's outputs at the loss positions: (B, T, O) -> (B, K, O)."""
        return y_all[:, -self.loss_window :]

    def loss(self, y_hat: Tensor, batch: Batch) -> Tensor:
        """Per-example loss (B,), averaged over the (unmasked) loss positions."""
        if self.kind == "regression":
            per_pos = (y_hat - batch.y).pow(2).mean(dim=-1)
        else:
            per_pos = F.cross_entropy(y_hat.transpose(1, 2), batch.y, reduction="none")
        return _masked_mean(per_pos, batch.loss_mask)

    def metric(self, y_hat: Tensor, batch: Batch) -> Tensor:
        """Per-example metric (B,) over the last `metric_window` loss positions. Regression:
        |error| < 0.04 (Hochreiter & Schmidhuber 1997's criterion). Classification: accuracy."""
        if self.kind == "regression":
            hit = ((y_hat - batch.y).abs() < 0.04).all(dim=-1).float()
        else:
            hit = (y_hat.argmax(dim=-1) == batch.y).float()
        k = self.metric_window or hit.shape[1]
        mask = None if batch.loss_mask is None else batch.loss_mask[:, -k:]
        return _masked_mean(hit[:, -k:], mask)


def _masked_mean(per_pos: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return per_pos.mean(dim=1)
    m = mask.to(per_pos.dtype)
    return (per_pos * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)


# -- helpers for generating batches ---------------------------------------------------------------
def uniform_int(low: Tensor | int, high: Tensor | int, n: int, g: torch.Generator) -> Tensor:
    """n integers, the i-th uniform in [low_i, high_i) (bounds may differ per example)."""
    low, high = torch.as_tensor(low).long(), torch.as_tensor(high).long()
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return torch.minimum(low + (u * (high - low)).floor().long(), high - 1)


def distinct_pair(n_first: Tensor | int, n_second: Tensor | int, B: int, g: torch.Generator):
    """first ~ U[0, n_first), second ~ U[0, n_second) conditioned on second != first."""
    first = uniform_int(0, n_first, B, g)
    second = uniform_int(0, torch.as_tensor(n_second) - 1, B, g)
    return first, second + (second >= first).long()


def random_lengths(low: int, high: int, B: int, g: torch.Generator) -> Tensor:
    """Per-example sequence lengths uniform in [low, high] (inclusive)."""
    return uniform_int(low, high + 1, B, g)


def left_pad_mask(lengths: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """(valid (B, T) bool, offset (B,)): sequences are right-aligned so they all end at T-1;
    position p of example b sits at offset[b] + p."""
    offset = T - lengths
    valid = torch.arange(T).unsqueeze(0) >= offset.unsqueeze(1)
    return valid, offset


def one_hot(symbols: Tensor, n: int) -> Tensor:
    return torch.nn.functional.one_hot(symbols, n).float()
