"""A task and a cell that live outside the repository: the user's own package plus a config
directory added with hydra.searchpath. No registry to edit."""

import json
import os
import textwrap

import pytest

from study.read.figures import KINDS
from study.read.results import load_runs, load_table
from tests.conftest import study_run

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
    return study_run(*args, cwd=cwd, env=env, module=module, timeout=300)


def figures(tmp_path, env):
    """study-figures on <tmp_path>/results, the PNGs to <tmp_path>/figs."""
    return run(
        tmp_path / "results",
        "--out",
        tmp_path / "figs",
        cwd=tmp_path,
        env=env,
        module="study.read.figures",
    )


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
    proc = figures(tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    drawn = sorted(p.stem for p in (tmp_path / "figs" / "default").glob("*.png"))
    study = {k for k in KINDS if k.startswith("study_")}  # they need train.stop_on_solve
    study |= {k for k in KINDS if k.startswith("causal_")}  # they need a gradient-path cut
    assert drawn == sorted(set(KINDS) - {"init_setting", "matched", "gradient_snr"} - study)
    assert "skip   default/matched: needs runs at equal H and at equal parameters" in proc.stderr


CELL = '''
import torch
from study.model.cells import Cell, hold


class LeakyCell(Cell):
    """Leaky tanh RNN: h_t = (1 - a) h_{t-1} + a tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    n_gates, kind, block_names = 1, "leaky", "h"

    def __init__(self, input_size, hidden_size, leak=0.5):
        self.leak = leak
        super().__init__(input_size, hidden_size)

    def step(self, gx, state, keep=None):
        (h,) = state
        a = torch.addmm(gx + self.bias_hh_l0, h, self.weight_hh_l0.t())
        h_new = (1 - self.leak) * h + self.leak * torch.tanh(a)
        return (hold(h_new, h, keep),), {}
'''


def test_an_outside_cell_is_one_class_and_one_yaml(tmp_path):
    (tmp_path / "mycells").mkdir()
    (tmp_path / "mycells" / "__init__.py").write_text("")
    (tmp_path / "mycells" / "leaky.py").write_text(textwrap.dedent(CELL))
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "leaky.yaml").write_text(  # the guide's recipe, as written
        "defaults:\n  - base/recurrence@_here_\n  - _self_\n"
        "cell: mycells.leaky.LeakyCell\nhidden_size: 8\noptions:\n  leak: 0.3\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MPLBACKEND": "Agg"}
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    args = [searchpath, "model=leaky,gru", "model.match_params=400", "task.length=6,12"]
    args += ["train.steps=4", "train.log_every=2", "train.eval_size=16"]
    proc = run("-m", *args, f"out_dir={tmp_path / 'results'}", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    runs = load_runs(tmp_path / "results")
    leaky = runs[runs.cell == "leaky"]
    assert len(leaky) == 2 and set(leaky.status) == {"completed"}
    # matched: H from the count of the cell's own parameters (1 block: 2H + H^2 + 2H, readout H + 1)
    H = int(leaky.hidden_size.iloc[0])
    assert abs((3 * H + H * H + 2 * H + H + 1) - 400) <= 2 * H + 4
    flow = load_table(tmp_path / "results", "grad_flow", runs)
    assert (flow[flow.cell == "leaky"].quantity == "grad_norm").any()
    proc = figures(tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "figs" / "default" / "success_vs_lag.png").exists()
