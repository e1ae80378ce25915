"""A run's resumable training state on disk (the one results file that needs torch)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from study.rundir import CHECKPOINT, atomic_write, write_tables

log = logging.getLogger(__name__)


class CheckpointFile:
    """`<run dir>/checkpoint.pt`, saved atomically; removed once the run has finished. A file that
    cannot be loaded is moved aside (checkpoint.pt.corrupt) with one line, and training restarts."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CHECKPOINT

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=False)  # our own file: records are pickled
            if not isinstance(state, dict) or "next_step" not in state:
                raise ValueError("not a training checkpoint")
            return state
        except Exception as e:  # any unpickling failure: zip, pickle, EOF, attribute errors
            aside = self.path.with_name(CHECKPOINT + ".corrupt")
            self.path.replace(aside)
            log.warning(
                "%s is unreadable (%s); moved to %s, training restarts",
                self.path,
                type(e).__name__,
                aside.name,
            )
            return None

    def save(self, state: dict) -> None:
        """Save the state, and flush the run's tables so far beside it: a running run's partial
        learning curves and gradient flow can be read while it trains."""
        atomic_write(self.path, lambda p: torch.save(state, p))
        write_tables(self.path.parent, state["records"].tables())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
