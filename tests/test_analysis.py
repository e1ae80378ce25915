"""Derived numbers: decay ratios, success tables, Wilson intervals, against direct computation."""

import numpy as np
import pandas as pd
import pytest

from study.read.analysis import decay_ratio, leaves_baseline, success_table, wilson


def test_decay_ratio_is_first_over_last_and_its_geometric_rate():
    T = 11
    values = 0.5 ** np.arange(T)[::-1] * 3.0  # position t holds 3 * 0.5^(T-1-t)
    flow = pd.DataFrame(
        {
            "path": "p",
            "run_id": "r",
            "step": 0,
            "quantity": "grad_norm",
            "state": "h",
            "stat": "median",
            "position": np.arange(T),
            "lag": T - 1 - np.arange(T),
            "value": values,
        }
    )
    (row,) = decay_ratio(flow).to_dict("records")
    assert row["ratio"] == pytest.approx(0.5 ** (T - 1), rel=1e-12)
    assert row["per_step"] == pytest.approx(0.5, rel=1e-12)
    # a compact table (probe.flow_lags) keeps the first and last positions: the same numbers
    (compact,) = decay_ratio(flow[flow.lag.isin([0, 1, 4, T - 1])]).to_dict("records")
    assert compact["T"] == T and compact["ratio"] == pytest.approx(row["ratio"], rel=1e-12)


def test_success_table_counts_seeds():
    runs = pd.DataFrame(
        {
            "cell": ["lstm"] * 3 + ["rnn"] * 2,
            "T": [50, 50, 50, 50, 50],
            "solved": [True, True, False, False, False],
            "eval_loss": [0.001, 0.002, 0.1, 0.16, 0.17],
            "baseline": [1 / 6] * 5,
        }
    )
    table = success_table(runs)
    assert table.loc["lstm", 50].startswith("2/3") and table.loc["rnn", 50].startswith("0/2")
    assert "(0.012)" in table.loc["lstm", 50]  # median 0.002 / (1/6)


def test_wilson_interval_closed_forms():
    z2 = 1.96**2
    lo, hi = wilson(0, 3)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(z2 / (3 + z2), rel=1e-12)
    lo, hi = wilson(3, 3)
    assert hi == pytest.approx(1.0, abs=1e-12) and lo == pytest.approx(3 / (3 + z2), rel=1e-12)
    lo, hi = wilson(50, 100)
    half = 1.96 * np.sqrt(0.25 / 100 + z2 / (4 * 100**2)) / (1 + z2 / 100)  # 0.09617
    assert (lo + hi) / 2 == pytest.approx(0.5) and hi - lo == pytest.approx(2 * half, rel=1e-12)


def test_leaves_baseline_is_the_first_evaluation_below_the_fraction():
    runs = pd.DataFrame({"path": ["a", "b", "c"], "baseline": [1.0, 2.0, 1.0]})
    rows = []
    for path, losses in {
        "a": [1.0, 0.95, 0.85, 0.5],
        "b": [2.0, 1.7, 1.9, 1.0],
        "c": [1.0] * 4,
    }.items():
        rows += [
            {"path": path, "step": 100 * k, "name": "eval_loss", "value": v}
            for k, v in enumerate(losses)
        ]
        rows.append({"path": path, "step": 0, "name": "train_loss", "value": 0.0})  # not read
    first = leaves_baseline(pd.DataFrame(rows), runs)
    assert first["a"] == 200 and first["b"] == 100 and np.isnan(first["c"])


def test_a_step_without_probes_says_which_steps_have_them(tiny_study):
    from tests.conftest import study_run

    proc = study_run(tiny_study / "lags_adding", "--step", "99999", module="study.read.analysis")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "no probe at step 99999: the runs were probed at steps 0, 4" in proc.stdout
