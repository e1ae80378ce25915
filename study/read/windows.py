"""Learning-rate windows: per (model, T), the Adam rates at which most seeds solved the task,
where the window's edges lie, and how the edges move with the lag (a power law fitted in
log-log, Okpekpe & Orvieto 2025 report the largest rate that still learns falling as a power of
the delay).

A rate is *inside* the window when more than half its seeds solved (MAJORITY). The grid edges
are the smallest and largest rates inside; an edge at the end of the grid is *open* (the window
may go on past it). Between an edge and its outer neighbour the success rate crosses 1/2; the
interpolated edge puts that crossing on the straight line between the two in log(rate), so a
5-seed grid in half-decade steps gives an edge finer than its steps. Only interpolated edges
(closed on both sides of the crossing) enter the fit.

Beside them, study_tuned (each cell at the rate the rule here picked) against study_adding (every
cell at 1e-3): which differences in success are the cells' and which the rate's.

Everything here reads tables (study.read.learning's); `study-learning RESULTS --windows` prints it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from study.read.analysis import fisher_exact
from study.read.learning import gradient_reach, solve_times, success_rates
from study.read.results import experiments, load_runs, load_table

MAJORITY = 0.5  # a rate is inside the window when more than this fraction of its seeds solved
MIN_RATES = 3  # a (model, T) with fewer learning rates is not a window sweep
TUNED, FIXED = "study_tuned", "study_adding"  # each cell at its own rate; every cell at one rate


def lr_sweeps(results) -> dict[str, pd.Series]:
    """The experiment folders under `results` that sweep the learning rate (some (model, T)
    with at least MIN_RATES rates): {name: folder}. study_lr and study_lr_lag together give
    the windows at every T."""
    out = {}
    for name, folder in experiments(results).items():
        runs = load_runs(folder)
        if not runs.empty and runs.groupby(["model", "T"]).lr.nunique().max() >= MIN_RATES:
            out[name] = folder
    return out


def pooled_tables(folders: dict, names=("metrics", "evidence", "grad_flow", "lyapunov")):
    """The runs of several experiment folders as one table (with model, T, lr), and each
    named table of theirs concatenated: (runs, {name: table})."""
    runs, tables = [], {n: [] for n in names}
    for folder in folders.values():
        r = load_runs(folder)
        if r.empty:
            continue
        runs.append(r)
        for n in names:
            tables[n].append(load_table(folder, n, r))
    joined = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame()
    return joined, {n: pd.concat(t, ignore_index=True) for n, t in tables.items() if t}


def crossing(lr_in: float, p_in: float, lr_out: float, p_out: float) -> float:
    """The rate at which the success rate crosses MAJORITY on the straight line in log(rate)
    from (lr_in, p_in), inside the window, to its neighbour (lr_out, p_out) outside it."""
    share = (p_in - MAJORITY) / (p_in - p_out)
    return float(10 ** (math.log10(lr_in) + share * (math.log10(lr_out) - math.log10(lr_in))))


def best_rate(g: pd.DataFrame) -> float:
    """The rule fixed before the tuned runs (issue 30): the rate that solves most seeds; ties
    go to the fewer median sequences to solve, then (a cell that solves at no rate) to the lower
    median final loss over the baseline, then to the smaller rate. `g`: one (model, T)'s rows
    with lr, k, median (sequences to solve over its solved seeds) and final (median final
    evaluation loss / baseline)."""
    order = g.assign(m=g["median"].fillna(np.inf), f=g["final"].fillna(np.inf))
    order = order.sort_values(["k", "m", "f", "lr"], ascending=[False, True, True, True])
    return float(order.lr.iloc[0])


def final_loss(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Per run (by path): its last evaluation loss over the task's memoryless baseline."""
    loss = metrics[metrics.name == "eval_loss"]
    last = loss.loc[loss.groupby("path").step.idxmax()].set_index("path").value
    return (last / runs.set_index("path").baseline.reindex(last.index)).rename("final")


def window_of(g: pd.DataFrame) -> dict:
    """One (model, T)'s window from its success rates per learning rate (`g`: lr, k, n, rate,
    median), as in the module's docstring."""
    g = g.sort_values("lr").reset_index(drop=True)
    inside = np.flatnonzero(g.rate.to_numpy() > MAJORITY)
    row = {"rates": len(g), "lr_min": g.lr.iloc[0], "lr_max": g.lr.iloc[-1], "best": best_rate(g)}
    if not len(inside):
        return row | {"lower": np.nan, "upper": np.nan, "lower_open": False, "upper_open": False,
                      "lower_x": np.nan, "upper_x": np.nan, "gaps": 0}  # fmt: skip
    lo, hi = int(inside[0]), int(inside[-1])
    lower_open, upper_open = lo == 0, hi == len(g) - 1
    p, lr = g.rate.to_numpy(), g.lr.to_numpy()
    lower_x = np.nan if lower_open else crossing(lr[lo], p[lo], lr[lo - 1], p[lo - 1])
    upper_x = np.nan if upper_open else crossing(lr[hi], p[hi], lr[hi + 1], p[hi + 1])
    gaps = int((hi - lo + 1) - len(inside))  # rates between the edges where most seeds failed
    return row | {"lower": lr[lo], "upper": lr[hi], "lower_open": lower_open,
                  "upper_open": upper_open, "lower_x": lower_x, "upper_x": upper_x,
                  "gaps": gaps}  # fmt: skip


def windows(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (model, T) with at least MIN_RATES learning rates: the window (window_of) and the
    seeds per rate. `runs` with model, T, lr (study.read.labels.vocabulary)."""
    rates = success_rates(runs, by=("model", "T", "lr"))
    solve = solve_times(metrics, runs).merge(runs[["path", "model", "T", "lr"]], on="path")
    keys = ["model", "T", "lr"]
    med = solve.groupby(keys).sequences_to_solve.median().rename("median")
    final = runs[["path", *keys]].merge(final_loss(metrics, runs).reset_index(), on="path")
    rates = rates.merge(med.reset_index(), on=keys, how="left")
    rates = rates.merge(final.groupby(keys).final.median().reset_index(), on=keys, how="left")
    rows = []
    for (model, T), g in rates.groupby(["model", "T"], sort=True):
        if g.lr.nunique() >= MIN_RATES:
            rows.append({"model": model, "T": T, "seeds": int(g.n.median()), **window_of(g)})
    return pd.DataFrame(rows)


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile for probability p > 1/2 with df degrees of freedom: the density
    integrated by Simpson's rule from 0, the quantile found by bisection (no scipy needed)."""
    c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float) -> float:
        t = np.linspace(0.0, x, 4001)
        f = np.exp(c - (df + 1) / 2 * np.log1p(t * t / df))
        h = x / 4000
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def power_law(T, edge, level: float = 0.95) -> dict:
    """Least squares of log10(edge) = log10(a) + b log10(T): the exponent b with its
    t-interval (n - 2 degrees of freedom; none below 3 points) and the prefactor a."""
    x, y = np.log10(np.asarray(T, float)), np.log10(np.asarray(edge, float))
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return {"n": n, "b": np.nan, "lo": np.nan, "hi": np.nan, "a": np.nan}
    b, log_a = np.polyfit(x, y, 1)
    lo = hi = np.nan
    if n >= 3:
        resid = y - (log_a + b * x)
        se = math.sqrt(resid @ resid / (n - 2) / ((x - x.mean()) @ (x - x.mean())))
        half = t_quantile(0.5 + level / 2, n - 2) * se
        lo, hi = b - half, b + half
    return {"n": n, "b": float(b), "lo": lo, "hi": hi, "a": float(10**log_a)}


def trends(w: pd.DataFrame) -> pd.DataFrame:
    """Per model and edge (lower, upper): the power law of the interpolated edge against T,
    over the lags where that edge is closed."""
    rows = []
    for model, g in w.groupby("model", sort=True):
        for edge in ("lower", "upper"):
            ok = g[g[f"{edge}_x"].notna()]
            fit = power_law(ok["T"], ok[f"{edge}_x"])
            rows.append({"model": model, "edge": edge, "lags": ", ".join(map(str, ok["T"]))} | fit)
    return pd.DataFrame(rows)


def beside_probes(w: pd.DataFrame, runs: pd.DataFrame, tables: dict) -> pd.DataFrame:
    """The windows with, per (model, T), the median gradient reach
    (study.read.learning.gradient_reach) and the median largest Lyapunov exponent over the runs,
    both at initialisation: the same at every rate (a seed's weights and data do not depend on the
    rate), so they say what the cell brings to each lag before the rate acts. (A run that solved
    stopped before its next probe, so the edges have no later probe to compare.)"""
    keys = ["model", "T"]
    reach = gradient_reach(tables["evidence"], tables["grad_flow"])
    reach = reach.merge(runs[["path", *keys]], on="path").groupby(keys).reach.median()
    lyap = tables["lyapunov"]
    top = lyap[(lyap["index"] == 1) & (lyap.step == 0)].groupby("path").value.median()
    top = runs[["path", *keys]].merge(top.rename("lyap_init").reset_index(), on="path")
    per = pd.concat([reach.rename("reach_init"), top.groupby(keys).lyap_init.median()], axis=1)
    return w.merge(per.reset_index(), on=keys, how="left")


def beside_fixed(tuned: pd.DataFrame, fixed: pd.DataFrame) -> pd.DataFrame:
    """Per (model, T) run in both: seeds solved at the one shared rate (`fixed`, study_adding's
    runs) and at the cell's own rate (`tuned`, study_tuned's), each with its Wilson interval,
    and Fisher's exact two-sided p of the difference. Both with model, T, lr
    (study.read.labels.vocabulary)."""
    cols = ["model", "T"]
    a = success_rates(fixed, cols).merge(fixed.groupby(cols).lr.first().reset_index(), on=cols)
    b = success_rates(tuned, cols).merge(tuned.groupby(cols).lr.first().reset_index(), on=cols)
    d = a.merge(b, on=cols, suffixes=("_fixed", "_own"))
    p = [fisher_exact(r.k_fixed, r.n_fixed, r.k_own, r.n_own) for r in d.itertuples()]
    return d.assign(p=p)


def ranking(d: pd.DataFrame, k: str, n: str) -> str:
    """The cells ordered by their share of seeds solved over the lags of `d`, best first; cells
    with equal shares joined by "=": "GRU > LSTM = minGRU > RNN"."""
    share = d.groupby("model")[k].sum() / d.groupby("model")[n].sum()
    groups = share.groupby(share).groups  # share -> the models with it
    return " > ".join(" = ".join(sorted(groups[v])) for v in sorted(groups, reverse=True))


def print_beside(found: dict) -> None:
    """study_tuned beside study_adding, when `found` (experiments by name) holds both."""
    if TUNED not in found or FIXED not in found:
        return
    tuned, fixed = (load_runs(found[name]) for name in (TUNED, FIXED))
    if tuned.empty or fixed.empty:
        return
    d = beside_fixed(tuned, fixed)
    print(f"\n== each cell at its own rate ({TUNED}) beside one rate for all ({FIXED})")
    print("k/n seeds solved, 95 % Wilson intervals; p: Fisher's exact test, two-sided")
    with pd.option_context("display.width", 250, "display.float_format", "{:.3g}".format):
        print(d.to_string(index=False))
    print(f"ranking at {FIXED}'s rate, over these lags: {ranking(d, 'k_fixed', 'n_fixed')}")
    print(f"ranking at each cell's own rate: {ranking(d, 'k_own', 'n_own')}")


def print_windows(results) -> None:
    """`study-learning RESULTS --windows`: the windows of every learning-rate sweep under
    `results`, pooled (study_lr's T = 200 with study_lr_lag's other lags), and their trends."""
    folders = lr_sweeps(results)
    if not folders:
        print(f"no learning-rate sweep under {results} (none with >= {MIN_RATES} rates per cell)")
        print_beside(experiments(results))
        return
    runs, tables = pooled_tables(folders)
    w = beside_probes(windows(runs, tables["metrics"]), runs, tables)
    print(f"== learning-rate windows ({', '.join(folders)}; n = {len(runs)} runs)")
    print(f"inside: more than {MAJORITY:.0%} of the seeds solved; *_open: the edge is the grid's")
    print("end (the window may go on); *_x: the 1/2 crossing interpolated in log(rate); best: the")
    print("rate that solves most seeds (ties: fewer sequences, then the smaller rate)")
    cols = ["model", "T", "seeds", "rates", "lower", "lower_open", "lower_x", "upper",
            "upper_open", "upper_x", "gaps", "best", "reach_init", "lyap_init"]  # fmt: skip
    with pd.option_context("display.width", 250, "display.float_format", "{:.3g}".format):
        print(w[cols].to_string(index=False))
        print("\nedge = a x T^b, least squares in log-log over the closed edges, 95 % t-interval")
        print(trends(w).to_string(index=False))
    print_beside(experiments(results))
