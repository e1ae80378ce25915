"""The end-of-sweep summary: completed / skipped / diverged / failed, with the failed run ids.

A Hydra callback (registered in conf/config.yaml) that runs in the process that launched the
sweep, whatever the launcher: it expands the sweep's overrides into run ids, as the jobs did,
and reads each run's run.json. A run whose run.json predates the sweep was skipped.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from study import rundir
from study.job import run_id


def sweep_run_dirs(config: DictConfig) -> list[Path]:
    """The run directory of every job of this multirun."""
    params = config.hydra.sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(overrides)
    experiment = config.hydra.runtime.choices.get("experiment") or "default"
    dirs = []
    for batch in BasicSweeper.split_arguments(parsed, None):
        for job in batch:
            values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
            seed = int(values.get("seed", config.seed))
            members = int(values.get("train.ensemble", config.train.get("ensemble", 1)))
            for member in range(seed, seed + members):  # an ensemble job writes one dir per seed
                dirs.append(Path(config.out_dir) / experiment / run_id(job, member))
    return dirs


def summarise(dirs: list[Path], started: float) -> tuple[Counter, list[str]]:
    counts, failed = Counter(), []
    for d in dirs:
        info = rundir.read_run_json(d)
        if info is None:
            counts["missing"] += 1
            continue
        status = info.get("status")
        if status in rundir.FINISHED and (d / rundir.RUN_JSON).stat().st_mtime < started:
            status = "skipped"
        counts[status] += 1
        if status == "failed":
            failed.append(d.name)
    return counts, failed


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        dirs = sweep_run_dirs(config)
        counts, failed = summarise(dirs, getattr(self, "started", 0.0))
        order = ["completed", "skipped", "diverged", "failed", "running", "missing"]
        line = " / ".join(f"{counts[k]} {k}" for k in order if counts[k] or k in order[:4])
        print(f"sweep of {len(dirs)} runs: {line}", file=sys.stderr)
        for ident in failed:
            print(f"  failed: {ident}", file=sys.stderr)
