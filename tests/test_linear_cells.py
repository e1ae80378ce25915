"""minGRU, minLSTM and the LRU: the parallel scan against the step loop in float64 (states,
outputs, every gradient), the LRU against its closed form, the linear-path probe against
autograd, the ring and chrono initialisations against their distributions."""

import math

import numpy as np
import pytest
import torch

from study.model import build_model
from study.model.linear_cells import LinearRecurrence, log_space_scan
from study.probes import cell_path_gradient, gradient_flow
from study.tasks.adding import Adding

NEW = ["mingru", "minlstm", "lru"]


def model64(cell, H=6, I=3, O=2, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(cell, I, O, hidden_size=H, **kw).double()


SCANS = [("mingru", False), ("mingru", True), ("minlstm", False), ("minlstm", True), ("lru", None)]


@pytest.mark.parametrize("cell, log_space", SCANS)  # log space: CUDA's form, here on the CPU
@pytest.mark.parametrize("T", [1, 7, 200])
def test_the_scan_computes_what_the_loop_computes_with_every_gradient(cell, log_space, T):
    model = model64(cell, options={"r_min": 0.5, "r_max": 0.99} if cell == "lru" else None)
    with torch.no_grad():  # gates far from 1/2, so that the path decays and grows unevenly
        model.cell.bias_ih_l0.add_(torch.linspace(-3, 3, model.cell.bias_ih_l0.numel()).double())
    x = torch.randn(4, T, 3, dtype=torch.float64, requires_grad=True)
    loop = model(x).y
    form = {} if log_space is None else {"log_space": log_space}
    scan = model.readout(model.cell.scan(x, **form))
    torch.testing.assert_close(scan, loop, rtol=1e-10, atol=1e-12)
    assert model.predict(x).grad_fn is not None  # training takes the scan (impl=fast)
    w = torch.randn_like(loop)
    params = [x, *model.parameters()]
    g_loop = torch.autograd.grad((loop * w).sum(), params, allow_unused=True)
    g_scan = torch.autograd.grad((scan * w).sum(), params, allow_unused=True)
    for p, a, b in zip(params, g_scan, g_loop):
        a = torch.zeros_like(p) if a is None else a  # T = 1: the scan never reads lambda
        b = torch.zeros_like(p) if b is None else b
        # 1e-10 of the largest entry: log-space sums lose a few digits on the tiny entries
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()) + 1e-300)


def _recurrence_by_autograd(a, b):
    """h_t = a_t * h_{t-1} + b_t, one autograd operation per step: the reference."""
    h, out = torch.zeros_like(b[:, 0]), []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("T", [1, 2, 9, 200])
def test_both_scans_compute_the_recurrence_with_its_gradients(T):
    """The CPU's step loop with its hand-written backward and the log-space scan (CUDA's),
    against autograd through the plain recurrence, in float64; a in (0, 1) spread out so that
    the products span many decades, b > 0 as the log-space form needs."""
    gen = torch.Generator().manual_seed(T)
    a = torch.rand(3, T, 5, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    b = torch.rand(3, T, 5, generator=gen, dtype=torch.float64) + 0.1
    w = torch.randn(3, T, 5, generator=gen, dtype=torch.float64)
    a.requires_grad_(), b.requires_grad_()
    ref = _recurrence_by_autograd(a, b)
    g_ref = torch.autograd.grad((ref * w).sum(), (a, b))
    for name, h in [
        ("loop", LinearRecurrence.apply(a, b)),
        ("log-space", log_space_scan(a.log(), b.log())),
    ]:
        torch.testing.assert_close(h, ref, rtol=1e-12, atol=0, msg=name)
        for got, want in zip(torch.autograd.grad((h * w).sum(), (a, b)), g_ref):
            # the log-space sums lose a few digits on entries far below the largest
            atol = 1e-10 * float(want.abs().max()) + 1e-14 if name == "log-space" else 0.0
            torch.testing.assert_close(got, want, rtol=1e-10, atol=atol, msg=name)


def test_the_step_loops_backward_passes_finite_differences():
    a = torch.rand(2, 6, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LinearRecurrence.apply, (a, b))


def test_the_lru_state_is_its_closed_form_sum():
    """s_T = sum_k lambda^(T-k) gamma (B x_k): complex numpy, independent of both paths."""
    model = model64("lru", H=5, options={"r_min": 0.6, "r_max": 0.95})
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    s_last = model(x).states["s"][-1].detach().numpy()
    c = model.cell
    lam_re, lam_im, gamma = (t.detach().numpy() for t in c.eigenvalues())
    lam = lam_re + 1j * lam_im
    W = c.weight_ih_l0.detach().numpy()
    b = c.bias_ih_l0.detach().numpy()
    Bx = x.numpy() @ (W[:5] + 1j * W[5:10]).T + (b[:5] + 1j * b[5:10])
    expected = sum(lam ** (29 - k) * gamma * Bx[:, k] for k in range(30))
    np.testing.assert_allclose(s_last[:, :5] + 1j * s_last[:, 5:], expected, rtol=1e-12)


@pytest.mark.parametrize("cell", NEW)
def test_the_linear_path_alone_is_the_whole_gradient(cell):
    """Their state path is linear and nothing else links step to step, so the gradient carried
    along it alone (the probe's recursion) equals autograd's ∂ℓ/∂state."""
    torch.manual_seed(1)
    task = Adding(length=25)
    batch = task.sample(8, torch.Generator().manual_seed(0))
    model = build_model(cell, task.input_size, task.output_size, hidden_size=6)
    parts, norms = gradient_flow(model, task, batch, torch.float64)
    state, g = cell_path_gradient(parts)
    assert state == model.cell.memory
    torch.testing.assert_close(g.norm(dim=-1), norms[state], rtol=1e-10, atol=1e-300)


def test_the_ring_initialisation_places_lambda_on_its_ring():
    torch.manual_seed(0)
    model = build_model("lru", 2, 1, hidden_size=4000, options={"r_min": 0.4, "r_max": 0.9})
    lam_re, lam_im, gamma = (t.detach().double() for t in model.cell.eigenvalues())
    r2 = lam_re**2 + lam_im**2
    assert 0.4**2 - 1e-6 <= r2.min() and r2.max() <= 0.9**2 + 1e-6
    # uniform in area: |lambda|^2 uniform on [r_min^2, r_max^2], so its mean is the midpoint
    assert abs(float(r2.mean()) - (0.4**2 + 0.9**2) / 2) < 4 * 0.65 / math.sqrt(12 * 4000)
    torch.testing.assert_close(gamma, torch.sqrt(1 - r2), rtol=1e-5, atol=1e-6)
    phase = torch.atan2(lam_im, lam_re) % (2 * math.pi)
    assert abs(float(phase.mean()) - math.pi) < 4 * 2 * math.pi / math.sqrt(12 * 4000)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_initialisation_spreads_the_memory_time_uniformly(cell):
    """Tallec & Ollivier 2018: keep-gate bias b = log U(1, T_max - 1), so at zero input the
    memory time 1 / (1 - sigmoid(b)) = 1 + U is uniform on [2, T_max]; the LSTM's input bias -b."""
    torch.manual_seed(0)
    H, T_max = 8000, 100.0  # many units for the statistics, within model.hidden_size's limit
    c = build_model(cell, 2, 1, hidden_size=H, chrono=T_max).cell
    total = (c.bias_ih_l0 + c.bias_hh_l0).detach().double()
    keep = total[H : 2 * H]
    memory = 1 / (1 - torch.sigmoid(keep))
    assert float(memory.min()) >= 2 - 1e-9 and float(memory.max()) <= T_max + 1e-9
    mean, sd = (2 + T_max) / 2, (T_max - 2) / math.sqrt(12)
    assert abs(float(memory.mean()) - mean) < 4 * sd / math.sqrt(H)
    if cell == "lstm":
        torch.testing.assert_close(total[:H], -keep)


@pytest.mark.parametrize("cell", NEW)
def test_an_ensemble_of_linear_cells_runs_each_member_as_alone(cell):
    from study.model.ensemble import Ensemble

    models = [model64(cell, seed=s) for s in range(3)]
    xs = [torch.randn(2, 9, 3, dtype=torch.float64) for _ in models]
    ys = Ensemble(models).predict(xs, [None] * 3)
    for m, x, y in zip(models, xs, ys):
        torch.testing.assert_close(y, m.predict(x), rtol=1e-10, atol=1e-12)
