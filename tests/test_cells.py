"""The hand-written cells compute exactly what torch.nn's single-layer modules compute, and their
closed-form step Jacobians what autograd computes."""

import pytest
import torch
from torch import nn
from torch.func import jacrev

from study.model import SequenceModel, build_model
from study.model.cells import GRUCell, LSTMCell, RNNCell

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}

CASES = [  # (ours, reference, kwargs)
    (RNNCell, nn.RNN, {"nonlinearity": "tanh"}),
    (RNNCell, nn.RNN, {"nonlinearity": "relu"}),
    (LSTMCell, nn.LSTM, {}),
    (GRUCell, nn.GRU, {}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("I,H,B,T", [(2, 8, 4, 12), (3, 17, 1, 30), (1, 32, 9, 5)])
@pytest.mark.parametrize("ours,ref,kw", CASES, ids=["rnn", "rnn-relu", "lstm", "gru"])
def test_matches_torch_nn(ours, ref, kw, I, H, B, T, dtype):
    torch.manual_seed(I * 100 + H)
    reference = ref(I, H, batch_first=True, **kw).to(dtype)
    cell = ours(I, H, **kw).to(dtype)
    cell.load_state_dict(reference.state_dict())  # names and shapes are torch.nn's
    model = SequenceModel(cell, output_size=1).to(dtype)

    x = torch.randn(B, T, I, dtype=dtype)
    probe = torch.randn(B, T, H, dtype=dtype)  # a random linear functional of every h_t

    ours_h = torch.stack(model(x).states["h"], dim=1)
    ref_h, _ = reference(x)
    torch.testing.assert_close(ours_h, ref_h, **TOL[dtype])

    g_ours = torch.autograd.grad((ours_h * probe).sum(), list(cell.parameters()))
    g_ref = torch.autograd.grad((ref_h * probe).sum(), list(reference.parameters()))
    names = [n for n, _ in cell.named_parameters()]
    assert names == [n for n, _ in reference.named_parameters()]
    for name, a, b in zip(names, g_ours, g_ref):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=name)


def test_lstm_cell_state_matches_torch_nn():
    torch.manual_seed(1)
    reference = nn.LSTM(3, 6, batch_first=True).double()
    cell = LSTMCell(3, 6).double()
    cell.load_state_dict(reference.state_dict())
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    _, (h_n, c_n) = reference(x)
    states = SequenceModel(cell, 1).double()(x).states
    torch.testing.assert_close(states["c"][-1], c_n[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states["h"][-1], h_n[0], rtol=1e-12, atol=1e-12)


def test_lstm_without_forget_gate_is_the_constant_error_carousel():
    """f = 1: c_t = c_{t-1} + i_t g_t exactly, with i and g recomputed here from the weights."""
    torch.manual_seed(2)
    cell = LSTMCell(2, 4, forget_gate=False).double()
    x = torch.randn(3, 7, 2, dtype=torch.float64)
    traj = SequenceModel(cell, 1).double()(x)
    c, h = traj.states["c"], traj.states["h"]
    assert all(bool((f == 1).all()) for f in traj.gates["f"])
    with torch.no_grad():
        for t in range(1, 7):
            a = x[:, t] @ cell.weight_ih_l0.T + cell.bias_ih_l0
            a = a + h[t - 1] @ cell.weight_hh_l0.T + cell.bias_hh_l0
            i, _, g, _ = a.chunk(4, dim=1)
            expected = c[t - 1] + torch.sigmoid(i) * torch.tanh(g)
            torch.testing.assert_close(c[t], expected, rtol=1e-12, atol=1e-14)


def test_left_padding_holds_the_initial_state():
    """A sequence left-padded with `valid=False` ends in the same state as the unpadded one."""
    torch.manual_seed(3)
    for cell in (RNNCell(2, 5), LSTMCell(2, 5), GRUCell(2, 5)):
        model = SequenceModel(cell.double(), 1).double()
        x = torch.randn(1, 6, 2, dtype=torch.float64)
        padded = torch.cat([torch.randn(1, 4, 2, dtype=torch.float64), x], dim=1)
        valid = torch.tensor([[False] * 4 + [True] * 6])
        a = model(x).states["h"][-1]
        b = model(padded, valid).states["h"][-1]
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "cell,kw",
    [("rnn", {}), ("rnn", {"nonlinearity": "relu"}), ("lstm", {}), ("lstm", {"forget_gate": False})]
    + [("gru", {})],
    ids=["rnn", "rnn-relu", "lstm", "lstm-no-forget-gate", "gru"],
)
def test_closed_form_step_jacobians_match_jacrev(cell, kw):
    """Cell.step_jacobian against jacrev of one step, per example, on a random state; padded
    examples (keep False) get the identity."""
    torch.manual_seed(0)
    model = build_model(cell, 3, 1, hidden_size=5, **kw).double()
    c = model.cell
    B, S = 4, sum(c.state_sizes)
    gx = torch.randn(B, c.n_gates * 5, dtype=torch.float64)
    flat = torch.randn(B, S, dtype=torch.float64)
    keep = torch.tensor([[True], [False], [True], [True]])
    ours = c.step_jacobian(gx, tuple(flat.split(c.state_sizes, dim=1)), keep)
    for b in range(B):

        def step(s, b=b):
            new, _ = c.step(
                gx[b : b + 1], tuple(s[None].split(c.state_sizes, dim=1)), keep[b : b + 1]
            )
            return torch.cat(new, dim=1)[0]

        reference = jacrev(step)(flat[b]).detach()
        torch.testing.assert_close(ours[b].detach(), reference, rtol=1e-12, atol=1e-14)
