"""The end-of-sweep summary: completed / skipped / diverged / failed / damaged / running elsewhere.

A Hydra callback (registered in conf/config.yaml) that runs in the process that launched the
sweep, whatever the launcher. At the start it hands the jobs a sweep token (an environment
variable that workers inherit; each run.json records it), so that at the end a run counts as
trained by this sweep only if its run.json carries this token: a run another sweep trained
meanwhile is "skipped", never claimed. It expands the sweep's overrides into run directories as
the jobs do (study.runs.rundir), and imports nothing of the training stack.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import Counter
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from study.runs import grouping, rundir
from study.runs.hydra_private import sweep_jobs_of

ORDER = ["completed", "skipped", "diverged", "failed", "damaged", "unfinished", "running elsewhere"]
ORDER += ["missing"]
log = logging.getLogger(__name__)


def sweep_jobs(config: DictConfig, overrides: list[str] | None = None) -> list[list[str]]:
    """The overrides of every job of this multirun, as Hydra's basic sweeper expands them: the
    experiment's sweep params, then the command line's (default: the task overrides Hydra kept)."""
    params = config.hydra.sweeper.get("params") or {}
    overrides = list(config.hydra.overrides.task) if overrides is None else overrides
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(  # glob() needs it
        [f"{k}={v}" for k, v in params.items()] + overrides
    )
    return sweep_jobs_of(parsed)


def sweep_run_dirs(config: DictConfig) -> list[Path]:
    """The run directory of every run of this multirun (one per member of an ensemble job),
    each once."""
    choice = config.hydra.runtime.choices.get("experiment")
    experiment = rundir.experiment_folder(choice, config.get("experiment_dir"))
    dirs = []
    for job in sweep_jobs(config):
        values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
        seed = int(values.get("seed", config.seed))
        members = grouping.listed_members(values.get("ensemble", config.get("ensemble", 1)))
        dirs += rundir.job_run_dirs(config.out_dir, experiment, job, seed, members).values()
    return list(dict.fromkeys(dirs))  # overlapping ensembles (seed=0,1 ensemble=2) share runs


def summarise(dirs: list[Path], token: str | None) -> tuple[Counter, dict[str, list[str]]]:
    """Counts by outcome for this sweep, and the run ids of the ones that need attention."""
    counts, named = (
        Counter(),
        {k: [] for k in ("failed", "damaged", "unfinished", "running elsewhere", "missing")},
    )
    for d in dirs:
        state = rundir.status(d)
        info = rundir.read_run_json(d) or {}
        if state in rundir.FINISHED and info.get("sweep") != token:
            state = "skipped"  # finished before this sweep, or by another one
        elif state not in rundir.FINISHED and rundir.RunLock(d).busy():
            # another sweep's job holds it: also before it wrote its first run.json (a job
            # that trains an auto ensemble locks every member's directory first)
            state = "running elsewhere"
        elif state == "running":
            state = "unfinished"
        counts[state] += 1
        if state in named:
            named[state].append(d.name)
    return counts, named


class SweepSummary(Callback):
    failed = 0  # runs this sweep leaves failed, damaged or missing: the command exits nonzero

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.token, self.config = uuid.uuid4().hex, config
        SweepSummary.last = self  # for the summary so far after Ctrl-C (study/run.py)
        os.environ[rundir.SWEEP_ENV] = self.token  # joblib/submitit workers inherit it
        os.environ[rundir.SWEEP_PID_ENV] = str(os.getpid())  # joblib workers watch this process
        os.environ[rundir.SWEEP_DIR_ENV] = str(config.hydra.sweep.dir)  # the [k/N] counter
        os.environ[rundir.SWEEP_TOTAL_ENV] = str(len(sweep_run_dirs(config)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.report(config)
        for key in (rundir.SWEEP_DIR_ENV, rundir.SWEEP_TOTAL_ENV):
            os.environ.pop(key, None)  # a later single run in this process counts nothing

    def report(self, config: DictConfig) -> None:
        dirs = sweep_run_dirs(config)
        counts, named = summarise(dirs, getattr(self, "token", None))
        parts = [f"{counts[k]} {k}" for k in ORDER if counts[k] or k in ORDER[:4]]
        log.info("sweep of %d runs: %s", len(dirs), " / ".join(parts))
        for state, ids in named.items():
            for ident in ids:
                log.info("  %s: %s", state, ident)
        SweepSummary.failed = sum(counts[k] for k in ("failed", "damaged", "unfinished", "missing"))
