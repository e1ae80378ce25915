"""Aggregation: load a results tree into pandas (runs with flattened config, joined tables).

    runs = load_runs("results/lags_adding")              # one row per finished run
    flow = load_table("results/lags_adding", "grad_flow")  # every run's rows, with run columns

Tables are cached per results directory in <root>/.cache/, keyed by the run.json files they
were built from, so a reload after an unchanged sweep reads one parquet file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import yaml

from study import rundir

TABLES = ("metrics", "grad_flow", "evidence", "weights")


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root` (a directory holding a run.json), sorted."""
    return sorted(p.parent for p in Path(root).rglob(rundir.RUN_JSON) if ".cache" not in p.parts)


def load_runs(root: Path, finished_only: bool = True) -> pd.DataFrame:
    """One row per run: run.json fields, plus the resolved config flattened into `cfg.*` columns;
    `config` is the run id without its seed (the configuration the seeds replicate)."""
    rows = []
    for d in run_dirs(root):
        info = rundir.read_run_json(d)
        if info is None or (finished_only and info.get("status") not in rundir.FINISHED):
            continue
        cfg = yaml.safe_load((d / rundir.CONFIG).read_text())
        flat = pd.json_normalize(cfg, sep=".").iloc[0].to_dict()
        info = {k: v for k, v in info.items() if not isinstance(v, dict | list)}
        rows.append({**info, "path": str(d), **{f"cfg.{k}": v for k, v in flat.items()}})
    runs = pd.DataFrame(rows)
    if len(runs):
        runs["config"] = runs["run_id"].str.replace(r",?seed=\d+$", "", regex=True)
        runs.loc[runs["config"] == "", "config"] = "default"
    return runs


def _fingerprint(runs: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for path in sorted(runs["path"]):
        h.update(f"{path}:{(Path(path) / rundir.RUN_JSON).stat().st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_table(
    root: Path, table: str, runs: pd.DataFrame | None = None, cache: bool = True
) -> pd.DataFrame:
    """One tidy table of every finished run, joined with the run's `run_id`, `config`, `seed`,
    `cell` and `path`. Cached in <root>/.cache/ unless `cache=False`."""
    if table not in TABLES:
        raise ValueError(f"table={table!r} is unknown: allowed {', '.join(TABLES)}")
    runs = load_runs(root) if runs is None else runs
    if runs.empty:
        return pd.DataFrame()
    cached = Path(root) / ".cache" / f"{table}-{_fingerprint(runs)}.parquet"
    if cache and cached.exists():
        return pd.read_parquet(cached)
    keys = runs[["path", "run_id", "config", "seed", "cell"]]
    frames = []
    for row in keys.itertuples(index=False):
        f = Path(row.path) / f"{table}.parquet"
        if f.exists():
            frames.append(pd.read_parquet(f).assign(**row._asdict()))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if cache and len(out):
        for old in cached.parent.glob(f"{table}-*.parquet"):
            old.unlink()
        rundir.write_parquet(cached, out)
    return out


def status_table(root: Path) -> pd.DataFrame:
    """Per configuration: seeds completed, diverged, failed, running, and missing (seeds that
    other configurations of the same results directory have)."""
    runs = load_runs(root, finished_only=False)
    if runs.empty:
        return pd.DataFrame()
    all_seeds = set(runs["seed"])
    rows = []
    for config, g in runs.groupby("config", sort=True):
        counts = g["status"].value_counts()
        row = {"config": config}
        for status in ("completed", "diverged", "failed", "running"):
            row[status] = int(counts.get(status, 0))
        row["missing"] = len(all_seeds - set(g["seed"]))
        rows.append(row)
    return pd.DataFrame(rows)
