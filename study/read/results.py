"""Aggregation: load a results tree into pandas (runs with flattened config, joined tables).

    runs = load_runs("results/lags_adding")              # one row per finished run
    flow = load_table("results/lags_adding", "grad_flow")  # every run's rows, with run columns

Finished runs are verified against the checksums their run.json records; a damaged run is left
out with one warning naming its path and what is wrong (`status_table` lists it). Tables are
cached outside the results tree (reading never writes into it; a read-only results folder reads
the same): in $STUDY_CACHE, else $XDG_CACHE_HOME/study, else ~/.cache/study, one folder per
results root, keyed by the runs' paths relative to <root> and their recorded checksums, so the
key does not depend on how <root> is spelled and a reload after an unchanged sweep reads one
parquet file. A cache that cannot be written is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from study.read.labels import vocabulary
from study.runs import rundir

TABLES = tuple(rundir.TABLES)
log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str | None]] = set()  # the damaged runs already named in this process


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root` (a directory holding a run.json), sorted."""
    return sorted(p.parent for p in Path(root).rglob(rundir.RUN_JSON) if ".cache" not in p.parts)


def experiments(path: Path) -> dict[str, Path]:
    """The experiment folders at or below `path`, by name: the one convention of every
    command-line tool. Runs live in <out_dir>/<experiment>/<run id>/, so `path` may be an out_dir
    (every experiment in it), one experiment folder, or any folder above them; an experiment is
    named by its path below `path` (its folder name when `path` is the experiment)."""
    base, found = Path(path).resolve(), {}
    for folder in sorted({d.parent for d in run_dirs(path)}):
        below = (
            folder.resolve().relative_to(base) if folder.resolve().is_relative_to(base) else None
        )
        found[below.as_posix() if below and below.parts else folder.name] = folder
    return found


def experiments_or_exit(parser, path) -> dict[str, Path]:
    """experiments(path) for a command-line tool: argparse's one-line error (exit 2) when
    `path` is not a directory or holds no runs."""
    if not Path(path).is_dir():
        parser.error(f"results={path} is not a directory")
    found = experiments(path)
    if not found:
        parser.error(f"results={path} holds no runs (no <experiment>/<run id>/run.json)")
    return found


def writable_or_exit(parser, folder: Path) -> Path:
    """A folder a command-line tool writes into, created if need be: argparse's one-line error
    (exit 2) when it is a file or cannot be written, before anything is computed."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".study-write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        parser.error(f"--out {folder}: not a writable folder ({e.strerror})")
    return folder


def load_runs(root: Path, finished_only: bool = True) -> pd.DataFrame:
    """One row per run: run.json fields, plus the resolved config flattened into `cfg.*` columns;
    `config` is the run id without its seed (the configuration the seeds replicate); `model`,
    `T` and `lr` the study's names for it (study.read.labels.vocabulary). `status` is rundir.status
    (damaged when a finished run's files fail their checksums); `problem` says what is wrong.
    finished_only: only intact completed or diverged runs."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results={root} is not a directory")
    rows = []
    for d in run_dirs(root):
        info = rundir.read_run_json(d) or {}
        state = rundir.status(d)
        problem = rundir.damage(d) if state == "damaged" else None
        if state == "damaged" and (str(d), problem) not in _WARNED:  # once per process
            _WARNED.add((str(d), problem))
            log.warning("damaged run %s: %s (rerun its sweep to retrain it)", d, problem)
        if finished_only and state not in rundir.FINISHED:
            continue
        try:
            cfg = rundir.read_config(d) or {}
            flat = rundir.flatten(cfg)
        except (OSError, yaml.YAMLError, AttributeError, IndexError):
            flat = {}
        info = {k: v for k, v in info.items() if not isinstance(v, dict | list)}
        info.setdefault("run_id", d.name)
        if "seed" not in info and (m := re.search(r"seed=(\d+)$", d.name)):
            info["seed"] = int(m.group(1))  # run.json unreadable: the run id still says it
        row = {**info, "status": state, "problem": problem, "path": str(d)}
        rows.append({**row, **{f"cfg.{k}": v for k, v in flat.items()}})
    runs = pd.DataFrame(rows)
    if len(runs):
        runs["config"] = runs["run_id"].str.replace(r",?seed=\d+$", "", regex=True)
        runs.loc[runs["config"] == "", "config"] = "default"
    return vocabulary(runs)


def cache_dir(root: Path) -> Path:
    """Where the tables of the results under `root` are cached (module docstring)."""
    base = os.environ.get("STUDY_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        base = Path(xdg) / "study"
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return Path(base) / key


def fingerprint(root: Path, runs: pd.DataFrame) -> str:
    """Content key of a set of runs: their paths relative to root and their recorded checksums."""
    h = hashlib.sha256(
        b"cache v3: paths relative to root, memory state"
    )  # older caches are not read
    for path in sorted(runs["path"]):
        info = rundir.read_run_json(Path(path)) or {}
        rel = _relative(root, path)
        h.update(f"{rel}:{sorted((info.get('checksums') or {}).items())}".encode())
    return h.hexdigest()[:16]


def load_table(
    root: Path, table: str, runs: pd.DataFrame | None = None, cache: bool = True
) -> pd.DataFrame:
    """One tidy table of every finished run, joined with the run's `run_id`, `config`, `seed`,
    `cell`, `memory` (the state that carries memory across steps: h, or s for the LRU) and
    `path`. Cached (cache_dir) unless `cache=False`."""
    if table not in TABLES:
        raise ValueError(f"table={table!r} is unknown: allowed {', '.join(TABLES)}")
    runs = load_runs(root) if runs is None else runs
    if runs.empty:
        return pd.DataFrame()
    cached = cache_dir(root) / f"{table}-{fingerprint(root, runs)}.parquet"
    # the cache holds each run's path relative to root; the rows get `path` as runs spells it
    relative = {_relative(root, p): p for p in runs["path"]}
    if cache and cached.exists():
        out = pd.read_parquet(cached)
        return out.assign(path=out["path"].map(relative))
    runs = runs.assign(memory=runs.get("memory", pd.Series("h", index=runs.index)))
    keys = runs[["path", "run_id", "config", "seed", "cell", "memory"]].fillna({"memory": "h"})
    frames, owners = [], []  # each run's table, and its row in `keys`
    for k, path in enumerate(keys["path"]):
        frame = rundir.read_table(Path(path), table)
        if frame is not None:
            frames.append(frame)
            owners.append(k)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if frames:  # the run's keys on each of its rows: one column at a time, not per run
        rows_of = np.repeat(owners, [len(f) for f in frames])
        for column in keys.columns:
            out[column] = keys[column].to_numpy()[rows_of]
    if cache and len(out):
        try:
            for old in cached.parent.glob(f"{table}-*.parquet"):
                old.unlink()
            as_cached = out["path"].map({p: r for r, p in relative.items()})  # one per run
            rundir.write_parquet(cached, out.assign(path=as_cached))
        except OSError as e:  # a read-only home or cache: reading goes on uncached
            log.debug("cache %s not written: %s", cached, e.strerror)
    return out


def _relative(root: Path, path: str) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


STATUSES = ("completed", "diverged", "failed", "damaged", "running", "missing")


def status_table(root: Path) -> pd.DataFrame:
    """Per configuration: seeds completed, diverged, failed, damaged, running (or interrupted),
    and missing (seeds that other configurations of the same results directory have)."""
    runs = load_runs(root, finished_only=False)
    if runs.empty:
        return pd.DataFrame(columns=["config", *STATUSES])
    all_seeds = set(runs["seed"].dropna())
    rows = []
    for config, g in runs.groupby("config", sort=True):
        counts = g["status"].value_counts()
        row = {"config": config}
        for state in STATUSES[:-1]:
            row[state] = int(counts.get(state, 0))
        row["missing"] = len(all_seeds - set(g["seed"].dropna()))
        rows.append(row)
    return pd.DataFrame(rows)
