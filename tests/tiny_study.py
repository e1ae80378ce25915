"""Tiny versions of every experiment of the study, run through the real command into one folder."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["train.eval_size=32", "model.hidden_size=4", "train.batch_size=8"]
TRAINED = ["train.steps=4", "train.log_every=2"]
EXPERIMENTS = {
    "init_ratio": ["task.length=8", "seed=0", "model=rnn,lstm,lstm_cec,gru"],
    "init_rnn_scale": ["task.length=8", "seed=0", "model.recurrent_gain=0.5,1.5"],
    "init_lstm_forget_bias": ["task.length=8", "seed=0", "model.forget_bias=0,3"],
    "lags_adding": [*TRAINED, "task.length=5,10", "seed=0,1"],
    "lags_copy": [*TRAINED, "task.length=3,6", "seed=0"],
    "memory_path": [*TRAINED, "task.length=8"],
    "matched": [*TRAINED, "task.length=8", "seed=0", "model.match_params=null,300"],
}


def make_tiny_study(out: Path) -> None:
    for name, overrides in EXPERIMENTS.items():
        cmd = [sys.executable, "-m", "study.run", "-m", f"experiment={name}", *COMMON, *overrides]
        proc = subprocess.run(
            [*cmd, f"out_dir={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if proc.returncode != 0 or "/ 0 failed" not in proc.stderr.splitlines()[-1]:
            raise RuntimeError(f"{name} failed:\n{proc.stderr}")
