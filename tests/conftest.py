"""Shared test helpers: the repository root, the real command in a subprocess, tiny models."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study.model import build_model
from tests.tiny_study import make_tiny_study

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def study_run(*args, out: Path | None = None, module="study.run", timeout=600, **kw):
    """`python -m study.run ARGS out_dir=OUT` from the repository root; the CompletedProcess."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    if out is not None:
        cmd.append(f"out_dir={out}")
    kw.setdefault("cwd", ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def small_model(cell: str, input_size=2, hidden=5, output=1, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cell, input_size, output, hidden_size=hidden, **kw).to(dtype)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """Every experiment of the study, tiny, run once per test session through the real command."""
    root = tmp_path_factory.mktemp("study")
    make_tiny_study(root)
    return root
