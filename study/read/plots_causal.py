"""Figures of the causal test (study/read/causal.py): which gradient path lets each cell learn.

`success`: per cell, the fraction of seeds that solved against T for each arm (uncut, linear
path cut, hidden path cut) with Wilson intervals and k/n written beside each point, the tanh
RNN's floor in grey; at the task's criterion and at a looser threshold (10 % of the baseline).
`gradient`: per cell, the gradient reaching each lag at initialisation and
after the first probe in training, one colour per arm. The arms keep their colours in every
panel; each panel's title has its cell's colour (study/read/plots.py).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from study.read import causal
from study.read.plots import CELL_ORDER, color, describe

ARM_COLORS = {"uncut": "0.1", "linear": "#d62728", "hidden": "#1f77b4"}  # black, red, blue
FLOOR = "RNN"  # the floor's model label (study_causal_floor)


def arm_color(arm: str):
    return ARM_COLORS.get(arm.split()[0], "#9467bd")


def _cells(runs: pd.DataFrame) -> list[str]:
    """The models that have cut arms, in the study's order of cells."""
    cut = runs[runs.arm != "uncut"]
    first = cut.groupby("model").cell.first()
    chrono = cut.groupby("model")["cfg.model.chrono"].first().notna() if "cfg.model.chrono" in cut \
        else pd.Series(False, first.index)  # fmt: skip
    rank = {c: i for i, c in enumerate(CELL_ORDER)}
    return sorted(first.index, key=lambda m: (rank.get(first[m], len(rank)), chrono[m], m))


def _lag_axis(ax, Ts) -> None:
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(Ts), [str(t) for t in sorted(Ts)])
    ax.set_xlim(min(Ts) / 1.4, max(Ts) * 1.4)  # room for the k/n labels, also at one T
    ax.set_xlabel("lag T (sequence length)")


def _success_panel(ax, rates: pd.DataFrame, model: str, arms: list[str]) -> None:
    """One cell's arms (and the floor) against T, with Wilson bars and k/n beside each point."""
    floor = rates[rates.model == FLOOR].sort_values("T")
    if not floor.empty:
        ax.plot(
            floor["T"],
            floor.rate,
            color="0.6",
            lw=3,
            marker="s",
            alpha=0.5,
            label="tanh RNN (floor)",
        )
    for i, arm in enumerate(arms):
        g = rates[(rates.model == model) & (rates.arm == arm)].sort_values("T")
        x = g["T"] * 1.05 ** (i - (len(arms) - 1) / 2)
        c = arm_color(arm)
        ax.errorbar(x, g.rate, yerr=[g.rate - g.lo, g.hi - g.rate], marker="o", capsize=3,
                    color=c, label=arm)  # fmt: skip
        for xi, (_, row) in zip(x, g.iterrows()):
            where = dict(textcoords="offset points", xytext=(4, 4 - 10 * i))
            ax.annotate(f"{row.k}/{row.n}", (xi, row.rate), fontsize=7, color=c, **where)
    ax.set_ylim(-0.05, 1.08)


def success(runs: pd.DataFrame, metrics: pd.DataFrame):
    """Fraction of seeds that solved against T, one panel per cell, one line per arm (top: the
    task's criterion; bottom: the loss below 10 % of the baseline, the looser threshold)."""
    r = causal.with_arms(runs)
    tables = causal.threshold_tables(runs, metrics)
    rows = {"criterion": "solved (the task's criterion)", "10%": "below 10 % of the baseline"}
    models = _cells(r)
    size = (4.2 * len(models) + 1.6, 7.6)
    fig, axes = plt.subplots(2, len(models), figsize=size, sharey=True, sharex=True,
                             squeeze=False, layout="constrained")  # fmt: skip
    arms = sorted(r.arm.unique(), key=causal._arm_order)
    for axrow, (name, ylabel) in zip(axes, rows.items()):
        for ax, model in zip(axrow, models):
            _success_panel(ax, tables[name], model, arms)
            _lag_axis(ax, r["T"].unique())
            ax.set_title(model, fontsize=10, color=color(r[r.model == model].cell.iloc[0]))
        axrow[0].set_ylabel(f"fraction of seeds {ylabel},\n95 % Wilson CI", fontsize=9)
    axes[0, -1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    title = "The causal test: the same forward pass, one gradient path cut"
    fig.suptitle(f"{title}\n{describe(runs)}", fontsize=10)
    return fig


def gradient(runs: pd.DataFrame, flow: pd.DataFrame):
    """||dl/dx_t|| over its value at the last step (lag 0), the median over the batch and then
    over the runs of each arm, against the lag, at the longest T where every arm ran: at
    initialisation (solid) and at the first probe after it (dashed). A cut path leaves only
    what the other path carries; zeros (nothing reaches) sit on the axis floor."""
    r = causal.with_arms(runs)
    models = _cells(r)
    per_T = r[r.model.isin(models)].groupby("T").arm.nunique()
    T = int(per_T[per_T == per_T.max()].index.max())
    r = r[r["T"] == T]
    f = flow[(flow.quantity == "input_grad") & (flow.stat == "median")]
    f = f.merge(r[["path", "model", "arm"]], on="path")
    end = f[f.lag == 0].set_index(["path", "step"]).value
    f = f.assign(rel=f.value / end.reindex(pd.MultiIndex.from_frame(f[["path", "step"]])).values)
    steps = sorted(f[f.arm != "uncut"].step.unique())  # the probes of the cut cells' runs
    early = next((s for s in steps if s > 0), None)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models) + 1.6, 4.2),
                             sharey=True, squeeze=False, layout="constrained")  # fmt: skip
    positive = f.rel[f.rel > 0]
    low = positive.quantile(0.01) / 10 if len(positive) else 1e-30
    for ax, model in zip(axes[0], models):
        g = f[f.model == model]
        for arm in sorted(g.arm.unique(), key=causal._arm_order):
            a = g[g.arm == arm]
            for step, ls in ((0, "-"), (early, "--")):
                s = a[a.step == step].groupby("lag").rel.median()
                s = s[s.index > 0]
                if s.empty:
                    continue
                label = f"{arm}, {'init' if step == 0 else f'step {step}'}"
                ax.plot(s.index, s.clip(lower=low), ls=ls, marker=".", color=arm_color(arm),
                        label=label)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(bottom=low)
        ax.set_xlabel("lag k (steps before the end)")
        cell = r[r.model == model].cell.iloc[0]
        ax.set_title(model, fontsize=10, color=color(cell))
    axes[0, 0].set_ylabel("‖∂ℓ/∂x_t‖ / ‖∂ℓ/∂x_{T-1}‖ (median)")
    legend = {}  # every panel's lines, each label once (a panel may lack a probe at a step)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    order = sorted(legend, key=lambda label: (causal._arm_order(label.split(",")[0]), label))
    fig.legend([legend[k] for k in order], order, loc="outside right center", fontsize=8)
    note = f"T = {T}; solid: at initialisation, dashed: after {early} updates" if early else ""
    fig.suptitle(f"The gradient each arm trains with, by lag\n{describe(r)}\n{note}", fontsize=9)
    return fig


def needs_cuts(runs: pd.DataFrame, tables: dict) -> str | None:
    """The figures registry's check (study/read/figures.py): these figures need cut arms."""
    return None if causal.has_cuts(runs) else "needs runs with a gradient-path cut (model.cut)"
