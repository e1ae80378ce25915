"""The GLU block (study/model/block.py) against an independent implementation from its
equations in float64 (torch.nn's recurrences, the LRU and minGRU from their papers' formulas,
LayerNorm, GELU and the GLU written out); a 2-block LRU whose weights are set by hand solves the
adding problem, where no model linear in its inputs (the bare LRU's) can; parameter matching
against a brute-force search; the config's one-line errors; the labels."""

import math

import pandas as pd
import pytest
import torch
from torch import nn

from study.model import build_model, count_params
from study.model.ensemble import Ensemble
from study.read.labels import model_label
from study.tasks.adding import Adding


def layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def lru_reference(cell, u):
    """s_t = lambda s_{t-1} + gamma (B u_t + b_B), h_t = Re(C s_t) + D u_t + d, complex."""
    N = cell.hidden_size
    lam = torch.exp(-torch.exp(cell.nu_log) + 1j * torch.exp(cell.theta_log))
    gamma = torch.exp(cell.gamma_log)
    W_re, W_im, D = cell.weight_ih_l0.split(N)
    b_re, b_im, d = cell.bias_ih_l0.split(N)
    Bu = torch.complex(u @ W_re.T + b_re, u @ W_im.T + b_im)
    C = torch.complex(cell.C_re, cell.C_im)
    s, hs = torch.zeros(len(u), N, dtype=torch.complex128), []
    for t in range(u.shape[1]):
        s = lam * s + gamma * Bu[:, t]
        hs.append((s @ C.T).real + u[:, t] @ D.T + d)
    return torch.stack(hs, 1)


def mingru_reference(cell, u):
    """z = sigmoid(W_z u + b_z), h = (1 - z) h + z g(W_h u + b_h) (Feng et al. 2024)."""
    a_z, a_h = (u @ cell.weight_ih_l0.T + cell.bias_ih_l0).chunk(2, -1)
    g = torch.where(a_h >= 0, a_h + 0.5, torch.sigmoid(a_h))
    h, hs = torch.zeros(len(u), cell.hidden_size, dtype=u.dtype), []
    for t in range(u.shape[1]):
        z = torch.sigmoid(a_z[:, t])
        h = (1 - z) * h + z * g[:, t]
        hs.append(h)
    return torch.stack(hs, 1)


def torch_nn_reference(cell, u):
    """torch.nn's own recurrence, differentiable in the cell's parameters."""
    module = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell.kind]
    native = module(cell.input_size, cell.hidden_size, batch_first=True).double()
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    params = {n: getattr(cell, n) for n in names}
    return torch.func.functional_call(native, params, (u,))[0]


REFERENCE = {"lru": lru_reference, "mingru": mingru_reference, "rnn": torch_nn_reference,
             "lstm": torch_nn_reference, "gru": torch_nn_reference}  # fmt: skip


def block_reference(model, x):
    """The model's readout from the block's equations (study/model/block.py), layer by layer."""
    stream = x @ model.cell.weight_ih_l0.T + model.cell.bias_ih_l0  # the encoder
    for layer in model.cell.layers:
        h = REFERENCE[layer.cell.kind](layer.cell, layer_norm(stream, layer.norm))
        v = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # GELU
        W_a, W_b = layer.glu.weight.chunk(2)
        b_a, b_b = layer.glu.bias.chunk(2)
        stream = stream + (v @ W_a.T + b_a) * torch.sigmoid(v @ W_b.T + b_b)
    return stream @ model.readout.weight.T + model.readout.bias


@pytest.mark.parametrize("cell", sorted(REFERENCE))
def test_the_block_is_its_equations_forward_and_backward(cell):
    torch.manual_seed(0)
    model = build_model(cell, 3, 2, hidden_size=5, block="glu", layers=2).double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    want = block_reference(model, x)
    for got in (model(x).y, model.predict(x)):  # the explicit loop and the layer-by-layer path
        assert torch.allclose(got, want, atol=1e-12, rtol=0)
    params = list(model.parameters())
    ours = torch.autograd.grad(model.predict(x).pow(2).sum(), params)
    theirs = torch.autograd.grad(block_reference(model, x).pow(2).sum(), params)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-10, rtol=0)


def test_an_ensemble_of_blocks_is_its_members_alone():
    models = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(build_model("lru", 2, 1, hidden_size=4, block="glu", layers=2).double())
    ensemble = Ensemble(models)
    xs = [torch.randn(3, 7, 2, dtype=torch.float64) for _ in models]
    for got, model, x in zip(ensemble.predict(xs, [None] * 3), models, xs):
        assert torch.allclose(got, model(x).y, atol=1e-12, rtol=0)


def adding_lru():
    """Two LRU blocks with weights set by hand so that the readout is the adding target.

    Encoder: x0 = (v, -v, m, -m, K, -K, 0, ...): mean 0, and with K large LayerNorm divides
    every step by nearly the same sigma. Block 1 (no memory: B = C = 0) forms v * m with its
    GLU: value GELU(v + L) - L = v, gate sigmoid(k (m - 1/2)) = m, into slots 6, 7 as +-vm.
    Block 2 sums slot 6 over time with lambda = 1 - 1e-13 (no phase, gamma = 1) and writes
    the sum through its GLU (gate open) into slot 8, which the readout reads."""
    H, K, L, k = 10, 1000.0, 6.0, 60.0
    model = build_model("lru", 2, 1, hidden_size=H, block="glu", layers=2).double()
    c = math.sqrt(H / 2) / K  # 1 / sigma of LayerNorm, nearly: x0 / sigma = x0 * c
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        enc = model.cell.weight_ih_l0
        enc[0, 0], enc[1, 0], enc[2, 1], enc[3, 1] = 1, -1, 1, -1
        model.cell.bias_ih_l0[4], model.cell.bias_ih_l0[5] = K, -K
        first, second = (layer for layer in model.cell.layers)
        for layer in (first, second):
            layer.cell.nu_log.fill_(-30.0)  # |lambda| = exp(-exp(-30)): 1 - 1e-13
            layer.cell.theta_log.fill_(-50.0)  # phase exp(-50): none
        first.norm.weight[[0, 2]] = 1 / c  # u = (v, ., m, ...)
        D1 = first.cell.weight_ih_l0[2 * H :]  # D of block 1: h = D u + d
        D1[0, 0], D1[1, 2] = 1, 1
        first.cell.bias_ih_l0[2 * H : 2 * H + 2] = L  # h = (v + L, m + L)
        W_a, W_b = first.glu.weight[:H], first.glu.weight[H:]
        b_a, b_b = first.glu.bias[:H], first.glu.bias[H:]
        W_a[6, 0], b_a[6], W_a[7, 0], b_a[7] = 1, -L, -1, L  # values +-v
        W_b[6, 1], W_b[7, 1], b_b[6], b_b[7] = k, k, -k * (L + 0.5), -k * (L + 0.5)  # gate m
        second.norm.weight[6] = 1 / c  # u_6 = v m
        second.cell.weight_ih_l0[0, 6] = 1  # B: s_0 += v m
        second.cell.C_re[0, 0] = 1
        second.cell.bias_ih_l0[2 * H] = L  # h_0 = sum + L
        W_a, b_a, b_b = second.glu.weight[:H], second.glu.bias[:H], second.glu.bias[H:]
        W_a[8, 0], b_a[8], b_b[8] = 1, -L, 30.0  # slot 8 = the sum, gate open
        model.readout.weight[0, 8] = 1
    return model


@pytest.mark.parametrize("T", [25, 200])
def test_two_lru_blocks_represent_the_adding_target(T):
    task = Adding(T)
    batch = task.sample(2000, torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = task.select(adding_lru().predict(batch.x.double()))
    mse = float(task.loss(y, batch).mean())
    assert mse < 0.01 * task.baseline / 100  # 1/100 of the solved criterion (1% of baseline)


def test_no_model_linear_in_its_inputs_solves_adding():
    """The bare LRU's readout is linear in x: the least-squares fit of the target on every
    input value at every step (plus a constant) is the best such a model does, and it stays
    far above the solved criterion (1% of the baseline)."""
    task = Adding(25)
    batch = task.sample(20000, torch.Generator().manual_seed(0))
    X = torch.cat([batch.x.flatten(1).double(), torch.ones(20000, 1, dtype=torch.float64)], 1)
    target = batch.y.reshape(20000, -1)[:, -1:].double()
    fit = torch.linalg.lstsq(X, target).solution
    mse = float(((X @ fit - target) ** 2).mean())
    assert mse > 10 * 0.01 * task.baseline


def test_match_params_with_blocks_is_the_closest_count():
    target = count_params("lstm", 2, 32, 1)
    H = build_model("lru", 2, 1, match_params=target, block="glu", layers=2).cell.hidden_size
    counts = {h: build_model("lru", 2, 1, hidden_size=h, block="glu", layers=2).n_params()
              for h in range(2, 40)}  # fmt: skip
    best = min(counts, key=lambda h: (abs(counts[h] - target), h))
    assert H == best


def test_the_minlstm_forget_bias_shift_adds_to_the_forget_block_only():
    torch.manual_seed(3)
    plain = build_model("minlstm", 2, 1, hidden_size=4)
    torch.manual_seed(3)
    shifted = build_model("minlstm", 2, 1, hidden_size=4, options={"forget_bias_shift": 3.0})
    diff = shifted.cell.bias_ih_l0 - plain.cell.bias_ih_l0
    assert torch.allclose(diff, torch.tensor([3.0] * 4 + [0.0] * 8))
    a, b = dict(plain.named_parameters()), dict(shifted.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a if n != "cell.bias_ih_l0")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"layers": 2}, "model.layers=2 needs a block to stack: set model.block=glu"),
        ({"block": "mlp"}, "model.block='mlp' is unknown: allowed null, glu"),
        ({"block": "glu", "layers": 0}, "model.layers=0 is invalid"),
        ({"block": "glu", "cut": "linear"}, "does not apply with model.block=glu"),
        ({"options": {"forget_bias_shift": "x"}}, "model.options.forget_bias_shift"),
    ],
)
def test_bad_block_keys_get_one_line(keys, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        build_model("minlstm", 2, 1, hidden_size=4, **keys)


def test_labels_name_the_block_and_the_shift():
    run = {"cfg.model.cell": "lru", "cfg.model.block": "glu", "cfg.model.layers": 2}
    assert model_label(pd.Series(run)) == "LRU, 2 GLU blocks"
    run = {"cfg.model.cell": "minlstm", "cfg.model.options.forget_bias_shift": 3.0,
           "cfg.model.block": "glu", "cfg.model.layers": None}  # fmt: skip
    assert model_label(pd.Series(run)) == "minLSTM, forget bias +3, 1 GLU block"


def test_the_blocks_experiment_is_matched_to_study_lrs_lstm():
    """study_blocks_lr's match_params is the parameter count of study_lr's LSTM (H = 32 on the
    adding problem), and each of its models builds to the count closest to it."""
    from hydra import compose, initialize_config_dir

    from study.runs.job import build
    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        lstm = compose(config_name="config", overrides=["experiment=study_lr", "model=lstm"])
        target = count_params("lstm", 2, lstm.model.hidden_size, 1)
        for model in ("lru", "mingru", "minlstm_fb3"):
            cfg = compose(config_name="config", overrides=["experiment=study_blocks_lr",
                                                           f"model={model}"])  # fmt: skip
            assert cfg.model.match_params == target
            built = build(cfg).model
            assert built.cell.kind == "block" and len(built.cell.layers) == 2
            H = built.cell.hidden_size
            around = [build_model(cfg.model.cell, 2, 1, hidden_size=h, block="glu", layers=2,
                                  options=cfg.model.get("options")).n_params()
                      for h in (H - 1, H + 1)]  # fmt: skip
            assert all(abs(built.n_params() - target) <= abs(n - target) for n in around)
