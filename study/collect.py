"""`study-collect RESULTS`: per experiment, one consolidated parquet per table and a status
table (per configuration: seeds completed, diverged, failed, damaged, running, missing).

RESULTS is any folder at or above experiment folders (study.results.experiments)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from study import rundir
from study.results import (
    STATUSES,
    TABLES,
    experiments_or_exit,
    load_runs,
    load_table,
    status_table,
    writable_or_exit,
)


def collect(folder: Path, out: Path) -> None:
    """One experiment: its consolidated tables under `out`, and its status table printed."""
    runs = load_runs(folder)
    if not runs.empty:
        rundir.write_parquet(out / "runs.parquet", runs)
        for table in TABLES:
            frame = load_table(folder, table, runs)
            if len(frame):
                rundir.write_parquet(out / f"{table}.parquet", frame)
        print(f"wrote {out}/ (runs, {', '.join(TABLES)})")
    table = status_table(folder)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(table.to_string(index=False))
    counts = table[list(STATUSES[:-1])].sum()
    done = int(counts["completed"] + counts["diverged"])
    print(
        f"{done}/{int(counts.sum())} done: "
        + ", ".join(f"{int(counts[k])} {k}" for k in counts.index)
    )
    if "wall_time_s" in runs:  # a resumed run counts the time since its last resume
        hours = process_seconds(runs) / 3600
        print(f"run time: {hours:.2f} h summed over the {len(runs)} finished runs (an ensemble's"
              " wall time shared by its members; W workers: /W)")  # fmt: skip


def process_seconds(runs: pd.DataFrame) -> float:
    """The process time the finished runs took: each run's wall time, an ensemble member's
    being its share of the ensemble's (E members trained in one process record its wall time
    each; summed plainly, an ensemble of 5 would count 5 times over)."""
    total = 0.0
    for path in runs.path:
        info = rundir.read_run_json(Path(path)) or {}
        members = len(info.get("ensemble_seeds") or [None])
        total += float(info.get("wall_time_s") or 0.0) / members
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an out_dir, an experiment, or a folder above")
    parser.add_argument(
        "--out", type=Path, help="where to write (default: <experiment>/collected for each)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    found = experiments_or_exit(parser, args.results)
    if args.out is not None:
        writable_or_exit(parser, args.out)
    for name, folder in found.items():
        print(f"== {name} ({folder})")
        out = args.out / name if args.out and len(found) > 1 else args.out
        collect(folder, out or folder / "collected")


if __name__ == "__main__":
    main()
