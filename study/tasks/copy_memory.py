"""The copy-memory problem: reproduce ten symbols after a long blank stretch."""

from __future__ import annotations

import math

import torch

from study.tasks.base import Batch, Task, one_hot


class CopyMemory(Task):
    """Copy memory, Arjovsky, Shah & Bengio 2016, Sec. 4.1 (after Hochreiter & Schmidhuber 1997).

    Alphabet {0: blank, 1..8: symbols, 9: delimiter}, one-hot inputs. The sequence has T + 20
    steps: 10 symbols drawn uniformly from 1..8, T-1 blanks, the delimiter, 10 blanks. The target
    is blank for the first T + 10 steps, then the 10 symbols in order. Cross-entropy over all
    steps. A memoryless predictor that knows when to recall outputs blank, then uniform over 8
    symbols: loss 10 ln 8 / (T + 20). The metric is the accuracy on the 10 recalled symbols;
    solved when it is >= 0.99 (our reading; the paper compares against the baseline only).
    """

    input_size, output_size, kind = 10, 10, "classification"
    metric_name = "recall_acc"
    metric_window = 10
    citation = "Arjovsky, Shah & Bengio 2016, Unitary evolution recurrent neural networks"
    solved_criterion = "accuracy >= 0.99 on the recalled symbols (our reading)"
    n_symbols, n_copy = 8, 10

    @property
    def loss_window(self) -> int:
        return self.length + 20

    @property
    def baseline(self) -> float:
        return self.n_copy * math.log(self.n_symbols) / (self.length + 20)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, K = batch_size, self.length, self.n_copy
        symbols = torch.randint(1, self.n_symbols + 1, (B, K), generator=generator)
        seq = torch.zeros(B, T + 2 * K, dtype=torch.long)
        seq[:, :K] = symbols
        seq[:, K + T - 1] = 9  # the delimiter: recall starts at the next step
        y = torch.zeros(B, T + 2 * K, dtype=torch.long)
        y[:, -K:] = symbols
        evidence = torch.arange(K).expand(B, K)
        return Batch(x=one_hot(seq, 10), y=y, evidence=evidence)
