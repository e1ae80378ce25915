"""Shared test helpers."""

import pytest
import torch

from study.model import build_model
from tests.tiny_study import make_tiny_study


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def small_model(cell: str, input_size=2, hidden=5, output=1, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cell, input_size, output, hidden_size=hidden, **kw).to(dtype)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """Every experiment of the study, tiny, run once per test session through the real command."""
    root = tmp_path_factory.mktemp("study")
    make_tiny_study(root)
    return root
