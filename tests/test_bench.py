"""The benchmark runs and writes its tables (timings are never asserted)."""

import pandas as pd
import pytest

from tests.conftest import study_run


def bench(*args, timeout=600):
    """`python -m study_bench ARGS` (tests/conftest.py::study_run): the CompletedProcess."""
    return study_run(*args, module="study_bench", timeout=timeout)


def test_quick_ensemble_table_is_written(tmp_path):
    proc = bench("--quick", "--only", "ensemble", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "ensemble.csv")
    assert sorted(table.cell) == ["gru", "lstm", "rnn"]
    assert (table.gain > 0).all() and "gain" in proc.stdout


def test_an_unknown_table_is_one_line_error(tmp_path):
    proc = bench("--only", "speeed", "--out", tmp_path, timeout=60)
    assert proc.returncode == 2 and "unknown table speeed: allowed targets" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_benchmark_times_the_training_loops_own_step(monkeypatch):
    """Both the loop (study.train.train) and every timed step of the benchmark go
    through study.train.gradient_step: count its calls from each."""
    import study.train
    import study_bench as bench
    from study.model import build_model
    from study.tasks.adding import Adding
    from study.train import TrainSettings
    from tests.conftest import train_one

    calls = []
    real = study.train.gradient_step
    monkeypatch.setattr(study.train, "gradient_step", lambda *a: calls.append(1) or real(*a))

    bench.step_ms("gru", H=4, B=2, T=5, impl="fast", repeats=3)
    assert len(calls) == 2 + 3  # warm-up and timed steps

    calls.clear()
    model = build_model("rnn", 2, 1, hidden_size=4)
    settings = TrainSettings(steps=3, batch_size=2, log_every=3, eval_size=4)
    train_one(model, Adding(5), bench.ADAM, settings, seed=0)
    assert len(calls) == 3 + 1  # steps 0..3: the last computes its gradient, records, stops


def test_quick_scan_table_compares_scan_loop_and_rnn_at_matched_parameters(tmp_path):
    proc = bench("--quick", "--only", "scan", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "scan.csv")
    assert sorted(set(table.cell)) == ["lru", "mingru", "minlstm", "rnn"]
    assert set(table.path) == {"fast", "scan", "loop"}
    rnn = int(table[table.cell == "rnn"].n_params.iloc[0])
    assert ((table.n_params - rnn).abs() / rnn < 0.02).all()  # matched to within 2 %
    assert (table["T"] == 200).all() and (table.ms_per_step > 0).all()


def test_quick_cuts_table_times_every_arm_cut_and_uncut(tmp_path):
    proc = bench("--quick", "--only", "cuts", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "cuts.csv")
    from study_bench import CUT_ARMS

    assert list(zip(table.cell, table.cut)) == CUT_ARMS
    assert (table[["uncut_ms", "cut_ms", "cut_ensemble_ms_per_member"]] > 0).all().all()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--device", "nope"], "argument --device: invalid choice: 'nope'"),
        (["--device", "mps"], "argument --device: invalid choice: 'mps'"),
        (["--out", "FILE"], "not a writable folder"),
    ],
)
def test_a_bad_device_or_out_is_one_line(tmp_path, args, message):
    file = tmp_path / "a-file"
    file.write_text("")
    args = [str(file) if a == "FILE" else a for a in args]
    proc = bench("--only", "targets", *args, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr.splitlines()[-1]
    assert "Traceback" not in proc.stderr


def test_quick_lstm1997_table_times_the_explicit_loop_and_the_function(tmp_path):
    proc = bench("--quick", "--only", "lstm1997", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "lstm1997.csv")
    assert len(table) == 8 and set(table.impl) == {"explicit", "fast"}
    assert set(table.cut) == {"none", "hidden"} and (table.ms_per_step > 0).all()


def test_the_readers_table_times_collect_and_report_cold_and_warm(tmp_path):
    results = tmp_path / "results"
    tiny = ["task.length=6", "train.steps=2", "train.log_every=1", "train.eval_size=8"]
    study_run("-m", "model=rnn,gru", *tiny, "model.hidden_size=4", out=results, check=True)
    proc = bench("--only", "readers", "--results", results, "--out", tmp_path / "b")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "b" / "readers.csv")
    assert list(zip(table.reader, table.cache)) == [
        (r, c) for r in ("study-collect", "study-report") for c in ("cold", "warm")
    ]
    assert (table.seconds > 0).all() and set(table.runs) == {2}
    assert not list(results.rglob(".cache")) and not list(results.rglob("*.html"))  # only read


def test_quick_study_ensemble_table_has_every_cell_and_the_roofline(tmp_path):
    proc = bench("--quick", "--only", "study_ensemble", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "study_ensemble.csv")
    cells = ["rnn", "lstm", "gru", "mingru", "minlstm", "lru", "lru:glu"]
    assert table.cell.tolist() == cells and (table.gain > 0).all()
    assert (table.sgemm_gflops > 0).all()
    with_matmuls = table.cell.isin(["rnn", "lstm", "gru"])
    assert (table.recurrent_gflops[with_matmuls] > 0).all()
    assert table.recurrent_gflops[~with_matmuls].isna().all()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_recurrent_flop_count_is_what_torch_counts_in_the_cells_steps(cell):
    """recurrent_gflop against torch.utils.flop_counter on the explicit cell's steps (the input
    projection done outside the count), forward and backward, h_0 a leaf that needs grad."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from study.model import build_model
    from study_bench import recurrent_gflop

    H, B, T = 6, 3, 5
    cell_ = build_model(cell, 2, 1, hidden_size=H).cell
    gx = cell_.project_inputs(torch.randn(B, T, 2)).detach()
    state = tuple(s.requires_grad_() for s in cell_.initial_state(B))
    with FlopCounterMode(display=False) as counter:
        s = state
        for t in range(T):
            s, _ = cell_.step(gx[:, t], s)
        s[0].sum().backward()
    assert counter.get_total_flops() == pytest.approx(recurrent_gflop(cell, H, B, T) * 1e9)


def test_the_cells_stacked_on_the_cpu_are_those_the_committed_table_measured_faster():
    """fast.STACKED_SCAN_CPU is read off results/bench/study_ensemble.csv: the cells whose
    stacked scan beat their members one by one at every size of the table."""
    from study.model.fast import STACKED_SCAN_CPU
    from tests.conftest import ROOT

    table = pd.read_csv(ROOT / "results" / "bench" / "study_ensemble.csv")
    measured = table.dropna(subset=["stacked_scan_gain"]).groupby("cell").stacked_scan_gain.min()
    assert sorted(measured[measured > 1].index) == sorted(STACKED_SCAN_CPU)
