"""Figures: each function takes the tidy tables (study.results) and returns a matplotlib Figure.

No backend is chosen here: a notebook draws inline, the command-line tools choose Agg.

1. gradient flow at initialisation: `init_flow`, `init_heatmap`
2. learning across lags: `success_vs_lag`, `learning_curves`
3. the linear memory path: `flow_heatmaps`, `cell_path`, `training_dynamics`
4. matched comparison: `matched_comparison`
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from study.analysis import decay_ratio

CELL_ORDER = ["rnn", "lstm", "gru"]
GRAD = "median ‖∂ℓ/∂h_t‖ per example"


def model_label(run: pd.Series) -> str:
    """A readable name for a run's recurrence and its initialisation."""
    cell = run["cfg.model.cell"]
    if cell == "lstm":
        if run.get("cfg.model.forget_gate") is False:
            return "LSTM, no forget gate (1997)"
        bias = run.get("cfg.model.forget_bias")
        return "LSTM" if bias is None or pd.isna(bias) else f"LSTM, forget bias {bias:g}"
    if cell == "rnn":
        init, gain = run.get("cfg.model.recurrent_init"), run.get("cfg.model.recurrent_gain")
        name = "RNN" if run.get("cfg.model.nonlinearity", "tanh") == "tanh" else "ReLU RNN"
        return name if init == "default" else f"{name}, {init} ×{gain:g}"
    return cell.upper()


def _with_labels(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    labels = runs.set_index("path").apply(model_label, axis=1).rename("model")
    return table.join(labels, on="path")


def _grad(flow: pd.DataFrame, quantity="grad_norm", state="h", stat="median") -> pd.DataFrame:
    return flow[(flow.quantity == quantity) & (flow.state == state) & (flow.stat == stat)]


def init_flow(flow: pd.DataFrame, runs: pd.DataFrame, weights: pd.DataFrame | None = None):
    """Median per-example ‖∂ℓ/∂h_t‖ (and ‖∂ℓ/∂c_t‖ for LSTMs) against lag at initialisation, log
    scale, mean over seeds; for tanh RNNs the bound ‖∂ℓ/∂h_{T-1}‖ σ_max(W_hh)^k (Pascanu et al.)."""
    f = _with_labels(flow[(flow.step == 0) & (flow.stat == "median")], runs)
    f = f[f.quantity == "grad_norm"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    mean = f.groupby(["model", "state", "lag"], as_index=False)["value"].mean()
    order = sorted(mean.model.unique())
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    for (model, state), g in mean.groupby(["model", "state"]):
        ls = "-" if state == "h" else ":"
        name = f"{model}  ‖∂ℓ/∂{state}_t‖"
        ax.plot(g.lag, g.value, ls, color=palette[model], label=name, lw=1.6)
    if weights is not None and len(weights):
        w = weights[(weights.step == 0) & (weights.block == "h") & (weights.stat == "sigma_max")]
        rnn = _grad(f)[lambda d: d.model == "RNN"]
        if len(w) and len(rnn):
            sigma = w.merge(runs[["path"]], on="path").value.mean()
            last = rnn[rnn.lag == 0].value.mean()
            lags = np.arange(rnn.lag.max() + 1)
            bound = last * sigma**lags
            ax.plot(
                lags,
                bound,
                "--",
                color=palette["RNN"],
                lw=1,
                label=f"RNN bound ‖∂ℓ/∂h_T-1‖·σ_max^k (σ_max={sigma:.2f})",
            )
    ax.set_yscale("log")
    ax.set_xlabel("lag k = T-1-t (steps)")
    ax.set_ylabel("median gradient norm per example (log scale)")
    ax.set_title("Gradient flow at initialisation (adding problem)")
    ax.legend(fontsize=7, loc="lower left", ncol=1)
    fig.tight_layout()
    return fig


def init_heatmap(flow: pd.DataFrame, runs: pd.DataFrame, setting: str, title: str):
    """Heat map of log10(‖∂ℓ/∂h_{T-1-k}‖ / ‖∂ℓ/∂h_{T-1}‖) at initialisation over (setting x lag),
    with the per-step decay factor in the y labels; `setting` is a cfg column."""
    f = _grad(flow[flow.step == 0]).merge(runs[["path", setting]], on="path")
    last = f[f.lag == 0].set_index("path").value
    f = f.assign(rel=np.log10(f.value / f.path.map(last)))
    grid = f.groupby([setting, "lag"]).rel.mean().unstack("lag").sort_index()
    T = grid.shape[1]
    decay = decay_ratio(flow).merge(runs[["path", setting]], on="path")
    per_step = np.exp(np.log(decay.per_step).groupby(decay[setting]).mean())  # geometric mean
    per_step = per_step.reindex(grid.index)
    fig, ax = plt.subplots(figsize=(8.5, 0.35 * len(grid) + 1.6))
    low = max(-30.0, float(np.nanmin(grid.values)))
    sns.heatmap(
        grid,
        ax=ax,
        cmap="RdBu_r",  # blue: vanishing, red: exploding, white: preserved
        center=0,
        vmin=low,
        vmax=max(-low / 10, float(np.nanmax(grid.values))),
        cbar_kws={"label": "log10 gradient norm relative to lag 0"},
    )
    name = lambda v: f"{v:g}" if isinstance(v, int | float) else str(v)  # noqa: E731
    ax.set_yticklabels(
        [f"{name(v)}  (×{p:.2f}/step)" for v, p in zip(grid.index, per_step)], rotation=0
    )
    ax.set_xticks(np.arange(0, T, 10) + 0.5, [str(k) for k in range(0, T, 10)], rotation=0)
    ax.set_xlabel("lag k (steps)")
    ax.set_ylabel(setting.removeprefix("cfg.model."))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion."""
    if n == 0:
        return np.nan, np.nan
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return centre - half, centre + half


def success_vs_lag(runs: pd.DataFrame, title: str, learned: float = 0.1):
    """Fraction of seeds that solved the task (its own criterion; solid) and that learned it
    (final evaluation loss below `learned` x the memoryless baseline; dashed) against T, per
    cell, with 95 % Wilson intervals over seeds."""
    r = runs.assign(
        learned=runs.eval_loss < learned * runs.baseline, solved=runs.solved.fillna(False)
    )
    rows = []
    for (cell, T), g in r.groupby(["cell", "cfg.task.length"]):
        for criterion in ("solved", "learned"):
            k, n = int(g[criterion].sum()), len(g)
            lo, hi = wilson(k, n)
            rows.append(
                {
                    "cell": cell,
                    "T": T,
                    "criterion": criterion,
                    "rate": k / n,
                    "lo": lo,
                    "hi": hi,
                    "n": n,
                }
            )
    d = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    palette = dict(zip(CELL_ORDER, sns.color_palette("tab10", 3)))
    for i, cell in enumerate(c for c in CELL_ORDER if c in set(d.cell)):
        for criterion, ls, marker in (("solved", "-", "o"), ("learned", "--", "s")):
            g = d[(d.cell == cell) & (d.criterion == criterion)].sort_values("T")
            x = g["T"] * (1 + 0.03 * (i - 1) + (0.01 if criterion == "learned" else 0))
            label = f"{cell.upper()}: {criterion}"
            ax.errorbar(
                x,
                g.rate,
                yerr=[g.rate - g.lo, g.hi - g.rate],
                ls=ls,
                marker=marker,
                capsize=3,
                color=palette[cell],
                label=label,
            )
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(d["T"].unique()), [str(t) for t in sorted(d["T"].unique())])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("sequence length T (steps of lag)")
    ax.set_ylabel(f"fraction of seeds (n = {d.n.max()}), 95 % CI")
    ax.set_title(
        title + f"\nsolved: the task's criterion; learned: loss < {learned:g} x baseline",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def learning_curves(metrics: pd.DataFrame, runs: pd.DataFrame, title: str):
    """Evaluation loss against training step per cell, one panel per T, seeds as thin lines,
    the task's analytic memoryless baseline as a dashed line."""
    m = metrics[metrics.name == "eval_loss"].merge(
        runs[["path", "cfg.task.length", "baseline"]], on="path"
    )
    Ts = sorted(m["cfg.task.length"].unique())
    fig, axes = plt.subplots(1, len(Ts), figsize=(3.2 * len(Ts), 3.4), sharey=True, squeeze=False)
    palette = dict(zip(CELL_ORDER, sns.color_palette("tab10", 3)))
    for ax, T in zip(axes[0], Ts):
        g = m[m["cfg.task.length"] == T]
        for (cell, _path), r in g.groupby(["cell", "path"]):
            ax.plot(r.step, r.value, color=palette[cell], lw=1, alpha=0.8)
        ax.axhline(g.baseline.iloc[0], ls="--", color="k", lw=1)
        ax.set_yscale("log")
        ax.set_title(f"T = {T}")
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("evaluation loss (log scale)")
    handles = [
        plt.Line2D([], [], color=palette[c], label=c.upper())
        for c in CELL_ORDER
        if c in set(m.cell)
    ]
    handles.append(plt.Line2D([], [], ls="--", color="k", label="memoryless baseline"))
    axes[0][-1].legend(handles=handles, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def flow_heatmaps(flow: pd.DataFrame, runs: pd.DataFrame):
    """log10 median ‖∂ℓ/∂h_t‖ over (training step x position), one panel per cell (first seed)."""
    f = _grad(flow)
    cells = [c for c in CELL_ORDER if c in set(runs.cell)]
    fig, axes = plt.subplots(1, len(cells), figsize=(4.2 * len(cells), 3.8), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        path = runs[runs.cell == cell].sort_values("seed").path.iloc[0]
        grid = f[f.path == path].pivot_table(index="step", columns="position", values="value")
        grid = np.log10(grid.clip(lower=1e-300))
        sns.heatmap(
            grid,
            ax=ax,
            cmap="magma",
            vmin=-12,
            vmax=float(np.nanmax(grid.values)),
            cbar_kws={"label": "log10 " + GRAD},
        )
        T = grid.shape[1]
        ax.set_xticks(
            np.arange(0, T, max(1, T // 5)) + 0.5,
            [str(t) for t in range(0, T, max(1, T // 5))],
            rotation=0,
        )
        ax.set_xlabel("position t (steps)")
        ax.set_ylabel("training step")
        ax.set_title(cell.upper())
    fig.suptitle("Where the gradient reaches during training (adding problem)")
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
    ax.set_title("LSTM: gradient along the linear cell path vs total")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_dynamics(flow: pd.DataFrame, metrics: pd.DataFrame, runs: pd.DataFrame):
    """Left: the LSTM's mean forget gate over training (solid, left axis) and the gain of its cell
    path over the whole sequence, mean over units of prod_{r>0} f_r (dashed, log, right axis):
    a few units opening their path move the gain by orders of magnitude and the mean barely.
    Right: the effective horizon (largest lag with median ‖∂ℓ/∂h‖ above 1e-3 of the last)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.9))
    lstm = flow[flow.path.isin(runs[runs.cell == "lstm"].path)]
    f = lstm[(lstm.quantity == "gate_mean") & (lstm.state == "f") & (lstm.stat == "mean")]
    f = f.groupby(["seed", "step"], as_index=False).value.mean()
    gain = lstm[
        (lstm.quantity == "forget_product") & (lstm.position == 0) & (lstm.stat == "median")
    ]
    a2 = a.twinx()
    for i, (seed, g) in enumerate(f.groupby("seed")):
        color = sns.color_palette("tab10")[i]
        a.plot(g.step, g.value, color=color, label=f"seed {seed}: mean f")
        p = gain[gain.seed == seed]
        a2.plot(p.step, p.value, "--", color=color, label=f"seed {seed}: gain of the cell path")
    a.set_xlabel("training step")
    a.set_ylabel("mean forget gate f (over units, positions)")
    a.set_ylim(0, 1)
    a2.set_yscale("log")
    a2.set_ylabel("median mean-over-units ∏ f from t=0 to T-1 (log)")
    a.set_title("LSTM forget gates during training")
    lines = a.get_legend_handles_labels()
    lines2 = a2.get_legend_handles_labels()
    a.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="center left")
    h = metrics[(metrics.name == "effective_horizon") & metrics.path.isin(runs.path)]
    order = [c for c in CELL_ORDER if c in set(h.cell)]
    sns.lineplot(
        h, x="step", y="value", hue="cell", units="seed", estimator=None, ax=b, hue_order=order
    )
    b.set_xlabel("training step")
    b.set_ylabel("effective horizon (steps of lag)")
    b.set_title("How far back the gradient reaches (≥ 1e-3 of the last)")
    fig.tight_layout()
    return fig


def matched_comparison(runs: pd.DataFrame, flow: pd.DataFrame):
    """Equal hidden size versus equal parameter count: final evaluation loss (relative to the
    baseline) and the gradient's per-step decay factor at initialisation, per cell."""
    r = runs.assign(
        matching=np.where(runs["cfg.model.match_params"].isna(), "equal H", "equal parameters"),
        rel_loss=runs.eval_loss / runs.baseline,
    )
    r["label"] = r.cell.str.upper() + " (H=" + r.hidden_size.astype(str) + ")"
    decay = decay_ratio(flow).set_index("path")
    r["per_step"] = decay.per_step.reindex(r.path).values
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    order = [c for c in CELL_ORDER if c in set(r.cell)]
    hue = ["equal H", "equal parameters"]
    sizes = r.groupby(["cell", "matching"]).agg(H=("hidden_size", "first"), n=("n_params", "first"))
    ticks = [
        f"{c.upper()}\n"
        + " | ".join(f"H={sizes.loc[(c, m), 'H']}" for m in hue if (c, m) in sizes.index)
        for c in order
    ]
    sns.stripplot(
        r, x="cell", y="rel_loss", hue="matching", hue_order=hue, dodge=True, order=order, ax=a
    )
    a.set_yscale("log")
    a.axhline(1, ls="--", color="k", lw=1)
    a.set_ylabel("final eval loss / memoryless baseline (log)")
    a.set_title(f"Learning at T = {int(decay['T'].max())}")
    sns.stripplot(
        r,
        x="cell",
        y="per_step",
        hue="matching",
        hue_order=hue,
        dodge=True,
        order=order,
        ax=b,
        legend=False,
    )
    b.set_ylabel("gradient decay factor per step at init")
    b.set_title("Gradient flow at initialisation")
    for ax in (a, b):
        ax.set_xticks(range(len(order)), ticks)
        ax.set_xlabel("cell (hidden size: equal H | equal parameters)")
    fig.tight_layout()
    return fig
