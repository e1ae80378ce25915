"""The temporal-order problem: classify the order of two or three relevant symbols among noise."""

from __future__ import annotations

import math

import torch

from study.tasks.base import Batch, Task, left_pad_mask, one_hot, random_lengths, uniform_int

# symbols: a b c d (distractors), B (begin), E (end), X, Y (the relevant ones)
A_, B_, E_, X_, Y_ = 0, 4, 5, 6, 7
WINDOWS = {2: [(0.10, 0.20), (0.50, 0.60)], 3: [(0.10, 0.20), (0.33, 0.43), (0.66, 0.76)]}


class TemporalOrder(Task):
    """Temporal order, Hochreiter & Schmidhuber 1997, Exp. 6a (bits=2) and 6b (bits=3);
    the 2-bit and 3-bit forms of Pascanu, Mikolov & Bengio 2013.

    Length uniform in [T, T + T//10]; the first step is B, the last E, the others random
    distractors a-d except `bits` relevant steps holding X or Y, placed in fixed windows of the
    nominal length T: [0.1T, 0.2T] and [0.5T, 0.6T] for 2 bits (the paper's [10, 20] and [50, 60]
    at T = 100), [0.1T, 0.2T], [0.33T, 0.43T], [0.66T, 0.76T] for 3 bits. The class at the last
    step is the X/Y pattern in order (4 or 8 classes, cross-entropy); the memoryless baseline is
    ln 4 or ln 8. Solved when the evaluation accuracy is >= 0.99 (our reading of the paper's
    "all output units within 0.3 of their target").
    """

    input_size, kind = 8, "classification"
    metric_name = "accuracy"
    citation = "Hochreiter & Schmidhuber 1997, Exp. 6; Pascanu, Mikolov & Bengio 2013"
    solved_criterion = "accuracy >= 0.99 (our reading)"

    def __init__(self, length: int = 100, bits: int = 2):
        super().__init__(length)
        if bits not in WINDOWS:
            raise ValueError(f"task.bits={bits!r} is invalid: allowed 2, 3")
        if length < 20:
            raise ValueError(f"task.length={length} is invalid for temporal_order: must be >= 20")
        self.bits = bits
        self.output_size = 2**bits

    @property
    def baseline(self) -> float:
        return math.log(2**self.bits)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, g = batch_size, self.length, generator
        lengths = random_lengths(T, T + T // 10, B, g)
        L = T + T // 10
        valid, offset = left_pad_mask(lengths, L)
        seq = torch.randint(A_, A_ + 4, (B, L), generator=g)
        seq.scatter_(1, offset.unsqueeze(1), B_)
        seq[:, -1] = E_
        positions = torch.stack(
            [uniform_int(round(lo * T), round(hi * T) + 1, B, g) for lo, hi in WINDOWS[self.bits]],
            dim=1,
        )
        evidence = positions + offset.unsqueeze(1)
        bit = torch.randint(0, 2, (B, self.bits), generator=g)  # 0 = X, 1 = Y
        seq.scatter_(1, evidence, X_ + bit)
        weights = 2 ** torch.arange(self.bits - 1, -1, -1)
        y = (bit * weights).sum(1, keepdim=True)  # XX..X = 0, ..., YY..Y = 2**bits - 1
        x = one_hot(seq, 8) * valid.unsqueeze(2)
        return Batch(x=x, y=y, evidence=evidence, valid=valid)
