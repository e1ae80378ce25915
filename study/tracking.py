"""Experiment tracking in the tools researchers already use (optional: `logger=tensorboard`).

A tracker receives each run once its directory is sealed (completed or diverged), so what it
shows is exactly what the run directory holds: every scalar of metrics.parquet against the
training step (train and eval loss, gradient norm, the top Lyapunov exponent, solved, ...), the
gradient reaching the earliest evidence (the study's "reach", study.learning.gradient_reach) at
every probe, and the run's config as hyperparameters, under its run id. Logging at the end of a
run, not live, keeps one source of truth and costs the training loop nothing; a sweep's runs
appear as they finish. The writer is the library's own (torch.utils.tensorboard); the tests
read the files back with TensorBoard's reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from study import rundir
from study.learning import gradient_reach


def run_scalars(run_dir: Path) -> pd.DataFrame:
    """(tag, step, value) of one run: metrics.parquet as "metrics/<name>", and the gradient
    reach at every probe step as "probe/reach_earliest_evidence"."""
    run_dir = Path(run_dir)
    m = pd.read_parquet(run_dir / "metrics.parquet")
    rows = [m.assign(tag="metrics/" + m.name)[["tag", "step", "value"]]]
    evidence, flow = run_dir / "evidence.parquet", run_dir / "grad_flow.parquet"
    if evidence.exists() and flow.exists():
        ev = pd.read_parquet(evidence).assign(path=run_dir.name)
        fl = pd.read_parquet(flow).assign(path=run_dir.name)
        tag = "probe/reach_earliest_evidence"
        for step in sorted(ev.step[ev.quantity == "input_grad"].unique()):
            reach = gradient_reach(ev, fl, None, step=int(step)).reach
            if len(reach) and pd.notna(reach.iloc[0]):
                rows.append(pd.DataFrame({"tag": [tag], "step": [step], "value": [reach.iloc[0]]}))
    return pd.concat(rows, ignore_index=True).dropna(subset=["value"])


def hyperparameters(run_dir: Path) -> dict:
    """The run's identity (its config, flattened; study.rundir.identity) with the seed, as the
    plain values TensorBoard's hparams take."""
    config = yaml.safe_load((Path(run_dir) / rundir.CONFIG).read_text())
    flat = {**rundir.identity(config), "seed": config.get("seed")}
    plain = (int, float, str, bool)
    return {k: v if isinstance(v, plain) else json.dumps(v) for k, v in flat.items()}


class TensorBoard:
    """Writes <log_dir>/<experiment>/<run id>/ event files: open with
    `tensorboard --logdir <log_dir>`."""

    def __init__(self, log_dir: str):
        self.log_dir = Path(log_dir)

    def log_run(self, run_dir: Path, experiment: str) -> Path:
        from torch.utils.tensorboard import SummaryWriter  # needs `tensorboard` (pip)

        run_dir = Path(run_dir)
        where = self.log_dir / experiment / run_dir.name
        info = rundir.read_run_json(run_dir) or {}
        with SummaryWriter(log_dir=str(where)) as writer:
            for row in run_scalars(run_dir).itertuples():
                writer.add_scalar(row.tag, float(row.value), int(row.step))
            final = {"final/eval_loss": float(info.get("eval_loss") or float("nan"))}
            final["final/solved"] = float(bool(info.get("solved")))
            writer.add_hparams(hyperparameters(run_dir), final, run_name=".")
        return where
