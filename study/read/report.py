"""`study-report RESULTS [--out FILE]`: one self-contained HTML page about a results folder.

The page holds, per experiment: the status of every run, the key numbers (the gradient's decay
per step at initialisation; success against lag with 95 % Wilson intervals), interactive plots
where a reader hovers (gradient flow against lag at initialisation, learning curves), every
figure study-figures draws (PNG, embedded), the resolved config and what the sweep varies.
It is offline: plotly's script and the images are inside the file, nothing is fetched.
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import re
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from study.read import figures
from study.read.analysis import decay_ratio, success_rates
from study.read.plots import describe, model_colors
from study.read.results import (
    STATUSES,
    experiments,
    experiments_or_exit,
    status_table,
    writable_or_exit,
)
from study.runs import rundir

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       padding: 0 .8em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em;
        display: block; max-width: 100%; overflow-x: auto; }  /* wide tables scroll in place */
.plotly-graph-div { max-width: 100%; } figure { margin: 1em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
td:nth-child(2) { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .4em 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #555; font-size: .9em; } nav a { margin-right: 1em; }
"""


def _table(frame: pd.DataFrame) -> str:
    """A table as HTML; pandas escapes every cell (escape=True, said here: names come from
    folders and configs)."""
    return frame.to_html(
        index=False, border=0, na_rep="", float_format="{:.3g}".format, escape=True
    )


def anchor(name: str, index: int) -> str:
    """An id for an experiment's section: letters, digits, - and _ only (a folder name may hold
    anything), made unique by its position."""
    return f"e{index}-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def decay_table(runs: pd.DataFrame, flow: pd.DataFrame) -> pd.DataFrame:
    """Per model: the gradient's decay factor per step at initialisation (geometric mean over
    seeds of (‖∂ℓ/∂h_0‖ / ‖∂ℓ/∂h_{T-1}‖)^(1/(T-1)), batch medians), with its min and max."""
    d = decay_ratio(flow).merge(runs[["path", "model"]])
    g = d.groupby(["model", "T"]).per_step
    out = pd.DataFrame(
        {
            "per step (geometric mean)": g.apply(lambda s: float(np.exp(np.log(s).mean()))),
            "min": g.min(),
            "max": g.max(),
            "seeds": g.size(),
        }
    )
    return out.reset_index()


def success_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per cell and lag T: seeds that solved the task (its own criterion), with a 95 % Wilson
    interval, and the median final evaluation loss relative to the memoryless baseline."""
    rates = success_rates(runs, ("model", "T"))
    rel = runs.assign(rel=runs.eval_loss / runs.baseline).groupby(["model", "T"]).rel.median()
    t = rates.merge(rel.rename("loss / baseline (median)").reset_index(), on=["model", "T"])
    t["solved"] = t.k.astype(str) + "/" + t.n.astype(str)
    t["95 % CI"] = [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(t.lo, t.hi)]
    return t[["model", "T", "solved", "rate", "95 % CI", "loss / baseline (median)"]]


def flow_plot(runs: pd.DataFrame, flow: pd.DataFrame) -> go.Figure:
    """Median ‖∂ℓ/∂h_t‖ (and ‖∂ℓ/∂c_t‖) against lag at initialisation, mean over seeds, one
    line per model and lag T, log scale."""
    f = flow[(flow.step == 0) & (flow.stat == "median") & (flow.quantity == "grad_norm")]
    f = f.merge(runs[["path", "T", "model"]])
    several = f["T"].nunique() > 1
    fig = go.Figure()
    for (model, state, T), g in f.groupby(["model", "state", "T"]):
        mean = g.groupby("lag").value.mean()
        fig.add_scatter(
            x=mean.index,
            y=mean.values,
            name=f"{model}: ‖∂ℓ/∂{state}‖" + (f", T = {T}" if several else ""),
            line={"dash": "solid" if state == "h" else "dot"},
            hovertemplate="lag %{x}<br>%{y:.3g}<extra>" + html.escape(model) + "</extra>",
        )
    fig.update_layout(
        title="Gradient flow at initialisation: " + describe(runs),
        xaxis_title="lag k = T-1-t (steps)",
        yaxis_title="median gradient norm per example",
        yaxis_type="log",
        yaxis_exponentformat="power",
        height=460,
    )
    return fig


MANY_RUNS = 40  # above this many runs, the learning curves are drawn per model and T, not per run


def curves_plot(runs: pd.DataFrame, metrics: pd.DataFrame) -> go.Figure:
    """Evaluation loss against training step in each model's colour (study/read/plots.py), one
    legend entry per model and T: every run as its own line (hover: the run) for a small sweep;
    above MANY_RUNS, the median over seeds with the band from the lowest to the highest. The y axis
    spans the data below 10x the largest baseline, so one diverged run cannot flatten the rest
    (its curve leaves the top of the plot)."""
    m = metrics[metrics.name == "eval_loss"].merge(runs[["path", "T", "model", "cell"]])
    colors = model_colors(runs[["model", "cell"]])
    several, per_run = m["T"].nunique() > 1, len(runs) <= MANY_RUNS
    fig = go.Figure()
    for (model, T), g in m.groupby(["model", "T"]):
        rgb = "rgb({:.0f},{:.0f},{:.0f})".format(*(255 * np.asarray(colors[model])))
        group = f"{model}, T = {T}" if several else model
        dash = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
        line = {"color": rgb, "dash": dash[sorted(m["T"].unique()).index(T) % 6]}
        if per_run:
            for i, (seed, r) in enumerate(g.groupby("seed")):
                fig.add_scatter(x=r.step, y=r.value, mode="lines", line=line, legendgroup=group,
                                name=group, showlegend=i == 0,
                                hovertemplate="step %{x}<br>eval loss %{y:.4g}<extra>"
                                + html.escape(f"{group}, seed {seed}") + "</extra>")  # fmt: skip
            continue
        stats = g.groupby("step").value.agg(["median", "min", "max"])
        band = dict(mode="lines", line={"width": 0}, legendgroup=group, showlegend=False)
        fig.add_scatter(x=stats.index, y=stats["max"], hoverinfo="skip", **band)
        fill = rgb.replace("rgb", "rgba").replace(")", ",0.15)")
        fig.add_scatter(x=stats.index, y=stats["min"], fill="tonexty", hoverinfo="skip",
                        fillcolor=fill, **band)  # fmt: skip
        n = g.seed.nunique()
        fig.add_scatter(x=stats.index, y=stats["median"], mode="lines", line=line,
                        legendgroup=group, name=f"{group} (median of {n}, band: range)",
                        hovertemplate="step %{x}<br>median eval loss %{y:.4g}<extra>"
                        + html.escape(group) + "</extra>")  # fmt: skip
    top = 10 * float(runs.baseline.max()) if "baseline" in runs else float(m.value.max())
    shown = m.value[(m.value > 0) & (m.value <= top)]
    low = float(shown.min()) if len(shown) else 1e-6
    fig.update_layout(
        title="Learning curves: " + describe(runs),
        xaxis_title="training step",
        yaxis_title="evaluation loss",
        yaxis_type="log",
        yaxis_range=[np.log10(low) - 0.1, np.log10(top)],
        yaxis_exponentformat="power",
        height=460,
    )
    return fig


def _config_text(runs: pd.DataFrame) -> tuple[str, str]:
    """One run's resolved config.yaml, and the overrides the experiment's runs differ by."""
    first = Path(runs.sort_values("run_id").path.iloc[0])
    text = (first / rundir.CONFIG).read_text()
    varies = sorted({o for ids in runs.run_id for o in ids.split(",") if "=" in o})
    return text, ", ".join(varies)


class Page:
    """The HTML page, section by section; plotly's script goes in once, with the first plot."""

    def __init__(self, title: str):
        self.parts, self.nav, self.scripted = [], [], False
        self.title = title

    def add(self, text: str) -> None:
        self.parts.append(text)

    def section(self, anchor: str, heading: str) -> None:
        self.nav.append(f'<a href="#{anchor}">{html.escape(heading)}</a>')
        self.add(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')

    def plot(self, fig: go.Figure) -> None:
        self.add(pio.to_html(fig, full_html=False, include_plotlyjs=not self.scripted))
        self.scripted = True

    def image(self, png: Path, caption: str) -> None:
        data = base64.b64encode(png.read_bytes()).decode()
        self.add(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption class=note>{html.escape(caption)}</figcaption></figure>"
        )

    def html(self) -> str:
        head = f"<title>{html.escape(self.title)}</title><style>{STYLE}</style>"
        body = f"<h1>{html.escape(self.title)}</h1><nav>{''.join(self.nav)}</nav>"
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"{head}</head>"
            f"<body>{body}{''.join(self.parts)}</body></html>"
        )


INTRO = """Matched RNN, LSTM and GRU models on long-lag tasks: for each experiment, how its runs
stand, how fast the gradient decays with lag at initialisation, how many seeds learned each
lag, and its figures. Plots with a legend are interactive: hover for values, click a legend
entry to hide a line, drag to zoom."""

NOTEBOOKS = """<p>The figures are drawn by functions in <code>study/read/plots.py</code>; the
notebooks in <code>notebooks/</code> (<code>fig1_init_flow</code>,
<code>fig2_learning_across_lags</code>, <code>fig3_memory_path</code>, <code>fig4_matched</code>,
<code>fig5_dynamics</code>, <code>fig6_study</code>, <code>fig7_causal</code>; jupytext .py files
paired with .ipynb) redraw the study's figures from a results folder. Open them with <code>make
notebooks</code>; point them at these results with the environment variable
<code>STUDY_RESULTS</code>. Each run's tables are parquet files in its run directory (schemas in
docs/results.md).</p>"""


def in_study_order(found: dict) -> dict:
    """The experiments in the order the study's figures read them (fig1 ... fig7, as
    figures.FIGURES lists them), any other experiment after them by name."""
    order = list(dict.fromkeys(e for _, wanted in figures.FIGURES.values() for e in wanted))
    rank = {name: i for i, name in enumerate(order)}
    return dict(sorted(found.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def build(root: Path) -> str:
    """The page for every experiment at or below `root`."""
    page = Page(f"study report: {root}")
    found = in_study_order(experiments(root))
    statuses = {name: status_table(folder) for name, folder in found.items()}
    summary = pd.DataFrame(
        [
            {"experiment": name, "configurations": len(t), **t[list(STATUSES)].sum().to_dict()}
            for name, t in statuses.items()
        ]
    )
    page.add(f"<p>{INTRO}</p>")
    page.section("status", "Status")
    page.add(_table(summary))
    with tempfile.TemporaryDirectory() as tmp:
        read: dict[Path, figures.Folder] = {}  # each folder's tables read once, for both
        drawn = figures.render_all(root, Path(tmp), read)
        for index, (name, folder) in enumerate(found.items()):
            log.info("report %s", name)
            tables = read.setdefault(folder, figures.Folder(folder))
            runs = tables.runs
            page.section(anchor(name, index), f"Experiment {name}")
            if runs.empty:
                page.add("<p>No finished runs.</p>")
                continue
            page.add(f"<p class=note>{html.escape(f'{describe(runs)}; folder {folder}')}</p>")
            flow = tables.table("grad_flow")
            if len(flow) and (flow.step == 0).any():
                page.add("<h3>Decay of the gradient per step at initialisation</h3>")
                page.add(_table(decay_table(runs, flow)))
                page.plot(flow_plot(runs, flow))
            if runs["T"].nunique() > 1 and (runs.steps > 0).any():
                page.add("<h3>Success against lag</h3>")
                page.add(_table(success_table(runs)))
            if (runs.steps > 0).any():
                page.plot(curves_plot(runs, tables.table("metrics")))
            for key, png in drawn.items():  # the study's figures drawn from here, then its own
                source = figures.find(key, found) if key in figures.FIGURES else None
                if key.startswith(f"{name}/") or source == folder:
                    page.image(png, key)
            page.add(
                "<details><summary>Status of every run, per configuration</summary>"
                f"{_table(statuses[name])}</details>"
            )
            config, varies = _config_text(runs)
            page.add(
                f"<details><summary>Config (one run's config.yaml; the runs differ in: "
                f"{html.escape(varies)})</summary><pre>{html.escape(config)}</pre></details>"
            )
    page.section("notebooks", "Notebooks")
    page.add(NOTEBOOKS)
    return page.html()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an out_dir, an experiment, or a folder above")
    parser.add_argument("--out", type=Path, help="the page (default: RESULTS/report.html)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    experiments_or_exit(parser, args.results)
    out = args.out or args.results / "report.html"
    if out.is_dir():
        parser.error(
            f"--out {out} is a folder: give the page's file name, e.g. {out / 'report.html'}"
        )
    writable_or_exit(parser, out.parent)  # checked before the page is built
    rundir.write_text(out, build(args.results))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
