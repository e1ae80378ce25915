"""`study-learning RESULTS`: what the learning runs show, from their tables: success rates with
Wilson intervals, sequences-to-solve, whether a failed run's loss stayed at the baseline, and the
rank correlation between the gradient that reaches the evidence at initialisation and how fast
a run learns.

Every function takes the tidy tables of study.read.results (runs, metrics, evidence, grad_flow) and
returns a DataFrame or numbers; figures (study/read/plots_learning.py), the CLI and the README's
numbers all come from here.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from study.read.analysis import leaves_baseline, success_rates
from study.read.labels import vocabulary
from study.read.results import experiments, experiments_or_exit, load_runs, load_table

FLAT = 0.9  # a failed run whose loss stayed above this x the baseline in its last half was flat
LEARNED = 0.1  # a run whose evaluation loss is below this x the baseline has bridged the lag
THRESHOLDS = (0.05, 0.10)  # success also counted at these x the baseline, beside the criterion
# Hochreiter & Schmidhuber (1997): the training sequences their LSTM needed until their stopping
# rule held, keyed (task, T, relevant symbols): means of 10 trials for Experiment 4, the adding
# problem (Table 7), of 20 for 6a and 10 for 6b, temporal order with 2 and 3 symbols (Table 9).
PAPER_1997 = {
    ("Adding", 100, None): 74_000,
    ("Adding", 500, None): 209_000,
    ("Adding", 1000, None): 853_000,
    ("TemporalOrder", 100, 2): 31_390,
    ("TemporalOrder", 100, 3): 571_100,
}


def solve_times(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: the step at which it first counted as solved and the training sequences it had
    seen by then; NaN for a run that never solved the task within its budget. A run under the
    stream rule (cfg.train.stream_window set) counts from its `stream_solved` row, the window
    including that step's batch: (step + 1) x batch size. Any other run counts from the first
    `solved` row of its evaluations, made after `step` updates: step x batch size."""
    stream = runs.get("cfg.train.stream_window", pd.Series(np.nan, runs.index)).notna()
    rule = pd.Series(np.where(stream, "stream_solved", "solved"), index=runs.path)
    hit = metrics[(metrics.value > 0) & (metrics.name == metrics.path.map(rule))]
    first = hit.groupby("path").step.min()
    out = runs[["path", "cfg.train.batch_size"]].set_index("path")
    steps = first.reindex(out.index).astype(float)
    sequences = (steps + stream.to_numpy()) * out["cfg.train.batch_size"]
    return pd.DataFrame({"steps_to_solve": steps, "sequences_to_solve": sequences}).reset_index()


def learn_times(metrics: pd.DataFrame, runs: pd.DataFrame, fraction: float = LEARNED):
    """Per run: the first evaluated step at which its evaluation loss was below `fraction` x
    the memoryless baseline (it has bridged the lag, if not yet to the criterion's precision)
    and the sequences seen by then (step x batch size); NaN if never."""
    step = leaves_baseline(metrics, runs, fraction).astype(float)
    batch = runs.set_index("path")["cfg.train.batch_size"]
    return pd.DataFrame({"steps_to_learn": step, "sequences_to_learn": step * batch}).reset_index(
        names="path"
    )


def learn_summary(metrics: pd.DataFrame, runs: pd.DataFrame, by=("model", "T")) -> pd.DataFrame:
    """solve_summary of the sequences to learn (learn_times): per group, how many runs `learned`
    and the median, quartiles and mean of the sequences it took them."""
    learned = learn_times(metrics, runs)
    learned = learned.rename(columns={"sequences_to_learn": "sequences_to_solve"})
    return solve_summary(learned, runs, by).rename(columns={"solved": "learned"})


def success_by_threshold(runs: pd.DataFrame, metrics: pd.DataFrame, by=("model", "T")):
    """success_rates at the task's criterion and at each of THRESHOLDS: a run counts at fraction
    q when an evaluation put its loss below q x the baseline (a run that solved counts at every
    q, having passed them on its way; one that stopped on solving was not trained further).
    {"criterion": ..., "5 %": ..., "10 %": ...}."""
    out = {"criterion": success_rates(runs, by)}
    for q in THRESHOLDS:
        below = learn_times(metrics, runs, q).steps_to_learn.notna()
        out[f"{q:.0%}"] = success_rates(runs.assign(solved=below.to_numpy()), by)
    return out


def threshold_table(tables: dict[str, pd.DataFrame], by=("model", "T")) -> pd.DataFrame:
    """success_by_threshold side by side, one column per threshold: "k/n [lo, hi]"."""
    cols = list(by)
    wide = tables["criterion"][cols]
    for name, t in tables.items():
        text = t.k.astype(str) + "/" + t.n.astype(str)
        text += " [" + t.lo.map("{:.2f}".format) + ", " + t.hi.map("{:.2f}".format) + "]"
        wide = wide.merge(t[cols].assign(**{name: text}), on=cols)
    return wide


def solve_summary(solve: pd.DataFrame, runs: pd.DataFrame, by=("model", "T")) -> pd.DataFrame:
    """Per group, over its solved runs: how many, and the median, quartiles and mean of
    sequences-to-solve (NaN where none solved)."""
    d = runs[["path", *by]].merge(solve, on="path")
    rows = []
    for key, g in d.groupby(list(by), sort=True):
        s = g.sequences_to_solve.dropna()
        q = s.quantile([0.25, 0.5, 0.75]) if len(s) else pd.Series([np.nan] * 3, [0.25, 0.5, 0.75])
        rows.append(
            {**dict(zip(by, key)), "solved": len(s), "n": len(g)}
            | {"q25": q[0.25], "median": q[0.5], "q75": q[0.75], "mean": s.mean()}
        )
    return pd.DataFrame(rows)


def beside_paper(speed: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of `speed` (solve_summary) whose runs used the 1997 stopping rule on a task and
    length of Hochreiter & Schmidhuber's tables, with their mean (`paper`) beside ours, and the
    median count of our evaluation sequences still wrong at the end (`wrong`, of `eval_size`;
    theirs: 0 to 2 of 2560 test sequences)."""
    stream = runs[runs.get("cfg.train.stream_window", pd.Series(np.nan, runs.index)).notna()]
    bits = stream.get("cfg.task.bits", pd.Series(np.nan, stream.index))
    keys = zip(stream.task, stream["T"], bits.astype(object).where(bits.notna(), None))
    ours = stream.assign(
        paper=[PAPER_1997.get(key, np.nan) for key in keys],
        wrong=(1 - stream.eval_metric) * stream["cfg.train.eval_size"],
    )
    ours = ours[ours.paper.notna()].groupby(["model", "T"])
    table = ours.agg(paper=("paper", "first"), wrong=("wrong", "median")).reset_index()
    return speed.merge(table, on=["model", "T"])


def plateau(metrics: pd.DataFrame, runs: pd.DataFrame, last: float = 0.5) -> pd.DataFrame:
    """Per run: its evaluation loss relative to the task's memoryless baseline over the last
    `last` fraction of the steps it trained (min, max, first and last value there). A run whose
    minimum there is near 1 was flat at the baseline: a failure, not a run cut short."""
    loss = metrics[metrics.name == "eval_loss"].merge(runs[["path", "baseline"]], on="path")
    rows = []
    for path, g in loss.groupby("path", sort=False):
        g = g.sort_values("step")
        tail = g[g.step >= (1 - last) * g.step.max()]
        rel = (tail.value / tail.baseline).to_numpy()
        rows.append(
            {
                "path": path,
                "from_step": int(tail.step.iloc[0]),
                "to_step": int(tail.step.iloc[-1]),
                "rel_min": rel.min(),
                "rel_max": rel.max(),
                "rel_first": rel[0],
                "rel_last": rel[-1],
            }
        )
    columns = ["path", "from_step", "to_step", "rel_min", "rel_max", "rel_first", "rel_last"]
    return pd.DataFrame(rows, columns=columns)  # the columns also when no run is given


def gradient_reach(evidence: pd.DataFrame, flow: pd.DataFrame, step: int = 0) -> pd.DataFrame:
    """Per run, at training `step` (0: initialisation): the median over the probe batch of
    ||dl/dx_t|| at each example's earliest evidence position (the longest lag the task asks it
    to bridge), over the median ||dl/dx_t|| at the last step (lag 0). The fraction of the error
    signal that reaches the evidence; it does not depend on the loss's scale."""
    ev = evidence[(evidence.step == step) & (evidence.quantity == "input_grad")]
    ev = ev.reset_index(drop=True)
    earliest = ev.loc[ev.groupby(["path", "example"]).lag.idxmax()]
    at_evidence = earliest.groupby("path").value.median()
    f = flow[(flow.step == step) & (flow.quantity == "input_grad") & (flow.stat == "median")]
    at_end = f[f.lag == 0].set_index("path").value
    reach = (at_evidence / at_end.reindex(at_evidence.index)).rename("reach")
    lag = earliest.groupby("path").lag.median().rename("evidence_lag")
    return pd.concat([reach, lag], axis=1).reset_index().rename(columns={"index": "path"})


def spearman(x, y, z: float = 1.96) -> dict:
    """Spearman's rank correlation of x and y (ties get their average rank; an infinite value
    ranks above every finite one, so "never solved" is the slowest), with an approximate 95 %
    interval from Fisher's z with the variance 1.06 / (n - 3) of Fieller, Hartley & Pearson
    (1957)."""
    x, y = pd.Series(np.asarray(x, float)), pd.Series(np.asarray(y, float))
    keep = x.notna() & y.notna()
    rx, ry = x[keep].rank(), y[keep].rank()  # average ranks; inf is the largest value
    n = int(keep.sum())
    varies = n > 2 and rx.nunique() > 1 and ry.nunique() > 1  # a constant has no rank order
    rho = float(np.corrcoef(rx, ry)[0, 1]) if varies else np.nan
    if n > 3 and abs(rho) < 1:
        half = z * math.sqrt(1.06 / (n - 3))
        lo, hi = math.tanh(math.atanh(rho) - half), math.tanh(math.atanh(rho) + half)
    else:
        lo = hi = np.nan
    return {"rho": rho, "lo": lo, "hi": hi, "n": n}


def early_step(evidence: pd.DataFrame) -> int | None:
    """The first probe after initialisation (the evidence table's smallest step above 0)."""
    later = evidence.step[evidence.step > 0]
    return int(later.min()) if len(later) else None


def reach_vs_learning(
    evidence: pd.DataFrame,
    flow: pd.DataFrame,
    metrics: pd.DataFrame,
    runs: pd.DataFrame,
    step: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Per run, the gradient reach at training `step` (0: initialisation) and the sequences it
    took to solve the task (inf: not solved within its budget), and their Spearman correlation
    over the runs probed at that step (a run that stopped before it has no probe there).
    "A network learns the lags its gradient reaches" predicts a negative rho."""
    d = vocabulary(runs)[["path", "model", "cell", "T", "lr", "solved"]]
    d = d.merge(gradient_reach(evidence, flow, step=step), on="path")
    d = d.merge(solve_times(metrics, runs), on="path")
    d["to_solve"] = d.sequences_to_solve.fillna(np.inf)
    # ranks need no log: a reach that underflowed to 0 (the GRU at T = 1000) ranks lowest
    return d, spearman(d.reach, d.to_solve)


def reach_medians(pooled: pd.DataFrame, early: pd.DataFrame | None, by=("model", "T")):
    """The median gradient reach per group of `by`, at initialisation and (where `early`, the
    same table at the first probe after it) there, over the runs probed then: the numbers the
    docs quote beside the rank correlations."""
    cols = list(by)
    table = pooled.groupby(cols).reach.agg(n="size", at_init="median").reset_index()
    if early is not None and not early.empty:
        later = early.groupby(cols).reach.agg(n_early="size", early="median").reset_index()
        table = table.merge(later, on=cols, how="left")
    return table


def within_groups(d: pd.DataFrame, by=("model", "T")) -> dict:
    """Spearman's rho of reach against sequences to solve within each group of `by` (the seeds
    of one model and lag; reach_vs_learning's table `d`), and their mean over the groups where
    it is defined (some solved, some varied). The pooled rho mixes the models: it says which
    cell a run is; within a group only the seed varies."""
    rhos = [spearman(g.reach, g.to_solve)["rho"] for _, g in d.groupby(list(by))]
    defined = [r for r in rhos if not np.isnan(r)]
    mean = float(np.mean(defined)) if defined else np.nan
    return {"mean_rho": mean, "groups": len(rhos), "defined": len(defined),
            "min": min(defined, default=np.nan), "max": max(defined, default=np.nan)}  # fmt: skip


def swept(runs: pd.DataFrame) -> str:
    """What the study's tables are split by besides the model: the learning rate where it takes
    several values and the lag T does not (study_lr), else T."""
    return "lr" if runs.lr.nunique() > 1 and runs["T"].nunique() == 1 else "T"


def summary(folder) -> dict[str, pd.DataFrame | dict]:
    """The study's numbers from one experiment folder, per model and T (per model and learning
    rate in a learning-rate sweep: `swept`): success rates with Wilson intervals,
    sequences-to-solve, the plateau of every failed run (its last half), and the rank
    correlation of gradient reach with learning."""
    runs = load_runs(folder)
    by = ("model", swept(runs))
    metrics = load_table(folder, "metrics", runs)
    thresholds = success_by_threshold(runs, metrics, by)
    rates = thresholds["criterion"]
    speed = solve_summary(solve_times(metrics, runs), runs, by)
    learn = learn_summary(metrics, runs, by)
    failed = runs[~runs.solved.fillna(False).astype(bool)]
    flat = plateau(metrics, failed).merge(failed[["path", *by]], on="path")
    flat = (
        flat.assign(flat=flat.rel_min >= FLAT)
        .groupby(list(by))
        .agg(
            n=("path", "size"),
            flat=("flat", "sum"),
            rel_min=("rel_min", "min"),
            rel_max=("rel_max", "max"),
        )
    )
    evidence, flow = load_table(folder, "evidence", runs), load_table(folder, "grad_flow", runs)
    pooled, rho = reach_vs_learning(evidence, flow, metrics, runs)
    early = early_step(evidence)
    probed, rho_early = (None, None)
    if early:
        probed, rho_early = reach_vs_learning(evidence, flow, metrics, runs, early)
    return {"success": rates, "speed": speed, "learn": learn, "plateau": flat.reset_index(),
            "reach": rho, "reach_early": (early, rho_early),
            "reach_medians": reach_medians(pooled, probed, by),
            "thresholds": threshold_table(thresholds, by),
            "reach_within": within_groups(pooled, by),
            "paper": beside_paper(speed, runs) if by[1] == "T" else speed.iloc[:0]}  # fmt: skip


def print_summary(folder) -> None:
    """The study's numbers of one experiment folder, as tables (the CLI and the notebook)."""
    s = summary(folder)
    _print_tables(s)
    _print_reach(s)
    _print_reach_medians(s)
    from study.read import causal  # built on this module's tables: imported here, not circularly

    runs = load_runs(folder)
    if causal.has_cuts(runs):
        tables = {n: load_table(folder, n, runs) for n in ("metrics", "evidence", "grad_flow")}
        causal.print_causal(runs, tables["metrics"], tables["evidence"], tables["grad_flow"])


def by_of(s: dict) -> str:
    """What the summary's tables are split by besides the model: T or lr."""
    return s["success"].columns[1]


def _print_tables(s: dict) -> None:
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print("seeds solved k of n, rate and 95 % Wilson interval")
        print(s["success"].to_string(index=False))
        print("\nthe same at the criterion and at 5 % and 10 % of the baseline (a conclusion that")
        print("changes across the columns depends on the threshold)")
        print(s["thresholds"].to_string(index=False))
        print("\nsequences to solve over the solved seeds: median and quartiles")
        print(s["speed"].to_string(index=False))
        print(f"\nsequences to learn (eval loss below {LEARNED} x the baseline): median, quartiles")
        print(s["learn"].to_string(index=False))
        print(
            f"\nfailed runs: eval loss / baseline in the last half of the budget (flat: >= {FLAT})"
        )
        flat = s["plateau"]
        print("(none: every run solved)" if flat.empty else flat.to_string(index=False))
        if not s["paper"].empty:
            print("\nbeside Hochreiter & Schmidhuber 1997 (their mean; wrong: of our eval set)")
            print(s["paper"].to_string(index=False))


def _print_reach(s: dict) -> None:
    print("\nSpearman rho, gradient reach vs sequences to solve (not solved: slowest):")
    (early, r_early), r = s["reach_early"], s["reach"]
    if not s["success"].k.any():  # every run ranks slowest: the ranks say nothing
        print(f"none: no run solved the task (n = {r['n']} runs)")
        return
    print(f"at initialisation: {r['rho']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], n = {r['n']} runs")
    if early:
        stat = f"{r_early['rho']:.3f} [{r_early['lo']:.3f}, {r_early['hi']:.3f}]"
        print(f"after {early} updates: {stat}, n = {r_early['n']} runs (those probed there)")
    w = s["reach_within"]
    print(
        f"within each (model, {by_of(s)}) group, at initialisation: mean rho {w['mean_rho']:.3f}"
        f" over the {w['defined']} of {w['groups']} groups where it is defined (range"
        f" {w['min']:.3f} to {w['max']:.3f}); the pooled rho mixes the models, so it says which"
        " cell a run is, not a mechanism"
    )


def _print_reach_medians(s: dict) -> None:
    early = s["reach_early"][0]
    after = f"; and after {early} updates, over the runs probed there" if early else ""
    print(f"\nmedian gradient reach at initialisation{after}:")
    with pd.option_context("display.width", 200, "display.float_format", "{:.2g}".format):
        print(s["reach_medians"].to_string(index=False))


def show_summary(results, experiment: str) -> None:
    """For a notebook: the numbers of `experiment` under `results`, or a note that it is absent."""
    found = experiments(Path(results))
    if experiment not in found:
        print(f"{experiment}: not under {results}")
        return
    print_summary(found[experiment])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The learning study's numbers, per experiment.")
    parser.add_argument("results", help="an out_dir, an experiment, or a folder above")
    parser.add_argument(
        "--windows",
        action="store_true",
        help="print the learning-rate windows per (cell, T) of every learning-rate sweep under"
        " RESULTS, pooled, with their edges and how they move with T (study/read/windows.py)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    found = experiments_or_exit(parser, args.results)
    if args.windows:
        from study.read.windows import print_windows  # built on this module: imported here

        print_windows(args.results)
        return
    for name, folder in found.items():
        print(f"== {name} ({folder})")
        if load_runs(folder).empty:
            print("no finished runs")
            continue
        print_summary(folder)


if __name__ == "__main__":
    main()
