"""Numbers derived from the tidy tables: how fast the gradient decays with lag.

`study-analysis RESULTS` prints, per experiment at or below RESULTS, for every run at training
step 0, the ratio ||dL/ds_0|| / ||dL/ds_{T-1}|| of batch medians (s: the run's memory state, h
or the LRU's s) and the mean decay per step that it implies;
`--success` prints instead, per cell and sequence length, how many seeds solved the task.
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import pandas as pd

from study.read.results import experiments_or_exit, load_runs, load_table


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return np.nan, np.nan
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # rounding can step outside [0, 1]


def success_rates(runs: pd.DataFrame, by=("model", "T"), z: float = 1.96) -> pd.DataFrame:
    """Per group: seeds solved k, seeds run n, the rate k/n and its Wilson score interval."""
    rows = []
    for key, g in runs.groupby(list(by), sort=True):
        k, n = int(g.solved.fillna(False).astype(bool).sum()), len(g)
        lo, hi = wilson(k, n, z)
        rows.append({**dict(zip(by, key)), "k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def fisher_exact(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p of Fisher's exact test for k1 of n1 against k2 of n2: the probability, under
    the hypergeometric law of the 2 x 2 table with its margins fixed, of every table at most as
    likely as the one observed (with a relative tolerance of 1e-7 for ties, as R's fisher.test)."""
    total, N = k1 + k2, n1 + n2

    def pmf(a: int) -> float:
        return math.comb(n1, a) * math.comb(n2, total - a) / math.comb(N, total)

    observed = pmf(k1)
    tables = range(max(0, total - n2), min(n1, total) + 1)
    return min(1.0, sum(p for p in map(pmf, tables) if p <= observed * (1 + 1e-7)))


def newcombe(k1: int, n1: int, k2: int, n2: int, z: float = 1.96) -> tuple[float, float]:
    """95 % interval for the difference of rates k1/n1 - k2/n2 from the two Wilson intervals
    (Newcombe 1998, method 10, the hybrid score interval)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return lo, hi


def decay_ratio(flow: pd.DataFrame, step: int = 0, state: str | None = None, stat="median"):
    """Per run: value at the first position over value at the last, and the per-step factor
    ratio ** (1 / (T-1)) (a geometric-mean decay rate; < 1 means vanishing), of the gradient
    with respect to `state`; None: each run's memory state (h; s for the LRU). The one place the
    decay factor is computed: the CLI, the figures and the README's numbers use it."""
    memory = flow["memory"] if "memory" in flow else "h"
    f = flow[(flow.step == step) & (flow.state == (memory if state is None else state))]
    f = f[f.stat == stat]
    f = f[f.quantity == "grad_norm"]
    rows = []
    for (path, ident), g in f.groupby(["path", "run_id"], sort=False):
        g = g.sort_values("lag")  # lag T-1 (position 0) is the largest, also in compact tables
        first, last, T = g.value.iloc[-1], g.value.iloc[0], int(g.lag.max()) + 1
        ratio = first / last
        rows.append(
            {
                "path": path,
                "run_id": ident,
                "T": T,
                "|dL/ds_0|": first,
                "|dL/ds_T-1|": last,
                "ratio": ratio,
                "per_step": ratio ** (1 / (T - 1)) if ratio > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def leaves_baseline(metrics: pd.DataFrame, runs: pd.DataFrame, fraction: float = 0.9) -> pd.Series:
    """Per run (indexed by path): the first evaluated step at which the evaluation loss is below
    `fraction` x the task's memoryless baseline, the step where learning visibly starts; NaN
    for a run whose loss never gets there."""
    loss = metrics[metrics.name == "eval_loss"].merge(runs[["path", "baseline"]], on="path")
    below = loss[loss.value < fraction * loss.baseline]
    first = below.groupby("path").step.min()
    return first.reindex(runs.path).rename("leaves_baseline")


def success_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Seeds solved / seeds run, per cell (rows) and sequence length T (columns), with the median
    final evaluation loss relative to the task's memoryless baseline."""
    rates = success_rates(runs, ("cell", "T")).set_index(["cell", "T"])
    solved = rates.k.astype(str) + "/" + rates.n.astype(str)
    r = runs.assign(rel=runs.eval_loss / runs.baseline)
    rel = r.groupby(["cell", "T"]).rel.median().map("{:.3g}".format)
    return (solved + "  (" + rel + ")").unstack("T")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="an out_dir, an experiment, or a folder above")
    parser.add_argument("--step", type=int, default=0, help="training step (default 0: init)")
    parser.add_argument("--success", action="store_true", help="seeds solved per cell and T")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    found = experiments_or_exit(parser, args.results)
    for name, folder in found.items():
        print(f"== {name} ({folder})")
        runs = load_runs(folder)
        if runs.empty:
            print("no finished runs")
            continue
        if args.success:
            print("seeds solved / seeds run  (median final eval loss / memoryless baseline)")
            print(success_table(runs).to_string())
            continue
        flow = load_table(folder, "grad_flow", runs)
        if not (flow.step == args.step).any():
            steps = ", ".join(map(str, sorted(flow.step.unique()))) or "none"
            print(f"no probe at step {args.step}: the runs were probed at steps {steps}")
            continue
        table = decay_ratio(flow, step=args.step)
        table = table.merge(runs[["path", "cell"]], on="path").drop(columns="path")
        with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
            print(table.to_string(index=False))


if __name__ == "__main__":
    main()
