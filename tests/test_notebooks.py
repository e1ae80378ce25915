"""Every notebook runs headless against a tiny study and writes its figures; so does the CLI."""

import os
from pathlib import Path

import jupytext
import pytest
from nbclient import NotebookClient

from study.read.figures import FIGURES
from tests.conftest import ROOT, study_run

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def test_every_figure_has_a_notebook():
    shown = "".join(p.read_text() for p in NOTEBOOKS)
    assert all(f'show("{name}"' in shown for name in FIGURES)


def execute(path: Path):
    """Run a notebook as Jupyter does (a kernel, through nbclient); the executed notebook."""
    nb = jupytext.read(path)
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources=resources).execute()
    return nb


def show_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and "show(" in c.source]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shows_its_figures_inline_and_saves_them_when_asked(
    path, tiny_study, tmp_path, monkeypatch
):
    monkeypatch.setenv("STUDY_RESULTS", str(tiny_study))
    monkeypatch.setenv("STUDY_FIGURES", str(tmp_path))
    nb = execute(path)
    cells = show_cells(nb)
    assert cells
    for cell in cells:  # exactly one inline image per figure, as a reader sees it
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        assert len(images) == 1, cell.source
    names = [name for name in FIGURES if f'show("{name}"' in path.read_text()]
    for name in names:
        png = tmp_path / f"{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_without_its_experiments_notes_each_panel_and_saves_nothing(
    path, tmp_path, monkeypatch
):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path))
    monkeypatch.delenv("STUDY_FIGURES", raising=False)
    nb = execute(path)  # runs to the end
    for cell in show_cells(nb):
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert "skipped, none of" in text, cell.source
    assert not list(tmp_path.rglob("*.png"))


def test_paired_ipynb_is_in_sync_and_has_no_outputs():
    for path in NOTEBOOKS:
        paired = jupytext.read(path.with_suffix(".ipynb"))
        assert [c.source for c in paired.cells] == [c.source for c in jupytext.read(path).cells]
        assert all(not c.get("outputs") for c in paired.cells)


def test_figures_cli_renders_everything(tiny_study, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = study_run(tiny_study, "--out", tmp_path, module="study.read.figures", env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(FIGURES)
