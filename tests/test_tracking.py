"""Experiment tracking (logger=tensorboard, logger=mlflow): what TensorBoard's own reader and
MLflow's own client read back holds every scalar of each run's metrics table at its step, the
gradient reach at every probe, and the run's config as hyperparameters; the tracker changes no
run's identity."""

import pytest

from study.read.learning import gradient_reach
from study.runs import rundir
from tests.conftest import study_run

TINY = ["task.length=6", "train.steps=4", "train.log_every=2", "train.eval_size=16"]
TINY += ["model.hidden_size=4"]


def _events(folder):
    """({tag: [(step, value)]}, {hyperparameter: value}) read by TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    scalars, hparams = {}, {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
        try:
            content = acc.PluginTagToContent("hparams")
        except KeyError:  # this file holds no hyperparameters
            continue
        for data in content.values():
            info = plugin_data_pb2.HParamsPluginData.FromString(data)
            if info.HasField("session_start_info"):
                for key, value in info.session_start_info.hparams.items():
                    hparams[key] = value.number_value if value.HasField("number_value") else (
                        value.string_value)  # fmt: skip
    return scalars, hparams


def test_tensorboard_logs_each_runs_scalars_and_config_under_its_run_id(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "results"
    study_run("-m", *TINY, "model=rnn,gru", "logger=tensorboard", out=out, check=True)
    for cell in ("rnn", "gru"):
        (run,) = (out / "default").glob(f"model={cell},*")  # the run id knows no logger
        assert "logger" not in run.name
        scalars, hparams = _events(out / "tensorboard" / "default" / run.name)
        metrics = rundir.read_table(run, "metrics").dropna(subset=["value"])
        for name, g in metrics.groupby("name"):
            got = scalars[f"metrics/{name}"]
            assert [s for s, _ in got] == g.step.tolist()
            assert [v for _, v in got] == pytest.approx(g.value.tolist(), rel=1e-6)
        reach = _expected_reach(run)
        assert scalars["probe/reach_earliest_evidence"][0] == (0, pytest.approx(reach, rel=1e-6))
        assert hparams["model.hidden_size"] == 4 and hparams["task.length"] == 6  # the config
        assert hparams["seed"] == 0
    again = study_run("-m", *TINY, "model=rnn,gru", out=out, check=True)  # same runs, no logger
    assert "2 skipped" in again.stdout + again.stderr


def _expected_reach(run):
    ev = rundir.read_table(run, "evidence").assign(path=run.name)
    flow = rundir.read_table(run, "grad_flow").assign(path=run.name)
    return gradient_reach(ev, flow, step=0).reach.iloc[0]


def test_mlflow_logs_each_run_by_its_run_id_and_a_retrained_run_replaces_it(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "results"
    study_run("-m", *TINY, "model=rnn,gru", "logger=mlflow", out=out, check=True)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store (conf/logger/)
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "default"]
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert len(logged) == 2
    for cell in ("rnn", "gru"):
        (run,) = (out / "default").glob(f"model={cell},*")
        got = logged[run.name]
        assert got.data.tags["study.run_id"] == run.name and got.info.status == "FINISHED"
        metrics = rundir.read_table(run, "metrics").dropna(subset=["value"])
        for name, g in metrics.groupby("name"):
            history = client.get_metric_history(got.info.run_id, f"metrics/{name}")
            assert [m.step for m in history] == g.step.tolist()
            assert [m.value for m in history] == pytest.approx(g.value.tolist(), rel=1e-6)
        (reach,) = client.get_metric_history(got.info.run_id, "probe/reach_earliest_evidence")[:1]
        assert (reach.step, reach.value) == (0, pytest.approx(_expected_reach(run), rel=1e-6))
        assert got.data.params["model.hidden_size"] == "4" and got.data.params["seed"] == "0"
    study_run(*TINY, "model=gru", "rerun=true", "logger=mlflow", out=out, check=True)
    names = [r.info.run_name for r in client.search_runs([experiment.experiment_id])]
    assert sorted(names) == sorted(logged)  # the retrained run replaced its earlier log
