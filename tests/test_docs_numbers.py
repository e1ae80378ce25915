"""The study's numbers in the docs cannot drift from the committed runs: docs/numbers/NAME.txt is
the output of `study-learning results/reference/NAME` (what docs/study.md, the guide and the
README quote), recomputed here from the committed run directories and compared line by line;
docs/numbers/windows.txt is `study-learning results/reference --windows`, docs/numbers/compute.txt
`study-collect results/reference --compute` (quoted in the README); the causal table of
docs/guide.md is parsed and its k/n compared with the arms table."""

import contextlib
import io
import re

import pytest

from study.read.learning import print_summary
from tests.conftest import ROOT

WINDOWS = ROOT / "docs" / "numbers" / "windows.txt"
COMPUTE = ROOT / "docs" / "numbers" / "compute.txt"
NUMBERS = sorted(set((ROOT / "docs" / "numbers").glob("*.txt")) - {WINDOWS, COMPUTE})
REFERENCE = ROOT / "results" / "reference"


def summary_text(experiment: str) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_summary(REFERENCE / experiment)
    return buffer.getvalue()


@pytest.mark.parametrize("path", NUMBERS, ids=lambda p: p.stem)
def test_the_committed_numbers_are_what_the_committed_runs_give(path):
    header, _, body = path.read_text().partition("\n")  # "== NAME (its folder)"
    assert header.startswith(f"== {path.stem} ")
    command = f"study-learning results/reference/{path.stem} > docs/numbers/{path.name}"
    assert summary_text(path.stem) == body, f"the runs changed; regenerate: {command}"


def test_the_committed_windows_are_what_the_committed_runs_give():
    from study.read.windows import print_windows

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_windows(REFERENCE)
    command = "study-learning results/reference --windows > docs/numbers/windows.txt"
    assert buffer.getvalue() == WINDOWS.read_text(), f"the runs changed; regenerate: {command}"


def test_the_committed_compute_is_what_the_runs_recorded_and_the_readme_quotes_it():
    from study.read.collect import print_compute
    from study.read.results import experiments

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_compute(experiments(REFERENCE))
    command = "study-collect results/reference --compute > docs/numbers/compute.txt"
    assert buffer.getvalue() == COMPUTE.read_text(), f"the runs changed; regenerate: {command}"
    total = next(line for line in buffer.getvalue().splitlines() if line.startswith("total: "))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert total.removeprefix("total: ") in readme


def test_the_guides_causal_table_matches_the_committed_runs():
    from study.read.causal import arms_table
    from study.read.results import load_runs, load_table

    folder = REFERENCE / "study_causal"
    runs = load_runs(folder)
    tables = {n: load_table(folder, n, runs) for n in ("metrics", "evidence", "grad_flow")}
    table = arms_table(runs, tables["metrics"], tables["evidence"], tables["grad_flow"])
    counts = {(r.model, int(r.T), r.arm): f"{r.k}/{r.n}" for r in table.itertuples()}
    readme = (ROOT / "docs" / "guide.md").read_text()
    block = readme.split("<!-- causal table: tests/test_docs_numbers.py -->")[1].split("\n\n")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in line]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    checked = 0
    for line in rows[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        model, T = cells[0], int(cells[1])
        for arm, cell in zip(header[2:], cells[2:]):
            k_n = re.match(r"(\d+/\d+)", cell)
            if k_n is None:
                continue  # "not run"
            assert counts[(model, T, arm)] == k_n.group(1), (model, T, arm)
            checked += 1
    assert checked >= 6
