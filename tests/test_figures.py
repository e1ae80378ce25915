"""Figures as data: each figure states what it shows, renders the same PNG every time, and any
experiment (smoke, one on an outside task) gets the figures its runs support; every reader
command takes the same folder levels."""

import hashlib
import io
import re

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from study.read.figures import FIGURES, render
from study.read.plots import describe
from tests.conftest import study_run

matplotlib.use("Agg")
TINY = ["model.hidden_size=4", "train.eval_size=16", "train.batch_size=4", "task.length=6"]
TINY += ["train.steps=4", "train.log_every=2"]


def test_describe_states_task_lags_size_seeds_and_budget():
    runs = pd.DataFrame(
        {
            "task": "Adding",
            "cfg.task.variant": "arjovsky2016",
            "T": [25, 50, 25, 50, 25, 50],
            "hidden_size": 64,
            "config": ["a", "b"] * 3,
            "seed": [0, 0, 1, 1, 2, 2],
            "steps": 3000,
            "cfg.train.batch_size": 50,
        }
    )
    assert (
        describe(runs)
        == "Adding (arjovsky2016), T = 25, 50, H = 64, 3 seeds, 3000 steps × batch 50"
    )
    init = runs.assign(steps=0, seed=0, T=range(10, 70, 10))
    assert describe(init) == "Adding (arjovsky2016), T = 10–60, H = 64, 1 seed, batch 50 at init"


def _texts(fig) -> str:
    titles = [ax.get_title() for ax in fig.axes]
    return " ".join([fig._suptitle.get_text() if fig._suptitle else "", *titles])


@pytest.mark.parametrize("name", FIGURES)
def test_every_study_figure_states_what_it_shows_and_renders_the_same_png(name, tiny_study):
    pngs = []
    for _ in range(2):
        fig = render(name, tiny_study)
        assert fig is not None
        text = _texts(fig)
        assert all(part in text for part in ("T = ", "H = ", "seed", "batch")), text
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60)
        pngs.append(hashlib.sha256(buffer.getvalue()).hexdigest())
        plt.close(fig)
    assert pngs[0] == pngs[1]  # no unseeded jitter


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "results"
    proc = study_run("-m", "experiment=smoke", *TINY, out=out)
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_smoke_experiment_gets_its_figures(smoke, tmp_path):
    proc = study_run(smoke, "--out", tmp_path, module="study.read.figures")
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(p.stem for p in (tmp_path / "smoke").glob("*.png"))
    assert drawn == [
        "cell_path",
        "flow_heatmaps",
        "init_flow",
        "jacobian_spectra",
        "learning_curves",
        "lyapunov",
        "training_dynamics",
    ]
    assert "skip   smoke/success_vs_lag: needs several lags T" in proc.stderr
    assert "skip   smoke/gradient_snr: no gradient SNR (probe.snr_batches)" in proc.stderr
    # the study figures this folder cannot have: one summary line, not a line each
    assert not any(line.startswith("skip   fig") for line in proc.stderr.splitlines())
    needs = f"7 figure(s) written to {tmp_path}; {len(FIGURES)} need experiments not under"
    assert needs in proc.stderr
    listed = study_run(smoke, "--list", module="study.read.figures").stdout.splitlines()
    assert len(listed) == len(FIGURES) and all(line.startswith("no ") for line in listed)


@pytest.mark.parametrize(
    "module", ["study.read.figures", "study.read.collect", "study.read.analysis"]
)
def test_every_reader_takes_an_out_dir_an_experiment_or_a_folder_above(smoke, tmp_path, module):
    outputs = []
    for level in (smoke.parent, smoke, smoke / "smoke"):
        extra = ["--out", tmp_path / level.name] if module != "study.read.analysis" else []
        proc = study_run(level, *extra, module=module)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.replace(str(tmp_path / level.name), "OUT"))
    if module == "study.read.figures":  # the same files at every level
        found = [
            sorted(
                p.relative_to(tmp_path / lv.name).as_posix()
                for p in (tmp_path / lv.name).rglob("*.png")
            )
            for lv in (smoke.parent, smoke, smoke / "smoke")
        ]
        assert found[0] and found[0][0].endswith(".png")
        assert {len(f) for f in found} == {7}
    else:  # the same experiment, the same tables
        bodies = [o.split("\n", 1)[1] for o in outputs]
        assert bodies[0] == bodies[1] == bodies[2] and "smoke" in outputs[0].splitlines()[0]


def test_a_reader_given_a_folder_without_runs_says_so(tmp_path):
    proc = study_run(tmp_path, module="study.read.figures")
    assert proc.returncode != 0 and "holds no runs" in proc.stderr


def test_every_model_is_drawn_in_its_cells_colour_in_every_figure(tiny_study):
    """The fixed colours: a model alone in its cell gets the cell's colour exactly; variants of
    one cell are shades of it (the same hue); the learning study's success grid labels each
    row in its model's colour; a seed never picks a colour of its own (fig3c's LSTM seeds)."""
    import colorsys

    import matplotlib.colors as mcolors

    from study.read.plots import color, model_colors

    models = pd.DataFrame({"model": ["RNN", "LSTM a", "LSTM b", "LSTM c", "GRU"],
                           "cell": ["rnn", "lstm", "lstm", "lstm", "gru"]})  # fmt: skip
    colors = model_colors(models)
    assert colors["RNN"] == tuple(mcolors.to_rgb(color("rnn")))
    assert colors["GRU"] == tuple(mcolors.to_rgb(color("gru")))
    hue = lambda c: colorsys.rgb_to_hsv(*c)[0]  # noqa: E731
    lstm = [colors[f"LSTM {v}"] for v in "abc"]
    assert len(set(lstm)) == 3
    assert all(abs(hue(c) - hue(mcolors.to_rgb(color("lstm")))) < 1e-6 for c in lstm)

    fig = render("fig6a_success", tiny_study)
    labels = fig.axes[0].get_yticklabels()
    assert labels
    for label in labels:
        cell = {"RNN": "rnn", "GRU": "gru"}.get(label.get_text())
        if cell:
            assert mcolors.to_rgb(label.get_color()) == mcolors.to_rgb(color(cell))
    plt.close(fig)
    fig = render("fig3c_training_dynamics", tiny_study)
    for line in fig.axes[0].get_lines():  # panel (a): LSTM seeds
        assert mcolors.to_rgb(line.get_color()) == mcolors.to_rgb(color("lstm"))
    plt.close(fig)


def test_heatmap_rows_sort_as_numbers_and_factors_near_one_keep_their_digits():
    from study.read.plots import _factor, _order_key

    assert sorted(["-1", "-2", "0", "10", "2"], key=_order_key) == ["-2", "-1", "0", "2", "10"]
    assert [_factor(p) for p in (0.25, 0.84, 0.9962, 0.9991, 1.03)] == [
        "0.25",
        "0.84",
        "0.9962",
        "0.9991",
        "1.03",
    ]


def _labelled(axis) -> bool:
    """At least two tick labels; one where the axis holds a single value (one T on a log axis)."""
    texts = [t.get_text() for t in axis.get_ticklabels(which="both") if t.get_visible()]
    low, high = sorted(axis.get_view_interval())
    single = axis.get_scale() == "log" and high < 3 * low
    return sum(bool(t.strip()) for t in texts) >= (1 if single else 2)


def _categories(axis) -> bool:
    """Tick labels that name things (models, settings) rather than values on a scale."""
    texts = [t.get_text().replace("−", "-") for t in axis.get_ticklabels() if t.get_text()]
    return bool(texts) and not all(re.fullmatch(r"[-+.\deE$^{}\\mathrm ]+", t) for t in texts)


@pytest.mark.parametrize("name", FIGURES)
def test_every_panel_has_tick_labels_and_every_lag_axis_says_lag_k(name, tiny_study):
    """What a reader sees: each panel's axes carry tick labels (a panel that shares its axis
    with a labelled neighbour may leave them to it), every axis is named, and an axis of lags
    is called "lag k" as everywhere in the study."""
    fig = render(name, tiny_study)
    fig.canvas.draw()  # tick labels are set at draw time
    panels = [
        a for a in fig.axes if a.get_visible() and a.has_data() and a.get_label() != "<colorbar>"
    ]
    assert panels, name
    for ax in panels:
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            shared = getattr(ax, f"get_shared_{which}_axes")().get_siblings(ax)
            assert any(_labelled(getattr(o, f"{which}axis")) for o in shared), (name, which)
            label = axis.get_label().get_text()
            named = label or any(getattr(o, f"{which}axis").get_label().get_text() for o in shared)
            assert named or _categories(axis), (name, which, ax.get_title())
            if which == "x" and label.lower().startswith("lag") and not label.startswith("lag T"):
                assert label.startswith("lag k"), (name, label)
    plt.close(fig)


def test_a_second_reading_copies_the_cached_figures_and_draws_none(smoke, tmp_path, monkeypatch):
    """study-figures and study-report cache each figure (and each skip) keyed by the runs'
    checksums and the code: unchanged results are copied, byte for byte, without drawing."""
    from study.read import figures

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    first = figures.render_all(smoke, tmp_path / "a")
    assert first

    def no_drawing(*args, **kwargs):
        raise AssertionError("drew a figure the cache holds")

    monkeypatch.setattr(figures, "draw", no_drawing)
    second = figures.render_all(smoke, tmp_path / "b")
    assert sorted(second) == sorted(first)
    for name, path in first.items():
        assert second[name].read_bytes() == path.read_bytes(), name
