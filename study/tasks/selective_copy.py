"""Selective copying: reproduce, in order, tokens scattered at random positions among blanks."""

from __future__ import annotations

import math

import torch

from study.checks import require_int
from study.tasks.base import Batch, Task, one_hot


class SelectiveCopy(Task):
    """Selective copying, Gu & Dao 2023, "Mamba", Sec. 3.1 (after Arjovsky et al.'s copy task).

    `tokens` data tokens drawn uniformly from a vocabulary of `vocab` are placed at random
    distinct positions (in order) among T steps of blank; then `tokens` steps of a "recall"
    marker, during which the network must output the tokens in their order (cross-entropy).
    Inputs are one-hot over vocab + 2 symbols (tokens, blank, recall). Memoryless baseline
    ln(vocab). Solved when the recall accuracy is >= 0.99 (our reading).
    """

    kind = "classification"
    metric_name = "recall_acc"
    citation = "Gu & Dao 2023, Mamba: linear-time sequence modeling with selective state spaces"
    solved_criterion = "recall accuracy >= 0.99 (our reading)"

    def __init__(self, length: int = 100, tokens: int = 16, vocab: int = 16):
        super().__init__(length)
        if not isinstance(tokens, int) or not 1 <= tokens <= length:
            raise ValueError(f"task.tokens={tokens!r} is invalid: must be an integer in [1, T]")
        require_int("task.vocab", vocab, 2)
        self.tokens, self.vocab = tokens, vocab
        self.input_size, self.output_size = vocab + 2, vocab

    @property
    def loss_window(self) -> int:
        return self.tokens

    @property
    def baseline(self) -> float:
        return math.log(self.vocab)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, T, K, V = batch_size, self.length, self.tokens, self.vocab
        # K distinct positions in [0, T), sorted: the K smallest of T random keys
        keys = torch.rand(B, T, generator=generator)
        positions = keys.topk(K, dim=1, largest=False).indices.sort(dim=1).values
        data = torch.randint(0, V, (B, K), generator=generator)
        seq = torch.full((B, T + K), V)  # blank
        seq.scatter_(1, positions, data)
        seq[:, T:] = V + 1  # recall
        return Batch(x=one_hot(seq, V + 2), y=data, evidence=positions)
