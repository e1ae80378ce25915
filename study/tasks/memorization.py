"""Pascanu et al. (2013)'s pathological memory tasks: noiseless memorization, random permutation."""

from __future__ import annotations

import math

import torch

from study.checks import require_int
from study.tasks.base import Batch, Task, one_hot


class NoiselessMemorization(Task):
    """Noiseless memorization, Pascanu, Mikolov & Bengio 2013 (after Hochreiter & Schmidhuber 1997).

    A binary pattern of `bits` steps (symbols 0/1), then T-1 steps of a constant blank, a "go"
    symbol, and `bits` blank steps during which the network must output the pattern in order
    (cross-entropy on those steps; one-hot inputs over {0, 1, blank, go}). A memoryless
    predictor guesses each bit: baseline ln 2. Solved when every bit is recalled on >= 99% of
    the evaluation set (our reading).
    """

    input_size, output_size, kind = 4, 2, "classification"
    metric_name = "bit_acc"
    citation = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs"
    solved_criterion = "bit accuracy >= 0.99 (our reading)"

    def __init__(self, length: int = 100, bits: int = 5):
        super().__init__(length)
        require_int("task.bits", bits, 1)
        self.bits = bits

    @property
    def loss_window(self) -> int:
        return self.bits

    @property
    def baseline(self) -> float:
        return math.log(2)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, K = batch_size, self.length, self.bits
        pattern = torch.randint(0, 2, (B, K), generator=generator)
        seq = torch.full((B, K + T + K), 2)  # blank
        seq[:, :K] = pattern
        seq[:, K + T - 1] = 3  # go
        return Batch(x=one_hot(seq, 4), y=pattern, evidence=torch.arange(K).expand(B, K))


class RandomPermutation(Task):
    """Random permutation, Pascanu, Mikolov & Bengio 2013 (after Hochreiter & Schmidhuber 1997).

    T random symbols from a vocabulary of `vocab` (one-hot); at the last step the network must
    output the first symbol (cross-entropy). Memoryless baseline ln(vocab). Solved when the
    evaluation accuracy is >= 0.99 (our reading).
    """

    kind = "classification"
    metric_name = "accuracy"
    citation = "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs"
    solved_criterion = "accuracy >= 0.99 (our reading)"

    def __init__(self, length: int = 100, vocab: int = 100):
        super().__init__(length)
        require_int("task.vocab", vocab, 2)
        self.vocab = self.input_size = self.output_size = vocab

    @property
    def baseline(self) -> float:
        return math.log(self.vocab)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T = batch_size, self.length
        seq = torch.randint(0, self.vocab, (B, T), generator=generator)
        return Batch(x=one_hot(seq, self.vocab), y=seq[:, :1], evidence=torch.zeros(B, 1).long())
