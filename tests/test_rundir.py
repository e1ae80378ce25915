"""Run identity: what makes two configs the same run."""

from study import rundir


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
