"""Every config composes and builds; every key is documented; --help explains."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from study.runs.job import build
from tests.conftest import study_run

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIONS = [
    f"{group.name}={path.stem}"
    for group in sorted(CONF.iterdir())
    if group.is_dir() and group.name != "hydra"
    for path in sorted(group.glob("*.yaml"))
]


@pytest.mark.parametrize("override", OPTIONS)
def test_every_option_composes_and_builds(override):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[override], return_hydra_config=True)
    job = build(cfg)
    assert job.model.n_params() > 0 and job.task.baseline > 0


@pytest.mark.parametrize(
    "path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF))
)
def test_every_key_has_a_one_line_comment(path):
    block = None  # indentation of a block scalar (|) whose text lines are not keys
    for line in path.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        if block is not None and (not line.strip() or indent > block):
            continue
        block = None
        key = re.match(r"^\s*([A-Za-z_][\w.]*):\s*(\S.*)?$", line)
        if key is not None and (key.group(2) or "").startswith("|"):
            block = indent
        if key is None or key.group(1) in ("defaults", "_target_", "_partial_", "hydra"):
            continue
        if line.strip().startswith("#") or key.group(1) in ("sweeper", "params", "help"):
            continue
        value = key.group(2) or ""
        nested = value == "" or value.startswith("|")
        assert "#" in line or nested, f"{path.name}: undocumented key: {line.strip()}"


def test_help_explains_the_command():
    out = study_run("--help", timeout=60).stdout
    assert out.startswith("study: matched recurrent cells (RNN, LSTM, GRU, minGRU")
    assert "model: gru, gru_chrono, irnn, lru, lstm" in out and "task: adding, copy_memory" in out


EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_its_first_job_trains(name):
    """Globbed: a new experiment file is covered without editing this test. The experiment's
    sweep is expanded as Hydra's basic sweeper does; its first job is composed, shrunk to a tiny
    size and trained with every probe it asks for."""
    from study.runs.sweep import sweep_jobs
    from tests.conftest import train_one

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(
            config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True
        )
        jobs = sweep_jobs(base, [f"experiment={name}"])
        assert jobs, name
        tiny = ["model.hidden_size=4", "train.batch_size=4", "train.eval_size=8", "task.length=24"]
        tiny += ["train.steps=2", "train.log_every=1"]
        cfg = compose(config_name="config", overrides=jobs[0] + tiny)
    job = build(cfg, check_task=True)
    args = (job.model, job.task, job.make_optimizer, job.settings, cfg.seed)
    rec = train_one(*args, probes=job.probes)
    assert rec.status == "completed" and len(rec.flow_frame())


def test_the_chrono_lstm_of_copy_memory_at_h128_gets_t_max_three_halves_of_t():
    """study_copy_wide_chrono: T_max = 3T/2 at each T of its sweep (the `times` resolver), the
    chrono LSTM at its tuned rate, H = 128, into study_copy_wide's folder."""
    from study.runs.sweep import sweep_jobs

    name = "experiment=study_copy_wide_chrono"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        base = compose(config_name="config", overrides=[name], return_hydra_config=True)
        jobs = sweep_jobs(base, [name])
        cfgs = [compose(config_name="config", overrides=job) for job in jobs]
    assert sorted(c.task.length for c in cfgs) == [50] * 5 + [100] * 5 + [200] * 5
    for cfg in cfgs:
        assert cfg.model.chrono == 1.5 * cfg.task.length and cfg.model.cell == "lstm"
        assert cfg.model.hidden_size == 128 and cfg.train.optimizer.lr == 0.1
        assert cfg.experiment_dir == "study_copy_wide" and cfg.ensemble == "auto"
    assert sorted(c.seed for c in cfgs) == sorted(list(range(5)) * 3)


def test_the_tiny_study_runs_every_experiment_that_a_figure_reads():
    from study.read.figures import FIGURES
    from tests.conftest import EXPERIMENTS as TINY

    read = {e for _, experiments in FIGURES.values() for e in experiments} - {"quick"}
    assert read <= set(TINY)


def test_make_reference_runs_experiments_and_nothing_else():
    """Every sweep of the reference study is one conf/experiment file: the Makefile lists their
    names and its reference recipe runs `experiment=$$e` for each, with no grid of its own."""
    make = (CONF.parent / "Makefile").read_text()
    names = [n for line in make.splitlines() if line.startswith("REFERENCE ")
             for n in line.split("=", 1)[1].split()]  # fmt: skip
    assert names and set(names) <= set(EXPERIMENTS)
    recipe = make.split("\nreference:")[1].split("\n\n")[0]
    runs = [line for line in recipe.splitlines() if "study.run" in line]
    assert len(runs) == 1 and "experiment=$$e out_dir=results/reference $(PARALLEL)" in runs[0]
    assert "task." not in recipe and "model=" not in recipe and "seed=" not in recipe


@pytest.mark.parametrize(
    "overrides",
    [["experiment=study_adding_long"], ["experiment=study_lr", "model=rnn,lstm_cec,minlstm"]],
    ids=["study_adding_long", "study_lr"],
)
def test_the_experiments_that_replaced_makefile_lines_find_their_committed_runs(overrides):
    """study_adding_long (once LONG_LAGS) and study_lr with its ensembles (once two LR_WINDOW
    lines, some cells alone) compose to the stored config of every committed run they name, and
    name runs that exist: `make reference` skips them."""
    from study.run import _compose, check_sweep_identity
    from study.runs import grouping, rundir
    from study.runs.sweep import sweep_jobs

    out = f"out_dir={CONF.parent / 'results' / 'reference'}"
    base = _compose([overrides[0], out], hydra_config=True)  # the experiment, no sweep
    overrides = [*overrides, out]
    check_sweep_identity(base, overrides)  # raises ConfigError on a config that differs
    folder = rundir.experiment_folder(base.hydra.runtime.choices.experiment, base.experiment_dir)
    for job in sweep_jobs(base, overrides):
        seed = int(dict(o.split("=", 1) for o in job)["seed"])
        members = grouping.listed_members(base.ensemble)
        for d in rundir.job_run_dirs(base.out_dir, folder, job, seed, members).values():
            assert rundir.status(d) in rundir.FINISHED, d
