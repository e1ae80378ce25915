"""A task that lives outside the repository: the user's own package plus a config directory
added with hydra.searchpath. No registry to edit."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.figures import KINDS

ROOT = Path(__file__).resolve().parent.parent

TASK = '''
import math
import torch
from study.tasks.base import Batch, Task


class FirstBit(Task):
    """Output, at the last step, the bit seen at the first step."""

    input_size, output_size, kind = 1, 2, "classification"
    metric_name, citation, solved_criterion = "accuracy", "a test", "accuracy >= 0.99"

    @property
    def baseline(self):
        return math.log(2)

    def sample(self, batch_size, generator):
        bits = torch.randint(0, 2, (batch_size, self.length), generator=generator)
        evidence = torch.zeros(batch_size, 1, dtype=torch.long)
        return Batch(x=bits.float().unsqueeze(2), y=bits[:, :1], evidence=evidence)

    def solved(self, eval_loss, eval_metric):
        return eval_metric >= 0.99
'''


@pytest.fixture
def outside(tmp_path):
    """A folder with the user's package `mytasks` and its config dir; (env, searchpath)."""
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    (tmp_path / "mytasks" / "first_bit.py").write_text(textwrap.dedent(TASK))
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "first_bit.yaml").write_text(
        "_target_: mytasks.first_bit.FirstBit\nlength: 12\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MPLBACKEND": "Agg"}
    return env, f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def run(*args, cwd, env, module="study.run"):
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_an_outside_task_runs_through_hydra_searchpath(tmp_path, outside):
    env, searchpath = outside
    args = [searchpath, "task=first_bit", "train.steps=3", "train.eval_size=16"]
    proc = run(
        *args, "model.hidden_size=8", f"out_dir={tmp_path / 'results'}", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    (run_json,) = (tmp_path / "results").rglob("run.json")
    info = json.loads(run_json.read_text())
    assert info["status"] == "completed" and info["task"] == "FirstBit"
    assert (
        info["run_id"]
        == "model.hidden_size=8,task=first_bit,train.eval_size=16,train.steps=3,seed=0"
    )


def test_an_outside_task_gets_every_figure_its_runs_support(tmp_path, outside):
    env, searchpath = outside
    args = [searchpath, "task=first_bit", "task.length=6,12", "model=rnn,lstm", "train.steps=4"]
    args += ["train.log_every=2", "train.eval_size=16", "model.hidden_size=8"]
    proc = run("-m", *args, f"out_dir={tmp_path / 'results'}", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run(
        tmp_path / "results",
        "--out",
        tmp_path / "figs",
        cwd=tmp_path,
        env=env,
        module="study.figures",
    )
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(p.stem for p in (tmp_path / "figs" / "default").glob("*.png"))
    assert drawn == sorted(set(KINDS) - {"init_setting", "matched"})
    assert "skip   default/matched: needs runs at equal H and at equal parameters" in proc.stderr
