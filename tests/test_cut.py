"""Gradient-path cuts (study/model/cut.py) against a reference written from the equations with
explicit `.detach()` calls, float64: the forward pass bit for bit unchanged, every gradient equal
on every training path (the explicit cells, the whole-sequence Functions and scans, stacked
ensembles), the probes' per-lag gradients zero along a cut path."""

import math

import pytest
import torch

from study.model import build_model
from study.model.ensemble import Ensemble
from study.model.fast import hidden_states
from study.model.linear_cells import g as min_g
from study.probes import ProbeSettings, cell_path_gradient, gradient_flow, run_probes
from study.tasks.adding import Adding
from study.train import TrainSettings, cut_draws, train
from tests.conftest import train_one

ARMS = [
    ("rnn", "hidden"),
    ("lstm", "cell"),
    ("lstm", "hidden"),
    ("gru", "linear"),
    ("gru", "hidden"),
    ("mingru", "linear"),
    ("minlstm", "linear"),
    ("lru", "linear"),
]
IDS = [f"{c}-{p}" for c, p in ARMS]


def sg(x, s):
    """x with its gradient scaled by s, from detach alone: x.detach() + s (x - x.detach())."""
    return x.detach() + s * (x - x.detach())


def reference_states(model, x, path, s):
    """h_t of every step, (B, T, H), from the cell's equations, with the previous state's use
    on `path` passed through sg(., s_t). Independent of study/model/cells.py's code."""
    cell = model.cell
    P = dict(cell.named_parameters())
    B, T, _ = x.shape
    H = cell.hidden_size
    h = x.new_zeros(B, H)
    c = x.new_zeros(B, H)
    state = x.new_zeros(B, H, dtype=torch.complex128) if cell.kind == "lru" else None
    out = []
    for t in range(T):

        def cut(name, v, t=t):
            return sg(v, s[t]) if name == path else v

        gx = x[:, t] @ P["weight_ih_l0"].T + P["bias_ih_l0"]
        if cell.kind == "rnn":
            h = torch.tanh(gx + cut("hidden", h) @ P["weight_hh_l0"].T + P["bias_hh_l0"])
        elif cell.kind == "lstm":
            a = gx + cut("hidden", h) @ P["weight_hh_l0"].T + P["bias_hh_l0"]
            i, f, gg, o = a.split(H, dim=1)
            c = torch.sigmoid(f) * cut("cell", c) + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell.kind == "gru":
            W_r, W_z, W_n = P["weight_hh_l0"].split(H)
            b_r, b_z, b_n = P["bias_hh_l0"].split(H)
            x_r, x_z, x_n = gx.split(H, dim=1)
            hh = cut("hidden", h)
            r = torch.sigmoid(x_r + hh @ W_r.T + b_r)
            z = torch.sigmoid(x_z + hh @ W_z.T + b_z)
            n = torch.tanh(x_n + r * (hh @ W_n.T + b_n))
            h = (1 - z) * n + z * cut("linear", h)
        elif cell.kind == "mingru":
            a_z, a_h = gx.split(H, dim=1)
            z = torch.sigmoid(a_z)
            h = (1 - z) * cut("linear", h) + z * min_g(a_h)
        elif cell.kind == "minlstm":
            a_f, a_i, a_h = gx.split(H, dim=1)
            f, i = torch.sigmoid(a_f), torch.sigmoid(a_i)
            h = f / (f + i) * cut("linear", h) + i / (f + i) * min_g(a_h)
        else:  # the LRU, in complex numbers: s_t = lambda s_{t-1} + gamma B x_t
            bx_re, bx_im, dx = gx.split(H, dim=1)
            lam = torch.exp(-torch.exp(P["nu_log"]) + 1j * torch.exp(P["theta_log"]))
            gamma = torch.exp(P["gamma_log"])
            state = lam * cut("linear", state) + gamma * torch.complex(bx_re, bx_im)
            C = torch.complex(P["C_re"], P["C_im"])
            h = (state @ C.T).real + dx
        out.append(h)
    return torch.stack(out, dim=1)


def make(cell, path, seed=0, H=5, I=3, **kw):
    torch.manual_seed(seed)
    return build_model(cell, I, 2, hidden_size=H, cut=path, **kw).double()


def grads(model, y, probe, x):
    return torch.autograd.grad((y * probe).sum(), [x, *model.parameters()])


SCALES = {
    "stopped": lambda T: torch.zeros(T, dtype=torch.float64),
    "dose": lambda T: torch.full((T,), 0.3, dtype=torch.float64),
    "per-step": lambda T: torch.rand(T, generator=torch.Generator().manual_seed(5)).double(),
}


@pytest.mark.parametrize("scales", list(SCALES))
@pytest.mark.parametrize("cell,path", ARMS, ids=IDS)
def test_every_training_path_gives_the_detach_references_gradients(cell, path, scales):
    model = make(cell, path)
    B, T = 4, 9
    s = SCALES[scales](T)
    x = torch.randn(B, T, 3, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(B, T, 2, dtype=torch.float64)
    y_ref = model.readout(reference_states(model, x, path, s))
    g_ref = grads(model, y_ref, probe, x)
    for impl in ("explicit", "fast"):
        model.impl = impl
        y = model.predict(x, scales=s)
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
        for a, b in zip(grads(model, y, probe, x), g_ref):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{impl}")


@pytest.mark.parametrize("cell,path", ARMS, ids=IDS)
def test_a_stacked_ensemble_cuts_each_member_by_its_own_scales(cell, path):
    models = [make(cell, path, seed=k) for k in (1, 2)]
    ensemble = Ensemble(models)
    T = 7
    xs = [torch.randn(3, T, 3, dtype=torch.float64) for _ in models]
    scales = [torch.rand(T, dtype=torch.float64), torch.zeros(T, dtype=torch.float64)]
    probes = [torch.randn(3, T, 2, dtype=torch.float64) for _ in models]
    ys = ensemble.predict(xs, [None, None], scales)
    loss = sum((y * p).sum() for y, p in zip(ys, probes))
    stacked = torch.autograd.grad(loss, list(ensemble.stacked))
    for e, (model, x, s, p) in enumerate(zip(models, xs, scales, probes)):
        y_ref = model.readout(reference_states(model, x, path, s))
        g_ref = torch.autograd.grad((y_ref * p).sum(), list(model.parameters()))
        for a, b in zip(stacked, g_ref):
            torch.testing.assert_close(a[e], b, rtol=1e-9, atol=1e-12)


SEQUENCE_ARMS = [a for a in ARMS if a[0] in ("rnn", "lstm", "gru", "mingru", "minlstm")]


@pytest.mark.parametrize("cell,path", SEQUENCE_ARMS, ids=[f"{c}-{p}" for c, p in SEQUENCE_ARMS])
def test_the_forward_pass_is_bitwise_the_same_with_and_without_the_cut(cell, path):
    model = make(cell, path)
    x = torch.randn(4, 11, 3, dtype=torch.float64)
    s = torch.zeros(11, dtype=torch.float64)
    route = "scan" if cell.startswith("min") else "sequence"
    uncut = hidden_states(model.cell, x, route)
    assert torch.equal(hidden_states(model.cell, x, route, (path, s)), uncut)
    with torch.no_grad():
        assert torch.equal(hidden_states(model.cell, x, route, (path, s)), uncut)
    model.impl = "explicit"
    plain = model(x).y
    model.cut = None
    assert torch.equal(model(x).y, plain)


def test_a_cut_changes_only_the_gradient_of_a_trained_step():
    """The same weights, data and optimiser: the loss before the first update is identical,
    the gradients differ (else the cut would cut nothing)."""
    task = Adding(length=20)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    losses, gradients = [], []
    for path in (None, "cell"):
        model = make("lstm", path, H=6, I=2).float()
        loss = task.loss(task.select(model.predict(batch.x)), batch).mean()
        gradients.append(torch.autograd.grad(loss, list(model.parameters())))
        losses.append(loss.item())
    assert losses[0] == losses[1]
    assert not torch.allclose(gradients[0][1], gradients[1][1])


@pytest.mark.parametrize("cell,path", [("lstm", "cell"), ("gru", "linear"), ("mingru", "linear")])
def test_the_probes_see_no_gradient_along_a_cut_linear_path(cell, path):
    task = Adding(length=15)
    batch = task.sample(6, torch.Generator().manual_seed(1))
    parts, norms = gradient_flow(make(cell, path, I=2), task, batch)
    state, g = cell_path_gradient(parts)
    along = g.norm(dim=-1)  # (B, T): the loss is at the last step only
    assert torch.all(along[:, :-1] == 0) and torch.all(along[:, -1] > 0)
    if cell == "mingru":  # its one path: no gradient reaches any earlier state
        assert torch.all(norms["h"][:, :-1] == 0)


@pytest.mark.parametrize("cell,state", [("lstm", "c"), ("gru", "h")])
def test_under_the_hidden_cut_the_total_gradient_is_the_linear_paths(cell, state):
    task = Adding(length=15)
    batch = task.sample(6, torch.Generator().manual_seed(2))
    parts, norms = gradient_flow(make(cell, "hidden", I=2), task, batch)
    name, g = cell_path_gradient(parts)
    assert name == state
    torch.testing.assert_close(g.norm(dim=-1), norms[state], rtol=1e-12, atol=0)
    assert torch.all(norms[state][:, 0] > 0)  # and it does reach the first step


def test_the_rnn_cut_leaves_no_gradient_before_the_last_step():
    task = Adding(length=12)
    batch = task.sample(4, torch.Generator().manual_seed(3))
    result = run_probes(make("rnn", "hidden", I=2), task, batch, 0, ProbeSettings(), False)
    flow = result.flow.query("quantity == 'grad_norm' and state == 'h' and stat == 'mean'")
    assert (flow[flow.lag > 0].value == 0).all() and (flow[flow.lag == 0].value > 0).all()


def test_the_probes_of_a_stochastic_cut_show_its_expected_gradient():
    """E[gradient] = the gradient at E[s_t], by Monte Carlo over 4000 draws of the mask."""
    torch.manual_seed(0)
    model = make("gru", "hidden", H=3, I=2, cut_prob=0.5, cut_scale=0.2)
    x = torch.randn(2, 6, 2, dtype=torch.float64)

    def grad(s):
        return torch.autograd.grad(model(x, scales=s).y[:, -1].sum(), model.cell.weight_ih_l0)[0]

    expected = grad(None)  # the probes' scales: E[s_t] = 1 - p (1 - alpha) = 0.6
    draws = torch.Generator().manual_seed(1)
    mc = torch.stack([grad(model.cut.scales(6, draws)) for _ in range(4000)])
    err = mc.std(0) / math.sqrt(len(mc))
    assert torch.all((mc.mean(0) - expected).abs() <= 5 * err + 1e-12)


def test_stochastic_cuts_draw_per_seed_and_step_so_an_ensemble_member_is_its_single_run():
    task = Adding(length=10)
    settings = TrainSettings(steps=6, batch_size=8, log_every=3, eval_size=16, eval_chunk=16)
    build = lambda seed: make("gru", "hidden", seed=seed, H=4, I=2, cut_prob=0.5).float()  # noqa: E731
    opt = lambda params: torch.optim.Adam(params, lr=1e-2)  # noqa: E731
    alone = [train_one(build(s), task, opt, settings, s, progress=False) for s in (0, 1)]
    together = train(Ensemble([build(0), build(1)]), task, opt, settings, [0, 1])
    for a, b in zip(alone, together):
        ma, mb = a.metrics_frame(), b.metrics_frame()
        assert ma[["step", "name"]].equals(mb[["step", "name"]])
        assert ma.value.to_numpy() == pytest.approx(mb.value.to_numpy(), rel=1e-4, abs=1e-6)
    cut = build(0).cut
    batches = [task.sample(2, torch.Generator().manual_seed(0))] * 2
    first, again = cut_draws(cut, batches, [0, 1], 3), cut_draws(cut, batches, [0, 1], 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])  # each seed its own draw


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cell": "gru", "cut": "cell"}, "model.cut='cell' is not a path of cell=gru: allowed"),
        ({"cell": "rnn", "cut": "linear"}, "allowed hidden"),
        ({"cell": "lstm", "cut": "cell", "cut_scale": 1.5}, "model.cut_scale=1.5 is invalid"),
        ({"cell": "lstm", "cut": "cell", "cut_prob": "x"}, "model.cut_prob='x' is invalid"),
        ({"cell": "lstm", "cut": "cell", "cut_scale": 1}, "cuts nothing"),
        ({"cell": "lstm", "cut_scale": 0.5}, "need model.cut"),
        ({"cell": "lstm", "cut": "cell", "impl": "native"}, "model.impl=native cannot cut"),
    ],
)
def test_a_bad_cut_is_one_line_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        build_model(input_size=2, output_size=1, hidden_size=3, **kwargs)
    assert "\n" not in str(e.value)
