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
    """A finished run as earlier versions wrote it: a Parquet file per table beside run.json,
    grad_flow with the q10/q90 statistics, evidence with grad_norm_h, default parquet encoding,
    sealed with those checksums."""
    import shutil

    import pandas as pd

    source = next((tiny_study / "study_adding").glob("model=lstm_chrono,*"))
    run = Path(shutil.copytree(source, tmp_path / "old" / source.name))
    tables = rundir.read_tables(run)
    flow = tables["grad_flow"]
    median = flow[flow.stat == "median"]
    extra = [median.assign(stat=s, value=median.value * f) for s, f in (("q10", 0.5), ("q90", 2))]
    tables["grad_flow"] = pd.concat([flow, *extra], ignore_index=True)
    ev = tables["evidence"]
    tables["evidence"] = pd.concat([ev, ev.assign(quantity="grad_norm_h", value=ev.value * 3)])
    for name, frame in tables.items():
        frame.to_parquet(run / rundir.LEGACY_TABLES[name], index=False)
    (run / rundir.TABLE_FILE).unlink()
    info = rundir.read_run_json(run)
    rundir.seal(run, {k: v for k, v in info.items() if k != "checksums"})
    assert rundir.status(run) == "completed" and set(rundir.read_tables(run)) == set(tables)
    return source, run


def test_compact_drops_only_unread_rows_packs_the_tables_and_reseals(tiny_study, tmp_path):
    import pandas as pd

    source, run = _old_format_copy(tiny_study, tmp_path)
    legacy = [run / f for f in rundir.LEGACY_TABLES.values()]
    before = sum(f.stat().st_size for f in legacy)
    assert rundir.compact(run) == "compacted"
    assert rundir.status(run) == "completed" and rundir.damage(run) is None
    assert not any(f.exists() for f in legacy) and (run / rundir.TABLE_FILE).exists()
    for name in rundir.TABLES:  # every kept row, bit for bit, as this version wrote it
        got, want = rundir.read_table(run, name), rundir.read_table(source, name)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert (run / rundir.TABLE_FILE).read_bytes() == (source / rundir.TABLE_FILE).read_bytes()
    assert (run / rundir.TABLE_FILE).stat().st_size < before
    info, old = rundir.read_run_json(run), rundir.read_run_json(source)
    assert {k: v for k, v in info.items() if k != "checksums"} == {
        k: v for k, v in old.items() if k != "checksums"
    }
    assert set(info["checksums"]) == {rundir.CONFIG, rundir.TABLE_FILE}
    assert info["checksums"] == {f: rundir.sha256(run / f) for f in info["checksums"]}
    assert rundir.compact(run) == "compact"  # twice is once


def test_the_tables_file_is_a_zip_of_parquet_files_any_reader_opens(tiny_study):
    """Read with the standard library's zipfile and pyarrow, not with rundir.read_table."""
    import io
    import zipfile

    import pyarrow.parquet as pq

    run = next((tiny_study / "study_adding").glob("model=lstm_chrono,*"))
    with zipfile.ZipFile(run / rundir.TABLE_FILE) as z:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
        assert z.namelist() == [f"{name}.parquet" for name in rundir.TABLES]
        metrics = pq.read_table(io.BytesIO(z.read("metrics.parquet"))).to_pandas()
    assert list(metrics.columns) == ["step", "name", "value"] and len(metrics) > 0


def test_a_compact_cut_short_before_its_reseal_reads_as_damaged(tiny_study, tmp_path):
    _, run = _old_format_copy(tiny_study, tmp_path)
    rundir.write_tables(run, rundir.read_tables(run))  # packed, legacy files gone, not resealed
    assert rundir.status(run) == "damaged" and "is missing" in rundir.damage(run)
    _, run = _old_format_copy(tiny_study, tmp_path / "b")
    (run / rundir.TABLE_FILE).write_bytes((tiny_study / "x").as_posix().encode())  # unsealed
    assert rundir.status(run) == "damaged" and "not among the files" in rundir.damage(run)


def test_compact_leaves_damaged_and_unfinished_runs_alone(tiny_study, tmp_path):
    _, run = _old_format_copy(tiny_study, tmp_path)
    flow = run / rundir.LEGACY_TABLES["grad_flow"]
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
    """The committed (finished) reference runs hold one tables file each, with only the rows
    the readers use (rundir.KEEP)."""
    from tests.conftest import ROOT

    runs = [r.parent for r in (ROOT / "results" / "reference").glob(f"*/*/{rundir.RUN_JSON}")]
    finished = [r for r in runs if rundir.is_finished(r)]
    assert len(finished) > 1000
    legacy = set(rundir.LEGACY_TABLES.values())
    for run in finished:
        names = {p.name for p in run.iterdir()}
        assert rundir.TABLE_FILE in names and not names & legacy, run
    for table, (column, kept) in rundir.KEEP.items():
        values = set()
        for run in finished:
            values |= set(rundir.read_table(run, table, columns=[column])[column].unique())
        assert values <= set(kept), (table, values - set(kept))
