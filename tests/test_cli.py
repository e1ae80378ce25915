"""The real command, run in a subprocess with tiny budgets."""

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.runs import rundir
from tests.conftest import study_run

TINY = [
    "task.length=10",
    "train.steps=4",
    "train.log_every=2",
    "train.eval_size=64",
    "model.hidden_size=8",
]


def run_cli(*args, out: Path, check=True) -> subprocess.CompletedProcess:
    return study_run(*args, out=out, timeout=300, check=check)


def test_a_run_writes_a_complete_run_directory(tmp_path):
    run_cli("model=gru", *TINY, "probe.jacobian_examples=2", out=tmp_path)
    run_dir = (
        tmp_path
        / "default"
        / (
            "model=gru,model.hidden_size=8,probe.jacobian_examples=2,task.length=10,"
            "train.eval_size=64,train.log_every=2,train.steps=4,seed=0"
        )
    )
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["hidden_size"] == 8 and info["n_params"] == 3 * (8 * 2 + 64 + 16) + 9
    assert info["input_length"] == 10  # the adding problem reads T steps
    assert (run_dir / "config.yaml").read_text().startswith("model:")
    metrics = rundir.read_table(run_dir, "metrics")
    assert list(metrics.columns) == ["step", "name", "value"]
    assert sorted(metrics.step.unique()) == [0, 2, 4]
    assert set(metrics.name) == {
        "train_loss",
        "grad_norm",
        "eval_loss",
        "eval_metric",
        "solved",
        "effective_horizon",
        "lyapunov_max",
        "lyapunov_near_zero",
    }
    flow = rundir.read_table(run_dir, "grad_flow")
    assert list(flow.columns) == ["step", "quantity", "state", "position", "lag", "stat", "value"]
    grad = flow[flow.quantity == "grad_norm"]
    assert len(grad) == 3 * 1 * 10  # steps x states x positions, the median (rundir.kept)
    assert set(grad.stat) == {"median"}
    gates = flow[flow.quantity == "gate_mean"]  # the one batch mean a figure draws
    assert set(gates.stat) == {"mean", "median"}
    assert (flow.lag == 9 - flow.position).all()
    assert set(flow.quantity) == {
        "grad_norm",
        "grad_norm_cell_path",
        "gate_mean",
        "gate_saturation",
        "input_grad",
        "jacobian_spectral",
        "jacobian_frobenius",
        "jacobian_sigma_min",
        "jacobian_alive",
    }
    evidence = rundir.read_table(run_dir, "evidence")
    assert len(evidence) == 3 * 64 * 2  # steps x batch x evidence positions (input_grad only)
    assert set(evidence.quantity) == {"input_grad"}
    weights = rundir.read_table(run_dir, "weights")
    assert set(weights.block) == {"r", "z", "n"}
    lyapunov = rundir.read_table(run_dir, "lyapunov")
    assert len(lyapunov) == 2 * 2 * 8  # Jacobian-probe steps (0 and 4, the ends) x examples x H
    # nothing besides the run directory was written
    assert [p.name for p in tmp_path.iterdir()] == ["default"]


def test_same_config_and_seed_give_identical_tables(tmp_path):
    for name in ("a", "b"):
        run_cli("model=lstm", *TINY, "seed=3", out=tmp_path / name)
    for table in ("metrics", "grad_flow"):
        runs = (next((tmp_path / n).rglob("run.json")).parent for n in ("a", "b"))
        a, b = (rundir.read_table(run, table) for run in runs)
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_a_finished_run_is_skipped_unless_rerun(tmp_path):
    run_cli("model=rnn", *TINY, out=tmp_path)
    (run_json,) = tmp_path.rglob("run.json")
    before = run_json.stat().st_mtime_ns
    proc = run_cli("model=rnn", *TINY, out=tmp_path)
    assert "skip" in proc.stderr and run_json.stat().st_mtime_ns == before
    run_cli("model=rnn", *TINY, "rerun=true", out=tmp_path)
    assert run_json.stat().st_mtime_ns != before


def test_divergence_is_recorded_and_exits_zero(tmp_path):
    # an IRNN with W_hh = 1000 I overflows float32 within a few steps: loss is inf at step 0
    proc = run_cli("model=irnn", "model.recurrent_gain=1000", *TINY, out=tmp_path)
    assert proc.returncode == 0
    (run_json,) = tmp_path.rglob("run.json")
    info = json.loads(run_json.read_text())
    assert info["status"] == "diverged" and info["diverged_at_step"] == 0
    metrics = rundir.read_table(run_json.parent, "metrics")
    assert not metrics.value.map(lambda v: abs(v) < float("inf")).all()


@pytest.mark.parametrize(
    "args,line",
    [
        (
            ["model=transformer"],
            "error: model=transformer is unknown: allowed gru, gru_chrono, irnn",
        ),
        (["task=parity"], "error: task=parity is unknown: allowed adding"),
        (["task.length=1"], "error: task.length=1 is invalid: must be an integer >= 2"),
        (["train.steps=-5"], "error: train.steps=-5 is invalid: must be an integer >= 0"),
        (["train.stepz=5"], "error: train.stepz is an unknown key: did you mean train.steps?"),
        (["task.length=[1"], "error: malformed override 'task.length=[1'"),
        (["-m", "task.length=10,1"], "error: task.length=1 is invalid"),
        (["device=tpu"], "error: device='tpu' is unknown: allowed cpu, cuda, auto"),
        (["seed=true"], "error: seed=True is invalid: must be an integer >= 0"),
        (
            ["-m", "ensemble=2,0"],
            "error: ensemble=0 is invalid: must be an integer >= 1",
        ),
    ],
)
def test_bad_input_stops_with_one_line_before_writing(tmp_path, args, line):
    proc = run_cli(*args, out=tmp_path / "out", check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), proc.stderr
    assert not (tmp_path / "out").exists()


def test_multirun_with_cfg_is_a_one_line_error(tmp_path):
    proc = study_run("-m", "--cfg", "job", "model=rnn,gru", out=tmp_path / "out")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: Only one of --run, --multirun, --cfg")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path):
    proc = run_cli("device=cuda", out=tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "error: device=cuda is unavailable: torch sees no CUDA device (use cpu or auto)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override,key",
    [
        ("experiment=../../conf/experiment/smoke", "experiment"),
        ("experiment_dir=../up", "experiment_dir"),
    ],
)
def test_no_name_writes_outside_out_dir(tmp_path, override, key):
    out = tmp_path / "a" / "b"
    proc = run_cli("-m", override, out=out, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith(f"error: {key}=") and "one folder name" in proc.stderr
    assert not any(tmp_path.rglob("*.json")) and not (tmp_path / "a" / "b").exists()


@pytest.mark.parametrize(
    "overrides,line",
    [
        (
            ["ensemble=2", "train.optimizer._target_=torch.optim.Adafactor"],
            "error: train.optimizer._target_=torch.optim.Adafactor with ensemble=2: the stacked",
        ),
        (
            ["model.forget_gate=false", "model.forget_bias=1"],
            "error: model.forget_bias=1 has no effect with model.forget_gate=false",
        ),
        (["model.match_params=1"], "error: model.match_params=1 is too small for cell=lstm"),
        (["model=lstm_chrono", "model.chrono=1e300"], "error: model.chrono=1e+300 is invalid"),
        (["tuned=gru", "model=lstm"], "error: tuned=... sets the model and its learning rate"),
    ],
)
def test_meaningless_combinations_are_refused_with_one_line(tmp_path, overrides, line):
    proc = run_cli(*overrides, "train.steps=0", out=tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith(line) and "\n" not in proc.stderr.strip()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "override,line",
    [
        ("model.hidden_size=100000", "error: model.hidden_size=100000 is too large: at most 8,192"),
        ("model.match_params=1000000000", "error: model.match_params=1000000000 is too large"),
        ("task.length=10000000", "error: task.length=10000000 is too large: at most 100,000"),
        ("probe.snr_batches=10000000", "error: probe.snr_batches=10000000 is too large"),
        ("probe.jacobian_examples=500", "error: probe.jacobian_examples=500 is more than train."),
    ],
)
def test_sizes_that_cannot_run_are_refused_before_anything_is_written(tmp_path, override, line):
    proc = run_cli(override, "train.steps=0", out=tmp_path / "out", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().startswith(line)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "overrides,line",
    [
        (["task=copy_memory", "task.variant=x"], "error: task.variant is not a key of"
         " task=copy_memory (study.tasks.copy_memory.CopyMemory) allowed: length"),
        (["train.ensemble=2"], "error: train.ensemble is now the top-level key: write ensemble=E"),
        (["+train.ensemble=2"], "error: train.ensemble is now the top-level key"),
        (["hydra.launcher.n_jobs=2"], "error: hydra.launcher.n_jobs applies to a sweep's launcher"),
        (["task=latching", "task.noise_var=abc"], "error: task.noise_var='abc' is invalid"),
        (["model.input_bias=[]"], "error: model.input_bias=[] is invalid"),
        (["+train.optimizer.betas=abc"], "error: train.optimizer.betas='abc' is invalid"),
        (["model=lru", "model.options.r_min=abc"], "error: model.options.r_min='abc' is invalid"),
        (["model=gru", "model.cut=cell"], "error: model.cut='cell' is not a path of cell=gru:"
         " allowed linear, hidden"),
        (["model.cut=linear", "model.cut_prob=2"], "error: model.cut_prob=2 is invalid"),
    ],
)  # fmt: skip
def test_every_bad_value_names_its_key(tmp_path, overrides, line):
    proc = run_cli(*overrides, "train.steps=0", out=tmp_path / "out", check=False)
    assert proc.returncode != 0 and proc.stderr.startswith(line)
    assert "\n" not in proc.stderr.strip() and not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("srun") is not None, reason="this machine has SLURM")
def test_slurm_without_srun_is_one_line(tmp_path):
    proc = run_cli("-m", "hydra/launcher=slurm", "train.steps=0", out=tmp_path / "o", check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: hydra/launcher=slurm needs SLURM's srun, which is not on PATH: run it on the"
        " cluster, or use hydra/launcher=joblib here"
    )
