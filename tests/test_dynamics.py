"""Lyapunov exponents and the gradient signal-to-noise per lag, each against an independent
computation: closed forms of diagonal recurrences, high-precision long products (mpmath), and
the gradient with the graph cut at every step but one."""

import copy

import mpmath
import numpy as np
import pytest
import torch
from torch.func import jacrev

import study.probes.snr
from study.probes import ProbeSettings, run_probes
from study.probes.jacobians import COLLAPSED, jacobian_spectra
from study.probes.snr import gradient_snr, per_step_gradients
from study.tasks.adding import Adding
from tests.conftest import small_model
from tests.test_probes import double_batch


def spectra(model, batch, lags=(1,), **kw):
    traj = model(batch.x, batch.valid)
    gx = model.cell.project_inputs(batch.x)
    return traj, jacobian_spectra(model.cell, gx, traj.states, list(lags), batch.valid, **kw)


def test_lru_exponents_are_the_log_moduli_of_its_eigenvalues_at_the_probes_T():
    """The LRU's state map is one constant matrix: its step Jacobian, formed by autograd at two
    different steps, is the same A, and the exponents at the probes' own T = 100 (transient 0.1,
    the defaults) are log|eig(A)| (torch.linalg.eigvals) to rounding, the zero eigenvalues of h
    (h_t reads s_t and forgets h_{t-1}) at the collapse floor. The ring puts |lambda| near 1,
    where the QR estimate was biased by 0.01 per step at this T."""
    T, H = 100, 6
    model = small_model("lru", hidden=H, seed=3, options={"r_min": 0.99, "r_max": 0.9995})
    batch = double_batch(Adding(T), 2, 0)
    traj, out = spectra(model, batch, exponents=3 * H, transient=0.1)
    cell, gx = model.cell, model.cell.project_inputs(batch.x).detach()
    flat = torch.cat([torch.stack(traj.states[n], 1) for n in cell.state_names], 2).detach()

    def A(t):  # d s_t / d s_{t-1} of example 0, by reverse-mode autograd
        def step(s):
            new, _ = cell.step(gx[:1, t], tuple(s[None].split(cell.state_sizes, 1)))
            return torch.cat(new, 1)[0]

        return jacrev(step)(flat[0, t - 1])

    torch.testing.assert_close(A(5), A(80), rtol=0, atol=1e-14)
    moduli = torch.linalg.eigvals(A(5)).abs()
    expected = moduli.clamp_min(COLLAPSED).log().sort(descending=True).values
    assert expected[0] > -0.01  # exponents near zero: where the estimate was worst
    for e in range(2):
        torch.testing.assert_close(out["lyapunov"][e], expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_estimated_exponents_at_the_probes_T_are_within_0_015_of_a_long_run(cell):
    """A nonlinear cell's exponents are estimated (QR): at the dynamics experiment's size and T
    (H = 64, T = 100, transient 0.1), each example's top exponent and the mean error over the
    top 8 sit within 0.015 per step of the same cell's exponents over one sequence of T = 4000
    (the long-run reference). Smaller cells fluctuate more (0.02 for the LSTM at H = 16)."""
    model = small_model(cell, hidden=64, seed=0)

    def exponents(T, N, seed):
        return spectra(model, double_batch(Adding(T), N, seed), exponents=8, transient=0.1)[1]

    reference = exponents(4000, 1, 99)["lyapunov"][0]
    short = exponents(100, 4, 1)["lyapunov"]
    assert reference[0] < -0.1  # contracting at initialisation: a spectrum to get right
    assert (short[:, 0] - reference[0]).abs().max() < 0.015
    assert (short - reference).abs().mean() < 0.015


def test_mingru_exponents_are_the_mean_log_keep_gate():
    """minGRU's Jacobian is diag(1 - z_t): each exponent is the time average of log(1 - z_t)
    of one unit over the steps that count (after the transient), exactly."""
    T, H, transient = 50, 5, 0.2
    model = small_model("mingru", hidden=H, seed=1)
    traj, out = spectra(model, double_batch(Adding(T), 3, 1), exponents=H, transient=transient)
    z = torch.stack(traj.gates["z"], dim=1).detach()  # (N, T, H)
    skip = int(transient * (T - 1))
    steps = torch.arange(T - 1 - skip, 0, -1)  # the steps t whose Jacobians count (k > skip)
    expected = torch.log1p(-z[:, steps]).mean(dim=1).sort(dim=1, descending=True).values
    torch.testing.assert_close(out["lyapunov"], expected, rtol=0, atol=1e-12)


def test_rnn_exponents_match_the_log_singular_values_of_the_long_product():
    """A tanh RNN along a data trajectory: per-step Jacobians by jacrev, their product over the
    whole sequence in 400-digit arithmetic, its singular values; (1/k) log sigma_i against the
    QR estimate with no transient (both then cover the same k steps; they agree to O(1/k))."""
    T, H = 300, 5
    model = small_model("rnn", hidden=H, seed=2, recurrent_init="orthogonal", recurrent_gain=1.3)
    batch = double_batch(Adding(T), 1, 4)
    traj, out = spectra(model, batch, exponents=H, transient=0.0)
    gx = model.cell.project_inputs(batch.x).detach()
    h = [s[0].detach() for s in traj.states["h"]]
    mpmath.mp.dps = 400  # the singular values span ~e^-500: far beyond float64's 16 digits
    product = mpmath.eye(H)
    for t in range(1, T):  # A_t = d h_t / d h_{t-1}
        A = jacrev(lambda s, t=t: model.cell.step(gx[:, t], (s[None],))[0][0][0])(h[t - 1])
        product = mpmath.matrix(A.detach().tolist()) * product
    sigma = mpmath.svd_r(product, compute_uv=False)
    k = T - 1
    expected = sorted((float(mpmath.log(sigma[i])) / k for i in range(H)), reverse=True)
    ours = out["lyapunov"][0].numpy()
    assert ours[0] > -0.5 and ours[-1] < ours[0] - 0.05  # a spread spectrum, not a trivial one
    np.testing.assert_allclose(ours, expected, rtol=0, atol=0.02)


def cut_gradient(model, task, batch, t_keep):
    """The gradient with respect to the cell's parameters when only step t_keep uses the live
    parameters and every other step a frozen copy: the graph cut at every step but one."""
    live = model.cell
    frozen = copy.deepcopy(live).requires_grad_(False)
    B, T, _ = batch.x.shape
    gx_live, gx_frozen = live.project_inputs(batch.x), frozen.project_inputs(batch.x)
    state, hs = live.initial_state(B), []
    for t in range(T):
        cell, gx = (live, gx_live) if t == t_keep else (frozen, gx_frozen)
        keep = None if batch.valid is None else batch.valid[:, t, None]
        state, _ = cell.step(gx[:, t], state, keep)
        hs.append(state[0])
    loss = task.loss(task.select(model.readout(torch.stack(hs, 1))), batch).mean()
    params = list(live.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
    return torch.cat([g.reshape(-1) for g in flat])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru", "minlstm", "lru"])
def test_per_step_gradients_are_the_graph_cut_at_every_other_step(cell):
    task, T = Adding(9), 9
    model = small_model(cell, hidden=3, seed=5)
    batch = double_batch(task, 5, 1)
    ours = per_step_gradients(model, task, batch)
    reference = torch.stack([cut_gradient(model, task, batch, t) for t in range(T)])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)
    # and they add up to the whole gradient
    loss = task.loss(task.select(model(batch.x).y), batch).mean()
    whole = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, model.cell.parameters())])
    torch.testing.assert_close(ours.sum(dim=0), whole, rtol=0, atol=1e-13)


def test_snr_is_the_norm_of_the_mean_over_the_spread():
    """signal, noise and SNR per lag against numpy on the per-batch gradients, kept whole."""
    task = Adding(12)
    model = small_model("gru", hidden=4, seed=0)
    batches = [double_batch(task, 8, seed) for seed in range(6)]
    out = gradient_snr(model, task, batches)
    g = np.stack([per_step_gradients(model, task, b).detach().numpy() for b in batches])
    mean = g.mean(axis=0)  # (T, P)
    noise = np.sqrt(((g - mean) ** 2).sum(axis=2).mean(axis=0))
    np.testing.assert_allclose(out["signal"].numpy(), np.linalg.norm(mean, axis=1), rtol=1e-12)
    np.testing.assert_allclose(out["noise"].numpy(), noise, rtol=1e-9)
    np.testing.assert_allclose(out["snr"].numpy(), np.linalg.norm(mean, axis=1) / noise, rtol=1e-9)


def test_snr_of_pure_noise_is_about_one_over_root_m(monkeypatch):
    """The floor the README quotes: where the gradient has zero mean, the estimator gives
    SNR ~ 1/sqrt(M). Monte Carlo: M draws of zero-mean Gaussian gradients at 200 positions
    stand in for the per-batch gradients."""
    M = 16
    draws = iter(torch.tensor(np.random.default_rng(0).standard_normal((M, 200, 30))))
    monkeypatch.setattr(
        study.probes.snr, "per_step_gradients", lambda model, task, batch: next(draws)
    )
    snr = gradient_snr(None, None, [None] * M)["snr"].numpy()
    assert abs(snr.mean() - 1 / np.sqrt(M)) < 0.02


def test_run_probes_writes_spectra_lyapunov_and_snr():
    task = Adding(20)
    model = small_model("lstm", hidden=3, seed=0).float()
    batch = task.sample(6, torch.Generator().manual_seed(0))
    settings = ProbeSettings(jacobian_examples=2, jacobian_lags=4, snr_batches=3)
    result = run_probes(model, task, batch, step=5, settings=settings)
    quantities = set(result.flow["quantity"])
    for name in ("spectral", "frobenius", "sigma_min", "alive"):
        assert f"jacobian_{name}" in quantities
    assert {"grad_signal", "grad_noise", "grad_snr"} <= quantities
    snr = result.flow[result.flow["quantity"] == "grad_snr"]
    assert len(snr) == 20 and set(snr["stat"]) == {"value"} and set(snr["state"]) == {"theta"}
    lyapunov = result.lyapunov
    assert len(lyapunov) == 2 * 6 and set(lyapunov["index"]) == set(range(1, 7))  # S = 2H
    assert result.scalars["lyapunov_max"] == pytest.approx(
        lyapunov[lyapunov["index"] == 1]["value"].mean()
    )
    alive = result.flow[(result.flow["quantity"] == "jacobian_alive")]
    assert alive["value"].between(0, 6).all()
    off = run_probes(model, task, batch, step=5, settings=settings, jacobians=False)
    assert off.lyapunov.empty and "grad_snr" not in set(off.flow["quantity"])
