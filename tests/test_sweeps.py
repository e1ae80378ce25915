"""Sweeps: launchers, failures that do not stop a sweep, resume after kill -9, aggregation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from study.model import build_model
from study.read.results import load_runs, load_table, status_table
from study.runs import rundir
from study.tasks.adding import Adding
from study.train import TrainSettings
from tests.conftest import ROOT, study_run, train_one

TINY = ["task.length=6", "train.steps=4", "train.log_every=2", "train.eval_size=32"]
TINY += ["model.hidden_size=4"]

BOOM = '''
from study.tasks.adding import Adding


class Boom(Adding):
    """The adding problem, except that length 13 raises on its third batch."""

    calls = 0

    def sample(self, batch_size, generator):
        Boom.calls += 1
        if self.length == 13 and Boom.calls > 2:
            raise RuntimeError("boom at length 13")
        return super().sample(batch_size, generator)
'''


def test_joblib_launcher_runs_a_sweep_in_parallel(tmp_path):
    proc = study_run(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model=rnn,gru",
        *TINY,
        out=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    statuses = [json.loads(p.read_text())["status"] for p in tmp_path.rglob("run.json")]
    assert statuses == ["completed", "completed"]
    assert "sweep of 2 runs: 2 completed / 0 skipped / 0 diverged / 0 failed" in proc.stderr


def test_submitit_local_executor_runs_a_sweep(tmp_path):
    proc = study_run(
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "model=lstm,gru",
        *TINY,
        out=tmp_path / "results",
    )
    assert proc.returncode == 0, proc.stderr
    runs = load_runs(tmp_path / "results")
    assert sorted(runs.cell) == ["gru", "lstm"] and set(runs.status) == {"completed"}
    assert "2 completed" in proc.stderr


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "boomtask.py").write_text(BOOM)
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "boom.yaml").write_text("_target_: boomtask.Boom\nlength: 12\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = study_run(
        "-m",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "task=boom",
        "task.length=13,12",
        *TINY[1:],
        out=tmp_path / "results",
        env=env,
    )
    assert proc.returncode == 1, proc.stderr  # after its summary: a failed run is not a success
    assert "1 completed / 0 skipped / 0 diverged / 1 failed" in proc.stderr
    config = "model.hidden_size=4,task=boom,task.length=13,train.eval_size=32,train.log_every=2"
    config += ",train.steps=4"
    assert f"failed: {config},seed=0" in proc.stderr
    info = json.loads(next((tmp_path / "results").rglob("*length=13*/run.json")).read_text())
    assert info["status"] == "failed" and "RuntimeError: boom at length 13" in info["traceback"]
    assert status_table(tmp_path / "results").set_index("config").loc[config, "failed"] == 1


def test_a_run_killed_mid_way_resumes_to_the_records_of_an_uninterrupted_run(tmp_path):
    args = ["model=gru", "task.length=8", "train.steps=1500", "train.log_every=50"]
    args += ["train.checkpoint_every=100", "train.eval_size=64", "model.hidden_size=8"]
    cmd = [sys.executable, "-m", "study.run", *args, f"out_dir={tmp_path / 'killed'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "killed").rglob("checkpoint.pt")) and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run_dir,) = [p.parent for p in (tmp_path / "killed").rglob("run.json")]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert not (run_dir / rundir.TABLE_FILE).exists()  # nothing reads as complete
    assert load_runs(tmp_path / "killed").empty

    resumed = study_run(*args, out=tmp_path / "killed")
    assert resumed.returncode == 0 and "resume" in resumed.stderr, resumed.stderr
    assert not (run_dir / "checkpoint.pt").exists()
    study_run(*args, out=tmp_path / "straight")
    for table in ("metrics", "grad_flow", "evidence", "weights"):
        a = rundir.read_table(run_dir, table)
        b = rundir.read_table(next((tmp_path / "straight").rglob("run.json")).parent, table)
        pd.testing.assert_frame_equal(a, b, check_exact=True)


class InterruptAfter:
    """A checkpoint store in memory that 'crashes' the run after its n-th save."""

    def __init__(self, n):
        self.n, self.saved = n, None

    def load(self):
        return self.saved

    def save(self, state):
        self.saved = state
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_resume_from_checkpoint_gives_identical_records_in_process():
    settings = TrainSettings(steps=30, batch_size=8, log_every=5, eval_size=32, checkpoint_every=7)

    def fresh():
        torch.manual_seed(0)
        return build_model("lstm", 2, 1, hidden_size=6)

    opt = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731
    straight = train_one(fresh(), Adding(9), opt, settings, seed=0, progress=False)
    store = InterruptAfter(2)
    try:
        train_one(fresh(), Adding(9), opt, settings, seed=0, progress=False, checkpoint=store)
    except KeyboardInterrupt:
        pass
    assert store.saved["next_step"] == 14
    store.n = -1
    resumed = train_one(fresh(), Adding(9), opt, settings, seed=0, progress=False, checkpoint=store)
    pd.testing.assert_frame_equal(
        resumed.metrics_frame(), straight.metrics_frame(), check_exact=True
    )
    pd.testing.assert_frame_equal(resumed.flow_frame(), straight.flow_frame(), check_exact=True)


def test_collect_and_cached_tables(tmp_path):
    proc = study_run("-m", "model=rnn,gru", "seed=0,1", *TINY, out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "default"
    runs = load_runs(root)
    assert len(runs) == 4 and set(runs.config) == {
        f"model={m},model.hidden_size=4,task.length=6,train.eval_size=32,train.log_every=2,"
        "train.steps=4"
        for m in ("rnn", "gru")
    }
    flow = load_table(root, "grad_flow", runs)
    assert set(flow.run_id) == set(runs.run_id) and {"config", "seed", "cell"} <= set(flow.columns)
    from study.read.results import cache_dir

    assert len(list(cache_dir(root).glob("grad_flow-*.parquet"))) == 1
    assert not list(root.rglob(".cache"))  # reading writes nothing into the results tree
    pd.testing.assert_frame_equal(load_table(root, "grad_flow"), flow)  # from the cache
    # a seed missing from one configuration shows up as missing
    gru1 = Path(next(p for p in runs.path if "model=gru" in p and p.endswith("seed=1")))
    (gru1 / "run.json").unlink()
    out = study_run(root, module="study.read.collect")
    assert out.returncode == 0, out.stderr
    assert (root / "collected" / "metrics.parquet").exists()
    seconds = sum(json.loads(p.read_text())["wall_time_s"] for p in root.glob("*/run.json"))
    assert f"run time: {seconds / 3600:.2f} h summed over the 3 finished runs" in out.stdout
    table = status_table(root).set_index("config")
    assert table.filter(like="model=gru", axis=0).iloc[0][["completed", "missing"]].tolist() == [
        1,
        1,
    ]


def test_an_ensemble_job_writes_one_run_directory_per_seed(tmp_path):
    """ensemble=3 from seed=0 writes the run directories of seeds 0, 1 and 2, named and
    filled as the single runs of those seeds; a later job skips members already done."""
    proc = study_run("-m", "model=gru", "seed=0", "ensemble=3", *TINY, out=tmp_path / "ens")
    assert proc.returncode == 0, proc.stderr
    assert "sweep of 3 runs: 3 completed / 0 skipped" in proc.stderr
    single = study_run("model=gru", "seed=1", *TINY, out=tmp_path / "one")
    assert single.returncode == 0, single.stderr

    ens, one = load_runs(tmp_path / "ens"), load_runs(tmp_path / "one")
    assert sorted(ens.seed) == [0, 1, 2] and set(ens.status) == {"completed"}
    assert set(one.run_id) < set(ens.run_id)  # the same run id as the single run of seed 1
    member = load_table(tmp_path / "ens", "metrics").query("seed == 1")
    alone = load_table(tmp_path / "one", "metrics")
    torch.testing.assert_close(
        torch.tensor(member.value.values), torch.tensor(alone.value.values), rtol=1e-4, atol=1e-6
    )
    config = next((tmp_path / "ens").rglob("*seed=2/config.yaml")).read_text()
    assert "\nseed: 2\n" in f"\n{config}"

    again = study_run("-m", "model=gru", "seed=2", "ensemble=2", *TINY, out=tmp_path / "ens")
    assert again.returncode == 0, again.stderr
    assert "sweep of 2 runs: 1 completed / 1 skipped" in again.stderr  # seed 2 done, seed 3 new


def test_overlapping_ensembles_count_each_run_once(tmp_path):
    """seed=0,1 with ensemble=2: jobs {0, 1} and {1, 2}, three runs; the summary says three."""
    tiny = ["train.steps=2", "train.log_every=1", "train.eval_size=8", "model.hidden_size=4"]
    proc = study_run("-m", "seed=0,1", "ensemble=2", "task.length=5", *tiny, out=tmp_path)
    assert "sweep of 3 runs: 3 completed / 0 skipped" in proc.stderr.splitlines()[-1]
    assert len(list((tmp_path / "default").iterdir())) == 3


def test_hydras_sweep_functions_run_through_the_real_command(tmp_path):
    """glob() (which needs the config loader to list a group), range() and choice() expand to
    the runs Hydra's basic sweeper makes, and the end-of-sweep summary counts them; a glob that
    matches nothing and interval() (only an optimising sweeper samples it) get one line."""
    out = tmp_path / "results"
    ran = study_run("-m", *TINY, "model=glob(lstm_fb*)", "seed=range(0,2)", out=out, check=True)
    runs = sorted(p.parent.name.split(",")[0] + "," + p.parent.name.split(",")[-1]
                  for p in out.rglob("run.json"))  # fmt: skip
    assert runs == [f"model=lstm_fb{b},seed={s}" for b in (1, 3) for s in (0, 1)]
    assert "sweep of 4 runs: 4 completed" in ran.stdout + ran.stderr
    again = study_run("-m", *TINY, "model=choice(lstm_fb1,lstm_fb3)", "seed=0", out=out)
    assert "sweep of 2 runs: 0 completed / 2 skipped" in again.stdout + again.stderr
    for bad, says in [
        ("model=glob(nomatch*)", "matches no model: allowed gru"),
        ("train.optimizer.lr=interval(0.001,0.01)", "cannot be enumerated by the basic sweeper"),
    ]:
        proc = study_run("-m", *TINY, bad, out=tmp_path / "bad")
        assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
            next(line for line in proc.stderr.splitlines() if says in line)
        ], proc.stderr
        assert not (tmp_path / "bad").exists()


def test_collect_counts_an_ensembles_wall_time_once(tmp_path):
    """Each member of an ensemble records the ensemble's wall time; the run time study-collect
    reports counts it once (each member its share), as the process actually ran."""
    study_run("-m", "model=rnn", "seed=0", "ensemble=2", *TINY, out=tmp_path, check=True)
    infos = [json.loads(p.read_text()) for p in (tmp_path / "default").glob("*/run.json")]
    assert len(infos) == 2 and len({i["wall_time_s"] for i in infos}) == 1  # one shared time
    from study.read.collect import process_seconds

    runs = load_runs(tmp_path / "default")
    assert process_seconds(runs) == pytest.approx(infos[0]["wall_time_s"])  # not twice over
    out = study_run(tmp_path / "default", module="study.read.collect", check=True)
    assert "h summed over the 2 finished runs (an ensemble's wall time shared" in out.stdout


def test_help_glob_and_an_unknown_option_see_the_configs_of_a_searchpath(tmp_path):
    """A task of one's own in a folder given by hydra.searchpath: --help lists it with the
    repository's, glob() sweeps reach it (Hydra's own sweeper expands a glob over conf/ only),
    and an unknown option names it among the allowed; without a searchpath, the hint says how
    to add one."""
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("_target_: study.tasks.adding.Adding\nlength: 6\n")
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    shown = study_run("--help", searchpath, check=True).stdout
    (tasks,) = [line for line in shown.splitlines() if line.startswith("task: ")]
    assert "mine" in tasks.split(": ")[1].split(", ") and "adding" in tasks
    out = tmp_path / "results"
    ran = study_run("-m", "task=glob(mi*)", searchpath, *TINY[1:], out=out, check=True)
    assert "sweep of 1 runs: 1 completed" in ran.stderr
    assert [p.parent.name for p in out.rglob("run.json")][0].startswith(
        "model.hidden_size=4,task=mine"
    )
    unknown = study_run("task=mien", searchpath, out=out).stderr.strip()
    assert unknown.startswith("error: task=mien is unknown (did you mean task=mine?): allowed")
    assert "hydra.searchpath" not in unknown  # one is given already
    hint = study_run("task=mine", out=out).stderr.strip().splitlines()
    assert len(hint) == 1 and "a task of your own: hydra.searchpath=[pkg://" in hint[0]


def test_collect_compute_sums_each_experiments_process_hours_from_run_json(tiny_study):
    """study-collect --compute: per experiment the finished runs and their process hours (an
    ensemble's wall time once), against the run.json files read here by hand."""
    out = study_run(tiny_study, "--compute", module="study.read.collect", check=True).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if "total" not in line}
    for name in ("study_lr", "study_causal"):
        infos = [json.loads(p.read_text()) for p in (tiny_study / name).glob("*/run.json")]
        hours = sum(i["wall_time_s"] / len(i.get("ensemble_seeds") or [0]) for i in infos) / 3600
        assert int(rows[name][1]) == len(infos)
        assert float(rows[name][3]) == pytest.approx(hours, abs=0.006)  # printed to 0.01 h
    assert "process-hours on cpu" in out and "with 2 workers on the CPU" in out
