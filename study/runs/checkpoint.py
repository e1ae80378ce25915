"""A run's resumable training state on disk (the one results file that needs torch)."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import torch

from study.runs.rundir import CHECKPOINT, atomic_write, write_tables
from study.train import Records

log = logging.getLogger(__name__)
FULL = 1 << 20  # bytes free below which a failed checkpoint write is a full disk


class CheckpointFile:
    """`<run dir>/checkpoint.pt`, saved atomically; removed once the run has finished. A file that
    cannot be loaded is moved aside (checkpoint.pt.corrupt) with one line, and training restarts.
    It holds tensors, lists, strings and numbers only (the records as Records.to_plain) and is
    loaded with weights_only=True: a pickle planted in a results folder is refused, never run."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CHECKPOINT

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
            if not isinstance(state, dict) or "next_step" not in state:
                raise ValueError("not a training checkpoint")
            return {**state, "records": Records.from_plain(state["records"])}
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
        plain = {**state, "records": state["records"].to_plain()}
        atomic_write(self.path, lambda p: self._write(plain, p))
        write_tables(self.path.parent, state["records"].tables())

    def _write(self, plain: dict, tmp: Path) -> None:
        try:
            torch.save(plain, tmp)
        except RuntimeError as e:
            # torch's zip writer reports a full disk as "[enforce fail at inline_container.cc]
            # ... unexpected pos": say what it is, as the other writes do (rundir.is_disk_error)
            if shutil.disk_usage(tmp.parent).free < FULL:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path)) from e
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
