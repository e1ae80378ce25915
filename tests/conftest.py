"""Shared test helpers: the repository root, the real command in a subprocess, tiny models."""

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from study.model import build_model
from tests import forked_command

ROOT = Path(__file__).resolve().parent.parent
# the readers' table cache (study.read.results.cache_dir) of this test session, apart from the
# user's; the commands the tests start inherit it
os.environ.setdefault("STUDY_CACHE", tempfile.mkdtemp(prefix="study-cache-"))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def study_run(*args, out: Path | None = None, module="study.run", timeout=600, check=False,
              fresh=False, **kw):  # fmt: skip
    """`python -m MODULE ARGS out_dir=OUT` from the repository root (the one runner of every
    test that starts the real command); the CompletedProcess. check: raise with its stderr if
    it exits nonzero. It runs in a child forked from a process that has imported torch already
    (tests/forked_command.py: the same command without its seconds of start-up), unless
    `fresh` or its PYTHONPATH differs from this process's: then in a new interpreter."""
    args = [*map(str, args), *([f"out_dir={out}"] if out is not None else [])]
    kw.setdefault("cwd", ROOT)
    env = kw.get("env", os.environ)
    forkable = set(kw) <= {"cwd", "env"} and not fresh
    if forkable and env.get("PYTHONPATH") == os.environ.get("PYTHONPATH"):
        with tempfile.TemporaryDirectory(prefix="study-cmd-") as scratch:
            proc = forked_command.run(module, args, kw["cwd"], dict(env), timeout, Path(scratch))
    else:
        cmd = [sys.executable, "-m", module, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{proc.args} failed:\n{proc.stderr}")
    return proc


def train_one(model, task, make_optimizer, settings, seed, probes=None, progress=None,
              checkpoint=None, device="cpu"):  # fmt: skip
    """study.train.train for one model (an ensemble of one, as the job trains it): its records."""
    from study.model.ensemble import Single
    from study.train import train

    members, checkpoints = Single(model), [checkpoint]
    return train(members, task, make_optimizer, settings, [seed], probes, progress, checkpoints,
                 device)[0]  # fmt: skip


def small_model(cell: str, input_size=2, hidden=5, output=1, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cell, input_size, output, hidden_size=hidden, **kw).to(dtype)


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, worker_id):
    """Every experiment of the study, tiny, run once per test session through the real command.
    Under pytest-xdist (`make test` runs 2 workers) the first worker that needs it builds it in
    the session's shared temporary folder, under a file lock, and the others read it: the tests
    only read it."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # a worker's basetemp is one folder of the session's
        shared = shared.parent
    root, done = shared / "tiny_study", shared / "tiny_study.done"
    with FileLock(shared / "tiny_study.lock"):
        if not done.exists():
            make_tiny_study(root)
            done.touch()
    return root


# ---- a tiny version of every experiment of the study, run through the real command ----------
COMMON = ["train.eval_size=32", "model.hidden_size=4", "train.batch_size=8"]
TRAINED = ["train.steps=4", "train.log_every=2"]
EXPERIMENTS = {
    "init_ratio": ["task.length=8", "seed=0", "model=rnn,lstm,lstm_cec,gru,mingru,lru"],
    "init_rnn_scale": ["task.length=8", "seed=0", "model.recurrent_gain=0.5,1.5"],
    "init_lstm_forget_bias": ["task.length=8", "seed=0", "model.forget_bias=0,3"],
    "lags_adding": [*TRAINED, "task.length=5,10", "seed=0,1"],
    "lags_copy": [*TRAINED, "task.length=3,6", "seed=0"],
    "memory_path": [*TRAINED, "task.length=8"],
    "matched": [*TRAINED, "task.length=8", "seed=0", "model.match_params=null,300"],
    "dynamics": [*TRAINED, "task.length=8", "seed=0", "model=rnn,lstm,lru", "probe.snr_batches=3"],
    "study_adding": [*TRAINED, "task.length=5,10", "seed=0,1", "model=rnn,lstm_chrono"],
    "study_lr": [
        *TRAINED,
        "task.length=5",
        "seed=0",
        "ensemble=2",  # the experiment's ensembles of 5, of 2: seeds 0 and 1
        "model=rnn,gru",
        "train.optimizer.lr=1e-3,1e-2,1e-1",  # 3 rates: a window sweep (study/read/windows.py)
    ],
    "study_lr_lag": [
        *TRAINED,
        "task.length=5,10",
        "ensemble=1",
        "model=rnn,gru",
        "train.optimizer.lr=1e-3,1e-2",
    ],
    "study_copy": [*TRAINED, "task.length=3,6", "seed=0", "model=rnn,lstm_chrono"],
    # each cell at its own rate: two cells, one ensemble of 2 each, beside study_adding's RNN
    "study_tuned": [*TRAINED, "task.length=5", "seed=0", "ensemble=2", "tuned=rnn,gru"],
    # ensembles of 5 (the experiment's own setting), two cells, every arm
    "study_causal": [*TRAINED, "task.length=5,10", "seed=0", "model=lstm_fb1,gru"],
    "study_causal_floor": [*TRAINED, "task.length=5,10", "seed=0"],
    "study_causal_1997": [*TRAINED, "task.length=30", "seed=0", "train.stream_window=8"],
}


def make_tiny_study(out: Path) -> None:
    """Two experiments at a time (each its own sweep into its own folder of `out`, as concurrent
    sweeps may): the other test worker is often waiting for this fixture too."""

    def sweep(name: str) -> None:
        proc = study_run("-m", f"experiment={name}", *COMMON, *EXPERIMENTS[name], out=out)
        if proc.returncode != 0 or "/ 0 failed" not in proc.stderr.splitlines()[-1]:
            raise RuntimeError(f"{name} failed:\n{proc.stderr}")

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(sweep, EXPERIMENTS))  # list(): re-raises the first failure
