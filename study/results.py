"""Aggregation: load a results tree into pandas (runs with flattened config, joined tables)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from study import rundir


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under `root` (a directory holding a run.json), sorted."""
    return sorted(p.parent for p in Path(root).rglob(rundir.RUN_JSON))


def load_runs(root: Path, finished_only: bool = True) -> pd.DataFrame:
    """One row per run: run.json fields, plus the resolved config flattened into `cfg.*` columns."""
    rows = []
    for d in run_dirs(root):
        info = rundir.read_run_json(d)
        if info is None or (finished_only and info.get("status") not in rundir.FINISHED):
            continue
        cfg = yaml.safe_load((d / rundir.CONFIG).read_text())
        flat = pd.json_normalize(cfg, sep=".").iloc[0].to_dict()
        info = {k: v for k, v in info.items() if not isinstance(v, dict | list)}
        rows.append({**info, "path": str(d), **{f"cfg.{k}": v for k, v in flat.items()}})
    return pd.DataFrame(rows)


def load_table(root: Path, table: str, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Concatenate one tidy table ("metrics" or "grad_flow") of every finished run, keyed by
    `path` (unique) and `run_id`."""
    runs = load_runs(root) if runs is None else runs
    frames = []
    for path, ident in zip(runs["path"], runs["run_id"]):
        f = Path(path) / f"{table}.parquet"
        if f.exists():
            frames.append(pd.read_parquet(f).assign(path=path, run_id=ident))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
