"""A task that lives outside the repository: the user's own package plus a config directory
added with hydra.searchpath. No registry to edit."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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


def test_an_outside_task_runs_through_hydra_searchpath(tmp_path):
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    (tmp_path / "mytasks" / "first_bit.py").write_text(textwrap.dedent(TASK))
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "first_bit.yaml").write_text(
        "_target_: mytasks.first_bit.FirstBit\nlength: 12\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [
        sys.executable,
        "-m",
        "study.run",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "task=first_bit",
        "train.steps=3",
        "train.eval_size=16",
        "model.hidden_size=8",
        f"out_dir={tmp_path / 'results'}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_json,) = (tmp_path / "results").rglob("run.json")
    info = json.loads(run_json.read_text())
    assert info["status"] == "completed" and info["task"] == "FirstBit"
    assert (
        info["run_id"]
        == "model.hidden_size=8,task=first_bit,train.eval_size=16,train.steps=3,seed=0"
    )
