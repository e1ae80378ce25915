"""The causal test's numbers (conf/experiment/study_causal.yaml): per cell, lag and arm (uncut, a
path cut, the RNN floor), the seeds solved with Wilson intervals, the difference to the same
cell's uncut arm with Newcombe's interval and Fisher's exact test, the sequences to learn and to
solve, the flat failures, the gradient reaching the first marker at initialisation and after
the first probe in training, and the verdict the experiment's header stated before the runs.

Every function takes the tidy tables (study.read.results) and returns a DataFrame; `study-learning`
prints them for any experiment whose runs cut a path (study/read/learning.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from study.read import learning
from study.read.analysis import fisher_exact, newcombe
from study.read.labels import base_label, cut_label, vocabulary

BY = ["model", "T", "arm"]


LABELLED = {"_target_", "cell", "hidden_size", "cut", "cut_scale", "cut_prob", "chrono"}
LABELLED |= {"forget_bias", "forget_gate", "recurrent_init", "recurrent_gain", "nonlinearity"}
"""The model keys that base_label or cut_label already name (or that never split a cell)."""


def with_arms(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with `model` (the cell and its initialisation, without the cut, plus any other
    model key the experiment varies, e.g. the 1997 LSTM's input_bias), `arm` (uncut or the cut:
    study.read.analysis.cut_label), `T` and `lr`."""
    runs = vocabulary(runs)
    model = runs.apply(base_label, axis=1)
    keys = [c for c in runs if c.startswith("cfg.model.") and c[10:] not in LABELLED]
    for key in keys:
        values = runs[key].map(lambda v: "null" if v is None or v is np.nan else str(v))
        if values.nunique() > 1:
            model = model + f", {key[10:]} " + values
    return runs.assign(
        model=model, arm=runs.apply(cut_label, axis=1), base=runs.apply(base_label, axis=1)
    )


def has_cuts(runs: pd.DataFrame) -> bool:
    """Whether any run cut a gradient path (then study-learning prints the causal table)."""
    return "cfg.model.cut" in runs and runs["cfg.model.cut"].notna().any()


def _arm_order(arm: str) -> tuple[int, str]:
    return (0 if arm == "uncut" else 1 if arm.startswith("linear") else 2, arm)


def arms_table(runs, metrics, evidence, flow) -> pd.DataFrame:
    """One row per (model, T, arm): k of n solved, the Wilson interval (lo, hi); against the
    uncut arm of that model and T: the difference of rates with its interval and Fisher's
    two-sided p, and `separated` (this arm's interval wholly below the uncut one's); the runs
    that learned (eval loss below learning.LEARNED x the baseline) and their median sequences,
    the median sequences to solve, the failed runs flat at the baseline, and the median gradient
    reach to the first marker at step 0 and at the first probe after it (`reach_early`)."""
    runs = with_arms(runs)
    rates = learning.success_rates(runs, BY)
    speed = learning.solve_summary(learning.solve_times(metrics, runs), runs, BY)
    learned = learning.learn_summary(metrics, runs, BY)
    failed = runs[~runs.solved.fillna(False).astype(bool)]
    flat = learning.plateau(metrics, failed).merge(failed[["path", *BY]], on="path")
    flat = flat.assign(flat=flat.rel_min >= learning.FLAT).groupby(BY).flat.sum()
    early = learning.early_step(evidence)
    reach = {}
    for name, step in (("reach_init", 0), ("reach_early", early)):
        if step is None:
            continue
        r = learning.gradient_reach(evidence, flow, step).merge(runs[["path", *BY]])
        reach[name] = r.groupby(BY).reach.median()
    table = rates.merge(speed[[*BY, "median"]].rename(columns={"median": "to_solve"}), on=BY)
    table = table.merge(
        learned[[*BY, "learned", "median"]].rename(columns={"median": "to_learn"}), on=BY
    )
    table = table.join(flat.rename("flat"), on=BY).fillna({"flat": 0})
    for name, values in reach.items():
        table = table.join(values.rename(name), on=BY)
    return _against_uncut(table)


def threshold_tables(runs, metrics) -> dict[str, pd.DataFrame]:
    """The success table at the task's criterion and at learning.THRESHOLDS, each with the
    comparison with the uncut arm: {"criterion": ..., "5 %": ..., "10 %": ...}."""
    tables = learning.success_by_threshold(with_arms(runs), metrics, BY)
    return {name: _against_uncut(table) for name, table in tables.items()}


def _against_uncut(table: pd.DataFrame) -> pd.DataFrame:
    """Add each arm's difference to its uncut arm (same model and T), Newcombe's interval,
    Fisher's p and whether the two Wilson intervals separate (this one below)."""
    uncut = table[table.arm == "uncut"].set_index(["model", "T"])
    rows = []
    for _, row in table.iterrows():
        key = (row.model, row["T"])
        out = {"diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan, "p_fisher": np.nan}
        out["separated"] = False
        if row.arm != "uncut" and key in uncut.index:
            u = uncut.loc[key]
            lo, hi = newcombe(int(row.k), int(row.n), int(u.k), int(u.n))
            out = {
                "diff": row.rate - u.rate,
                "diff_lo": lo,
                "diff_hi": hi,
                "p_fisher": fisher_exact(int(row.k), int(row.n), int(u.k), int(u.n)),
                "separated": bool(row.hi < u.lo),
            }
        rows.append(out)
    table = pd.concat([table.reset_index(drop=True), pd.DataFrame(rows)], axis=1)
    order = table.arm.map(_arm_order)
    return table.assign(_o=order).sort_values(["model", "T", "_o"]).drop(columns="_o")


def settings_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Within each arm and T, the models of one cell that differ only in a model key the
    experiment varies (study_causal_1997's input_bias) against each other: k/n of each, the
    difference of rates [Newcombe 95 %] and Fisher's two-sided p. Empty if no key varies."""
    r = with_arms(runs)
    rates = causal_rates(r)
    rows = []
    for (_, T, arm), g in rates.groupby(["base", "T", "arm"], sort=True):
        g = g.sort_values("model").reset_index(drop=True)
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                a, b = g.loc[i], g.loc[j]
                counts = (int(a.k), int(a.n), int(b.k), int(b.n))
                lo, hi = newcombe(*counts)
                row = {"T": T, "arm": arm, "a": a.model, "a k/n": f"{a.k}/{a.n}"}
                row |= {"b": b.model, "b k/n": f"{b.k}/{b.n}", "diff": a.rate - b.rate}
                row |= {"diff_lo": lo, "diff_hi": hi, "p_fisher": fisher_exact(*counts)}
                rows.append(row)
    return pd.DataFrame(rows)


def causal_rates(r: pd.DataFrame) -> pd.DataFrame:
    """success_rates per (model, T, arm), with each model's `base` label beside it."""
    rates = learning.success_rates(r, BY)
    return rates.merge(r[["model", "base"]].drop_duplicates(), on="model")


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, T) with an uncut arm and both cuts: what the outcome means, in the words the
    experiment's header fixed before the runs ("separated" = Wilson intervals apart)."""
    rows = []
    for (model, T), g in table.groupby(["model", "T"], sort=True):
        arms = g.set_index("arm")
        linear = [a for a in arms.index if a.startswith("linear")]
        hidden = [a for a in arms.index if a.startswith("hidden")]
        if "uncut" not in arms.index or not linear or not hidden:
            continue
        u, lin, hid = arms.loc["uncut"], arms.loc[linear[0]], arms.loc[hidden[0]]
        if u.k == 0:
            verdict = "nothing decided: the uncut arm did not solve"
        elif not lin.separated:
            verdict = "the linear cut still learns: the headline is falsified for this cell"
        elif hid.separated:
            verdict = "both cuts fail: the linear path is necessary, not sufficient"
        else:
            verdict = "the linear cut fails, the hidden cut learns: necessary and sufficient"
        rows.append(
            {
                "model": model,
                "T": T,
                "uncut": f"{int(u.k)}/{int(u.n)}",
                "linear cut": f"{int(lin.k)}/{int(lin.n)}",
                "hidden cut": f"{int(hid.k)}/{int(hid.n)}",
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def print_causal(runs, metrics, evidence, flow) -> None:
    """The causal table and the verdicts, as study-learning prints them."""
    table = arms_table(runs, metrics, evidence, flow)
    shown = ["model", "T", "arm", "k", "n", "lo", "hi", "diff", "diff_lo", "diff_hi"]
    shown += ["p_fisher", "separated", "learned", "to_learn", "to_solve", "flat"]
    shown += [c for c in ("reach_init", "reach_early") if c in table]
    early = learning.early_step(evidence)
    with pd.option_context("display.width", 250, "display.float_format", "{:.3g}".format):
        print("\nthe causal test: seeds solved k of n, Wilson 95 % [lo, hi]; against the uncut")
        print("arm: difference of rates [Newcombe 95 %], Fisher's exact two-sided p, separated")
        print(f"(intervals apart); learned: runs below {learning.LEARNED} x the baseline;")
        print("to_learn, to_solve: median sequences; flat: failures at the baseline;")
        print(f"reach: median gradient to the first marker at step 0 and at step {early}")
        print(table[shown].to_string(index=False))
        settings = settings_table(runs)
        if not settings.empty:
            print("\nbetween the settings of a model key the experiment varies (a against b):")
            print(settings.to_string(index=False))
        v = verdicts(table)
        if not v.empty:
            print("\nverdicts at the task's criterion (stated in the experiment's header):")
            print(v.to_string(index=False))
        for name, t in threshold_tables(runs, metrics).items():
            if name == "criterion" or verdicts(t).empty:
                continue
            print(f"\nthe same at a looser threshold: eval loss below {name} of the baseline")
            print(verdicts(t).to_string(index=False))
