"""Model assembly: parameter matching, initialisation options."""

import math
from pathlib import Path

import pytest
import torch

from study.model import build_model, count_params, matched_hidden_size

# the total parameter count of each cell at input I, hidden H, output O, written from its equations
CLOSED_FORM = {
    "rnn": lambda I, H, O: 1 * (H * I + H * H + 2 * H) + H * O + O,
    "lstm": lambda I, H, O: 4 * (H * I + H * H + 2 * H) + H * O + O,
    "gru": lambda I, H, O: 3 * (H * I + H * H + 2 * H) + H * O + O,
    "mingru": lambda I, H, O: 2 * (H * I + H) + H * O + O,  # z and h~ from x only
    "minlstm": lambda I, H, O: 3 * (H * I + H) + H * O + O,  # f, i, h~ from x only
    # [Re B; Im B; D] with biases, nu, theta, gamma, Re C and Im C (N = H)
    "lru": lambda I, H, O: 3 * (H * I + H) + 3 * H + 2 * H * H + H * O + O,
}


@pytest.mark.parametrize("cell", CLOSED_FORM)
@pytest.mark.parametrize("H", [1, 7, 64])
def test_count_params_matches_the_closed_form_and_the_module(cell, H):
    model = build_model(cell, input_size=3, output_size=2, hidden_size=H)
    assert count_params(cell, 3, H, 2) == CLOSED_FORM[cell](3, H, 2)
    assert sum(p.numel() for p in model.parameters()) == CLOSED_FORM[cell](3, H, 2)


def test_count_params_without_forget_gate_leaves_out_the_unused_block():
    model = build_model("lstm", 2, 1, hidden_size=10, forget_gate=False)
    f_rows = 10 * 2 + 10 * 10 + 10 + 10  # W_if, W_hf, b_if, b_hf
    assert model.n_params() == sum(p.numel() for p in model.parameters()) - f_rows
    assert count_params("lstm", 2, 10, 1, forget_gate=False) == model.n_params()


@pytest.mark.parametrize("target", [500, 10_000, 66_000])
def test_match_params_picks_the_closest_hidden_size(target):
    for cell in CLOSED_FORM:
        H = matched_hidden_size(cell, 2, 1, target)
        brute = min(range(1, 20_000), key=lambda h: (abs(CLOSED_FORM[cell](2, h, 1) - target), h))
        assert H == brute
        model = build_model(cell, 2, 1, match_params=target)
        assert model.cell.hidden_size == H


def test_orthogonal_and_identity_init_set_the_spectrum():
    torch.manual_seed(0)
    for init, gain in [("orthogonal", 0.7), ("identity", 1.3)]:
        model = build_model("rnn", 2, 1, hidden_size=16, recurrent_init=init, recurrent_gain=gain)
        s = torch.linalg.svdvals(model.cell.weight_hh_l0.detach().double())
        torch.testing.assert_close(s, torch.full_like(s, gain), rtol=1e-5, atol=1e-5)
    irnn = build_model("rnn", 2, 1, hidden_size=4, recurrent_init="identity", nonlinearity="relu")
    c = irnn.cell
    assert float((c.bias_hh_l0.abs().sum() + c.bias_ih_l0.abs().sum()).detach()) == 0.0


def test_forget_bias_sets_the_total_forget_gate_bias():
    model = build_model("lstm", 2, 1, hidden_size=8, forget_bias=3.0)
    c = model.cell
    total = (c.bias_ih_l0 + c.bias_hh_l0).detach()
    assert torch.equal(total[8:16], torch.full((8,), 3.0))
    # the gate actually sees it: with zero input and state, f = sigmoid(3)
    traj = model(torch.zeros(1, 1, 2))
    f0 = traj.gates["f"][0]
    torch.testing.assert_close(f0, torch.sigmoid(torch.full_like(f0, 3.0)))


def test_input_bias_sets_one_total_bias_per_block_of_cells():
    # the 1997 paper's two blocks with input-gate biases -3 and -6, here over 5 cells: 3 + 2
    model = build_model("lstm", 2, 1, hidden_size=5, forget_gate=False, input_bias=[-3, -6])
    c = model.cell
    expected = torch.tensor([-3.0, -3.0, -3.0, -6.0, -6.0])
    assert torch.equal((c.bias_ih_l0 + c.bias_hh_l0).detach()[:5], expected)
    # the gate sees it: with zero input and state, i = sigmoid(bias) cell by cell
    i0 = model(torch.zeros(1, 1, 2)).gates["i"][0][0]
    torch.testing.assert_close(i0, torch.sigmoid(expected))
    one = build_model("lstm", 2, 1, hidden_size=4, input_bias=-2.5)
    torch.testing.assert_close(model_input_bias(one), torch.full((4,), -2.5))


def model_input_bias(model) -> torch.Tensor:
    c = model.cell
    return (c.bias_ih_l0 + c.bias_hh_l0).detach()[: c.hidden_size]


def test_the_1997_experiments_compose_to_the_papers_input_gate_biases():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = Path(__file__).resolve().parents[1] / "conf"
    for experiment, biases in [
        ("hochreiter1997_adding", (-3, -6)),
        ("hochreiter1997_order", (-2, -4)),
    ]:
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose("config", [f"experiment={experiment}"])
        model = instantiate(cfg.model, input_size=2, output_size=1)  # the YAML list, a ListConfig
        H = model.cell.hidden_size
        expected = torch.tensor(
            [biases[0]] * (H // 2) + [biases[1]] * (H - H // 2), dtype=torch.float
        )
        assert torch.equal(model_input_bias(model), expected)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"cell": "transformer"}, "model.cell='transformer' is unknown: allowed rnn, lstm, gru"),
        (
            {"cell": "gru", "forget_bias": 1.0},
            "model.forget_bias=1.0 does not apply to cell=gru"
            " (its keys of nonlinearity, forget_gate, forget_bias, chrono, input_bias: chrono)",
        ),
        ({"cell": "gru", "input_bias": -3.0}, "model.input_bias=-3.0 does not apply to cell=gru"),
        (
            {"cell": "rnn", "chrono": 10},
            "model.chrono=10 does not apply to cell=rnn (its keys"
            " of nonlinearity, forget_gate, forget_bias, chrono, input_bias: nonlinearity)",
        ),
        (
            {"cell": "lru", "forget_gate": False},
            "model.forget_gate=False does not apply to cell=lru"
            " (its keys of nonlinearity, forget_gate, forget_bias, chrono, input_bias:"
            " none of them)",
        ),
        ({"cell": "lstm", "forget_bias": 1, "chrono": 10}, "model.chrono=10 is invalid with"),
        ({"cell": "lstm", "input_bias": [-3], "chrono": 10}, "without chrono"),
        ({"cell": "lstm", "input_bias": [-3, "x"]}, "model.input_bias='x' is invalid"),
        ({"cell": "lstm", "input_bias": [-1, -2, -3], "hidden_size": 2}, "3 blocks for H=2"),
        ({"cell": "rnn", "hidden_size": 0}, "model.hidden_size=0 is invalid"),
        ({"cell": "rnn", "recurrent_init": "xavier"}, "model.recurrent_init='xavier'"),
    ],
)
def test_bad_options_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model(input_size=2, output_size=1, **kwargs)


def test_a_cell_takes_its_keys_top_level_or_as_options_alike():
    # one mechanism: model.chrono and model.options.chrono reach the same GRUCell.initialise
    torch.manual_seed(3)
    top = build_model("gru", 2, 1, hidden_size=6, chrono=50)
    torch.manual_seed(3)
    nested = build_model("gru", 2, 1, hidden_size=6, options={"chrono": 50})
    for a, b in zip(top.parameters(), nested.parameters(), strict=True):
        assert torch.equal(a, b)
    z = slice(6, 12)  # the update gate's bias: log U(1, T_max - 1), so within [0, log 49]
    assert (top.cell.bias_ih_l0[z] >= 0).all() and (top.cell.bias_ih_l0[z] <= math.log(49)).all()
    with pytest.raises(ValueError, match="model.chrono is set twice, also as model.options.chrono"):
        build_model("gru", 2, 1, hidden_size=6, chrono=50, options={"chrono": 50})
