"""The latching ("two-sequence") problem: keep one bit of class information through noise."""

from __future__ import annotations

import math

import torch

from study.checks import require_number
from study.tasks.base import Batch, Task


class Latching(Task):
    """Two-sequence / latching problem, Bengio, Simard & Frasconi 1994; the form of Hochreiter &
    Schmidhuber 1997, Sec. 5.3 (also Exp. 3).

    One input channel. The class c in {0, 1} sets the first `prefix` steps to -1 (class 0) or
    +1 (class 1); the remaining steps are Gaussian noise with mean 0 and variance `noise_var`
    (0.2 in 1997). The class is predicted at the last step (cross-entropy); memoryless baseline
    ln 2. Solved when the evaluation accuracy is >= 0.99 (our reading).
    """

    input_size, output_size, kind = 1, 2, "classification"
    metric_name = "accuracy"
    citation = "Bengio, Simard & Frasconi 1994; Hochreiter & Schmidhuber 1997, Sec. 5.3"
    solved_criterion = "accuracy >= 0.99 (our reading)"

    def __init__(self, length: int = 100, prefix: int = 1, noise_var: float = 0.2):
        super().__init__(length)
        if not isinstance(prefix, int) or not 1 <= prefix < length:
            raise ValueError(f"task.prefix={prefix!r} is invalid: must be an integer in [1, T)")
        require_number("task.noise_var", noise_var, 0)
        self.prefix, self.noise_var = prefix, noise_var

    @property
    def baseline(self) -> float:
        return math.log(2)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, P = batch_size, self.length, self.prefix
        c = torch.randint(0, 2, (B, 1), generator=generator)
        x = torch.randn(B, T, generator=generator) * math.sqrt(self.noise_var)
        x[:, :P] = (2 * c - 1).float()
        return Batch(x=x.unsqueeze(2), y=c, evidence=torch.arange(P).expand(B, P))
