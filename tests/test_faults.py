"""Fault injection through the real command: config edits between runs, damaged and deleted
tables, a corrupt checkpoint, a full disk, SIGINT and kill -9 of runs and sweeps, concurrent
sweeps into one out_dir. In every case nothing is lost, nothing is mislabelled, and the user
reads one line that names the file or key."""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.read import collect
from study.read.results import load_runs, load_table, status_table
from study.run import precheck
from study.runs import rundir
from tests.conftest import ROOT, study_run

TINY = ["task.length=8", "train.steps=4", "train.log_every=2", "train.eval_size=16"]
TINY += ["model.hidden_size=4"]
LONG = ["task.length=40", "train.steps=100000", "train.log_every=1000", "train.eval_size=16"]
LONG += ["model.hidden_size=16", "train.checkpoint_every=20"]

EXPERIMENT = """# @package _global_
train:
  optimizer:
    lr: {lr}              # learning rate
"""


def own_experiment(tmp_path: Path, lr: float) -> list[str]:
    """A user's experiment outside the repository (hydra.searchpath), with a given lr."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "mine.yaml").write_text(EXPERIMENT.format(lr=lr))
    return ["experiment=mine", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]


def the_run(out: Path) -> Path:
    (run,) = [p.parent for p in out.rglob(rundir.RUN_JSON)]
    return run


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


# ---- config identity --------------------------------------------------------------------------
def test_an_edited_experiment_stops_with_the_keys_that_differ(tmp_path):
    out = tmp_path / "results"
    assert study_run(*own_experiment(tmp_path, 0.001), *TINY, out=out).returncode == 0
    before = (the_run(out) / rundir.TABLE_FILE).read_bytes()

    edited = own_experiment(tmp_path, 0.01)
    for args in ([*edited, *TINY], ["-m", *edited, *TINY, "seed=0,1"]):
        proc = study_run(*args, out=out)
        assert proc.returncode == 1
        assert proc.stderr.count("\n") == 1  # one line, no traceback
        assert "train.optimizer.lr (0.001 -> 0.01)" in proc.stderr
        assert "rerun=true" in proc.stderr and "another out_dir" in proc.stderr
    assert len(list(out.rglob(rundir.RUN_JSON))) == 1  # the sweep wrote nothing, not even seed 1
    assert (the_run(out) / rundir.TABLE_FILE).read_bytes() == before

    proc = study_run(*edited, *TINY, "rerun=true", out=out)
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.01" in (the_run(out) / rundir.CONFIG).read_text()


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    out = tmp_path / "results"
    study_run(*own_experiment(tmp_path, 0.001), *TINY, out=out)
    run = the_run(out)
    info = json.loads((run / rundir.RUN_JSON).read_text()) | {"status": "running"}
    (run / rundir.RUN_JSON).write_text(json.dumps(info))  # as if killed after a checkpoint
    (run / rundir.CHECKPOINT).write_bytes(b"state of the old config")
    proc = study_run(*own_experiment(tmp_path, 0.01), *TINY, out=out)
    assert proc.returncode == 1 and "train.optimizer.lr (0.001 -> 0.01)" in proc.stderr
    assert (run / rundir.CHECKPOINT).read_bytes() == b"state of the old config"


def test_threads_are_not_part_of_a_runs_identity(tmp_path):
    assert study_run(*TINY, "threads=1", out=tmp_path).returncode == 0
    proc = study_run(*TINY, "threads=2", out=tmp_path)
    assert proc.returncode == 0 and "skip" in proc.stderr


# ---- damaged runs ------------------------------------------------------------------------------
def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated tables": (lambda r: os.truncate(r / rundir.TABLE_FILE, 100), "tables.zip does not"),
    "deleted tables": (lambda r: (r / rundir.TABLE_FILE).unlink(), "tables.zip is missing"),
    "flipped bit": (lambda r: flip_a_bit(r / rundir.TABLE_FILE), "tables.zip does not"),
    "invalid config": (lambda r: (r / rundir.CONFIG).write_text("{: ["), "config.yaml"),
    "invalid run.json": (lambda r: (r / rundir.RUN_JSON).write_text("{"), "run.json"),
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run (out_dir) that the damage tests copy."""
    out = tmp_path_factory.mktemp("finished")
    assert study_run(*TINY, out=out).returncode == 0
    return out


@pytest.mark.parametrize("fault", list(DAMAGE))
def test_a_damaged_run_is_named_listed_and_retrained(tmp_path, fault, finished, caplog, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished, out)
    run = the_run(out)
    metrics = (run / rundir.TABLE_FILE).read_bytes()
    damage, what = DAMAGE[fault]
    damage(run)

    assert rundir.status(run) == "damaged"
    assert load_runs(out / "default").empty  # not read as a finished run
    assert any(str(run) in r.message and what in r.message for r in caplog.records)
    assert status_table(out / "default")["damaged"].tolist() == [1]
    collect.main([str(out / "default")])  # the command-line status table
    *_, header, row, summary = capsys.readouterr().out.splitlines()
    assert row.split()[header.split().index("damaged")] == "1"
    assert summary.startswith("0/1 done:") and "1 damaged" in summary

    proc = study_run(*TINY, out=out)
    assert proc.returncode == 0 and f"damaged default/{run.name}" in proc.stderr
    assert rundir.status(run) == "completed"
    assert (run / rundir.TABLE_FILE).read_bytes() == metrics  # retrained to the same numbers


def test_a_corrupt_checkpoint_is_moved_aside_and_training_restarts(tmp_path):
    out = tmp_path / "results"
    study_run(*TINY, out=out)
    run = the_run(out)
    metrics = (run / rundir.TABLE_FILE).read_bytes()
    info = json.loads((run / rundir.RUN_JSON).read_text()) | {"status": "running"}
    (run / rundir.RUN_JSON).write_text(json.dumps(info))
    (run / rundir.CHECKPOINT).write_bytes(b"\x80\x04 not a checkpoint")
    proc = study_run(*TINY, out=out)
    assert proc.returncode == 0, proc.stderr
    assert f"{run / rundir.CHECKPOINT} is unreadable" in proc.stdout + proc.stderr
    assert (run / "checkpoint.pt.corrupt").exists() and not (run / rundir.CHECKPOINT).exists()
    assert rundir.status(run) == "completed"
    assert (run / rundir.TABLE_FILE).read_bytes() == metrics  # from scratch: the same run


class Planted:
    """A pickle that would write a file when unpickled (what an attacker plants)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "ran"))


def test_a_planted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    out = tmp_path / "results"
    study_run(*TINY, out=out)
    run = the_run(out)
    info = json.loads((run / rundir.RUN_JSON).read_text()) | {"status": "running"}
    (run / rundir.RUN_JSON).write_text(json.dumps(info))
    marker = tmp_path / "executed"
    torch.save({"next_step": 2, "payload": Planted(str(marker))}, run / rundir.CHECKPOINT)
    proc = study_run(*TINY, out=out)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()  # nothing from the results folder ran
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if "unreadable" in x]
    assert len(lines) == 1 and "UnpicklingError" in lines[0]
    assert rundir.status(run) == "completed"


def test_a_checkpoints_records_come_back_exactly(tmp_path):
    """Records through the weights_only checkpoint: every table equal, dtypes included."""
    from study.model import build_model
    from study.runs.checkpoint import CheckpointFile
    from study.tasks.adding import Adding
    from study.train import TrainSettings
    from tests.conftest import train_one

    torch.manual_seed(0)
    model = build_model("lstm", 2, 1, hidden_size=4)
    settings = TrainSettings(steps=4, batch_size=4, log_every=2, eval_size=8)
    records = train_one(model, Adding(6), torch.optim.Adam, settings, seed=0)
    store = CheckpointFile(tmp_path)
    store.save({"next_step": 3, "records": records})
    back = store.load()["records"]
    for name, table in records.tables().items():
        pd.testing.assert_frame_equal(back.tables()[name], table, check_exact=True, obj=name)
    assert (back.status, back.final, back.solved_step) == (
        records.status,
        records.final,
        records.solved_step,
    )


def test_the_cache_key_does_not_depend_on_how_the_path_is_spelled(tmp_path, monkeypatch):
    out = tmp_path / "results"
    study_run("-m", "model=rnn,gru", *TINY, out=out)
    monkeypatch.chdir(tmp_path)
    spellings = [out / "default", Path("results/default"), Path("results/./default/")]
    frames = [load_table(p, "metrics") for p in spellings]
    assert all(f.drop(columns="path").equals(frames[0].drop(columns="path")) for f in frames)
    from study.read.results import cache_dir

    assert len(list(cache_dir(out / "default").glob("metrics-*.parquet"))) == 1


# ---- bad input: one line naming the key, nonzero exit, nothing written ---------------------------
BAD = {
    "train.optimizer.lr=-0.1": "train.optimizer.lr=-0.1 is invalid: must be finite, >= 0",
    "train.optimizer.lr=nan": "train.optimizer.lr=nan is invalid: must be finite, >= 0",
    "train.optimizer.lr=fast": "train.optimizer.lr='fast'",
    "+train.optimizer.betas=[0.9,1.5]": "train.optimizer.betas=[0.9, 1.5] is invalid",
    "train.optimizer._target_=torch.optim.LBFGS": "needs a closure",
    "threads=0": "threads=0",
    "threads=-1": "threads=-1",
    "threads=abc": "threads='abc'",
    "model.hidden_size=abc": "model.hidden_size='abc'",
    "model.hidden_size=8.5": "model.hidden_size=8.5",
    "train.clip_norm=abc": "train.clip_norm='abc'",
    "model.forget_bias=abc": "model.forget_bias='abc'",
    "model.input_bias=abc": "model.input_bias='abc'",
    "model.match_params=abc": "model.match_params='abc'",
    "rerun=no": "rerun='no' is invalid: must be true or false",
    "model.forget_gate=off": "model.forget_gate='off' is invalid: must be true or false",
    "probe.snr_batches=1": "probe.snr_batches=1 is invalid",
    "probe.lyapunov_transient=1": "probe.lyapunov_transient=1",
    "probe.jacobian_lags=0": "probe.jacobian_lags=0",
    "+sede=3": "sede is an unknown key: did you mean seed?",
    "+train.stpes=3": "train.stpes is an unknown key: did you mean train.steps?",
    "train.stpes=3": "train.stpes is an unknown key: did you mean train.steps?",
    "+model.hiden_size=3": "did you mean model.hidden_size?",
    "model=lsmt": "model=lsmt is unknown (did you mean model=lstm?): allowed gru",
    "task.length=1": "task.length=1",
    "progress=maybe": "progress='maybe'",
    "seed=-1": "seed=-1",
}


@pytest.mark.parametrize("override", list(BAD))
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, override):
    """The entry point's own check (`study-run` runs it before Hydra starts), in-process: the
    command-line path is covered for a few of these in test_cli.py."""
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as stop:
        precheck([override, "train.steps=2", "train.eval_size=8", f"out_dir={out}"])
    message = str(stop.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert BAD[override] in message
    assert not out.exists()


def test_bad_values_from_the_command_line(tmp_path):
    for override in ("rerun=no", "+train.stpes=3", "train.optimizer._target_=torch.optim.LBFGS"):
        proc = study_run(override, "train.steps=2", out=tmp_path / "r")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
        assert BAD[override] in proc.stderr
    assert not (tmp_path / "r").exists()


def test_an_unwritable_out_dir_and_bad_launcher_settings_are_one_line(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = {
        (f"out_dir={a_file}",): "is not writable",
        (f"out_dir={a_file}/below",): "is not writable",
        ("out_dir=/proc/study",): "is not writable",
        ("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", f"out_dir={tmp_path}/r"): (
            "hydra.launcher.n_jobs=0"
        ),
    }
    for args, expected in cases.items():
        proc = study_run(*args, "train.steps=2")
        assert proc.returncode != 0 and proc.stderr.count("\n") == 1, proc.stderr
        assert expected in proc.stderr
    assert not (tmp_path / "r").exists()


BAD_TASK = '''
import torch
from study.tasks.adding import Adding


class WrongSize(Adding):
    """Declares one output but returns targets with two."""

    def sample(self, batch_size, generator):
        batch = super().sample(batch_size, generator)
        batch.y = torch.cat([batch.y, batch.y], dim=-1)
        return batch
'''


def test_a_task_whose_targets_do_not_match_its_sizes_stops_before_any_run(tmp_path):
    (tmp_path / "wrongtask.py").write_text(BAD_TASK)
    (tmp_path / "conf" / "task").mkdir(parents=True)
    yaml = "_target_: wrongtask.WrongSize\nlength: 10\n"
    (tmp_path / "conf" / "task" / "wrong.yaml").write_text(yaml)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = study_run(
        "task=wrong", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", out=tmp_path / "r", env=env
    )
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "WrongSize does not match its declared sizes: y is (2, 1, 2)" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "module", ["study.read.figures", "study.read.collect", "study.read.analysis"]
)
def test_the_readers_fail_on_a_path_that_does_not_exist(tmp_path, module):
    proc = study_run(tmp_path / "nothing", module=module)
    assert proc.returncode != 0 and "is not a directory" in proc.stderr


def test_a_run_id_too_long_for_the_file_system_is_shortened_deterministically(tmp_path):
    many = ["train.batch_size=7", "train.eval_chunk=9", "train.clip_norm=2.5"]
    many += ["probe.saturation=0.9", "probe.horizon_fraction=0.01", "probe.snr_batches=3"]
    many += ["probe.jacobian_lags=3", "probe.jacobian_every=7", "model.recurrent_init=orthogonal"]
    many += ["model.recurrent_gain=1.1", "train.optimizer.lr=0.002", "probe.precision=float64"]
    assert len(",".join(many)) > 255
    for _ in range(2):
        proc = study_run("model=gru", *TINY, *many, out=tmp_path)
        assert proc.returncode == 0, proc.stderr
    run = the_run(tmp_path)  # the second command skipped the same directory
    assert len(run.name.encode()) <= rundir.MAX_RUN_ID and run.name.endswith(",seed=0")
    assert run.name.startswith("model=gru,model.hidden_size=4,")
    assert set(many) <= set(json.loads((run / rundir.RUN_JSON).read_text())["overrides"])


# ---- processes ---------------------------------------------------------------------------------
@pytest.fixture
def start():
    """start(*args, out=...): the real command in its own process group, with SIGINT at its
    default (a terminal's). Every process started is killed and reaped when the test ends, also
    when it fails half-way (its pipes would otherwise surface in a later test)."""
    procs = []

    def launch(*args, out: Path) -> subprocess.Popen:
        procs.append(_popen(*args, out=out))
        return procs[-1]

    yield launch
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if not proc.stdout.closed:  # not yet read by the test
            proc.communicate(timeout=60)


def _popen(*args, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "study.run", *args, f"out_dir={out}"]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(path_glob, root: Path, timeout=120) -> None:
    deadline = time.time() + timeout
    while not list(root.rglob(path_glob)):
        assert time.time() < deadline, f"no {path_glob} under {root}"
        time.sleep(0.2)


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_ctrl_c_is_one_line_and_the_rerun_resumes(tmp_path, sweep, start):
    args = ["-m", "model=rnn,gru", *LONG] if sweep else LONG
    proc = start(*args, out=tmp_path)
    wait_for(rundir.CHECKPOINT, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "interrupted: rerun the same command to resume"
    assert err.count("interrupted") == 1  # said once
    if sweep:
        assert "sweep of 2 runs: 0 completed" in err and "1 unfinished" in err
    run = the_run(tmp_path)
    assert rundir.status(run) == "running" and (run / rundir.CHECKPOINT).exists()
    assert not (run / rundir.LOCK).exists()  # released: the rerun may take it


def test_kill_9_of_a_joblib_sweep_ends_its_workers(tmp_path, start):
    proc = start(
        "-m",
        "model=rnn,gru",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *LONG,
        out=tmp_path,
    )
    wait_for(rundir.CHECKPOINT, tmp_path)  # a lock is written in full before training starts
    # n_jobs=2: one or both workers may hold a run's lock by now; each names its pid
    # (a lock just created may not hold its JSON yet: RunLock.holder reads it, None until then)
    locks = [rundir.RunLock(lock.parent).holder() for lock in tmp_path.rglob(rundir.LOCK)]
    workers = [held["pid"] for held in locks if held]
    assert workers and proc.pid not in workers
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.time() + 30
    while any(Path(f"/proc/{w}").exists() for w in workers):
        assert time.time() < deadline, "joblib workers outlived their parent"
        time.sleep(0.5)


INJECT_ENOSPC = """
import errno
import study.runs.rundir as rundir

_write = rundir.atomic_write


def atomic_write(path, write):
    if "model=lstm" in str(path) and str(path).endswith(rundir.TABLE_FILE):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return _write(path, write)


rundir.atomic_write = atomic_write
"""


def test_a_full_disk_is_one_line_and_the_sweep_goes_on_to_its_summary(tmp_path):
    """The write error is injected (sitecustomize) for the LSTM run's tables only."""
    (tmp_path / "sitecustomize.py").write_text(INJECT_ENOSPC)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = study_run("-m", "model=rnn,lstm,gru", *TINY, out=tmp_path / "r", env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 1 and "cannot write" in failed[0]
    assert "No space left on device" in failed[0] and "model=lstm" in failed[0]
    assert "sweep of 3 runs: 2 completed / 0 skipped / 0 diverged / 1 failed" in proc.stderr
    statuses = sorted(load_runs(tmp_path / "r" / "default", finished_only=False)["status"])
    assert statuses == ["completed", "completed", "failed"]


def test_a_real_full_file_system(tmp_path):
    """A 150 KiB tmpfs: the first two runs fit (~112 KiB), the third does not (needs root)."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(tiny)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (not root); the injected write error covers it")
    try:
        proc = study_run(
            "-m",
            "model=rnn,gru,lstm",
            "task.length=30",
            "train.log_every=1",
            "train.steps=4",
            "train.eval_size=16",
            "model.hidden_size=8",
            out=tiny,
        )
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert "No space left on device" in proc.stderr and f"cannot write {tiny}" in proc.stderr
        # the run that hit the full disk is marked failed, or, when even its run.json cannot be
        # written any more, left as it was: unfinished (a rerun resumes it); never completed
        assert "1 failed" in proc.stderr or "1 unfinished" in proc.stderr
        runs = load_runs(tiny / "default", finished_only=False)
        assert sorted(runs["status"])[:2] == ["completed", "completed"]
        assert sorted(runs["status"])[2] in ("failed", "running")
    finally:
        subprocess.run(["umount", str(tiny)], check=True)


def test_an_out_dir_that_turns_read_only_mid_sweep_goes_on_to_the_summary(tmp_path):
    """After the first run is sealed, out_dir becomes a read-only bind mount of itself (needs
    root): the run then training fails naming the file, the next jobs cannot take their locks
    and say so in one line each, and the sweep still ends with its summary, nothing traced."""
    out = tmp_path / "r"
    out.mkdir()
    args = ["-m", "seed=0,1,2", *TINY, "train.steps=3000", "train.log_every=1000"]
    cmd = [sys.executable, "-m", "study.run", *args, f"out_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    mounted = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if any(rundir.is_finished(p.parent) for p in out.rglob(rundir.RUN_JSON)):
                bind = ["mount", "--bind", str(out), str(out)]
                mounted = subprocess.run(bind, capture_output=True).returncode == 0
                ro = ["mount", "-o", "remount,bind,ro", str(out)]
                if not mounted or subprocess.run(ro, capture_output=True).returncode != 0:
                    proc.kill()
                    pytest.skip("cannot make a read-only bind mount here (not root)")
                break
            time.sleep(0.05)
        err = proc.communicate(timeout=300)[1]
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=True)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "Read-only file system" in err
    assert "sweep of 3 runs: 1 completed" in err
    assert all(not ln.startswith("Error executing job") for ln in err.splitlines())


@pytest.mark.parametrize("ensemble", ["1", "auto"])  # auto: the RNN and GRU seeds stacked
def test_two_identical_sweeps_at_once_train_each_run_once(tmp_path, start, ensemble):
    args = ["-m", "model=rnn,gru,lstm", "seed=0,1", f"ensemble={ensemble}", *TINY]
    args += ["train.steps=30"]
    a, b = start(*args, out=tmp_path), start(*args, out=tmp_path)
    errs = [p.communicate(timeout=300)[1] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, errs
    trained = sum(ln.startswith("completed ") for err in errs for ln in err.splitlines())
    assert trained == 6  # each of the 6 runs once, by one of the two sweeps
    claimed = [int(err.split("sweep of 6 runs: ")[1].split(" completed")[0]) for err in errs]
    assert sum(claimed) == 6  # neither summary claims a run the other trained
    runs = load_runs(tmp_path / "default")
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}


def test_overlapping_ensembles_train_the_shared_seed_once(tmp_path):
    proc = study_run(
        "-m",
        "seed=0,1",
        "ensemble=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        "train.steps=30",
        out=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    seed1 = [ln for ln in proc.stderr.splitlines() if ln.startswith("completed") and "seed=1" in ln]
    assert len(seed1) == 1
    assert sorted(load_runs(tmp_path / "default")["seed"]) == [0, 1, 2]


def test_a_running_runs_tables_are_flushed_at_each_checkpoint(tmp_path):
    """Partial curves can be read while a run trains: each checkpoint writes the tables so far,
    equal to the first rows of the finished run's tables."""
    from study.model import build_model
    from study.runs.checkpoint import CheckpointFile
    from study.tasks.adding import Adding
    from study.train import TrainSettings
    from tests.conftest import train_one

    def run(steps, checkpoint):
        model = build_model("gru", 2, 1, hidden_size=4)
        settings = TrainSettings(
            steps=steps, batch_size=4, log_every=1, eval_size=8, checkpoint_every=2
        )
        opt = functools.partial(torch.optim.Adam, lr=1e-3)
        return train_one(model, Adding(6), opt, settings, seed=0, checkpoint=checkpoint)

    records = run(5, CheckpointFile(tmp_path))  # checkpoints after steps 1 and 3
    flushed = rundir.read_table(tmp_path, "metrics")
    assert sorted(flushed["step"].unique()) == [0, 1, 2, 3]
    final = records.metrics_frame()
    pd.testing.assert_frame_equal(flushed, final[final["step"] <= 3].reset_index(drop=True))
    flow = rundir.read_table(tmp_path, "grad_flow")
    assert sorted(flow["step"].unique()) == [0, 1, 2, 3]


@pytest.mark.parametrize("probe", ["probe.jacobian_examples=2", "probe.jacobian_examples=0"])
def test_a_run_that_overflows_at_step_0_is_diverged_and_no_probe_hangs(tmp_path, probe):
    """W_hh at gain 1e300 overflows float32 to inf: the state is not finite from the first step.
    The run is marked diverged at step 0 before any probe (an SVD, an eigensolver on inf)."""
    gain = ["model.recurrent_init=orthogonal", "model.recurrent_gain=1e300"]
    proc = study_run(*TINY, *gain, probe, out=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "diverged at step 0" in proc.stdout + proc.stderr
    run = the_run(tmp_path)
    info = json.loads((run / rundir.RUN_JSON).read_text())
    assert info["status"] == "diverged" and info["diverged_at_step"] == 0


def test_a_damaged_config_that_still_parses_is_named_and_retrained(tmp_path):
    """config.yaml edited after the run (it still parses, with another lr): the checksum says
    damage, which is named and retrained, not reported as a run of another config."""
    out = tmp_path / "results"
    study_run(*TINY, out=out, check=True)
    run = the_run(out)
    config = run / rundir.CONFIG
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 0.5"))
    proc = study_run(*TINY, out=out)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "another config" not in text
    assert f"damaged default/{run.name}: {rundir.CONFIG} does not match its checksum" in text
    assert rundir.status(run) == "completed" and "lr: 0.001" in config.read_text()


def test_a_lock_left_by_another_host_says_whose_it_is_and_how_to_clear_it(tmp_path):
    out = tmp_path / "results"
    study_run(*TINY, out=out, check=True)
    run = the_run(out)
    info = json.loads((run / rundir.RUN_JSON).read_text()) | {"status": "running"}
    (run / rundir.RUN_JSON).write_text(json.dumps(info))
    (run / rundir.LOCK).write_text(json.dumps({"host": "elsewhere-42", "pid": 1}))
    proc = study_run("-m", *TINY, out=out)
    text = proc.stdout + proc.stderr
    assert "running elsewhere: pid 1 on elsewhere-42" in text
    assert f"if that process is gone, delete {run / rundir.LOCK}" in text


@pytest.mark.parametrize("holder", ["live process", "being written"])
def test_a_run_another_sweep_has_locked_but_not_started_is_running_elsewhere(tmp_path, holder):
    """A job locks every member of its ensemble before it writes their run.json: a sweep that
    ends meanwhile reads those directories as running elsewhere, not missing (which fails it)."""
    from study.runs.sweep import summarise

    run = tmp_path / "default" / "seed=1"
    run.mkdir(parents=True)
    other = subprocess.Popen(["sleep", "60"])  # a live process on this host holds the lock
    try:
        lock = {"host": socket.gethostname(), "pid": other.pid} if holder == "live process" else ""
        (run / rundir.LOCK).write_text(json.dumps(lock) if lock else "")
        counts, named = summarise([run], token=None)
    finally:
        other.kill()
        other.wait()
    assert counts == {"running elsewhere": 1} and named["running elsewhere"] == [run.name]
    (run / rundir.LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid}))
    assert summarise([run], token=None)[0] == {"missing": 1}  # its holder gone: stale


def test_a_deleted_run_json_is_named_in_the_summary(tmp_path):
    out = tmp_path / "results"
    study_run("-m", "seed=0,1", *TINY, out=out, check=True)
    run = sorted(p.parent for p in out.rglob(rundir.RUN_JSON))[0]
    (run / rundir.RUN_JSON).unlink()
    (run / rundir.CONFIG).unlink()
    from study.runs.sweep import summarise

    counts, named = summarise([run], token=None)
    assert counts["missing"] == 1 and named["missing"] == [run.name]


def test_the_readers_read_a_read_only_results_folder(tmp_path, monkeypatch):
    """Every reader on a folder it may not write into (nor into the cache): the same tables."""
    if os.geteuid() == 0:
        pytest.skip("root writes through read-only permissions")
    out = tmp_path / "results"
    study_run("-m", "model=rnn,gru", *TINY, out=out, check=True)
    expected = load_table(out / "default", "metrics", cache=False)
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    monkeypatch.setenv("STUDY_CACHE", str(out / "no-cache-here"))
    try:
        pd.testing.assert_frame_equal(load_table(out / "default", "metrics"), expected)
    finally:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path, monkeypatch):
    out = tmp_path / "results"
    study_run("-m", "model=rnn,gru", *TINY, out=out, check=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("STUDY_CACHE", str(blocker))  # a file where a folder should be
    expected = load_table(out / "default", "metrics", cache=False)
    pd.testing.assert_frame_equal(load_table(out / "default", "metrics"), expected)


def test_a_checkpoint_on_a_full_disk_says_no_space_left(tmp_path, monkeypatch):
    """torch.save's own message on a full disk is "[enforce fail at inline_container.cc:672] .
    unexpected pos"; the checkpoint names the file and the cause, as every other write does."""
    import errno
    import shutil

    from study.runs import checkpoint
    from study.train import Records

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100, 100, 0))
    store = checkpoint.CheckpointFile(tmp_path)
    with pytest.raises(OSError) as e:
        store.save({"next_step": 1, "records": Records()})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(store.path)
    assert rundir.is_disk_error(e.value)


@pytest.mark.parametrize(
    "module", ["study.read.figures", "study.read.collect", "study.read.report"]
)
def test_a_reader_with_an_out_it_cannot_write_is_one_line(tmp_path, module):
    out = tmp_path / "results"
    study_run(*TINY, out=out, check=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "report.html" if module == "study.read.report" else blocker
    proc = study_run(out, "--out", target, module=module)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2  # argparse's usage line and the error


def test_a_damaged_run_is_named_once_per_command(tmp_path):
    out = tmp_path / "results"
    study_run("-m", "model=rnn,gru", *TINY, out=out, check=True)
    run = sorted(p.parent for p in out.rglob(rundir.RUN_JSON))[0]
    (run / rundir.TABLE_FILE).write_bytes(b"damaged")
    proc = study_run(out, "--out", tmp_path / "figs", module="study.read.figures")
    assert proc.returncode == 0, proc.stderr
    named = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "damaged run" in ln]
    assert len(named) == 1 and str(run) in named[0]
