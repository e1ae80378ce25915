"""Results I/O: the files of one run directory, written atomically.

    <run dir>/config.yaml        the resolved config of the run
    <run dir>/run.json           status (running | completed | diverged | failed) and provenance
    <run dir>/metrics.parquet    tidy rows (step, name, value)
    <run dir>/grad_flow.parquet  tidy rows (step, quantity, state, position, lag, stat, value)
    <run dir>/evidence.parquet   tidy rows (step, example, evidence, position, lag, quantity, value)
    <run dir>/weights.parquet    tidy rows (step, block, stat, value)
    <run dir>/checkpoint.pt      resumable training state while the run is unfinished

Every file goes to a temporary name in the same directory and is then renamed over the target,
so a reader sees the old file or the new one, never a torn one. `run.json` is written first with
status "running" and rewritten last with the final status: a run killed at any point reads as
unfinished, and is redone when its sweep resumes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch

RUN_JSON, CONFIG = "run.json", "config.yaml"
METRICS, FLOW = "metrics.parquet", "grad_flow.parquet"
EVIDENCE, WEIGHTS = "evidence.parquet", "weights.parquet"
CHECKPOINT = "checkpoint.pt"
FINISHED = ("completed", "diverged")  # statuses that a resumed sweep skips
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path), fsync, then rename tmp over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give results the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda p: frame.to_parquet(p, index=False))


class CheckpointFile:
    """A run's checkpoint, saved atomically; removed once the run has finished."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CHECKPOINT

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        return torch.load(self.path, weights_only=False)  # our own file: records are pickled

    def save(self, state: dict) -> None:
        atomic_write(self.path, lambda p: torch.save(state, p))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def read_run_json(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def status(run_dir: Path) -> str | None:
    info = read_run_json(run_dir)
    return None if info is None else info.get("status")


def is_finished(run_dir: Path) -> bool:
    return status(run_dir) in FINISHED


def provenance() -> dict:
    """Package versions and the git commit the code ran from."""
    versions = {}
    for pkg in ("torch", "numpy", "pandas", "hydra-core", "omegaconf"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = platform.python_version()
    return {"versions": versions, "git": _git_commit()}


def _git_commit() -> dict | None:
    root = Path(__file__).resolve().parent.parent
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None
