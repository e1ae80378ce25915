"""Shared test helpers."""

import pytest
import torch

from study.model import build_model


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def small_model(cell: str, input_size=2, hidden=5, output=1, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cell, input_size, output, hidden_size=hidden, **kw).to(dtype)
