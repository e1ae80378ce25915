"""The HTML report: self-contained, its numbers recomputed independently, and rendered in a
real headless browser (Debian's chromium driven by playwright) without errors or blank figures."""

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.read.report import decay_table, success_table
from study.read.results import load_runs, load_table
from tests.conftest import study_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tiny_study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    proc = study_run(tiny_study, "--out", out, module="study.read.report")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    return out


def test_the_report_is_one_offline_file_about_every_experiment(report, tiny_study):
    page = report.read_text()
    for experiment in ("init_ratio", "lags_adding", "lags_copy", "matched", "memory_path"):
        assert re.search(rf'<h2 id="e\d+-{experiment}">Experiment {experiment}</h2>', page)
    markup = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # plotly's code names URLs
    assert 'src="http' not in markup and 'href="http' not in markup  # the page fetches nothing
    assert re.search(r"<script[^>]*\bsrc=", page) is None  # plotly's script is inline
    assert page.count("data:image/png;base64,") >= 14  # the study's fourteen figures at least
    assert "Success against lag" in page and "Decay of the gradient per step" in page


def test_the_decay_table_matches_a_direct_computation(tiny_study):
    folder = tiny_study / "init_ratio"
    runs, flow = load_runs(folder), load_table(folder, "grad_flow")
    table = decay_table(runs, flow).set_index("model")
    h = flow[(flow.step == 0) & (flow.quantity == "grad_norm") & (flow.state == "h")]
    h = h[h.stat == "median"]
    for cell, label in (("rnn", "RNN"), ("gru", "GRU")):
        factors = []
        for _, g in h[h.cell == cell].groupby("path"):
            g = g.sort_values("position")  # position 0 is lag T-1
            T = len(g)
            factors.append((g.value.iloc[0] / g.value.iloc[-1]) ** (1 / (T - 1)))
        expected = float(np.prod(factors) ** (1 / len(factors)))
        assert table.loc[label, "per step (geometric mean)"] == pytest.approx(expected, rel=1e-12)


def test_the_success_table_counts_seeds_and_gives_wilson_intervals(tiny_study):
    runs = load_runs(tiny_study / "lags_adding")
    table = success_table(runs)
    for row in table.itertuples():
        g = runs[(runs.cell == row.model.lower()) & (runs["cfg.task.length"] == row.T)]
        assert row.solved == f"{int(g.solved.sum())}/{len(g)}"
    # Wilson 95 % interval for 0 of 2: [0, z^2 / (n + z^2)] = [0, 0.658]
    zero = table[table.solved == "0/2"]
    assert (zero["95 % CI"] == "[0.00, 0.66]").all()


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
def test_the_report_renders_in_a_headless_browser(report, tmp_path):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(report.as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.plotly-graph-div .main-svg').length > 0"
        )
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        plots = page.eval_on_selector_all(
            ".plotly-graph-div", "els => els.map(e => e.querySelectorAll('.main-svg').length)"
        )
        page.evaluate("document.querySelector('.plotly-graph-div').scrollIntoView()")
        png = page.screenshot()
        browser.close()
    assert errors == []
    assert [r for r in requests if not r.startswith("data:")] == [report.as_uri()]
    assert widths and all(w > 0 for w in widths)  # every figure decoded
    assert plots and all(n > 0 for n in plots)  # every interactive plot drawn
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # not blank


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)"
)
@pytest.mark.parametrize("width", [1280, 390])  # a desktop and a phone
def test_the_report_reads_at_a_desktop_and_a_phone_width(report, width):
    """Nothing overflows the window sideways: wide tables scroll inside their own box, figures
    and interactive plots shrink to the page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": width, "height": 800})
        page.goto(report.as_uri())
        page.wait_for_function(
            "document.querySelectorAll('.plotly-graph-div .main-svg').length > 0"
        )
        page.wait_for_timeout(300)  # plotly's responsive relayout
        scroll = page.evaluate("document.documentElement.scrollWidth")
        inner = page.evaluate("window.innerWidth")
        wide = page.eval_on_selector_all(
            "body > *", "els => els.filter(e => e.getBoundingClientRect().right > "
            "window.innerWidth + 1).map(e => e.tagName + '.' + e.className)"
        )  # fmt: skip
        browser.close()
    assert scroll <= inner, wide


XSS = "<img src=x onerror=window.__xss=1>"


def test_names_from_folders_are_text_not_html(tiny_study, tmp_path):
    """An experiment folder named like markup: the report shows its name and runs nothing."""
    root = tmp_path / "results"
    shutil.copytree(tiny_study / "init_ratio", root / XSS)
    out = tmp_path / "report.html"
    proc = study_run(root, "--out", out, module="study.read.report")
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert XSS not in page and "&lt;img src=x onerror=window.__xss=1&gt;" in page
    if CHROMIUM is None:
        return  # the static check above still ran; the browser's below needs chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        tab = browser.new_page()
        tab.goto(out.as_uri())
        ran = tab.evaluate("window.__xss")
        shown = tab.inner_text("h2:nth-of-type(2)")
        browser.close()
    assert ran is None and XSS in shown


def test_report_out_a_folder_is_one_line(tiny_study, tmp_path):
    proc = study_run(tiny_study / "init_ratio", "--out", tmp_path, module="study.read.report")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"--out {tmp_path} is a folder" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("seeds", [2, 30])  # 2 x 2 x 2 = 8 runs: per run; 120 runs: per group
def test_learning_curves_have_one_legend_entry_per_model_and_T_in_its_cells_colour(seeds):
    import matplotlib.colors as mcolors

    from study.read.labels import vocabulary
    from study.read.plots import color
    from study.read.report import MANY_RUNS, curves_plot

    rows, runs = [], []
    for cell in ("rnn", "gru"):
        for T in (10, 20):
            for seed in range(seeds):
                path = f"{cell}-{T}-{seed}"
                runs.append({"path": path, "cell": cell, "cfg.model.cell": cell, "seed": seed,
                             "cfg.task.length": T, "baseline": 1 / 6})  # fmt: skip
                for step in (0, 10, 20):
                    value = 1e6 if (cell, seed, step) == ("rnn", 0, 20) else 0.1 / (1 + step)
                    rows.append({"path": path, "seed": seed, "step": step, "name": "eval_loss",
                                 "value": value})  # fmt: skip
    runs = pd.DataFrame(runs)
    runs["steps"], runs["cfg.train.batch_size"], runs["hidden_size"] = 20, 4, 8
    runs["cfg.model.recurrent_init"] = "default"
    runs["task"], runs["config"] = "Adding", runs.cell + runs["cfg.task.length"].astype(str)
    runs = vocabulary(runs)  # model, T, lr: as load_runs gives them
    fig = curves_plot(runs, pd.DataFrame(rows))
    legend = [t for t in fig.data if t.showlegend is not False]
    assert len(legend) == 4  # (rnn, gru) x (T = 10, 20)
    assert (len(runs) > MANY_RUNS) == all("median of" in t.name for t in legend)
    for trace in legend:
        cell = {"RNN": "rnn", "GRU": "gru"}[trace.name.split(",")[0]]
        expected = tuple(round(255 * c) for c in mcolors.to_rgb(color(cell)))
        assert trace.line.color == "rgb({},{},{})".format(*expected)
    assert fig.layout.yaxis.range[1] == pytest.approx(np.log10(10 / 6))  # not the diverged 1e6


def test_the_report_names_every_notebook():
    import re

    from study.read.report import NOTEBOOKS
    from tests.conftest import ROOT

    named = set(re.findall(r"<code>(fig\d\w*)</code>", NOTEBOOKS))
    assert named == {p.stem for p in (ROOT / "notebooks").glob("fig*.py")}
