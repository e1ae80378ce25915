"""`python -m study.collect results/<experiment>`: one consolidated parquet per table, and a
status table (per configuration: seeds completed, diverged, failed, running, missing)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from study import rundir
from study.results import STATUSES, TABLES, load_runs, load_table, status_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a results directory, e.g. results/smoke")
    parser.add_argument("--out", type=Path, help="where to write (default: <results>/collected)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"results={args.results} is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out or args.results / "collected"
    runs = load_runs(args.results)
    if not runs.empty:
        rundir.write_parquet(out / "runs.parquet", runs)
        for table in TABLES:
            frame = load_table(args.results, table, runs)
            if len(frame):
                rundir.write_parquet(out / f"{table}.parquet", frame)
        print(f"wrote {out}/ (runs, {', '.join(TABLES)})")
    table = status_table(args.results)
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(table.to_string(index=False))
    counts = table[list(STATUSES[:-1])].sum()
    done = int(counts["completed"] + counts["diverged"])
    print(
        f"{done}/{int(counts.sum())} done: "
        + ", ".join(f"{int(counts[k])} {k}" for k in counts.index)
    )


if __name__ == "__main__":
    main()
