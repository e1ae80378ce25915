"""Experiment tracking in the tools researchers already use (optional: `logger=tensorboard`,
`logger=mlflow`).

A tracker receives each run once its directory is sealed (completed or diverged), so what it
shows is exactly what the run directory holds: every scalar of its metrics table against the
training step (train and eval loss, gradient norm, the top Lyapunov exponent, solved, ...), the
gradient reaching the earliest evidence (the study's "reach", study.read.learning.gradient_reach) at
every probe, and the run's config as hyperparameters, under its run id. Logging at the end of a
run, not live, keeps one source of truth and costs the training loop nothing; a sweep's runs
appear as they finish. The writers are the libraries' own (torch.utils.tensorboard, MLflow's
client); the tests read the logs back with their own readers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from study.read.learning import gradient_reach
from study.runs import rundir


def run_scalars(run_dir: Path) -> pd.DataFrame:
    """(tag, step, value) of one run: its metrics table as "metrics/<name>", and the gradient
    reach at every probe step as "probe/reach_earliest_evidence"."""
    run_dir = Path(run_dir)
    m = rundir.read_table(run_dir, "metrics")
    rows = [m.assign(tag="metrics/" + m.name)[["tag", "step", "value"]]]
    evidence, flow = rundir.read_table(run_dir, "evidence"), rundir.read_table(run_dir, "grad_flow")
    if evidence is not None and flow is not None:
        ev, fl = evidence.assign(path=run_dir.name), flow.assign(path=run_dir.name)
        tag = "probe/reach_earliest_evidence"
        for step in sorted(ev.step[ev.quantity == "input_grad"].unique()):
            reach = gradient_reach(ev, fl, step=int(step)).reach
            if len(reach) and pd.notna(reach.iloc[0]):
                rows.append(pd.DataFrame({"tag": [tag], "step": [step], "value": [reach.iloc[0]]}))
    return pd.concat(rows, ignore_index=True).dropna(subset=["value"])


def hyperparameters(run_dir: Path) -> dict:
    """The run's identity (its config, flattened; study.runs.rundir.identity) with the seed, as the
    plain values TensorBoard's hparams take."""
    config = rundir.read_config(run_dir)
    flat = {**rundir.identity(config), "seed": config.get("seed")}
    plain = (int, float, str, bool)
    return {k: v if isinstance(v, plain) else json.dumps(v) for k, v in flat.items()}


def final_scalars(info: dict) -> dict[str, float]:
    """The run's outcome from its run.json: the final evaluation loss (NaN if none) and solved."""
    loss = info.get("eval_loss")
    return {
        "final/eval_loss": float("nan") if loss is None else float(loss),
        "final/solved": float(bool(info.get("solved"))),
    }


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
            writer.add_hparams(hyperparameters(run_dir), final_scalars(info), run_name=".")
        return where


class MLflow:
    """Logs each run as an MLflow run named by its run id (tag `study.run_id`) in an MLflow
    experiment named after the study's, in a local file store at <tracking_dir>; a retrained
    run replaces its earlier MLflow run. Needs `pip install mlflow-skinny` (or mlflow); open
    with `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri <tracking_dir>` (the `ui`
    needs the full `mlflow`). MLflow 3 keeps the file store in maintenance mode behind that
    variable; it is set here for the store this logger writes, nothing is sent anywhere."""

    BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, tracking_dir: str):
        self.uri = Path(tracking_dir).resolve().as_uri()

    def client(self):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient  # needs `mlflow-skinny` (pip)

        return MlflowClient(tracking_uri=self.uri)

    def log_run(self, run_dir: Path, experiment: str) -> str:
        from mlflow.entities import Metric, Param

        run_dir, client = Path(run_dir), self.client()
        experiment_id = self._experiment(client, experiment)
        for old in client.search_runs([experiment_id], f"tags.`study.run_id` = '{run_dir.name}'"):
            client.delete_run(old.info.run_id)  # a retrained run replaces what it logged before
        info = rundir.read_run_json(run_dir) or {}
        run = client.create_run(
            experiment_id, run_name=run_dir.name, tags={"study.run_id": run_dir.name}
        )
        now = int(time.time() * 1000)
        metrics = [
            Metric(r.tag, float(r.value), now, int(r.step))
            for r in run_scalars(run_dir).itertuples()
        ]
        metrics += [Metric(tag, value, now, 0) for tag, value in final_scalars(info).items()]
        params = [Param(k, str(v)) for k, v in hyperparameters(run_dir).items()]
        client.log_batch(run.info.run_id, params=params)
        for i in range(0, len(metrics), self.BATCH):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + self.BATCH])
        client.set_terminated(run.info.run_id, status="FINISHED")
        return f"{self.uri} (experiment {experiment}, run {run.info.run_id})"

    @staticmethod
    def _experiment(client, name: str) -> str:
        """The MLflow experiment's id, created on first use (two workers may race to it)."""
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # created meanwhile by another worker of the sweep
            return client.get_experiment_by_name(name).experiment_id
