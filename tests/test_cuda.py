"""The CUDA paths against the CPU: cuDNN, the stacked ensemble Functions and the parallel scans on
the GPU compute what the explicit cells compute on the CPU (float64), and a whole run with
device=cuda records at step 0 what the same run records on the CPU. Skipped without a GPU (CI
has none); run them where one is: `pytest tests/test_cuda.py`."""

import numpy as np
import pytest
import torch

from study.model.ensemble import Ensemble
from study.model.fast import sequence
from study.runs import rundir
from tests.conftest import small_model, study_run
from tests.test_cut import ARMS as CUT_ARMS
from tests.test_cut import IDS as CUT_IDS
from tests.test_cut import make, reference_states
from tests.test_fast import CELLS, IDS, PARAM_ORDER, explicit_states, outputs_and_grads

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")


@pytest.mark.parametrize("impl", ["fast", "native"])
@pytest.mark.parametrize("cell,kw", CELLS, ids=IDS)
def test_cudnn_equals_the_explicit_cells_on_the_cpu(cell, kw, impl):
    """A single model on CUDA takes cuDNN (impl=fast and native): outputs and all gradients
    equal the explicit cell's on the CPU, float64."""
    model = small_model(cell, input_size=3, hidden=9, output=2, seed=11, **kw)
    x = torch.randn(5, 23, 3, dtype=torch.float64)
    probe = torch.randn(5, 23, 2, dtype=torch.float64)
    y_ref, g_ref = outputs_and_grads(model, x, probe, "explicit")
    y, g = outputs_and_grads(model.to(CUDA), x.to(CUDA), probe.to(CUDA), impl)
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-9, atol=1e-11)
    for name, a, b in zip(["x", *(n for n, _ in model.named_parameters())], g, g_ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cudnn_trains_the_cells_own_parameters(cell):
    """Adam steps through cuDNN update the Parameters the cell and the optimiser hold (cuDNN's
    one weight buffer is made in place), and the trained cell computes through cuDNN what its
    explicit loop computes."""
    model = small_model(cell, hidden=8, seed=3).to(CUDA)
    params = list(model.parameters())
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-2)
    x = torch.randn(4, 10, 2, dtype=torch.float64, device=CUDA)
    for _ in range(3):
        opt.zero_grad()
        model.predict(x).square().mean().backward()
        opt.step()
    native = model.cell.__dict__["_native"]
    assert len({w.untyped_storage().data_ptr() for w in native._flat_weights}) == 1
    assert all(a is b for a, b in zip(model.parameters(), params))
    assert all(not torch.equal(p, b) for p, b in zip(params, before))  # every one trained
    with torch.no_grad():
        y = model.predict(x)
        model.impl = "explicit"
        torch.testing.assert_close(y, model.predict(x), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cell,kw", CELLS, ids=IDS)
def test_stacked_members_on_cuda_equal_each_explicit_cell_on_the_cpu(cell, kw):
    """The whole-sequence Functions that train seed ensembles on CUDA: E = 3 members at once,
    states and all gradients against each member's explicit cell on the CPU."""
    members = [small_model(cell, input_size=3, hidden=6, seed=20 + e, **kw).cell for e in range(3)]
    stacked = [
        torch.stack([getattr(c, n) for c in members]).detach().to(CUDA).requires_grad_(True)
        for n in PARAM_ORDER
    ]
    x = torch.randn(3, 4, 9, 3, dtype=torch.float64)
    x_cuda = x.to(CUDA).requires_grad_(True)
    hs = sequence(cell, kw.get("nonlinearity", "tanh"))(x_cuda, *stacked)
    probe = torch.randn(hs.shape, dtype=torch.float64)
    grads = torch.autograd.grad((hs * probe.to(CUDA)).sum(), [x_cuda, *stacked])
    for e, member in enumerate(members):
        x_e = x[e].clone().requires_grad_(True)
        h_ref = explicit_states(member, x_e)
        params = [getattr(member, n) for n in PARAM_ORDER]
        refs = torch.autograd.grad((h_ref * probe[e]).sum(), [x_e, *params])
        torch.testing.assert_close(hs[e].cpu(), h_ref, rtol=1e-9, atol=1e-11)
        for name, g, ref in zip(["x", *PARAM_ORDER], grads, refs):
            torch.testing.assert_close(g[e].cpu(), ref, rtol=1e-9, atol=1e-11, msg=f"{e} {name}")


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "lru"])
def test_the_scan_on_cuda_equals_the_loop_on_the_cpu(cell):
    """The linear-recurrence cells' parallel scan (impl=fast) on the GPU against their step loop
    (impl=explicit) on the CPU: readout and every gradient, float64."""
    model = small_model(cell, input_size=3, hidden=7, output=2, seed=5)
    x = torch.randn(4, 61, 3, dtype=torch.float64)
    probe = torch.randn(4, 61, 2, dtype=torch.float64)
    y_ref, g_ref = outputs_and_grads(model, x, probe, "explicit")
    y, g = outputs_and_grads(model.to(CUDA), x.to(CUDA), probe.to(CUDA), "fast")
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-9, atol=1e-11)
    for name, a, b in zip(["x", *(n for n, _ in model.named_parameters())], g, g_ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-11, msg=name)


TINY = ["task.length=20", "train.steps=4", "train.log_every=2", "train.eval_size=64"]


@pytest.mark.parametrize("args", [["model=lstm"], ["model=gru", "ensemble=2"]], ids=str)
def test_a_cuda_run_records_what_the_cpu_run_records_at_initialisation(tmp_path, args):
    """The real command with device=cuda (cuDNN for a single model, the stacked Functions for an
    ensemble) against the same command on the CPU: the weights are drawn on the CPU from the
    seed, so at step 0 the evaluation loss and the gradient flow (float64 probes) agree."""
    tables = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        study_run(*args, *TINY, f"device={device}", out=out, timeout=300, check=True)
        run_dirs = sorted(d for d in (out / "default").iterdir() if d.is_dir())
        assert len(run_dirs) == (2 if "ensemble=2" in args else 1)
        tables[device] = [
            (rundir.read_table(d, "metrics"), rundir.read_table(d, "grad_flow")) for d in run_dirs
        ]
    for (m_cpu, f_cpu), (m_cuda, f_cuda) in zip(tables["cpu"], tables["cuda"]):
        at0 = [m[(m.step == 0) & (m.name == "eval_loss")].value.to_numpy() for m in (m_cuda, m_cpu)]
        # float32 training: cuDNN may compute in TF32 (torch.backends.cudnn.allow_tf32 is True)
        np.testing.assert_allclose(*at0, rtol=1e-2)
        keys = ["step", "quantity", "state", "position", "stat"]
        both = f_cpu[f_cpu.step == 0].merge(f_cuda[f_cuda.step == 0], on=keys)
        assert len(both) == (f_cpu.step == 0).sum() > 0
        # the smallest singular value of a Jacobian is known only down to float64's rounding of
        # its largest (fig5b masks it there too); below, CPU and GPU record noise
        top = both[both.quantity == "jacobian_spectral"][["position", "stat", "value_x"]]
        both = both.merge(top, on=["position", "stat"], how="left", suffixes=("", "_top"))
        noise = (both.quantity == "jacobian_sigma_min") & (both.value_x < 1e-12 * both.value_x_top)
        kept = both[~noise]
        assert len(kept) > 0.9 * len(both)
        np.testing.assert_allclose(kept.value_y, kept.value_x, rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("cell,path", CUT_ARMS, ids=CUT_IDS)
def test_cut_paths_on_cuda_give_the_detach_references_gradients(cell, path):
    """Every cut arm on CUDA (the whole-sequence Functions and scans, single and stacked) against
    the detach reference on the CPU (tests/test_cut.py), float64, per-step scales."""
    model = make(cell, path)
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    s = torch.rand(9, dtype=torch.float64)
    probe = torch.randn(4, 9, 2, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    y_ref = model.readout(reference_states(model, xr, path, s))
    g_ref = torch.autograd.grad((y_ref * probe).sum(), [xr, *model.parameters()])
    model.to(CUDA)
    xc = x.to(CUDA).requires_grad_(True)
    y = model.predict(xc, scales=s.to(CUDA))
    g = torch.autograd.grad((y * probe.to(CUDA)).sum(), [xc, *model.parameters()])
    torch.testing.assert_close(y.cpu(), y_ref, rtol=1e-9, atol=1e-11)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-11)
    models = [make(cell, path, seed=k).to(CUDA) for k in (1, 2)]
    ys = Ensemble(models).predict([xc.detach(), xc.detach()], [None, None], [s.to(CUDA)] * 2)
    for m, y_e in zip(models, ys):
        torch.testing.assert_close(y_e, m.predict(xc.detach(), scales=s.to(CUDA)))


@pytest.mark.parametrize("cell", ["mingru", "minlstm", "lru"])
def test_an_ensemble_of_linear_recurrences_on_cuda_is_one_stacked_scan_of_its_members(cell):
    """On CUDA an ensemble of the linear-recurrence cells takes their stacked_scan (every member
    in one scan): its readout and every gradient against each member alone on the CPU."""
    from study.model.fast import choose_path

    models = [small_model(cell, input_size=3, hidden=6, seed=30 + e) for e in range(3)]
    assert choose_path(models[0].cell, "fast", CUDA, False, 3) == "scan"
    xs = [torch.randn(4, 17, 3, dtype=torch.float64) for _ in models]
    ensemble = Ensemble(models).to(CUDA)
    ys = ensemble.predict([x.to(CUDA) for x in xs], [None] * 3)
    grads = torch.autograd.grad(sum(y.square().sum() for y in ys), list(ensemble.parameters()))
    for e, (model, x) in enumerate(zip(models, xs)):
        y = model.predict(x)
        own = torch.autograd.grad(y.square().sum(), list(model.parameters()))
        torch.testing.assert_close(ys[e].cpu(), y, rtol=1e-9, atol=1e-11)
        for g, o in zip(grads, own):
            torch.testing.assert_close(g[e].cpu(), o, rtol=1e-9, atol=1e-10)
