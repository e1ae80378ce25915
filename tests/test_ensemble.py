"""Seed ensembles: every member trains as the single run of its seed would, to float rounding."""

import dataclasses

import pytest
import torch

from study.model import build_model
from study.model.ensemble import Ensemble
from study.probes import ProbeSettings
from study.tasks.adding import Adding
from study.train import TrainSettings, train
from tests.conftest import train_one

SETTINGS = TrainSettings(steps=12, batch_size=8, log_every=4, eval_size=64, eval_chunk=32)
PROBES = ProbeSettings(jacobian_examples=2, jacobian_lags=3, snr_batches=2)


def adam(params):
    return torch.optim.Adam(params, lr=1e-2)


def model_of(seed, cell, **kw):
    torch.manual_seed(seed)  # as study.runs.job.build: the initialisation is a function of the seed
    return build_model(cell, 2, 1, hidden_size=6, **kw)


def assert_same_records(member, single, rtol=1e-4, atol=1e-6):
    assert member.status == single.status
    for name in (
        "metrics_frame",
        "flow_frame",
        "evidence_frame",
        "weights_frame",
        "lyapunov_frame",
    ):
        a, b = getattr(member, name)(), getattr(single, name)()
        if a.empty or b.empty:  # a member diverged at step 0 has no probe (nor its single run)
            assert a.empty and b.empty, name
            continue
        if name == "lyapunov_frame":  # below -3 per step a direction collapses within a few
            # steps (a dead ReLU unit), and from then on rounding picks the QR's next column
            a, b = a[b.value > -3], b[b.value > -3]
        assert a.drop(columns="value").equals(b.drop(columns="value")), name
        torch.testing.assert_close(
            torch.tensor(a.value.values),
            torch.tensor(b.value.values),
            rtol=rtol,
            atol=atol,
            equal_nan=True,
        )
    assert member.final.keys() == single.final.keys()


CASES = [
    ("rnn", {}, Adding(9)),
    ("rnn", {"nonlinearity": "relu"}, Adding(9)),
    ("lstm", {}, Adding(9)),
    ("gru", {}, Adding(9)),
    ("lstm", {"forget_gate": False}, Adding(9)),  # not batched: the explicit cells per member
    ("gru", {}, Adding(24, variant="hochreiter1997")),  # left-padded batches: explicit too
    ("mingru", {}, Adding(9)),  # no stacked path: each member by its own scan
    ("minlstm", {}, Adding(9)),
    ("lru", {}, Adding(9)),
    ("lru", {"block": "glu", "layers": 2}, Adding(9)),  # a stack of 2 GLU blocks, layer by layer
]
IDS = ["rnn", "rnn-relu", "lstm", "gru", "lstm-no-forget-gate", "gru-padded", "mingru",
       "minlstm", "lru", "lru-2-glu-blocks"]  # fmt: skip


@pytest.mark.parametrize("cell,kw,task", CASES, ids=IDS)
def test_every_member_records_what_its_single_run_records(cell, kw, task):
    seeds = [3, 4, 5]
    singles = [
        train_one(model_of(s, cell, **kw), task, adam, SETTINGS, s, PROBES, progress=False)
        for s in seeds
    ]
    ensemble = Ensemble([model_of(s, cell, **kw) for s in seeds])
    members = train(ensemble, task, adam, SETTINGS, seeds, PROBES, progress=False)
    for member, single in zip(members, singles):
        assert_same_records(member, single)


def test_a_diverging_member_stops_alone():
    """A member whose weights blow up is marked diverged at the step its single run is; the
    other members go on to the end with their single runs' records."""

    def blown(seed):
        model = model_of(seed, "rnn")
        if seed == 1:
            with torch.no_grad():
                model.readout.weight.fill_(float("inf"))
        return model

    seeds = [0, 1, 2]
    singles = [train_one(blown(s), Adding(9), adam, SETTINGS, s, progress=False) for s in seeds]
    members = train(
        Ensemble([blown(s) for s in seeds]), Adding(9), adam, SETTINGS, seeds, progress=False
    )
    assert [m.status for m in members] == ["completed", "diverged", "completed"]
    for member, single in zip(members, singles):
        assert_same_records(member, single)


class Lenient(Adding):
    """The adding problem solved at an evaluation loss below 0.3: the GRUs of seeds 3, 4, 5
    stop at steps 8, never, 4 in SETTINGS' 12 steps (evaluations every 4)."""

    def solved(self, eval_loss: float, eval_metric: float) -> bool:
        return eval_loss < 0.3


STOPPING = dataclasses.replace(SETTINGS, stop_on_solve=True, checkpoint_every=6)


def test_members_that_solve_leave_the_stack_and_the_others_train_as_alone():
    """Stop-on-solve: each member stops at its single run's step with its records, and from
    there on is not computed (the ensemble's forward passes take the others only)."""
    seeds, task = [3, 4, 5], Lenient(9)
    singles = [train_one(model_of(s, "gru"), task, adam, STOPPING, s, progress=False)
               for s in seeds]  # fmt: skip
    assert [r.solved_step for r in singles] == [8, None, 4]  # the premise: stops that differ
    ensemble = Ensemble([model_of(s, "gru") for s in seeds])
    computed, predict = [], ensemble.predict
    ensemble.predict = lambda xs, *a: computed.append(len(xs)) or predict(xs, *a)
    members = train(ensemble, task, adam, STOPPING, seeds, progress=False)
    for member, single in zip(members, singles):
        assert member.solved_step == single.solved_step
        assert_same_records(member, single)
    assert computed == sorted(computed, reverse=True) and set(computed) == {3, 2, 1}
    # each call's members: an update per step (steps 0-4 all three, 5-8 two, 9-12 one) and
    # two chunks per evaluation (at 0 and 4 three members, at 8 two, at 12 one)
    assert [computed.count(k) for k in (3, 2, 1)] == [5 + 4, 4 + 2, 4 + 2]


def test_an_ensemble_resumed_after_a_member_left_the_stack_ends_as_if_uninterrupted():
    seeds, task = [3, 4, 5], Lenient(9)
    ensemble = lambda: Ensemble([model_of(s, "gru") for s in seeds])  # noqa: E731
    straight = train(ensemble(), task, adam, STOPPING, seeds, progress=False)
    stores = [Store(), Store(), Store(stop_at=6)]  # killed after step 6: seed 5 stopped at 4
    with pytest.raises(Stop):
        train(ensemble(), task, adam, STOPPING, seeds, checkpoints=stores, progress=False)
    resumed = train(ensemble(), task, adam, STOPPING, seeds, checkpoints=stores, progress=False)
    for a, b in zip(resumed, straight):
        assert_same_records(a, b, rtol=0, atol=0)


class Stop(Exception):
    pass


class Store:
    """An in-memory checkpoint (study.runs.checkpoint.CheckpointFile keeps the same dict on disk)
    that can stop the run right after it saved step `stop_at`, as a kill would."""

    def __init__(self, stop_at=None):
        self.state, self.stop_at = None, stop_at

    def load(self):
        return self.state

    def save(self, state):
        self.state = state
        if state["next_step"] == self.stop_at:
            self.stop_at = None
            raise Stop


CHECKPOINTED = TrainSettings(steps=10, batch_size=8, log_every=2, eval_size=32, checkpoint_every=4)


def gru_ensemble(seeds):
    return Ensemble([model_of(s, "gru") for s in seeds])


def test_an_interrupted_ensemble_resumes_to_the_records_of_an_uninterrupted_one():
    seeds, task = [0, 1], Adding(9)
    straight = train(gru_ensemble(seeds), task, adam, CHECKPOINTED, seeds, progress=False)
    stores = [Store(), Store(stop_at=8)]  # killed after both members saved step 8
    with pytest.raises(Stop):
        train(gru_ensemble(seeds), task, adam, CHECKPOINTED, seeds, checkpoints=stores)
    resumed = train(gru_ensemble(seeds), task, adam, CHECKPOINTED, seeds, checkpoints=stores)
    for a, b in zip(resumed, straight):
        assert_same_records(a, b, rtol=0, atol=0)

    stores = [Store(stop_at=8), Store()]  # killed between the two members' saves of step 8
    with pytest.raises(Stop):
        train(gru_ensemble(seeds), task, adam, CHECKPOINTED, seeds, checkpoints=stores)
    assert [s.state["next_step"] for s in stores] == [8, 4]
    resumed = train(gru_ensemble(seeds), task, adam, CHECKPOINTED, seeds, checkpoints=stores)
    for a, b in zip(resumed, straight):  # checkpoints that disagree: started again from scratch
        assert_same_records(a, b, rtol=0, atol=0)


def test_a_member_checkpoint_is_a_single_run_checkpoint():
    """Each member's checkpoint is in the single-run format: a single run loads it and finishes
    that member alone, with the records of the member's own uninterrupted single run."""
    task = Adding(9)
    straight = train_one(model_of(1, "gru"), task, adam, CHECKPOINTED, 1, progress=False)
    stores = [Store(), Store(stop_at=8)]
    with pytest.raises(Stop):
        train(gru_ensemble([0, 1]), task, adam, CHECKPOINTED, [0, 1], checkpoints=stores)
    single = train_one(model_of(1, "gru"), task, adam, CHECKPOINTED, 1, checkpoint=stores[1])
    assert_same_records(single, straight)


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "lru"])
def test_a_stacked_scan_is_each_members_scan_forward_and_backward(cell):
    """The ensemble's one scan over every member (stacked_scan) against each member's own scan,
    in float64, values and the gradients of every stacked parameter; minGRU and minLSTM also by
    their log-space form (what CUDA runs)."""
    from study.model.linear_cells import stacked_inputs

    models = [model_of(seed, cell).double() for seed in range(3)]
    ensemble = Ensemble(models)
    x = torch.randn(3, 4, 11, 2, dtype=torch.float64)
    p = {n.removeprefix("cell."): v for n, v in ensemble.params().items() if "cell." in n}
    got = ensemble._hidden_states(x, ensemble.params(), "scan")
    want = torch.stack([m.cell.scan(x[e]) for e, m in enumerate(models)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    weights = torch.randn_like(got)
    grads = torch.autograd.grad((got * weights).sum(), list(p.values()))
    for e, m in enumerate(models):
        own = torch.autograd.grad((m.cell.scan(x[e]) * weights[e]).sum(), list(m.cell.parameters()))
        for g, o in zip(grads, own):
            torch.testing.assert_close(g[e], o, rtol=0, atol=1e-10)
    if cell != "lru":
        logs = models[0].cell.recurrence(stacked_inputs(x, p), log_space=True)
        alone = [m.cell.scan(x[e], log_space=True) for e, m in enumerate(models)]
        torch.testing.assert_close(logs, torch.stack(alone), rtol=0, atol=1e-10)
