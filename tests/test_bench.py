"""The benchmark runs and writes its tables (timings are never asserted)."""

import subprocess
import sys

import pandas as pd


def test_quick_ensemble_table_is_written(tmp_path):
    cmd = [sys.executable, "-m", "study.bench", "--quick", "--only", "ensemble", "--out", tmp_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "ensemble.csv")
    assert sorted(table.cell) == ["gru", "lstm", "rnn"]
    assert (table.gain > 0).all() and "gain" in proc.stdout


def test_an_unknown_table_is_one_line_error(tmp_path):
    cmd = [sys.executable, "-m", "study.bench", "--only", "speeed", "--out", tmp_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown table speeed: allowed targets" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
