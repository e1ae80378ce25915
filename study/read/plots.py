"""Figures: each function takes the tidy tables (study.read.results) and returns a Figure.

No backend is chosen here: a notebook draws inline, the command-line tools choose Agg.

1. gradient flow at initialisation: `init_flow`, `init_heatmap`
2. learning across lags: `success_vs_lag`, `learning_curves`
3. the linear memory path: `flow_heatmaps`, `cell_path`, `training_dynamics`
4. matched comparison: `matched_comparison`
"""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm

from study.read.analysis import decay_ratio, success_rates
from study.read.labels import NAMES

CELL_ORDER = ["rnn", "lstm", "gru", "mingru", "minlstm", "lru", "block"]
LINEAR = {"mingru", "minlstm", "lru"}  # the linear-recurrence cells (study/model/linear_cells.py)
PALETTE = dict(zip(CELL_ORDER, sns.color_palette("tab10", len(CELL_ORDER))))  # one colour per cell
PANELS = {"classic": "classic cells", "linear": "linear-recurrence cells",
          "block": "cells in blocks"}  # fmt: skip


def cells(values) -> list[str]:
    """The cells among `values`, in the study's order; cells added from outside last, sorted."""
    present = set(values)
    return [c for c in CELL_ORDER if c in present] + sorted(present - set(CELL_ORDER))


def color(cell: str):
    return PALETTE.get(cell, "0.35")  # a cell from outside the repository: grey


def model_colors(models: pd.DataFrame) -> dict:
    """{model label: colour} for a table with `model` and `cell` columns: every model in its
    cell's colour (the same in every figure); several models of one cell (the LSTM's
    initialisations) spread from a lighter to a darker shade of it, so the cell stays
    recognisable and its variants apart."""
    out = {}
    for cell, g in models.drop_duplicates("model").groupby("cell", sort=False):
        base = np.asarray(mcolors.to_rgb(color(cell)))
        variants = sorted(g.model)
        for t, model in zip(
            np.linspace(-0.45, 0.45, len(variants)) * (len(variants) > 1), variants
        ):
            towards = np.ones(3) if t < 0 else np.zeros(3)  # white for t < 0, black for t > 0
            out[model] = tuple(base + abs(t) * (towards - base))
    return out


def seed_style(seed) -> str:
    """The line style of a seed, where a figure draws seeds in their cell's colour."""
    return ["-", "--", ":", "-."][int(seed) % 4]


def name(cell: str) -> str:
    return NAMES.get(cell, cell.upper())


GRAD = "median ‖∂ℓ/∂h_t‖ per example"


def _span(values: list) -> str:
    fmt = lambda v: f"{v:g}" if isinstance(v, int | float) else str(v)  # noqa: E731
    if len(values) <= 4:
        return ", ".join(map(fmt, values))
    return f"{fmt(values[0])}–{fmt(values[-1])}"


def describe(runs: pd.DataFrame) -> str:
    """What a figure's runs are, for its title: task (variant), lags T, hidden sizes H, seeds
    per configuration and the budget, e.g. "Adding, T = 25, 50, 100, H = 64, 3 seeds, 3000
    steps × batch 50"."""

    def values(col):
        return sorted(set(runs[col].dropna())) if col in runs else []

    task = "/".join(map(str, values("task")))
    if variant := values("cfg.task.variant"):
        task += f" ({'/'.join(map(str, variant))})"
    seeds = runs.groupby("config").seed.nunique()
    n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    steps, batch = values("steps"), _span(values("cfg.train.batch_size"))
    budget = f"batch {batch} at init" if steps == [0] else f"{_span(steps)} steps × batch {batch}"
    parts = [task, f"T = {_span(values('T'))}", f"H = {_span(values('hidden_size'))}"]
    return ", ".join([*parts, f"{n} seed{'s' * (n != '1')}", budget])


def _with_labels(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    return table.join(runs.set_index("path").model, on="path")


def _grad(flow: pd.DataFrame, quantity="grad_norm", state="h", stat="median") -> pd.DataFrame:
    return flow[(flow.quantity == quantity) & (flow.state == state) & (flow.stat == stat)]


def init_flow(flow: pd.DataFrame, runs: pd.DataFrame, weights: pd.DataFrame | None = None):
    """Median per-example ‖∂ℓ/∂state_t‖ against lag at initialisation, log scale, mean over
    seeds: h for every cell, also c for LSTMs and s for the LRU. With a bound per panel: for
    tanh RNNs ‖∂ℓ/∂h_{T-1}‖ σ_max(W_hh)^k (Pascanu et al. 2013); for the LRU ‖∂ℓ/∂s_{T-1}‖
    max|λ|^k (its state path is Λ^k, Λ diagonal). The linear-recurrence cells get their own
    panel when present."""
    f = _with_labels(flow[(flow.step == 0) & (flow.stat == "median")], runs)
    f = f[f.quantity == "grad_norm"].merge(runs[["path", "cell"]].rename(columns={"cell": "c"}))
    mean = f.groupby(["model", "c", "state", "lag"], as_index=False)["value"].mean()
    palette = model_colors(mean.rename(columns={"c": "cell"}))
    classic = ~mean.c.isin(LINEAR) & (mean.c != "block")
    panels = [("classic", mean[classic]), ("linear", mean[mean.c.isin(LINEAR)])]
    panels = [(name, d) for name, d in panels + [("block", mean[mean.c == "block"])] if len(d)]
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 4.8), squeeze=False)
    bounds = {
        "RNN": ("h", "h", "sigma_max", "σ_max"),
        "LRU": ("lambda", "s", "spectral_radius", "max|λ|"),
    }
    for ax, (panel, d) in zip(axes[0], panels):
        for (model, state), g in d.groupby(["model", "state"]):
            if (g.value[g.lag > 0] == 0).all():
                continue  # a state no later step reads (the LRU's output h): nothing flows back
            # the state's letter sets the style; a stack's layers (h1, s2) thin out with depth
            letter, layer = state.rstrip("0123456789"), state[len(state.rstrip("0123456789")) :]
            ls = {"h": "-", "c": ":", "s": "-."}.get(letter, "--")
            lw = 1.6 if not layer else 2.2 / int(layer)
            ax.plot(
                g.lag, g.value, ls, color=palette[model], label=f"{model}  ‖∂ℓ/∂{state}_t‖", lw=lw
            )
        for model, (block, state, stat, symbol) in bounds.items():
            line = d[(d.model == model) & (d.state == state)]
            if weights is None or not len(weights) or not len(line):
                continue
            w = weights[(weights.step == 0) & (weights.block == block) & (weights.stat == stat)]
            w = w.merge(runs[["path"]], on="path")
            if not len(w):
                continue
            rate, last = w.value.mean(), line[line.lag == 0].value.mean()
            lags = np.arange(line.lag.max() + 1)
            label = f"{model} bound ‖∂ℓ/∂{state}_T-1‖·{symbol}^k ({symbol}={rate:.3f})"
            ax.plot(lags, last * rate**lags, "--", color=palette[model], lw=1, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("lag k = T-1-t (steps)")
        ax.set_ylabel("median gradient norm per example (log scale)")
        ax.set_title(PANELS[panel], fontsize=10)
        ax.legend(fontsize=7, loc="lower left", ncol=1)
    fig.suptitle("Gradient flow at initialisation: " + describe(runs), fontsize=10)
    fig.tight_layout()
    return fig


def _order_key(value):
    """Settings in numeric order where they are numbers (-2 before -1; a text sort puts -1
    first), others after them as text."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _factor(p: float) -> str:
    """A per-step factor with the digits that tell it from 1 (0.996 and 0.999, not 1.00)."""
    return f"{p:.2f}" if abs(1 - p) >= 0.01 else f"{p:.4f}".rstrip("0")


def init_heatmap(flow: pd.DataFrame, runs: pd.DataFrame, setting: str, title: str, ylabel=None):
    """Heat map of log10(‖∂ℓ/∂h_{T-1-k}‖ / ‖∂ℓ/∂h_{T-1}‖) at initialisation over (setting x lag),
    with the per-step decay factor in the y labels; `setting` is a cfg column."""
    f = _grad(flow[flow.step == 0]).merge(runs[["path", setting]], on="path")
    last = f[f.lag == 0].set_index("path").value
    f = f.assign(rel=np.log10(f.value / f.path.map(last)))
    grid = f.groupby([setting, "lag"]).rel.mean().unstack("lag")
    grid = grid.iloc[sorted(range(len(grid)), key=lambda i: _order_key(grid.index[i]))]
    T = grid.shape[1]
    decay = decay_ratio(flow).merge(runs[["path", setting]], on="path")
    per_step = np.exp(np.log(decay.per_step).groupby(decay[setting]).mean())  # geometric mean
    per_step = per_step.reindex(grid.index)
    fig, ax = plt.subplots(figsize=(8.5, 0.35 * len(grid) + 1.6))
    # Diverging at 0 (a decay factor of 1): each side spans its own range, so growth of a few
    # decades is as visible as vanishing over thirty; at least one decade each way.
    low = min(-1.0, max(-30.0, float(np.nanmin(grid.values))))
    high = max(1.0, float(np.nanmax(grid.values)))
    sns.heatmap(
        grid,
        ax=ax,
        cmap="RdBu_r",  # blue: vanishing, red: exploding, white: preserved
        norm=TwoSlopeNorm(vmin=low, vcenter=0.0, vmax=high),
        cbar_kws={"label": "log10 gradient norm relative to lag 0 (white: preserved)"},
    )
    ends = np.concatenate([np.linspace(low, 0, 4), np.linspace(0, high, 3)])
    ticks = sorted(set(np.trunc(ends * 10) / 10))  # rounded towards 0: inside the bar's range
    ax.collections[0].colorbar.set_ticks(ticks)
    name = lambda v: f"{v:g}" if isinstance(v, int | float) else str(v)  # noqa: E731
    ax.set_yticklabels(
        [f"{name(v)}  (×{_factor(p)}/step)" for v, p in zip(grid.index, per_step)], rotation=0
    )
    every = max(1, int(round(T / 8, -1)) if T >= 40 else T // 4)  # ~8 ticks, in tens from T = 40
    ax.set_xticks(np.arange(0, T, every) + 0.5, [str(k) for k in range(0, T, every)], rotation=0)
    ax.set_xlabel("lag k (steps)")
    ax.set_ylabel(ylabel or setting.removeprefix("cfg.model."))
    ax.set_title(title + "\n" + describe(runs), fontsize=10)
    fig.tight_layout()
    return fig


def success_vs_lag(runs: pd.DataFrame, title: str = "Learning across lags", learned=0.1):
    """Fraction of seeds that solved the task (its own criterion; solid) and that learned it
    (final evaluation loss below `learned` x the memoryless baseline; dashed) against T, per
    cell, with 95 % Wilson intervals over seeds."""
    below = runs.eval_loss < learned * runs.baseline
    d = pd.concat(
        [
            success_rates(runs, ("cell", "T")).assign(criterion="solved"),
            success_rates(runs.assign(solved=below), ("cell", "T")).assign(criterion="learned"),
        ]
    )
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, cell in enumerate(cells(d.cell)):
        for criterion, ls, marker in (("solved", "-", "o"), ("learned", "--", "s")):
            g = d[(d.cell == cell) & (d.criterion == criterion)].sort_values("T")
            x = g["T"] * (1 + 0.03 * (i - 1) + (0.01 if criterion == "learned" else 0))
            label = f"{name(cell)}: {criterion}"
            ax.errorbar(
                x,
                g.rate,
                yerr=[g.rate - g.lo, g.hi - g.rate],
                ls=ls,
                marker=marker,
                capsize=3,
                color=color(cell),
                label=label,
            )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(d["T"].unique()), [str(t) for t in sorted(d["T"].unique())])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("sequence length T (steps of lag)")
    ax.set_ylabel(f"fraction of seeds (n = {d.n.max()}), 95 % CI")
    criteria = f"solved: the task's criterion; learned: loss < {learned:g} x baseline"
    ax.set_title(f"{title}\n{describe(runs)}\n{criteria}", fontsize=9)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def plain_log_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (0.2, 0.5, 1), not 2 x 10^-1; within a decade
    or two a log axis otherwise prints only such minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = axis.get_view_interval()
    decades = np.log10(high / low) if low > 0 else np.inf
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 3 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def learning_curves(metrics: pd.DataFrame, runs: pd.DataFrame, title: str = "Learning curves"):
    """Evaluation loss against training step per cell, one panel per T, seeds as thin lines,
    the task's analytic memoryless baseline as a dashed line."""
    m = metrics[metrics.name == "eval_loss"].merge(runs[["path", "T", "baseline"]], on="path")
    Ts = sorted(m["T"].unique())
    width = max(3.2 * len(Ts), 7.0)  # one T: wide enough for the title
    fig, axes = plt.subplots(1, len(Ts), figsize=(width, 3.6), sharey=True, squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, T in zip(axes[0], Ts):
        g = m[m["T"] == T]
        for (cell, _path), r in g.groupby(["cell", "path"]):
            ax.plot(r.step, r.value, color=color(cell), lw=1, alpha=0.8)
        ax.axhline(g.baseline.iloc[0], ls="--", color="k", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"T = {T}")
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("evaluation loss (log scale)")
    for ax in axes[0]:
        plain_log_ticks(ax.yaxis)
    handles = [plt.Line2D([], [], color=color(c), label=name(c)) for c in cells(m.cell)]
    handles.append(plt.Line2D([], [], ls="--", color="k", label="memoryless baseline"))
    fig.legend(handles=handles, fontsize=8, loc="outside right center")  # off the data
    fig.suptitle(f"{title}\n{describe(runs)}", fontsize=10)
    return fig


def flow_heatmaps(flow: pd.DataFrame, runs: pd.DataFrame):
    """log10 median ‖∂ℓ/∂s_t‖ over (training step x position) of the state that carries memory
    (h; the LRU's s; a stack's first layer's), one panel per cell (first seed)."""
    present = cells(runs.cell)
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.8), squeeze=False)
    for ax, cell in zip(axes[0], present):
        run = runs[runs.cell == cell].sort_values("seed").iloc[0]
        memory = run.get("memory") if isinstance(run.get("memory"), str) else "h"
        f = _grad(flow, state=memory)
        grid = f[f.path == run.path].pivot_table(index="step", columns="position", values="value")
        grid = np.log10(grid.clip(lower=1e-300))
        sns.heatmap(
            grid,
            ax=ax,
            cmap="magma",
            vmin=max(-30.0, float(np.nanmin(grid.values))),  # from the data, at most 30 decades
            vmax=float(np.nanmax(grid.values)),
            cbar_kws={"label": f"log10 median ‖∂ℓ/∂{memory}_t‖ per example"},
        )
        T = grid.shape[1]
        ax.set_xticks(
            np.arange(0, T, max(1, T // 5)) + 0.5,
            [str(t) for t in range(0, T, max(1, T // 5))],
            rotation=0,
        )
        ax.set_xlabel("position t (steps)")
        ax.set_ylabel("training step")
        ax.set_title(name(cell) if cell != "block" else run.model)
    fig.suptitle("Where the gradient reaches during training: " + describe(runs), fontsize=10)
    fig.tight_layout()
    return fig


def cell_path(flow: pd.DataFrame, runs: pd.DataFrame):
    """The LSTM's ‖∂ℓ/∂c_t‖ along the cell path alone versus the total, against lag, at a few
    training steps (first LSTM seed)."""
    lstm = runs[runs.cell == "lstm"].sort_values("seed")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if lstm.empty:
        return fig
    f = flow[(flow.path == lstm.path.iloc[0]) & (flow.state == "c") & (flow.stat == "median")]
    steps = sorted(f.step.unique())
    pick = sorted({steps[0], steps[len(steps) // 2], steps[-1]})
    colors = sns.color_palette("viridis", len(pick))
    for color, step in zip(colors, pick):
        for quantity, ls in (("grad_norm", "-"), ("grad_norm_cell_path", "--")):
            g = f[(f.step == step) & (f.quantity == quantity)]
            what = "total" if quantity == "grad_norm" else "cell path alone"
            ax.plot(g.lag, g.value, ls, color=color, label=f"step {step}: {what}")
    ax.set_yscale("log")
    ax.set_xlabel("lag k (steps)")
    ax.set_ylabel("median ‖∂ℓ/∂c_t‖ per example (log scale)")
    ax.set_title(
        "LSTM: gradient along the linear cell path vs total\n" + describe(lstm.iloc[:1]), fontsize=9
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_dynamics(flow: pd.DataFrame, metrics: pd.DataFrame, runs: pd.DataFrame):
    """Three panels over training, one y-axis each. (a) the LSTM's mean forget gate; (b) the
    gain of its cell path over the whole sequence, median over examples of the mean over units
    of prod_{r>0} f_r (log): a few units opening their path move the gain by orders of
    magnitude and the mean gate barely; (c) the effective horizon per cell (largest lag with
    median ‖∂ℓ/∂h‖ above 1e-3 of the last). Seeds as lines; legends below the panels."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4.2))
    lstm = flow[flow.path.isin(runs[runs.cell == "lstm"].path)]
    f = lstm[(lstm.quantity == "gate_mean") & (lstm.state == "f") & (lstm.stat == "mean")]
    f = f.groupby(["seed", "step"], as_index=False).value.mean()
    gain = lstm[
        (lstm.quantity == "forget_product") & (lstm.position == 0) & (lstm.stat == "median")
    ]
    for seed, g in f.groupby("seed"):  # the LSTM's colour, one line style per seed
        style, label = seed_style(seed), f"LSTM seed {seed}"
        a.plot(g.step, g.value, style, color=color("lstm"), label=label)
        p = gain[gain.seed == seed]
        b.plot(p.step, p.value, style, color=color("lstm"), label=label)
    a.set_ylim(0, 1)
    a.set_ylabel("mean forget gate f (over units, positions)")
    a.set_title("(a) LSTM forget gate", fontsize=10)
    b.set_yscale("log")
    b.set_ylabel("gain of the cell path: ∏ f over t = 1..T-1 (log)")
    b.set_title("(b) LSTM cell-path gain over the sequence", fontsize=10)
    h = metrics[(metrics.name == "effective_horizon") & metrics.path.isin(runs.path)]
    order = cells(h.cell)
    for (cell, seed), g in h.groupby(["cell", "seed"]):
        c.plot(
            g.step, g.value, seed_style(seed), color=color(cell), label=f"{name(cell)} seed {seed}"
        )
    c.set_ylabel("effective horizon (steps of lag)")
    c.set_title("(c) effective horizon: lags with ≥ 1e-3 of the last", fontsize=10)
    for ax in (a, b, c):
        ax.set_xlabel("training step")
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    c.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=len(order) or 1)
    fig.suptitle("Memory path during training: " + describe(runs), fontsize=10)
    fig.tight_layout()
    return fig


def matched_comparison(runs: pd.DataFrame, flow: pd.DataFrame):
    """Equal hidden size versus equal parameter count: final evaluation loss (relative to the
    baseline) and the gradient's per-step decay factor at initialisation, per cell."""
    r = runs.assign(
        matching=np.where(runs["cfg.model.match_params"].isna(), "equal H", "equal parameters"),
        rel_loss=runs.eval_loss / runs.baseline,
    )
    # a cell whose parameter-matched size equals its own H (the cell that set the target) ran
    # the same configuration twice: drawn once, as "equal H", its tick saying "(both)"
    key = ["cell", "hidden_size"]
    at_h = r[r.matching == "equal H"].set_index(key).index
    twice = (r.matching == "equal parameters") & r.set_index(key).index.isin(at_h)
    both = set(r[twice].cell)
    r = r[~twice.values]
    decay = decay_ratio(flow).set_index("path")
    r["per_step"] = decay.per_step.reindex(r.path).values
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    order = cells(r.cell)
    hue = ["equal H", "equal parameters"]
    sizes = r.groupby(["cell", "matching"]).agg(H=("hidden_size", "first"), n=("n_params", "first"))
    ticks = [
        f"{name(c)}\nH={sizes.loc[(c, 'equal H'), 'H']} (both)"
        if c in both
        else f"{name(c)}\n"
        + " | ".join(f"H={sizes.loc[(c, m), 'H']}" for m in hue if (c, m) in sizes.index)
        for c in order
    ]
    strip = dict(hue="matching", hue_order=hue, dodge=True, order=order, jitter=False)
    sns.stripplot(r, x="cell", y="rel_loss", ax=a, **strip)  # no jitter: the same PNG each time
    a.set_yscale("log")
    a.axhline(1, ls="--", color="k", lw=1)
    a.set_ylabel("final eval loss / memoryless baseline (log)")
    a.set_title(f"Learning at T = {int(decay['T'].max())}")
    sns.stripplot(
        r,
        x="cell",
        y="per_step",
        ax=b,
        legend=False,
        **strip,
    )
    b.set_ylabel("gradient decay factor per step at init")
    b.set_title("Gradient flow at initialisation")
    for ax in (a, b):
        ax.set_xticks(range(len(order)), ticks)
        ax.set_xlabel("cell (hidden size: equal H | equal parameters)")
    fig.suptitle("Equal hidden size or equal parameters: " + describe(runs), fontsize=10)
    fig.tight_layout()
    return fig
