"""Every fast path computes exactly the explicit cells' function: outputs, parameter gradients and
per-position input gradients, in float64 with copied weights, and against torch.nn itself."""

import pytest
import torch
from torch import nn

from study.model.fast import sequence
from study.tasks.adding import Adding
from study.train import TrainSettings
from tests.conftest import small_model, train_one

CELLS = [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("gru", {})]
IDS = ["rnn", "rnn-relu", "lstm", "gru"]


def outputs_and_grads(model, x, probe, impl):
    model.impl = impl
    x = x.clone().requires_grad_(True)
    y = model.predict(x)
    grads = torch.autograd.grad((y * probe).sum(), [x, *model.parameters()])
    return y, grads


@pytest.mark.parametrize("B,T", [(5, 23), (1, 7), (3, 1)])
@pytest.mark.parametrize("impl", ["fast", "native"])
@pytest.mark.parametrize("cell,kw", CELLS, ids=IDS)
def test_fast_paths_equal_the_explicit_cells(cell, kw, impl, B, T):
    model = small_model(cell, input_size=3, hidden=9, output=2, seed=11, **kw)
    x = torch.randn(B, T, 3, dtype=torch.float64)
    probe = torch.randn(B, T, 2, dtype=torch.float64)  # a random functional of every output
    y_ref, g_ref = outputs_and_grads(model, x, probe, "explicit")
    y, g = outputs_and_grads(model, x, probe, impl)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    names = ["x", *(n for n, _ in model.named_parameters())]
    for name, a, b in zip(names, g, g_ref):
        # the gradient with respect to x holds the per-position gradients dL/dx_t
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("cell,kw", CELLS, ids=IDS)
def test_fast_path_equals_torch_nn(cell, kw):
    model = small_model(cell, input_size=2, hidden=6, seed=12, **kw)
    kind = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    reference = kind(2, 6, batch_first=True, **kw).double()
    reference.load_state_dict(model.cell.state_dict())
    x = torch.randn(4, 17, 2, dtype=torch.float64)
    model.impl = "fast"
    h_ref = reference(x)[0]
    torch.testing.assert_close(
        model.readout.weight @ h_ref.mT,
        model.predict(x).mT - model.readout.bias[:, None],
        rtol=1e-10,
        atol=1e-12,
    )
    g = torch.autograd.grad(model.predict(x).sum(), list(model.cell.parameters()))
    g_ref = torch.autograd.grad(model.readout(h_ref).sum(), list(reference.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_padded_batches_of_the_rnn_and_gru_fall_back_to_explicit():
    """Only the LSTM's Function takes a padding mask (below): the others fall back, exactly."""
    x = torch.randn(2, 7, 2, dtype=torch.float64)
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[0, :3] = False
    for cell in ("rnn", "gru"):
        model = small_model(cell, hidden=4)
        torch.testing.assert_close(model.predict(x, valid), model(x, valid).y, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_training_records_agree_between_paths(cell):
    """Whole runs (float32) through the fast and the explicit path agree to rounding."""

    def run(impl):
        model = small_model(cell, hidden=16, dtype=torch.float32, impl=impl)
        settings = TrainSettings(steps=20, batch_size=16, log_every=10, eval_size=256)
        return train_one(
            model, Adding(30), lambda p: torch.optim.Adam(p, 1e-3), settings, 0, progress=False
        )

    fast, explicit = run("fast").metrics_frame(), run("explicit").metrics_frame()
    torch.testing.assert_close(
        torch.tensor(fast.value.values), torch.tensor(explicit.value.values), rtol=1e-3, atol=1e-5
    )


def explicit_states(cell, x):
    """h_t of the explicit cell, step by step: the reference for the whole-sequence Functions."""
    state, hs = cell.initial_state(x.shape[0]), []
    for gx_t in cell.project_inputs(x).unbind(dim=1):
        state, _ = cell.step(gx_t, state)
        hs.append(state[0])
    return torch.stack(hs, dim=1)


PARAM_ORDER = ("weight_ih_l0", "bias_ih_l0", "weight_hh_l0", "bias_hh_l0")  # sequence()'s order


@pytest.mark.parametrize("cell,kw", CELLS, ids=IDS)
def test_stacked_members_equal_each_explicit_cell(cell, kw):
    """E = 3 cells with stacked weights through one Function call: every member's states and
    gradients (input and all four parameters) equal its own explicit cell's, in float64."""
    members = [small_model(cell, input_size=3, hidden=6, seed=20 + e, **kw).cell for e in range(3)]
    stacked = [
        torch.stack([getattr(c, n) for c in members]).detach().requires_grad_(True)
        for n in PARAM_ORDER
    ]
    x = torch.randn(3, 4, 9, 3, dtype=torch.float64, requires_grad=True)
    hs = sequence(cell, kw.get("nonlinearity", "tanh"))(x, *stacked)
    probe = torch.randn_like(hs)
    grads = torch.autograd.grad((hs * probe).sum(), [x, *stacked])
    for e, member in enumerate(members):
        x_e = x[e].detach().requires_grad_(True)
        h_ref = explicit_states(member, x_e)
        params = [getattr(member, n) for n in PARAM_ORDER]
        refs = torch.autograd.grad((h_ref * probe[e]).sum(), [x_e, *params])
        torch.testing.assert_close(hs[e], h_ref, rtol=1e-10, atol=1e-12)
        for name, g, ref in zip(["x", *PARAM_ORDER], grads, refs):
            torch.testing.assert_close(g[e], ref, rtol=1e-10, atol=1e-12, msg=f"{e} {name}")


def test_lstm_sequence_equals_torch_nn():
    """The hand-written LSTM backward (used by ensembles) against torch.nn.LSTM, float64."""
    reference = nn.LSTM(2, 7, batch_first=True).double()
    params = [getattr(reference, n) for n in PARAM_ORDER]
    x = torch.randn(5, 13, 2, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(5, 13, 7, dtype=torch.float64)
    hs = sequence("lstm")(x, *params)
    torch.testing.assert_close(hs, reference(x)[0], rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad((hs * probe).sum(), [x, *params])
    refs = torch.autograd.grad((reference(x)[0] * probe).sum(), [x, *params])
    for name, g, ref in zip(["x", *PARAM_ORDER], grads, refs):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sequence_without_grad_computes_the_same_states(cell):
    """Under no_grad the Functions skip the backward's factors; the states must not change."""
    params = [getattr(small_model(cell, hidden=5).cell, n) for n in PARAM_ORDER]
    x = torch.randn(3, 11, 2, dtype=torch.float64)
    with torch.no_grad():
        h_eval = sequence(cell)(x, *params)
    torch.testing.assert_close(h_eval, sequence(cell)(x, *params), rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_backward_leaves_a_shared_incoming_gradient_intact(cell):
    """Two sequences added together receive one and the same gradient tensor (laid out
    time-major here, as the ensembles' readout gives it); the first backward must not change
    what the second one reads."""
    a, b = (small_model(cell, hidden=4, seed=s).cell for s in (1, 2))
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    probe = torch.randn(6, 3, 4, dtype=torch.float64).transpose(0, 1)  # time-major memory
    run = sequence(cell)
    y = run(x, *(getattr(a, n) for n in PARAM_ORDER)) + run(
        x, *(getattr(b, n) for n in PARAM_ORDER)
    )
    params = [getattr(m, n) for m in (a, b) for n in PARAM_ORDER]
    grads = torch.autograd.grad((y * probe).sum(), params)
    reference = (explicit_states(a, x) + explicit_states(b, x)) * probe
    for g, r in zip(grads, torch.autograd.grad(reference.sum(), params)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("forget_gate", [True, False], ids=["forget-gate", "1997"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "left-padded"])
def test_the_lstm_function_takes_left_padding_and_the_lstm_without_forget_gate(forget_gate, padded):
    """LSTMSequence (single and stacked) against the explicit cell, float64: the 1997 LSTM
    (f = 1) and left-padded batches of the 1997 adding problem's kind (lengths T..T + T/10)."""
    from study.model.ensemble import Ensemble
    from study.model.fast import choose_path
    from study.tasks.base import left_pad_mask

    models = [small_model("lstm", 3, 6, 2, seed=s, forget_gate=forget_gate) for s in (4, 5)]
    T = 13
    valid = left_pad_mask(torch.tensor([13, 9, 11, 1]), T)[0] if padded else None
    xs = [torch.randn(4, T, 3, dtype=torch.float64) for _ in models]
    xs = [x * valid[..., None] if padded else x for x in xs]  # the tasks zero their padding
    probes = [torch.randn(4, T, 2, dtype=torch.float64) for _ in models]
    model = models[0]
    path = choose_path(model.cell, "fast", "cpu", padded, 1, False, padded)
    assert path == ("sequence" if padded or not forget_gate else "native")
    refs = []
    for m, x, p in zip(models, xs, probes):
        m.impl = "explicit"
        xr = x.clone().requires_grad_(True)
        y = m.predict(xr, valid)
        refs.append((y, torch.autograd.grad((y * p).sum(), [xr, *m.parameters()])))
        m.impl = "fast"
        xf = x.clone().requires_grad_(True)
        y_fast = m.predict(xf, valid)
        torch.testing.assert_close(y_fast, y, rtol=1e-10, atol=1e-12)
        g = torch.autograd.grad((y_fast * p).sum(), [xf, *m.parameters()])
        for a, b in zip(g, refs[-1][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ensemble = Ensemble(models)
    ys = ensemble.predict(xs, [valid, valid])
    grads = torch.autograd.grad(sum((y * p).sum() for y, p in zip(ys, probes)), ensemble.stacked)
    for e, (y_ref, g_ref) in enumerate(refs):
        torch.testing.assert_close(ys[e], y_ref, rtol=1e-10, atol=1e-12)
        for a, b in zip(grads, g_ref[1:]):
            torch.testing.assert_close(a[e], b, rtol=1e-10, atol=1e-12)
