"""Figures of the learning study: success against lag with Wilson intervals, sequences-to-solve
against lag, the gradient reaching the evidence at initialisation and early in training against
how fast a run learned, and every run's learning curve with its last half marked.

Each function takes the tidy tables (study.read.results) and returns a matplotlib Figure; the
numbers come from study/read/learning.py. A model is a cell with its initialisation
(study.read.analysis. model_label), one colour each, in the study's order of cells.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.read import learning
from study.read.labels import vocabulary
from study.read.plots import CELL_ORDER, describe, model_colors


def _models(runs: pd.DataFrame) -> tuple[list[str], dict]:
    """The models among runs (a `model` column), cells in the study's order, and a colour each."""
    first = runs.groupby("model").cell.first()
    rank = {c: i for i, c in enumerate(CELL_ORDER)}
    order = sorted(first.index, key=lambda m: (rank.get(first[m], len(rank)), m))
    return order, model_colors(first.rename("cell").reset_index())


def _lag_axis(ax, Ts) -> None:
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(Ts), [str(t) for t in sorted(Ts)])
    ax.set_xlabel("lag T (sequence length)")


def _budget(runs: pd.DataFrame) -> float:
    """The largest training budget among the runs, in sequences (updates x batch size)."""
    return float((runs["cfg.train.steps"] * runs["cfg.train.batch_size"]).max())


AXES = {  # what success is plotted against: the column, the axis label, the title's words
    "T": ("lag T (sequence length)", "lag"),
    "lr": ("Adam's learning rate", "learning rate"),
}


def success(runs: pd.DataFrame, against: str = "T"):
    """Seeds solved (the task's own criterion) per model and T (or learning rate:
    against="lr"), as a grid: each cell reads k/n with its 95 % Wilson interval and is shaded by
    the rate; a cell not run is blank. Rows are the models in the study's order, each labelled in
    its cell's colour. A grid reads where overlapping error bars over nine models do not. Against
    the learning rate with several lags, one grid per T, stacked, the rates aligned."""
    order, colors = _models(runs)
    panels = sorted(runs["T"].unique()) if against == "lr" else [None]
    values = sorted(runs[against].unique())
    height = sum(0.55 * runs[runs["T"] == T].model.nunique() if T else 0.55 * len(order)
                 for T in panels) + 1.6 * len(panels)  # fmt: skip
    fig, axes = plt.subplots(len(panels), 1, figsize=(1.25 * len(values) + 3.5, height),
                             layout="constrained", squeeze=False)  # fmt: skip
    for ax, T in zip(axes[:, 0], panels):
        sub = runs if T is None else runs[runs["T"] == T]
        rows = [m for m in order if m in set(sub.model)]
        n = _success_grid(ax, sub, against, rows, values, colors)
        where = "" if T is None or len(panels) == 1 else f" at T = {T}"
        ax.set_title(f"n = {n} seeds per cell{where}", fontsize=9)
    what = AXES[against][1]
    fig.suptitle(
        f"Seeds solved against {what} (the task's criterion), k/n [95 % Wilson interval]\n"
        f"{describe(runs)}",
        fontsize=9,
    )
    return fig


def _success_grid(ax, runs, against: str, rows: list[str], values: list, colors: dict) -> str:
    """One success grid (rows: models, columns: the values of `against`) drawn on `ax`; returns
    the seeds per cell as text."""
    rates = learning.success_rates(runs, by=("model", against))
    grid = rates.pivot(index="model", columns=against, values="rate").reindex(rows)
    grid = grid.reindex(columns=values)
    text = rates.k.astype(str) + "/" + rates.n.astype(str)
    text += "\n[" + rates.lo.map("{:.2f}".format) + ", " + rates.hi.map("{:.2f}".format) + "]"
    text = rates.assign(text=text).pivot(index="model", columns=against, values="text")
    text = text.reindex(rows).reindex(columns=values)
    sns.heatmap(grid, ax=ax, cmap="Greens", vmin=0, vmax=1, annot=text.fillna(""), fmt="",
                annot_kws={"fontsize": 7}, linewidths=0.5, linecolor="white",
                cbar_kws={"label": "fraction of seeds solved"})  # fmt: skip
    ax.set_xticklabels([f"{v:g}" for v in values], rotation=0)
    ax.set_xlabel(AXES[against][0])
    ax.set_ylabel("")
    for label in ax.get_yticklabels():
        label.set_color(colors[label.get_text()])
    ax.tick_params(axis="y", rotation=0)
    return _n(rates.n)


def _n(n: pd.Series) -> str:
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def solve_speed(metrics: pd.DataFrame, runs: pd.DataFrame):
    """Two panels against T (log-log), one line per model: the sequences until a run first
    learned (its loss below 10 % of the baseline) and until it solved (the criterion); each the
    median over the seeds that got there with the quartiles as bars, every such run as a dot,
    and the budget (dashed)."""
    r = vocabulary(runs)
    order, colors = _models(r)
    panels = [
        ("to learn: loss below 10 % of the baseline", learning.learn_times(metrics, r),
         "sequences_to_learn", learning.learn_summary(metrics, r), "learned"),
        ("to solve: the task's criterion", learning.solve_times(metrics, r),
         "sequences_to_solve", None, "solved"),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4), sharey=True, layout="constrained")
    for ax, (title, times, column, summary, count) in zip(axes, panels):
        if summary is None:
            summary = learning.solve_summary(times, r)
        dots = r[["path", "model", "T"]].merge(times, on="path").dropna(subset=[column])
        for i, model in enumerate(order):
            shift = 1.035 ** (i - (len(order) - 1) / 2)  # spread the models apart
            d = dots[dots.model == model]
            ax.scatter(d["T"] * shift, d[column], s=8, color=colors[model], alpha=0.4)
            g = summary[(summary.model == model) & (summary[count] > 0)].sort_values("T")
            err = [g["median"] - g.q25, g.q75 - g["median"]]
            ax.errorbar(g["T"] * shift, g["median"], yerr=err, marker="o", capsize=3,
                        color=colors[model], label=model)  # fmt: skip
        ax.axhline(_budget(runs), color="0.3", ls="--", lw=1, label="budget")
        _lag_axis(ax, r["T"].unique())
        ax.set_yscale("log")
        ax.set_title(f"Sequences {title}, over the seeds that did", fontsize=9)
    axes[0].set_ylabel("training sequences (median, quartiles)")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"How fast each model learns and solves\n{describe(runs)}", fontsize=10)
    return fig


def reach(evidence: pd.DataFrame, flow: pd.DataFrame, metrics: pd.DataFrame, runs: pd.DataFrame):
    """Per run: the fraction of the error signal that reaches the earliest evidence (x) against
    the sequences it took to solve the task (y), at initialisation (left) and at the first probe
    after it (right); runs never solved sit in a band above the budget. Spearman's rho over the
    runs of each panel in its title."""
    early = learning.early_step(evidence)
    steps = [0] if early is None else [0, early]
    budget = _budget(runs)
    unsolved_y = budget * 2.2
    fig, axes = plt.subplots(
        1, len(steps), figsize=(6 + 5 * len(steps), 4.8), layout="constrained", sharey=True
    )
    axes = np.atleast_1d(axes)
    order, colors = _models(vocabulary(runs))
    for ax, step in zip(axes, steps):
        d, rho = learning.reach_vs_learning(evidence, flow, metrics, runs, step)
        # a reach below REACH_FLOOR (down to 0: float64 underflow at the longest lags) would
        # stretch the axis over a hundred decades: it is drawn at the floor, and said so; the
        # ranks (and rho) use the values themselves
        positive = d.reach[d.reach > 0]
        floor = max(REACH_FLOOR, positive.min() / 10) if len(positive) else REACH_FLOOR
        x = d.reach.clip(lower=floor)
        for model in order:
            g = d[d.model == model]
            y = g.sequences_to_solve.fillna(unsolved_y)
            solved = g.sequences_to_solve.notna()
            xs = x[g.index]
            ax.scatter(xs[solved], y[solved], s=14, color=colors[model], label=model)
            ax.scatter(xs[~solved], y[~solved], s=14, color=colors[model], marker="x")
        if (below := int((d.reach < floor).sum())) > 0:
            zeros = int((d.reach == 0).sum())
            ax.axvline(floor, color="0.6", lw=0.8, ls=":")
            ax.text(floor, 0.02, f" {below} run(s) below {floor:.0e} drawn here\n"
                    f" ({zeros} of them 0: below float64's range)",
                    fontsize=7, transform=ax.get_xaxis_transform())  # fmt: skip
        ax.axhline(budget, color="0.3", ls="--", lw=1)
        band = ax.get_yaxis_transform()  # x in axes coordinates, y in data
        ax.text(0.01, unsolved_y * 1.25, "not solved within the budget (x)", fontsize=8,
                transform=band)  # fmt: skip
        ax.text(0.01, budget * 0.85, "budget", fontsize=8, transform=band, va="top")
        ax.set_xscale("log")
        ax.set_yscale("log")
        low = d.sequences_to_solve.min()
        ax.set_ylim((low if low == low else budget) / 3, unsolved_y * 2)  # low != low: none solved
        when = "at initialisation" if step == 0 else f"after {step} updates"
        ax.set_xlabel(f"‖∂ℓ/∂x‖ at the earliest marker / at the last step, {when} (median)")
        stat = f"ρ = {rho['rho']:.2f} [{rho['lo']:.2f}, {rho['hi']:.2f}], n = {rho['n']} runs"
        ax.set_title(f"{when}: Spearman {stat}", fontsize=9)
    axes[0].set_ylabel("training sequences to solve")
    axes[-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("Gradient reach against sequences to solve, pooled over models (it says which"
                 f" cell a run is, not why it learns)\n{describe(runs)}", fontsize=10)  # fmt: skip
    return fig


REACH_FLOOR = 1e-40  # the reach axis ends here; smaller reaches are drawn at it

TOP = 10.0  # learning curves: a loss above this x the baseline (a near-divergence) is drawn here


def curves(metrics: pd.DataFrame, runs: pd.DataFrame, last: float = 0.5):
    """One panel per model: every run's evaluation loss over the memoryless baseline against
    the sequences it trained on, coloured by T; the last `last` of the budget shaded, where a
    failed run's curve must be flat at 1 for the failure to be a failure."""
    r = vocabulary(runs)
    m = metrics[metrics.name == "eval_loss"].merge(
        r[["path", "model", "T", "baseline", "cfg.train.batch_size"]], on="path"
    )
    m = m.assign(rel=m.value / m.baseline, sequences=m.step * m["cfg.train.batch_size"])
    order, _ = _models(r)
    Ts = sorted(r["T"].unique())
    tcolor = dict(zip(Ts, sns.color_palette("viridis", len(Ts))))
    cols = min(3, len(order))
    rows = int(np.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows + 0.6), sharex=True,
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    budget = _budget(runs)
    spans_decades = m.rel.clip(upper=TOP).min() < 0.1  # else a linear axis (copy: 0.75-1)
    top = TOP if spans_decades else 1.5  # a loss above `top` x the baseline is drawn at it
    for ax, model in zip(axes.flat, order):
        for (_, T), g in m[m.model == model].groupby(["path", "T"]):
            ax.plot(g.sequences, g.rel.clip(upper=top), color=tcolor[T], lw=0.7, alpha=0.8)
        ax.axvspan((1 - last) * budget, budget, color="0.92", zorder=0)
        ax.axhline(1, color="0.3", ls="--", lw=0.8)
        ax.axhline(0.01, color="0.3", ls=":", lw=0.8)
        ax.set_title(model, fontsize=9)
        if spans_decades:
            ax.set_yscale("log")
            ax.set_ylim(top=top * 1.5)
        else:
            ax.set_ylim(0, top * 1.05)
    for ax in axes.flat[len(order) :]:
        ax.set_visible(False)
    for i, ax in enumerate(axes.flat[: len(order)]):
        if i + cols >= len(order):  # no visible panel below: this one carries the x axis
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("training sequences")
    for ax in axes[:, 0]:
        ax.set_ylabel("eval loss / baseline")
    handles = [plt.Line2D([], [], color=tcolor[T], label=f"T = {T}") for T in Ts]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    notes = f"dashed: the baseline; dotted: 1 % of it; shaded: the last half; above {top:g}: at it"
    fig.suptitle(f"Every run's learning curve\n{describe(runs)}\n{notes}", fontsize=9)
    return fig
