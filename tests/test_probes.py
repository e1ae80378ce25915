"""Each probe against an independent computation: a cut autograd graph, torch.func.jacrev,
torch.nn, numpy, or brute force."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import jacrev

from study.probes import (
    ProbeSettings,
    cell_path_gradient,
    effective_horizon,
    gradient_flow,
    run_probes,
)
from study.probes.jacobians import jacobian_spectra, log_spaced_lags, recurrent_spectra, rollout
from study.tasks.adding import Adding
from study.tasks.copy_memory import CopyMemory
from tests.conftest import small_model


def double_batch(task, B, seed):
    b = task.sample(B, torch.Generator().manual_seed(seed))
    b.x = b.x.double()
    if b.y.is_floating_point():
        b.y = b.y.double()
    return b


def cut_path_state_gradient(model, task, batch):
    """Autograd on a graph where h_{t-1} enters the gates (and the GRU candidate) detached:
    only the linear path (c for the LSTM; the z*h term for the GRU) connects the steps."""
    cell = model.cell
    H = cell.hidden_size
    gx = cell.project_inputs(batch.x)
    h = gx.new_zeros(len(gx), H)
    c = gx.new_zeros(len(gx), H)
    path, hs = [], []
    for t in range(gx.shape[1]):
        hd = h.detach()
        if cell.kind == "lstm":
            a = gx[:, t] + hd @ cell.weight_hh_l0.t() + cell.bias_hh_l0
            i, f, g, o = a.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            path.append(c)
        else:
            gh = hd @ cell.weight_hh_l0.t() + cell.bias_hh_l0
            (xr, xz, xn), (hr, hz, hn) = gx[:, t].chunk(3, 1), gh.chunk(3, 1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h  # the last h is *not* detached
            path.append(h)
        hs.append(h)
    loss = task.loss(task.select(model.readout(torch.stack(hs, 1))), batch).sum()
    return torch.stack(torch.autograd.grad(loss, path), dim=1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("task", [Adding(9), CopyMemory(3)], ids=["last-step", "every-step"])
def test_cell_path_gradient_matches_a_cut_graph(cell, task):
    model = small_model(cell, input_size=task.input_size, output=task.output_size, hidden=5)
    batch = double_batch(task, 4, 0)
    parts, _ = gradient_flow(model, task, batch)
    _, ours = cell_path_gradient(parts)
    reference = cut_path_state_gradient(parts["model"], task, parts["batch"])
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-14)


def test_without_forget_gate_the_cell_path_carries_the_gradient_unchanged():
    """The constant error carousel: dc_{T-1}/dc_t = I exactly along the cell path, so the
    cell-path gradient of a last-step loss is the same vector at every position."""
    task = Adding(20)
    model = small_model("lstm", hidden=6, forget_gate=False)
    batch = double_batch(task, 3, 1)
    parts, _ = gradient_flow(model, task, batch)
    _, g = cell_path_gradient(parts)
    assert torch.equal(g, g[:, -1:].expand_as(g))
    # and the Jacobian of c_{T-1} with respect to c_t with the gates held fixed is the identity
    f = torch.stack(parts["traj"].gates["f"], dim=1)
    assert torch.equal(f, torch.ones_like(f))

    def cell_path(c_t, gates_i_g):
        c = c_t
        for i, gg in gates_i_g:
            c = 1.0 * c + i * gg  # f = 1
        return c

    traj = parts["traj"]
    i_g = [(traj.gates["i"][t][0].detach(), torch.rand(6, dtype=torch.float64)) for t in range(5)]
    J = jacrev(cell_path)(traj.states["c"][10][0].detach(), i_g)
    assert torch.equal(J, torch.eye(6, dtype=torch.float64))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru", "minlstm", "lru"])
@pytest.mark.parametrize("padded", [False, True])
def test_jacobian_singular_values_match_jacrev_of_the_unrolled_map(cell, padded):
    """Every singular value of d s_{T-1} / d s_{T-1-k}, chained from per-step Jacobians in
    blocks of 3 steps, against jacrev of the k-step unrolled map, in float64."""
    task, E, T = Adding(9), 2, 9
    model = small_model(cell, hidden=3, seed=4)
    batch = double_batch(task, E, 2)
    valid = None
    if padded:  # example 1 starts 3 steps late: its first steps hold the state
        valid = torch.ones(E, T, dtype=torch.bool)
        valid[1, :3] = False
    traj = model(batch.x, valid)
    gx = model.cell.project_inputs(batch.x).detach()
    lags = [1, 3, 8]
    ours = jacobian_spectra(model.cell, gx, traj.states, lags, valid, block=3)["sigma"]
    flat = torch.cat([torch.stack(traj.states[n], 1) for n in model.cell.state_names], 2).detach()
    for e in range(E):
        for j, k in enumerate(lags):
            start = T - 1 - k

            def f(s, e=e, start=start):
                v = None if valid is None else valid[e : e + 1, start + 1 :]
                return rollout(model.cell, gx[e : e + 1, start + 1 :], s.unsqueeze(0), v)[0]

            reference = torch.linalg.svdvals(jacrev(f)(flat[e, start])).detach()
            torch.testing.assert_close(
                ours[e, j], reference, rtol=0, atol=1e-12 * float(reference[0])
            )


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.5])
def test_rnn_jacobian_never_exceeds_the_sigma_max_bound(gain):
    """||dh_{T-1}/dh_t|| <= sigma_max(W_hh)^k for a tanh RNN (Pascanu et al. 2013, gamma = 1)."""
    task, T = Adding(60), 60
    for seed in range(3):
        model = small_model(
            "rnn", hidden=16, seed=seed, recurrent_init="orthogonal", recurrent_gain=gain
        )
        batch = double_batch(task, 4, seed)
        traj = model(batch.x)
        lags = log_spaced_lags(T, 10)
        gx = model.cell.project_inputs(batch.x)
        sigma = jacobian_spectra(model.cell, gx, traj.states, lags)["sigma"]
        sigma_max = recurrent_spectra(model.cell)["h"]["sigma_max"]
        bound = torch.tensor([sigma_max**k for k in lags], dtype=torch.float64)
        assert bool((sigma[:, :, 0] <= bound * (1 + 1e-9)).all())


def test_recurrent_spectra_match_numpy():
    model = small_model("lstm", hidden=7, seed=5)
    W = model.cell.weight_hh_l0.detach().numpy()
    spectra = recurrent_spectra(model.cell)
    for k, gate in enumerate("ifgo"):
        block = W[7 * k : 7 * (k + 1)]
        np.testing.assert_allclose(
            spectra[gate]["sigma_max"], np.linalg.svd(block)[1][0], rtol=1e-10
        )
        np.testing.assert_allclose(
            spectra[gate]["spectral_radius"], np.abs(np.linalg.eigvals(block)).max(), rtol=1e-10
        )
        commutator = np.linalg.norm(block @ block.T - block.T @ block)  # Frobenius
        np.testing.assert_allclose(spectra[gate]["commutator"], commutator, rtol=1e-10)
        eig = np.linalg.eigvals(block)
        henrici = np.sqrt(np.linalg.norm(block) ** 2 - (np.abs(eig) ** 2).sum())
        np.testing.assert_allclose(spectra[gate]["henrici"], henrici, rtol=1e-8)


def test_non_normality_is_zero_for_normal_matrices_and_known_for_a_jordan_block():
    import torch

    model = small_model("rnn", hidden=2, seed=0)
    cases = {  # W -> (commutator, henrici), by hand
        "orthogonal": (torch.tensor([[0.6, -0.8], [0.8, 0.6]]), (0.0, 0.0)),
        "symmetric": (torch.tensor([[2.0, 1.0], [1.0, -1.0]]), (0.0, 0.0)),
        # [[0, 1], [0, 0]]: W W^T - W^T W = diag(1, -1), eigenvalues 0, ||W||_F = 1
        "jordan": (torch.tensor([[0.0, 1.0], [0.0, 0.0]]), (np.sqrt(2.0), 1.0)),
    }
    for name, (W, (commutator, henrici)) in cases.items():
        with torch.no_grad():
            model.cell.weight_hh_l0.copy_(W.double())
        spectra = recurrent_spectra(model.cell)["h"]
        np.testing.assert_allclose(spectra["commutator"], commutator, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(spectra["henrici"], henrici, atol=1e-7, err_msg=name)


def test_gate_statistics_and_forget_product_match_torch_nn_equations():
    """Gates recomputed from torch.nn.LSTM's weights and its own hidden states."""
    task, T, H = Adding(12), 12, 5
    model = small_model("lstm", hidden=H, seed=6)
    reference = nn.LSTM(2, H, batch_first=True).double()
    reference.load_state_dict(model.cell.state_dict())
    batch = double_batch(task, 6, 3)
    settings = ProbeSettings(jacobian_examples=0, saturation=0.6)
    result = run_probes(model, task, batch, step=0, settings=settings)
    with torch.no_grad():
        out, _ = reference(batch.x)
        h_prev = torch.cat([torch.zeros(6, 1, H, dtype=torch.float64), out[:, :-1]], dim=1)
        a = batch.x @ reference.weight_ih_l0.T + reference.bias_ih_l0
        a = a + h_prev @ reference.weight_hh_l0.T + reference.bias_hh_l0
        i, f, _, o = torch.sigmoid(a).chunk(4, dim=2)
    flow = result.flow
    for name, gate in {"i": i, "f": f, "o": o}.items():
        rows = flow[(flow.quantity == "gate_mean") & (flow.state == name) & (flow.stat == "mean")]
        np.testing.assert_allclose(rows.value, gate.mean(dim=(0, 2)).numpy(), rtol=1e-10)
        sat = ((gate > 0.6) | (gate < 0.4)).double().mean(2).mean(0)
        rows = flow[
            (flow.quantity == "gate_saturation") & (flow.state == name) & (flow.stat == "mean")
        ]
        np.testing.assert_allclose(rows.value, sat.numpy(), rtol=1e-10)
    expected = torch.stack([f[:, t + 1 :].prod(dim=1).mean(-1) for t in range(T)], dim=1)
    rows = flow[(flow.quantity == "forget_product") & (flow.stat == "median")]
    np.testing.assert_allclose(rows.value, expected.quantile(0.5, dim=0).numpy(), rtol=1e-10)


def test_input_gradient_matches_torch_nn_autograd():
    task = Adding(10)
    model = small_model("gru", hidden=4, seed=7)
    reference = nn.GRU(2, 4, batch_first=True).double()
    reference.load_state_dict(model.cell.state_dict())
    batch = double_batch(task, 5, 4)
    result = run_probes(model, task, batch, step=3, settings=ProbeSettings(jacobian_examples=0))
    x = batch.x.clone().requires_grad_(True)
    y = model.readout(reference(x)[0])
    loss = task.loss(task.select(y), batch).sum()
    norms = torch.autograd.grad(loss, x)[0].norm(dim=-1)
    rows = result.flow[(result.flow.quantity == "input_grad") & (result.flow.stat == "median")]
    np.testing.assert_allclose(rows.value, norms.median(dim=0).values.detach().numpy(), rtol=1e-10)
    ev = result.evidence[result.evidence.quantity == "input_grad"]
    expected = norms.gather(1, batch.evidence).detach().numpy().ravel()
    np.testing.assert_allclose(ev.value, expected, rtol=1e-10)
    assert (ev.lag == 9 - ev.position).all() and (ev.step == 3).all()


def test_effective_horizon_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        by_lag = np.exp(np.cumsum(rng.normal(-0.3, 1.0, size=30)))
        by_lag[0] = 1.0
        k = effective_horizon(by_lag, 1e-2)
        brute = max(j for j in range(30) if all(by_lag[: j + 1] >= 1e-2))
        assert k == brute
