"""The adding problem in its four published forms (one `variant` key)."""

from __future__ import annotations

import math

import torch

from study.tasks.base import Batch, Task, distinct_pair, left_pad_mask, random_lengths, uniform_int

VARIANTS = ("arjovsky2016", "hochreiter1997", "pascanu2013", "tcn2018")


class Adding(Task):
    """Adding problem: two input channels, a value and a marker; remember the two marked values
    across a long lag and output (a function of) their sum at the last step (MSE).

    arjovsky2016 (default) -- Arjovsky, Shah & Bengio 2016, "Unitary evolution RNNs", Sec. 4.2:
        length T, values ~ U[0,1], one marker uniform in [0, T//2), one in [T//2, T);
        target X1 + X2; baseline Var = 1/6.
    hochreiter1997 -- Hochreiter & Schmidhuber 1997, "Long short-term memory", Exp. 4:
        length uniform in [T, T + T//10], values ~ U[-1,1], marker channel -1 at the first and
        last step; X1 marked among the first 10 steps, X2 among the first T//2 steps other than
        X1's (the paper's "first T/2-1 still unmarked pairs"); a marked first step has its value
        set to 0; target 0.5 + (X1 + X2)/4; solved when |error| < 0.04 (the paper's criterion).
    pascanu2013 -- Pascanu, Mikolov & Bengio 2013, "On the difficulty of training RNNs":
        length l uniform in [T, 1.1T), markers in [0, 0.1l) and [0.1l, 0.5l), values ~ U[0,1],
        target (X1 + X2)/2; baseline 1/24.
    tcn2018 -- Bai, Kolter & Koltun 2018, "An empirical evaluation of generic convolutional and
        recurrent networks": as arjovsky2016 but both markers anywhere (distinct positions).

    Variable-length variants are left-padded (Batch.valid) so that every sequence ends at T-1.
    """

    input_size, output_size, kind = 2, 1, "regression"
    metric_name = "acc@0.04"
    citation = "see the variant"

    def __init__(self, length: int = 100, variant: str = "arjovsky2016"):
        super().__init__(length)
        if variant not in VARIANTS:
            raise ValueError(f"task.variant={variant!r} is unknown: allowed {', '.join(VARIANTS)}")
        if variant == "hochreiter1997" and length < 24:
            raise ValueError(f"task.length={length} is invalid for hochreiter1997: must be >= 24")
        if variant == "pascanu2013" and length < 10:
            raise ValueError(f"task.length={length} is invalid for pascanu2013: must be >= 10")
        self.variant = variant
        self.solved_criterion = (
            "|error| < 0.04 on 99% of evaluation sequences (Hochreiter & Schmidhuber 1997)"
            if variant == "hochreiter1997"
            else "MSE below 1% of the memoryless baseline (our reading: the paper gives none)"
        )

    @property
    def max_length(self) -> int:
        T = self.length
        return {"hochreiter1997": T + T // 10, "pascanu2013": math.ceil(1.1 * T) - 1}.get(
            self.variant, T
        )

    @property
    def baseline(self) -> float:
        if self.variant == "hochreiter1997":
            # Var(X) = 1/3 for X ~ U[-1,1], 0 when the marked step is the first one: X1 lands there
            # with probability 1/10, X2 with probability (9/10) / (T//2 - 1).
            p_first = 1 / 10 + (9 / 10) / (self.length // 2 - 1)
            return (1 / 3) * (2 - p_first) / 16
        return {"pascanu2013": 1 / 24}.get(self.variant, 1 / 6)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, g = batch_size, self.length, generator
        if self.variant == "arjovsky2016":
            lengths = torch.full((B,), T)
            first = uniform_int(0, T // 2, B, g)
            second = uniform_int(T // 2, T, B, g)
        elif self.variant == "tcn2018":
            lengths = torch.full((B,), T)
            first, second = distinct_pair(T, T, B, g)
        elif self.variant == "hochreiter1997":
            lengths = random_lengths(T, T + T // 10, B, g)
            first, second = distinct_pair(10, T // 2, B, g)
        else:  # pascanu2013
            lengths = uniform_int(T, math.ceil(1.1 * T), B, g)
            split = torch.ceil(0.1 * lengths)
            first = uniform_int(0, split, B, g)
            second = uniform_int(split, torch.ceil(0.5 * lengths), B, g)

        L = self.max_length
        valid, offset = left_pad_mask(lengths, L)
        evidence = torch.stack([first, second], dim=1).sort(dim=1).values + offset.unsqueeze(1)
        values = self._values(B, L, g) * valid
        markers = torch.zeros(B, L)
        if self.variant == "hochreiter1997":
            markers.scatter_(1, offset.unsqueeze(1), -1.0)  # first step of each sequence
            markers[:, -1] = -1.0  # and the last
            if self.zero_marked_first_step:
                first_marked = ((first == 0) | (second == 0)).unsqueeze(1)
                start = values.gather(1, offset.unsqueeze(1))
                values.scatter_(1, offset.unsqueeze(1), start.masked_fill(first_marked, 0.0))
        markers.scatter_(1, evidence, 1.0)
        x = torch.stack([values, markers * valid], dim=2)
        y = self._target(values.gather(1, evidence))
        valid = valid if self.max_length > self.length else None  # fixed length: no mask
        return Batch(x=x, y=y.view(B, 1, 1), evidence=evidence, valid=valid)

    zero_marked_first_step = True  # Exp. 4: "in the rare case where the first pair is marked"

    def _values(self, B: int, L: int, g: torch.Generator) -> torch.Tensor:
        if self.variant == "hochreiter1997":
            return 2 * torch.rand(B, L, generator=g) - 1  # U[-1, 1]
        return torch.rand(B, L, generator=g)  # U[0, 1]

    def _target(self, marked: torch.Tensor) -> torch.Tensor:
        if self.variant == "hochreiter1997":
            return 0.5 + marked.sum(1) / 4
        if self.variant == "pascanu2013":
            return marked.mean(1)
        return marked.sum(1)

    def solved(self, eval_loss: float, eval_metric: float) -> bool:
        if self.variant == "hochreiter1997":
            return eval_metric >= 0.99
        return eval_loss < 0.01 * self.baseline
