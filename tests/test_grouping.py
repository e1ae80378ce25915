"""ensemble=auto (study/runs/grouping.py): the sweep's seeds in blocks, each trained once, stacked
only for the cells the committed benchmark measured a gain for; through the real command, the
same runs as without it."""

import json
import math

import pandas as pd
import pytest

from study.runs import grouping
from tests.conftest import ROOT, study_run

TINY = ["task.length=6", "model.hidden_size=4", "train.batch_size=4", "train.eval_size=8"]
TINY += ["train.steps=4", "train.log_every=2"]


@pytest.mark.parametrize("seeds", [[0], [0, 1, 2], list(range(23)), [3, 7, 8, 20, 21]])
@pytest.mark.parametrize("size", [1, 2, 10])
def test_every_seed_of_the_sweep_is_trained_by_exactly_one_job(seeds, size):
    blocks = [grouping.auto_members(s, size, seeds) for s in seeds]
    trained = [s for block in blocks for s in block]
    assert sorted(trained) == seeds  # each once
    assert all(len(b) <= size for b in blocks)
    assert sum(1 for b in blocks if b) == math.ceil(len(seeds) / size)
    assert all(b == [] or b[0] == s for s, b in zip(seeds, blocks))  # a block's first trains it


def test_outside_a_sweep_a_run_is_alone():
    assert grouping.auto_members(5, 10, []) == [5]


def test_the_cells_stacked_on_the_cpu_are_those_the_committed_table_measured_a_gain_for():
    """STACKING_PAYS["cpu"]: the cells whose ensemble path (the stacked scan where there is
    one) gained at least MIN_GAIN over single runs at every size of study_ensemble."""
    table = pd.read_csv(ROOT / "results" / "bench" / "study_ensemble.csv")
    best = table[["gain", "stacked_scan_gain"]].max(axis=1)  # NaN stacked: the gain
    paying = best.groupby(table.cell).min()
    pays = sorted(paying[paying >= grouping.MIN_GAIN].index)
    assert pays == sorted(grouping.STACKING_PAYS["cpu"])
    assert grouping.auto_size("rnn", None, "cpu") == grouping.AUTO_SIZE
    assert grouping.auto_size("lru", "glu", "cpu") == 1  # a stack of blocks: not measured
    assert grouping.auto_size("mypkg.Cell", None, "cpu") == 1  # a cell from outside
    assert grouping.auto_size("rnn", None, "cpu", cut="hidden") == 1  # a cut: not measured


def test_an_auto_sweep_stacks_what_pays_and_names_the_same_runs(tmp_path):
    args = ["-m", "model=rnn,lstm", "seed=0,1,2", *TINY]
    proc = study_run(*args, "ensemble=auto", out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "sweep of 6 runs: 6 completed" in proc.stderr
    stacked = {}
    for run in (tmp_path / "default").glob("*/run.json"):
        info = json.loads(run.read_text())
        stacked[(info["cell"], info["seed"])] = info.get("ensemble_seeds")
    assert stacked == {**{("rnn", s): [0, 1, 2] for s in range(3)},
                       **{("lstm", s): None for s in range(3)}}  # fmt: skip
    again = study_run(*args, "ensemble=1", out=tmp_path)  # the same runs: all skipped
    assert again.returncode == 0 and "sweep of 6 runs: 0 completed / 6 skipped" in again.stderr


def test_an_auto_sweep_with_an_optimiser_that_couples_members_trains_each_seed_alone(tmp_path):
    """Adafactor's factored moments would couple stacked members (study/runs/job.py ELEMENTWISE):
    with ensemble=auto the RNN's seeds, stacked with Adam, each train alone, and nothing is
    refused (ensemble=2 is refused, test_cli.py)."""
    args = ["-m", "model=rnn", "seed=0,1", *TINY, "train.optimizer._target_=torch.optim.Adafactor"]
    proc = study_run(*args, out=tmp_path)  # auto is the default
    assert proc.returncode == 0, proc.stderr
    assert "sweep of 2 runs: 2 completed" in proc.stderr
    infos = [json.loads(p.read_text()) for p in (tmp_path / "default").glob("*/run.json")]
    assert sorted(i["seed"] for i in infos) == [0, 1]
    assert all(i.get("ensemble_seeds") is None for i in infos)
