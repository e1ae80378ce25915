"""Every model option (and two cells in GLU blocks) x every task option (and adding variant): a
few training steps with every probe on, state Jacobians included, at a tiny size. A crash here
is a crash a user would meet."""

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from study.runs.job import build
from tests.conftest import train_one

CONF = Path(__file__).resolve().parent.parent / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
MODELS += ["lru:glu", "lstm:glu"]  # in 2 GLU blocks (study/model/block.py): a stack of layers
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml") if p.stem != "adding")
TASKS += [f"adding:{v}" for v in ("arjovsky2016", "hochreiter1997", "pascanu2013", "tcn2018")]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_every_task_with_every_probe(model, task):
    """impl=fast, the default: on a left-padded task it takes the explicit loop."""
    name, _, variant = task.partition(":")
    model, _, block = model.partition(":")
    overrides = [f"model={model}", f"task={name}", "model.hidden_size=4"]
    overrides += [f"model.block={block}", "model.layers=2"] if block else []
    overrides += ["task.length=24", "train.steps=2", "train.log_every=1", "train.eval_size=8"]
    overrides += ["train.batch_size=4", "probe.jacobian_examples=2", "probe.jacobian_every=1"]
    overrides += ["probe.jacobian_lags=3", "probe.snr_batches=2"]
    if variant:
        overrides.append(f"task.variant={variant}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    job = build(cfg)
    rec = train_one(job.model, job.task, job.make_optimizer, job.settings, 0, probes=job.probes)
    assert rec.status == "completed"
    flow = rec.flow_frame()
    assert {"grad_norm", "input_grad", "jacobian_spectral", "grad_snr"} <= set(flow["quantity"])
    assert np.isfinite(flow["value"].dropna()).all()
    assert np.isfinite(rec.lyapunov_frame()["value"]).all()
    states = set(flow.loc[flow["quantity"] == "grad_norm", "state"])
    assert states == set(job.model.cell.state_names)
