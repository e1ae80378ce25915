"""`python -m study.figures RESULTS [--out DIR]`: render every figure the results support.

RESULTS holds experiment folders (as written by `python -m study.run -m experiment=NAME
out_dir=RESULTS`). Each figure names the experiments it reads, in order of preference; a figure
whose experiments are all missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from study import plots
from study.results import load_runs, load_table

FIGURES = {  # file name -> (experiments to read, in order of preference)
    "fig1a_init_flow": ("init_ratio",),
    "fig1b_init_rnn_scale": ("init_rnn_scale",),
    "fig1c_init_lstm_forget_bias": ("init_lstm_forget_bias",),
    "fig2a_success_adding": ("lags_adding", "quick"),
    "fig2b_curves_adding": ("lags_adding", "quick"),
    "fig2c_success_copy": ("lags_copy",),
    "fig2d_curves_copy": ("lags_copy",),
    "fig3a_flow_heatmaps": ("memory_path", "quick"),
    "fig3b_cell_path": ("memory_path", "quick"),
    "fig3c_training_dynamics": ("memory_path", "quick"),
    "fig4_matched": ("matched",),
}


def render(name: str, root: Path):
    """The figure `name` from the first of its experiments present under root, or None."""
    for experiment in FIGURES[name]:
        d = root / experiment
        runs = load_runs(d) if d.is_dir() else None
        if runs is not None and not runs.empty:
            break
    else:
        return None
    table = lambda t: load_table(d, t, runs)  # noqa: E731
    if experiment == "quick" and name.startswith("fig3"):  # the longest lag of the quick sweep
        runs = runs[runs["cfg.task.length"] == runs["cfg.task.length"].max()]
    if name == "fig1a_init_flow":
        return plots.init_flow(table("grad_flow"), runs, table("weights"))
    if name == "fig1b_init_rnn_scale":
        runs = runs.assign(
            setting=runs["cfg.model.recurrent_init"]
            + " ×"
            + runs["cfg.model.recurrent_gain"].map("{:.1f}".format)
        )
        return plots.init_heatmap(
            table("grad_flow"),
            runs,
            "setting",
            "tanh RNN at init: recurrent weights = gain × (orthogonal | identity)",
        )
    if name == "fig1c_init_lstm_forget_bias":
        return plots.init_heatmap(
            table("grad_flow"),
            runs,
            "cfg.model.forget_bias",
            "LSTM at init: gradient decay against the forget-gate bias",
        )
    task = "adding problem" if "adding" in name else "copy memory"
    if name.startswith("fig2") and "success" in name:
        return plots.success_vs_lag(runs, f"Learning across lags: {task}")
    if name.startswith("fig2"):
        return plots.learning_curves(table("metrics"), runs, f"Learning curves: {task}")
    if name == "fig3a_flow_heatmaps":
        return plots.flow_heatmaps(table("grad_flow"), runs)
    if name == "fig3b_cell_path":
        return plots.cell_path(table("grad_flow"), runs)
    if name == "fig3c_training_dynamics":
        return plots.training_dynamics(table("grad_flow"), table("metrics"), runs)
    return plots.matched_comparison(runs, table("grad_flow"))


def show(name: str, results: str | Path, figures: str | Path | None = None):
    """Figure `name` from the experiments under `results`, for a notebook to display; saved as
    <figures>/<name>.png when `figures` is given. Experiments missing: a note, and None."""
    fig = render(name, Path(results))
    if fig is None:
        print(f"{name}: skipped, none of {', '.join(FIGURES[name])} under {results}")
        return None
    if figures is not None:
        Path(figures).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figures) / f"{name}.png", dpi=130)
    plt.close(fig)  # the returned figure is displayed once, not again by the inline backend
    return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a folder of experiment folders")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: RESULTS/figures)")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # files only: no display needed
    if not Path(args.results).is_dir():
        parser.error(f"results={args.results} is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out or args.results / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        fig = render(name, args.results)
        if fig is None:
            print(f"skip   {name}: none of {', '.join(FIGURES[name])} under {args.results}")
            continue
        fig.savefig(out / f"{name}.png", dpi=130)
        plt.close(fig)
        print(f"wrote  {out / name}.png")


if __name__ == "__main__":
    main()
