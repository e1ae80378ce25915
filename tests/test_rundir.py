"""Run identity: what makes two configs the same run."""

from pathlib import Path

from study.runs import rundir


def test_a_null_key_is_the_same_identity_as_an_absent_one():
    """Adding `chrono: null` to a model YAML must leave runs computed before it valid."""
    before = {"model": {"cell": "lstm", "hidden_size": 8}, "seed": 0}
    after = {"model": {"cell": "lstm", "hidden_size": 8, "chrono": None}, "seed": 0}
    assert rundir.identity(before) == rundir.identity(after)
    changed = {"model": {"cell": "lstm", "hidden_size": 8, "chrono": 100}, "seed": 0}
    diff = rundir.identity_diff(rundir.identity(before), rundir.identity(changed))
    assert diff == ["model.chrono ('<absent>' -> 100)"]
    assert rundir.identity({**before, "threads": 4, "out_dir": "x"}) == rundir.identity(before)


def test_flatten_gives_what_pandas_json_normalize_gives_for_every_committed_config():
    """rundir.flatten replaced pd.json_normalize in the readers (20x faster): the same keys,
    values and types for every committed config, so no run's identity moves."""
    import json

    import pandas as pd

    from tests.conftest import ROOT

    configs = sorted((ROOT / "results" / "reference").glob("*/*/config.yaml"))
    assert len(configs) > 1000
    for path in configs:
        cfg = rundir.read_config(path.parent)
        want = pd.json_normalize(cfg, sep=".").iloc[0].to_dict()
        got = rundir.flatten(cfg)
        assert json.dumps(got, sort_keys=True, default=repr) == json.dumps(
            want, sort_keys=True, default=repr
        ), path
    assert rundir.flatten({"a": {}, "b": {"c": None, "d": [1]}}) == {"b.c": None, "b.d": [1]}


# ---- compacting runs written by earlier versions -------------------------------------------------
def _old_format_copy(tiny_study, tmp_path):
    """A finished run as earlier versions wrote it: grad_flow with the q10/q90 statistics,
    evidence with grad_norm_h, default parquet encoding, sealed with those checksums."""
    import shutil

    import pandas as pd

    source = next((tiny_study / "study_adding").glob("model=lstm_chrono,*"))
    run = Path(shutil.copytree(source, tmp_path / "old" / source.name))
    flow = pd.read_parquet(run / "grad_flow.parquet")
    median = flow[flow.stat == "median"]
    extra = [median.assign(stat=s, value=median.value * f) for s, f in (("q10", 0.5), ("q90", 2))]
    pd.concat([flow, *extra], ignore_index=True).to_parquet(run / "grad_flow.parquet", index=False)
    ev = pd.read_parquet(run / "evidence.parquet")
    hidden = ev.assign(quantity="grad_norm_h", value=ev.value * 3)
    pd.concat([ev, hidden], ignore_index=True).to_parquet(run / "evidence.parquet", index=False)
    info = rundir.read_run_json(run)
    rundir.seal(run, {k: v for k, v in info.items() if k != "checksums"})
    assert rundir.status(run) == "completed"
    return source, run


def test_compact_drops_only_unread_rows_and_reseals(tiny_study, tmp_path):
    import pandas as pd

    source, run = _old_format_copy(tiny_study, tmp_path)
    before = {f: (run / f).stat().st_size for f in rundir.TABLES.values() if (run / f).exists()}
    assert rundir.compact(run) == "compacted"
    assert rundir.status(run) == "completed" and rundir.damage(run) is None
    for file in rundir.TABLES.values():
        if (source / file).exists():  # every kept row, bit for bit, as this version wrote it
            got, want = pd.read_parquet(run / file), pd.read_parquet(source / file)
            pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert (run / "grad_flow.parquet").stat().st_size < before["grad_flow.parquet"]
    info, old = rundir.read_run_json(run), rundir.read_run_json(source)
    assert {k: v for k, v in info.items() if k != "checksums"} == {
        k: v for k, v in old.items() if k != "checksums"
    }
    assert info["checksums"] == {f: rundir.sha256(run / f) for f in info["checksums"]}
    assert rundir.compact(run) == "compact"  # twice is once


def test_compact_leaves_damaged_and_unfinished_runs_alone(tiny_study, tmp_path):
    _, run = _old_format_copy(tiny_study, tmp_path)
    flow = run / "grad_flow.parquet"
    flow.write_bytes(flow.read_bytes()[:-10])  # truncated: a fault to report, not to reseal
    damaged = flow.read_bytes()
    assert rundir.compact(run) == "left alone: damaged" and flow.read_bytes() == damaged
    info = rundir.read_run_json(run)
    rundir.write_json(run / rundir.RUN_JSON, {**info, "status": "running"})
    assert rundir.compact(run) == "left alone: running" and flow.read_bytes() == damaged


def test_study_collect_compact_reports_each_experiment(tiny_study, tmp_path):
    from tests.conftest import study_run

    _, run = _old_format_copy(tiny_study, tmp_path)
    proc = study_run(tmp_path / "old", "--compact", module="study.read.collect", check=True)
    assert proc.stdout.startswith("old: 1 compacted; ") and "MiB on disk" in proc.stdout
    proc = study_run(tmp_path / "old", "--compact", module="study.read.collect", check=True)
    assert proc.stdout.startswith("old: 1 compact; ")


def test_every_committed_run_is_compact():
    """The committed (finished) reference runs hold only the rows the readers use (rundir.KEEP)."""
    import pyarrow.parquet as pq

    from tests.conftest import ROOT

    for table, (column, kept) in rundir.KEEP.items():
        runs = (ROOT / "results" / "reference").glob(f"*/*/{rundir.RUN_JSON}")
        files = [r.parent / rundir.TABLES[table] for r in runs if rundir.is_finished(r.parent)]
        assert len(files) > 1000
        values = set()
        for f in files:
            values |= set(pq.read_table(f, columns=[column]).column(column).unique().to_pylist())
        assert values <= set(kept), (table, values - set(kept))
