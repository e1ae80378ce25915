"""`study-collect RESULTS`: per experiment, one consolidated parquet per table and a status
table (per configuration: seeds completed, diverged, failed, damaged, running, missing).
`study-collect RESULTS --compute`: only the measured compute, per experiment and device.
`study-collect RESULTS --compact`: rewrite every finished run as this version writes its tables
(study.runs.rundir.compact), with the disk use before and after.

RESULTS is any folder at or above experiment folders (study.read.results.experiments)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from study.read.results import (
    STATUSES,
    TABLES,
    experiments_or_exit,
    load_runs,
    load_table,
    run_dirs,
    status_table,
    writable_or_exit,
)
from study.runs import rundir


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


def compute_table(found: dict[str, Path]) -> pd.DataFrame:
    """Per experiment (`found`: folders by name): finished runs and the process hours they took
    (process_seconds) on each device recorded in run.json, from run.json alone."""
    rows = []
    for name, folder in found.items():
        runs = load_runs(folder)
        if runs.empty:
            continue
        device = runs.get("device", pd.Series("cpu", runs.index)).fillna("cpu")
        row = {"experiment": name, "runs": len(runs)}
        for dev, g in runs.groupby(device.to_numpy()):
            row[f"{dev}_runs"] = len(g)
            row[f"{dev}_h"] = process_seconds(g) / 3600
        rows.append(row)
    table = pd.DataFrame(rows).fillna(0)
    counts = [c for c in table.columns if c.endswith("_runs")]
    return table.astype({c: int for c in counts})


def print_compute(found: dict[str, Path], workers: int = 2) -> None:
    """The compute table, its total, and what it takes with `workers` processes side by side."""
    table = compute_table(found)
    if table.empty:
        print("no finished runs")
        return
    hours = [c for c in table.columns if c.endswith("_h")]
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(table.to_string(index=False))
    total = table[hours].sum()
    print("total: " + ", ".join(f"{total[c]:.1f} process-hours on {c[:-2]}" for c in hours))
    cpu = total.get("cpu_h", 0.0)
    print(f"with {workers} workers on the CPU: about {cpu / workers:.1f} h of wall time (the runs'"
          " own times; on a loaded machine they ran slower, on a lent GPU the cuda runs' CPU time"
          " is not measured)")  # fmt: skip


def disk_use(folder: Path) -> int:
    """Bytes the files under `folder` take on disk as `du` counts them (whole 4 KiB blocks)."""
    return sum(-(-f.stat().st_size // 4096) * 4096 for f in Path(folder).rglob("*") if f.is_file())


def print_compact(found: dict[str, Path]) -> None:
    """Compact every finished run of each experiment; one line per experiment."""
    for name, folder in found.items():
        before = disk_use(folder)
        outcomes = pd.Series([rundir.compact(d) for d in run_dirs(folder)], dtype=object)
        counts = outcomes.value_counts().sort_index()
        after = disk_use(folder)
        print(f"{name}: {', '.join(f'{n} {what}' for what, n in counts.items())};"
              f" {before / 2**20:.1f} -> {after / 2**20:.1f} MiB on disk")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an out_dir, an experiment, or a folder above")
    parser.add_argument(
        "--out", type=Path, help="where to write (default: <experiment>/collected for each)"
    )
    parser.add_argument(
        "--compute",
        action="store_true",
        help="only print each experiment's measured compute (process hours per device, from"
        " run.json) and the total; writes nothing",
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="rewrite every finished run's tables as this version writes them (unread rows"
        " dropped, kept rows unchanged, run.json resealed); unfinished and damaged runs are left"
        " alone",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    found = experiments_or_exit(parser, args.results)
    if args.compute:
        print_compute(found)
        return
    if args.compact:
        print_compact(found)
        return
    if args.out is not None:
        writable_or_exit(parser, args.out)
    for name, folder in found.items():
        print(f"== {name} ({folder})")
        out = args.out / name if args.out and len(found) > 1 else args.out
        collect(folder, out or folder / "collected")


if __name__ == "__main__":
    main()
