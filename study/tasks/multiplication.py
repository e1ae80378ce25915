"""The multiplication problem: like the adding problem, but the target is a product."""

from __future__ import annotations

import torch

from study.tasks.adding import Adding


class Multiplication(Adding):
    """Multiplication problem, Hochreiter & Schmidhuber 1997, Exp. 5.

    The layout of the 1997 adding problem (length in [T, T + T//10], marker -1 at the first and
    last step, X1 among the first 10 steps, X2 among the first T//2), with values ~ U[0, 1] and
    target X1 * X2 at the last step (MSE). The memoryless baseline is
    Var(X1 X2) = E[X1^2] E[X2^2] - (E[X1] E[X2])^2 = 1/9 - 1/16 = 7/144.
    Solved when |error| < 0.04 on 99% of evaluation sequences (the 1997 tolerance; our reading
    of the paper's stopping rule). A marked first step keeps its value here: the paper's zeroing
    rule is stated for Exp. 4 only.
    """

    zero_marked_first_step = False
    citation = "Hochreiter & Schmidhuber 1997, Long short-term memory, Exp. 5"

    def __init__(self, length: int = 100):
        super().__init__(length, variant="hochreiter1997")
        self.solved_criterion = "|error| < 0.04 on 99% of evaluation sequences (1997 tolerance)"

    @property
    def baseline(self) -> float:
        return 7 / 144

    def _values(self, B: int, L: int, g: torch.Generator) -> torch.Tensor:
        return torch.rand(B, L, generator=g)

    def _target(self, marked: torch.Tensor) -> torch.Tensor:
        return marked.prod(1)
