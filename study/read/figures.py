"""`study-figures RESULTS [--out DIR]`: render every figure the results support.

Figures are data: `KINDS` says, per kind of figure, which tables it reads, what the runs must
contain for it (several lags, an LSTM, probes during training, ...) and which function of
study/read/plots.py draws it. `FIGURES` names the study's figures (the README's and the notebooks'):
a kind drawn from the first of its experiments present. Every other experiment, a `smoke` run
or one on a task added from outside the repository, gets every kind its data supports, as
<out>/<experiment>/<kind>.png.

RESULTS is any folder at or above experiment folders (study.read.results.experiments): an out_dir,
one experiment, or a folder of out_dirs.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from study.read import plots, plots_causal, plots_dynamics, plots_learning
from study.read.results import (
    cache_dir,
    experiments,
    experiments_or_exit,
    fingerprint,
    load_runs,
    load_table,
    writable_or_exit,
)

log = logging.getLogger(__name__)


def _varying_model_settings(runs: pd.DataFrame) -> list[str]:
    """The cfg.model.* keys that take more than one value among the runs (what an init sweep
    varies), besides the cell and its size."""
    skip = {"cfg.model._target_", "cfg.model.cell", "cfg.model.hidden_size"}
    cols = [c for c in runs.columns if c.startswith("cfg.model.") and c not in skip]
    return [c for c in cols if runs[c].astype(str).nunique() > 1]


# ---- what each kind of figure needs: a reason it cannot be drawn, or None ----------------------
def _needs_init(runs, tables):
    return None if (tables["grad_flow"].step == 0).any() else "no gradient flow at step 0"


def _needs_setting(runs, tables):
    if runs.cell.nunique() != 1:
        return "needs one cell"
    if not _varying_model_settings(runs):
        return "no model setting varies"
    return _needs_init(runs, tables)


def _needs_lags(runs, tables):
    return None if runs["T"].nunique() > 1 else "needs several lags T"


def _needs_training(runs, tables):
    return None if (runs.steps > 0).any() else "no training steps"


def _needs_probes_in_training(runs, tables):
    return None if tables["grad_flow"].step.nunique() > 1 else "probed at one step only"


def _needs_lstm(runs, tables):
    if "lstm" not in set(runs.cell):
        return "needs an LSTM"
    return _needs_probes_in_training(runs, tables)


def _needs_matching(runs, tables):
    m = runs.get("cfg.model.match_params")
    if m is None or m.isna().all() or m.notna().all():
        return "needs runs at equal H and at equal parameters (model.match_params)"
    return None


def _needs(quantity: str, what: str):
    """A check that the runs' gradient-flow table has `quantity` (a probe that was on)."""

    def needs(runs, tables):
        return None if (tables["grad_flow"].quantity == quantity).any() else f"no {what}"

    return needs


def _needs_lyapunov(runs, tables):
    return None if len(tables["lyapunov"]) else "no Lyapunov exponents (probe.jacobian_examples)"


def _needs_stop_on_solve(runs, tables):
    stop = runs.get("cfg.train.stop_on_solve")
    if stop is None or not stop.fillna(False).astype(bool).any():
        return "no run stops on solve (train.stop_on_solve)"
    return _needs_training(runs, tables)


def _needs_stop_and_lags(runs, tables):
    return _needs_stop_on_solve(runs, tables) or _needs_lags(runs, tables)


def _needs_stop_and_rates(runs, tables):
    lr = runs.get("cfg.train.optimizer.lr")
    several = lr is not None and lr.nunique() > 1
    return _needs_stop_on_solve(runs, tables) or (None if several else "needs several lr")


def _setting(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with a `setting` column: the values of the model keys the experiment varies."""
    keys = _varying_model_settings(runs)
    label = runs[keys].astype(str).agg(", ".join, axis=1)
    return runs.assign(setting=label), ", ".join(k.removeprefix("cfg.model.") for k in keys)


def _draw_setting(runs, grad_flow):
    runs, keys = _setting(runs)
    cell = runs.cell.iloc[0].upper()
    title = f"{cell} at initialisation: gradient decay against {keys}"
    return plots.init_heatmap(grad_flow, runs, "setting", title, ylabel=keys)


def _longest(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs at the longest lag: the figures that show one T read those."""
    return runs[runs["T"] == runs["T"].max()]


@dataclass(frozen=True)
class Kind:
    """One kind of figure: the tables it reads, what its runs must contain, how it is drawn."""

    tables: tuple[str, ...]  # study.read.results.TABLES that `draw` takes as keyword arguments
    needs: Callable[[pd.DataFrame, dict], str | None]  # why these runs cannot give it, or None
    draw: Callable[..., plt.Figure]  # draw(runs, **tables) -> Figure


KINDS = {
    "init_flow": Kind(
        ("grad_flow", "weights"),
        _needs_init,
        lambda runs, grad_flow, weights: plots.init_flow(grad_flow, runs, weights),
    ),
    "init_setting": Kind(("grad_flow",), _needs_setting, _draw_setting),
    "success_vs_lag": Kind((), _needs_lags, lambda runs: plots.success_vs_lag(runs)),
    "learning_curves": Kind(
        ("metrics",), _needs_training, lambda runs, metrics: plots.learning_curves(metrics, runs)
    ),
    "flow_heatmaps": Kind(
        ("grad_flow",),
        _needs_probes_in_training,
        lambda runs, grad_flow: plots.flow_heatmaps(grad_flow, _longest(runs)),
    ),
    "cell_path": Kind(
        ("grad_flow",),
        _needs_lstm,
        lambda runs, grad_flow: plots.cell_path(grad_flow, _longest(runs)),
    ),
    "training_dynamics": Kind(
        ("grad_flow", "metrics"),
        _needs_lstm,
        lambda runs, grad_flow, metrics: plots.training_dynamics(
            grad_flow, metrics, _longest(runs)
        ),
    ),
    "matched": Kind(
        ("grad_flow",),
        _needs_matching,
        lambda runs, grad_flow: plots.matched_comparison(runs, grad_flow),
    ),
    "lyapunov": Kind(
        ("lyapunov", "metrics"),
        _needs_lyapunov,
        lambda runs, lyapunov, metrics: plots_dynamics.lyapunov_spectra(lyapunov, runs, metrics),
    ),
    "jacobian_spectra": Kind(
        ("grad_flow",),
        _needs("jacobian_alive", "Jacobian spectra (probe.jacobian_examples)"),
        lambda runs, grad_flow: plots_dynamics.jacobian_spectra(grad_flow, runs),
    ),
    "gradient_snr": Kind(
        ("grad_flow", "metrics"),
        _needs("grad_snr", "gradient SNR (probe.snr_batches)"),
        lambda runs, grad_flow, metrics: plots_dynamics.gradient_snr(grad_flow, metrics, runs),
    ),
    "study_success": Kind((), _needs_stop_and_lags, plots_learning.success),
    "study_lr_window": Kind(
        (), _needs_stop_and_rates, lambda runs: plots_learning.success(runs, against="lr")
    ),
    "study_solve_speed": Kind(
        ("metrics",),
        _needs_stop_and_lags,
        lambda runs, metrics: plots_learning.solve_speed(metrics, runs),
    ),
    "study_reach": Kind(
        ("evidence", "grad_flow", "metrics"),
        _needs_stop_on_solve,
        lambda runs, evidence, grad_flow, metrics: plots_learning.reach(
            evidence, grad_flow, metrics, runs
        ),
    ),
    "study_curves": Kind(
        ("metrics",),
        _needs_stop_on_solve,
        lambda runs, metrics: plots_learning.curves(metrics, runs),
    ),
    "causal_success": Kind(
        ("metrics",),
        plots_causal.needs_cuts,
        lambda runs, metrics: plots_causal.success(runs, metrics),
    ),
    "causal_gradient": Kind(
        ("grad_flow",),
        plots_causal.needs_cuts,
        lambda runs, grad_flow: plots_causal.gradient(runs, grad_flow),
    ),
}

FIGURES = {  # the study's figures: file name -> (kind, experiments to read, in order of preference)
    "fig1a_init_flow": ("init_flow", ("init_ratio",)),
    "fig1b_init_rnn_scale": ("init_setting", ("init_rnn_scale",)),
    "fig1c_init_lstm_forget_bias": ("init_setting", ("init_lstm_forget_bias",)),
    "fig2a_success_adding": ("success_vs_lag", ("lags_adding", "quick")),
    "fig2b_curves_adding": ("learning_curves", ("lags_adding", "quick")),
    "fig3a_flow_heatmaps": ("flow_heatmaps", ("memory_path", "quick")),
    "fig3b_cell_path": ("cell_path", ("memory_path", "quick")),
    "fig3c_training_dynamics": ("training_dynamics", ("memory_path", "quick")),
    "fig4_matched": ("matched", ("matched",)),
    "fig5a_lyapunov": ("lyapunov", ("dynamics",)),
    "fig5b_jacobian_spectra": ("jacobian_spectra", ("dynamics",)),
    "fig5c_gradient_snr": ("gradient_snr", ("dynamics",)),
    "fig6a_success": ("study_success", ("study_adding",)),
    "fig6b_solve_speed": ("study_solve_speed", ("study_adding",)),
    "fig6c_reach": ("study_reach", ("study_adding",)),
    "fig6d_curves": ("study_curves", ("study_adding",)),
    "fig6e_lr_window": ("study_lr_window", ("study_lr",)),
    "fig6g_lr_window_by_lag": ("study_lr_window", ("study_lr_lag",)),
    "fig6f_curves_copy": ("study_curves", ("study_copy",)),
    "fig7a_causal_success": ("causal_success", ("study_causal",)),
    "fig7b_causal_gradient": ("causal_gradient", ("study_causal",)),
    "fig7c_causal_1997": ("causal_success", ("study_causal_1997",)),
}


class Folder:
    """One experiment folder's runs and tables, each read once however many figures (and the
    report's sections) are drawn from them."""

    def __init__(self, path: Path):
        self.path, self._tables = Path(path), {}

    @functools.cached_property
    def runs(self) -> pd.DataFrame:
        return load_runs(self.path)

    def table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            self._tables[name] = load_table(self.path, name, self.runs)
        return self._tables[name]


def draw(kind: str, folder: Path | Folder) -> tuple[plt.Figure | None, str | None]:
    """The figure of `kind` from one experiment folder: (figure, None), or (None, why not)."""
    folder = folder if isinstance(folder, Folder) else Folder(folder)
    runs = folder.runs
    if runs.empty:
        return None, "no finished runs"
    spec = KINDS[kind]
    tables = {t: folder.table(t) for t in {*spec.tables, "grad_flow"}}
    if tables["grad_flow"].empty:
        return None, "no gradient-flow probes"
    if why := spec.needs(runs, tables):
        return None, why
    return spec.draw(runs, **{t: tables[t] for t in spec.tables}), None


def find(name: str, found: dict[str, Path]) -> Path | None:
    """The first of a study figure's experiments among the folders found (by folder name)."""
    for experiment in FIGURES[name][1]:
        matches = [folder for folder in found.values() if folder.name == experiment]
        if len(matches) > 1:
            log.warning("%s: several %s folders, reading %s", name, experiment, matches[0])
        if matches:
            return matches[0]
    return None


def render(name: str, root: Path):
    """The study figure `name` from the first of its experiments found at or below root, or
    None (none of them present, or their runs cannot give it)."""
    folder = find(name, experiments(root))
    return draw(FIGURES[name][0], folder)[0] if folder is not None else None


def show(name: str, results: str | Path, figures: str | Path | None = None):
    """Figure `name` from the experiments under `results`, for a notebook to display; saved as
    <figures>/<name>.png when `figures` is given. Experiments missing: a note, and None."""
    fig = render(name, Path(results))
    if fig is None:
        print(f"{name}: skipped, none of {', '.join(FIGURES[name][1])} under {results}")
        return None
    if figures is not None:
        Path(figures).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figures) / f"{name}.png", dpi=130)
    plt.close(fig)  # the returned figure is displayed once, not again by the inline backend
    return fig


@functools.cache
def code_version() -> str:
    """A hash of the study package's source and matplotlib's version: a cached figure is
    reused only where neither changed since it was drawn."""
    h = hashlib.sha256(matplotlib.__version__.encode())
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def draw_to(kind: str, folder: Folder, path: Path) -> str | None:
    """Figure `kind` of a folder saved as `path` (None), or why it cannot be drawn. Both are
    cached beside the folder's tables (results.cache_dir), keyed by its runs' checksums and the
    code: a reader run again on unchanged results copies the PNG instead of drawing it."""
    key = f"{kind}-{fingerprint(folder.path, folder.runs)}-{code_version()}"
    cached = cache_dir(folder.path) / "figures" / key
    png, skip = cached.with_suffix(".png"), cached.with_suffix(".skip")
    path.parent.mkdir(parents=True, exist_ok=True)
    if png.exists():
        shutil.copyfile(png, path)
        return None
    if skip.exists():
        return skip.read_text()
    fig, why = draw(kind, folder)
    if fig is not None:
        fig.savefig(path, dpi=130)
        plt.close(fig)
    try:
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, png) if why is None else skip.write_text(why)
    except OSError as e:  # a read-only cache: reading goes on uncached
        log.debug("figure cache %s not written: %s", cached, e.strerror)
    return why


def render_all(root: Path, out: Path, folders: dict[Path, Folder] | None = None) -> dict[str, Path]:
    """Every figure the results at or below `root` support, saved under `out`; by name, the
    files written. The study's figures as <out>/<name>.png; every experiment that no study
    figure reads, each kind its runs support as <out>/<experiment>/<kind>.png. `folders`: the
    experiment folders already read (Folder, by path), filled in as more are read."""
    found, written = experiments(root), {}
    folders = {} if folders is None else folders
    reading = lambda path: folders.setdefault(path, Folder(path))  # noqa: E731

    def save(kind: str, folder: Path, path: Path, name: str) -> str | None:
        why = draw_to(kind, reading(folder), path)
        if why is None:
            written[name] = path
            log.info("wrote  %s", path)
        return why

    read, absent = set(), []
    for name, (kind, wanted) in FIGURES.items():
        folder = find(name, found)
        if folder is None:  # an experiment this results folder does not hold: one line at the end
            absent.append(name)
            log.debug("skip   %s: none of %s under %s", name, ", ".join(wanted), root)
            continue
        read.add(folder)
        if why := save(kind, folder, out / f"{name}.png", name):
            log.info("skip   %s: %s (%s)", name, why, folder)
    for experiment, folder in found.items():
        if folder in read:
            continue
        for kind in KINDS:
            if why := save(kind, folder, out / experiment / f"{kind}.png", f"{experiment}/{kind}"):
                log.info("skip   %s/%s: %s", experiment, kind, why)
    needs = f"; {len(absent)} need experiments not under {root}" if absent else ""
    log.info("%d figure(s) written to %s%s (study-figures --list: which)", len(written), out, needs)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="an out_dir, an experiment, or a folder above")
    parser.add_argument("--out", type=Path, help="where the PNGs go (default: RESULTS/figures)")
    parser.add_argument(
        "--list", action="store_true", help="list the study's figures and the experiments each "
        "needs, marking those RESULTS holds; draw nothing"
    )  # fmt: skip
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # files only: no display needed
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    experiments_or_exit(parser, args.results)
    if args.list:
        found = experiments(args.results)
        for name, (_, wanted) in FIGURES.items():
            have = "yes" if find(name, found) is not None else "no "
            print(f"{have}  {name:32s} needs one of: {', '.join(wanted)}")
        return
    render_all(args.results, writable_or_exit(parser, args.out or args.results / "figures"))


if __name__ == "__main__":
    main()
