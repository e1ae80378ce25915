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
