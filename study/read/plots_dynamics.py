"""Figures of the dynamics behind the gradient: Lyapunov spectra over training, the singular values
of ds_{T-1}/ds_t against lag, and the gradient's signal-to-noise ratio per lag.

Each function takes the tidy tables (study.read.results) and returns a matplotlib Figure; panels
are per cell, in the study's order (study.read.plots.cells). Runs are drawn one line each (means
over the Jacobian examples), not averaged over seeds: a seed that learned and one that did not
differ by orders of magnitude, and their mean would describe neither.
"""

from __future__ import annotations

from itertools import product

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib import cm
from matplotlib.colors import Normalize

from study.read.analysis import leaves_baseline
from study.read.plots import cells, color, describe, name, seed_style

FLOOR = -3.0  # per step: a direction shrinking by e^-3 = 0.05 per step is gone within a few


def _panels(n: int, width: float = 3.4, height: float = 3.8):
    fig, axes = plt.subplots(
        1, n, figsize=(width * n + 1.0, height), squeeze=False, sharey=True, layout="constrained"
    )
    return fig, axes[0]


def lyapunov_spectra(lyapunov: pd.DataFrame, runs: pd.DataFrame, metrics: pd.DataFrame):
    """One panel per cell: the top Lyapunov exponents of the state dynamics (largest first,
    per step), one line per run and probe step, coloured from the start of training (dark) to
    its end (light), each seed in its own line style. A run whose loss left the baseline (below
    0.9 x) has its first probe from then on drawn thick in black: the spectrum at the moment
    the run started to learn. Exponents below FLOOR are drawn at it: those directions are gone
    within a few steps whatever their exact rate. 0 is the line a memory needs to reach."""
    L = lyapunov[lyapunov.path.isin(runs.path)]
    mean = L.groupby(["cell", "path", "step", "index"], as_index=False).value.mean()
    seed = runs.set_index("path").seed
    left = leaves_baseline(metrics, runs)
    order = cells(mean.cell)
    norm = Normalize(mean.step.min(), max(mean.step.max(), 1))
    fig, axes = _panels(len(order), height=4.4)
    low = max(FLOOR, mean.value.min()) - 0.05
    for ax, cell in zip(axes, order):
        c = mean[mean.cell == cell]
        for (path, step), g in c.groupby(["path", "step"]):
            style = seed_style(seed[path])
            ax.plot(
                g["index"], g.value.clip(lower=FLOOR), style, color=cm.viridis(norm(step)), lw=1
            )
        for path, g in c.groupby("path"):
            after = sorted(
                s for s in g.step.unique() if not pd.isna(left[path]) and s >= left[path]
            )
            if after:
                at = g[g.step == after[0]]
                label = f"seed {seed[path]}: loss left the baseline (probe at {after[0]})"
                ax.plot(
                    at["index"],
                    at.value.clip(lower=FLOOR),
                    seed_style(seed[path]),
                    color="k",
                    lw=2.2,
                    label=label,
                )
        ax.axhline(0, color="0.3", lw=0.8, ls=":")
        ax.set_ylim(low, max(0.05, mean.value.max() + 0.05))
        ax.set_title(name(cell), fontsize=10, color=color(cell))
        ax.set_xlabel("exponent index i (largest first)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    axes[0].set_ylabel(f"Lyapunov exponent λ_i (per step; floor {FLOOR:g})")
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap="viridis"), ax=list(axes), pad=0.02)
    bar.set_label("training step")
    styles = ", ".join(f"seed {s} {_STYLE_WORD[seed_style(s)]}" for s in sorted(set(seed)))
    fig.suptitle(f"Lyapunov spectra over training ({styles}): " + describe(runs), fontsize=10)
    return fig


_STYLE_WORD = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}


def _seed_marker(seed) -> str:
    """The marker of a seed where line styles already say the training step."""
    return "oxs^"[int(seed) % 4]


def jacobian_spectra(flow: pd.DataFrame, runs: pd.DataFrame):
    """Two panels against lag k, at initialisation (solid) and at the last step (dashed), one
    line per run (median over its Jacobian examples): (a) the largest singular value of
    ds_{T-1}/ds_{T-1-k} (thick) and the smallest (thin, where float64 resolves it: above 1e-14
    of the largest); (b) how many singular values stay above the threshold: how many
    directions of the state survive k steps."""
    f = flow[flow.path.isin(runs.path) & (flow.stat == "median")]
    seed = runs.set_index("path").seed
    last = f.step.max()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    for cell in cells(f.cell):
        c = f[f.cell == cell]
        for (step, style), (k, path) in product(
            ((0, "-"), (last, "--")), enumerate(c.path.unique())
        ):
            at = c[(c.step == step) & (c.path == path)]
            by = {
                q: at[at.quantity == f"jacobian_{q}"].set_index("lag").value
                for q in ("spectral", "sigma_min", "alive")
            }
            if by["spectral"].empty:
                continue
            label = f"{name(cell)}, step {step}" if k == 0 else None
            top, low = by["spectral"], by["sigma_min"]
            low = low.where(low > 1e-14 * top)  # below: float64 rounding, not the dynamics
            mark = dict(marker=_seed_marker(seed[path]), markersize=4, markerfacecolor="none")
            a.plot(top.index, top, style, color=color(cell), lw=2, label=label, **mark)
            a.plot(low.index, low, style, color=color(cell), lw=0.8, **mark)
            b.plot(by["alive"].index, by["alive"], style, color=color(cell), label=label, **mark)
    a.set(xscale="log", yscale="log", xlabel="lag k (steps)")
    a.set_ylabel("singular values of ∂s_{T-1}/∂s_{T-1-k}")
    a.set_title("(a) largest (thick) and smallest (thin) singular value", fontsize=10)
    b.set(xscale="log", xlabel="lag k (steps)")
    b.set_ylabel("directions with σ_i > 1e-3 (of the state's size)")
    b.set_title("(b) directions of the state that survive k steps", fontsize=10)
    b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
    seeds = ", ".join(f"seed {s} {_seed_marker(s)}" for s in sorted(set(seed[f.path.unique()])))
    fig.suptitle(
        f"Jacobian spectra against lag, step 0 (solid) and {last} (dashed), one line per run"
        f" (markers: {seeds}): " + describe(runs),
        fontsize=10,
    )
    return fig


def gradient_snr(flow: pd.DataFrame, metrics: pd.DataFrame, runs: pd.DataFrame):
    """Two panels against lag k. (a) The gradient's signal-to-noise ratio per lag
    (study/probes/snr.py) at initialisation (solid), at each run's first probe after its loss left
    the baseline (below 0.9 x; dashed; the runs whose loss did) and at the last step (dotted), means
    over the runs (thick) above each run's own line (thin: the seeds stay visible); the grey line is
    1/sqrt(M), what a gradient with zero mean gives. (b) At initialisation, its signal
    ||mean g_k|| (solid) and noise (dashed): how large the long-lag gradient is, beside how
    much of it is noise."""
    f = flow[
        flow.path.isin(runs.path) & flow.quantity.isin(["grad_snr", "grad_signal", "grad_noise"])
    ]
    left = leaves_baseline(metrics, runs)
    M = int(runs["cfg.probe.snr_batches"].max())
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.2), layout="constrained")
    for cell in cells(f.cell):
        paths = runs[runs.cell == cell].path
        c = f[f.path.isin(paths)]
        snr = c[c.quantity == "grad_snr"]
        steps = sorted(snr.step.unique())
        # each run that left the baseline at its own first SNR probe from then on
        leaving = {p: min((s for s in steps if s >= left[p]), default=None) for p in paths}
        leaving = {p: s for p, s in leaving.items() if not pd.isna(left[p]) and s is not None}
        moments = [("-", "initialisation", {p: 0 for p in paths})]
        if leaving:
            when = ", ".join(str(s) for s in sorted(leaving.values()))
            moments.append(("--", f"loss left the baseline (step {when})", leaving))
        moments.append((":", f"step {steps[-1]}, the last", {p: steps[-1] for p in paths}))
        for style, when, at in moments:
            chosen = pd.concat([snr[(snr.path == p) & (snr.step == s)] for p, s in at.items()])
            for _, one in chosen.groupby("path"):  # each seed thin, under the mean
                a.plot(one.lag, one.value, style, color=color(cell), lw=0.6, alpha=0.35)
            mean = chosen.groupby("lag").value.mean()  # over the runs
            label = f"{name(cell)}, {when}, mean of {len(at)}"
            a.plot(mean.index, mean, style, color=color(cell), lw=1.8, label=label)
        at0 = c[c.step == 0]
        for quantity, style in (("grad_signal", "-"), ("grad_noise", "--")):
            v = at0[at0.quantity == quantity].groupby("lag").value.mean()
            label = f"{name(cell)} {quantity.removeprefix('grad_')}"
            b.plot(v.index, v, style, color=color(cell), label=label)
    a.axhline(1 / np.sqrt(M), color="0.5", lw=2, alpha=0.5, label=f"zero-mean gradient, 1/√{M}")
    a.set(yscale="log", xlabel="lag k = T-1-t (steps)")
    a.set_ylabel("gradient SNR per lag: ‖mean g_k‖ / rms spread")
    a.set_title(f"(a) signal-to-noise over {M} minibatches", fontsize=10)
    a.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    b.set(yscale="log", xlabel="lag k = T-1-t (steps)")
    b.set_ylabel("‖∂L/∂θ‖ through step t: signal (solid), noise (dashed)")
    b.set_title("(b) at initialisation: signal and noise", fontsize=10)
    b.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    for ax in (a, b):
        ax.set_xscale("symlog", linthresh=1)  # lag 0, the last position, stays on the axis
        ax.set_xlim(0, f.lag.max())
    fig.suptitle("Gradient signal-to-noise per lag: " + describe(runs), fontsize=10)
    return fig
