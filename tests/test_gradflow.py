"""Per-example gradient-flow norms ||dl_b/ds_t|| against finite differences and plain autograd."""

import numpy as np
import pandas as pd
import pytest
import torch

from study.probes import ProbeSettings, batch_summary, gradient_flow
from study.tasks.adding import Adding
from study.train import TrainSettings
from tests.conftest import small_model, train_one


def per_example_loss_with_kick(model, task, batch, t, k, kick):
    """Run the recurrence by hand, adding `kick` (B, H) to state component k right after step t."""
    cell = model.cell
    gx = cell.project_inputs(batch.x)
    state = cell.initial_state(batch.x.shape[0])
    hs = []
    for s in range(batch.x.shape[1]):
        state, gates = cell.step(gx[:, s], state)
        if s == t and k == 0:  # h_t
            state = (state[0] + kick, *state[1:])
        elif s == t and k == 1:  # c_t, and with it h_t = o_t * tanh(c_t) of the same step
            c = state[1] + kick
            state = (gates["o"] * torch.tanh(c), c)
        hs.append(state[0])
    y = model.readout(torch.stack(hs, dim=1))
    return task.loss(task.select(y), batch)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_state_gradient_norms_match_finite_differences(cell):
    task, B, H = Adding(length=6), 3, 4
    model = small_model(cell, hidden=H)
    batch = task.sample(B, torch.Generator().manual_seed(0))
    batch.x = batch.x.double()
    batch.y = batch.y.double()
    _, norms = gradient_flow(model, task, batch)

    eps = 1e-6
    for k, name in enumerate(model.cell.state_names):
        fd = torch.zeros(B, 6, H, dtype=torch.float64)
        for t in range(6):
            for j in range(H):
                kick = torch.zeros(B, H, dtype=torch.float64)
                kick[:, j] = eps
                with torch.no_grad():
                    up = per_example_loss_with_kick(model, task, batch, t, k, kick)
                    down = per_example_loss_with_kick(model, task, batch, t, k, -kick)
                fd[:, t, j] = (up - down) / (2 * eps)
        torch.testing.assert_close(norms[name], fd.norm(dim=-1), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_state_gradient_norms_match_per_example_autograd(cell):
    """Batched probe == one autograd.grad per example on its own: independent of batch size."""
    task, B = Adding(length=12), 5
    model = small_model(cell, hidden=7)
    batch = task.sample(B, torch.Generator().manual_seed(1))
    batch.x, batch.y = batch.x.double(), batch.y.double()
    _, norms = gradient_flow(model, task, batch)
    for b in range(B):
        one = batch[b : b + 1]
        traj = model(one.x)
        loss = task.loss(task.select(traj.y), one).sum()
        for name, states in traj.states.items():
            grads = torch.autograd.grad(loss, states, retain_graph=True)
            expected = torch.stack([g.norm() for g in grads])
            torch.testing.assert_close(norms[name][b], expected, rtol=1e-10, atol=1e-14)


def test_probing_does_not_change_training():
    """Records at the steps both schedules share are identical: probes only read the model."""

    def run(log_every):
        model = small_model("gru", hidden=6, dtype=torch.float32)
        settings = TrainSettings(steps=6, batch_size=8, log_every=log_every, eval_size=32)
        opt = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731
        return train_one(model, Adding(length=8), opt, settings, seed=0, progress=False)

    often, rarely = run(1), run(3)
    m_often, m_rarely = often.metrics_frame(), rarely.metrics_frame()
    shared = m_often[m_often.step.isin(m_rarely.step)].reset_index(drop=True)
    pd.testing.assert_frame_equal(shared, m_rarely, check_exact=True)


def test_float32_probe_agrees_with_float64_until_float32_underflows():
    task = Adding(length=100)
    model = small_model("rnn", hidden=128, dtype=torch.float32)  # the default size
    batch = task.sample(16, torch.Generator().manual_seed(3))
    _, n64 = gradient_flow(model, task, batch, torch.float64)
    _, n32 = gradient_flow(model, task, batch, torch.float32)
    late = n64["h"][:, -20:]  # the last 20 positions: far from float32's limits
    torch.testing.assert_close(n32["h"][:, -20:].double(), late, rtol=1e-4, atol=0)
    # ...while at lag 99 the float32 gradient has long flushed to zero and float64 still resolves it
    assert float(n32["h"][:, 0].max()) == 0.0 and float(n64["h"][:, 0].min()) > 0.0


def test_batch_summary_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=(37, 9))
    valid = rng.random((37, 9)) > 0.2
    out = batch_summary(torch.from_numpy(values), torch.from_numpy(valid))
    for t in range(9):
        v = values[valid[:, t], t]
        np.testing.assert_allclose(out["mean"][t], v.mean(), rtol=1e-12)
        np.testing.assert_allclose(out["median"][t], np.median(v), rtol=1e-12)
    assert set(out) == {"mean", "median"}  # the statistics the readers use (rundir.FLOW_STATS)


def test_a_sparser_probe_schedule_records_the_same_values_at_its_steps():
    def run(every):
        model = small_model("lstm", hidden=6, dtype=torch.float32)
        settings = TrainSettings(steps=8, batch_size=8, log_every=2, eval_size=32)
        probes = ProbeSettings(every=every)
        opt = lambda p: torch.optim.Adam(p, lr=1e-2)  # noqa: E731
        return train_one(model, Adding(8), opt, settings, seed=0, probes=probes, progress=False)

    dense, sparse = run(0), run(4)
    assert sorted(sparse.flow_frame().step.unique()) == [0, 4, 8]
    flow = dense.flow_frame()
    pd.testing.assert_frame_equal(
        flow[flow.step.isin([0, 4, 8])].reset_index(drop=True),
        sparse.flow_frame(),
        check_exact=True,
    )
    m_dense, m_sparse = dense.metrics_frame(), sparse.metrics_frame()
    evals = lambda m: m[m.name != "effective_horizon"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(evals(m_dense), evals(m_sparse), check_exact=True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_left_padded_gradients_equal_the_trimmed_sequence(cell):
    """Left padding holds the state, so a padded example's ||dl/ds_t|| at its real positions must
    equal that of the same example with the padding cut off, run unmasked (an independent run).
    Before the fix, the LSTM's stored c_t missed the same-step path through h_t = o * tanh(c_t)."""
    task = Adding(length=24, variant="hochreiter1997")
    model = small_model(cell, hidden=5)
    batch = task.sample(6, torch.Generator().manual_seed(3)).apply(
        lambda t: t.double() if t.is_floating_point() else t
    )
    assert not batch.valid.all()  # the lengths differ, so some examples are padded
    _, padded = gradient_flow(model, task, batch)
    for b in range(6):
        start = int((~batch.valid[b]).sum())
        one = batch[b : b + 1].apply(lambda t: t)
        one.x, one.valid = one.x[:, start:], None
        _, trimmed = gradient_flow(model, task, one)
        for name in model.cell.state_names:
            expected = trimmed[name][0]
            torch.testing.assert_close(padded[name][b, start:], expected, rtol=1e-10, atol=0)
