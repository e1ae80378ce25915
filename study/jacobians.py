"""Jacobians of the recurrent map against lag, and the spectra of the recurrent weights.

For an example and a lag k, J_k = d s_{T-1} / d s_{T-1-k} is the Jacobian of the last state with
respect to the state k steps earlier, with the inputs held fixed; s is the full recurrent state
(h for the RNN and GRU, the concatenation [h, c] for the LSTM). Its spectral norm comes from
power iteration on J^T J with forward- and reverse-mode products (torch.func.jvp / vjp), never
forming J; its Frobenius norm from one reverse-mode product per state coordinate, batched with
vmap. A tanh RNN obeys ||J_k|| <= sigma_max(W_hh)^k (Pascanu et al. 2013, with gamma = 1 since
|tanh'| <= 1), which `recurrent_spectra` provides the numbers for.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from study.cells import Cell


def log_spaced_lags(T: int, n: int) -> list[int]:
    """About n distinct lags from 1 to T-1, evenly spaced on a log scale."""
    if T < 2:
        return []
    return sorted({int(round(v)) for v in np.geomspace(1, T - 1, num=n)})


def rollout(cell: Cell, gx: Tensor, state: Tensor, valid: Tensor | None) -> Tensor:
    """Run the recurrence from a flat state (N, S) over the inputs gx (N, k, G); return the
    final flat state. Left padding (valid False) holds the state, as in SequenceModel."""
    parts = tuple(state.split(cell.state_sizes, dim=1))
    for t, gx_t in enumerate(gx.unbind(dim=1)):
        keep = None if valid is None else valid[:, t, None]
        parts, _ = cell.step(gx_t, parts, keep)
    return torch.cat(parts, dim=1)


def jacobian_norms(
    cell: Cell,
    gx: Tensor,
    states: dict[str, list[Tensor]],
    lags: list[int],
    valid: Tensor | None = None,
    power_iters: int = 20,
    seed: int = 0,
) -> dict[str, Tensor]:
    """{"spectral": (N, len(lags)), "frobenius": (N, len(lags))} for the N examples given.

    gx: (N, T, G) the cell's input projections; states: the trajectory's states, T each (N, H).
    """
    T = gx.shape[1]
    flat = torch.cat([torch.stack(states[name], dim=1) for name in cell.state_names], dim=2)
    flat = flat.detach()  # (N, T, S)
    N, _, S = flat.shape
    g = torch.Generator().manual_seed(seed)
    spectral = torch.zeros(N, len(lags), dtype=flat.dtype, device=flat.device)
    frobenius = torch.zeros(N, len(lags), dtype=flat.dtype, device=flat.device)
    gx = gx.detach()
    for j, k in enumerate(lags):
        start = T - 1 - k  # J_k maps s_start to s_{T-1}: the inputs of steps start+1 .. T-1

        def f(s, _start=start):
            v = None if valid is None else valid[:, _start + 1 :]
            return rollout(cell, gx[:, _start + 1 :], s, v)

        s0 = flat[:, start]
        _, pullback = vjp(f, s0)
        # Frobenius: row i of J (for every example at once) is the pullback of the basis vector e_i
        basis = torch.eye(S, dtype=flat.dtype, device=flat.device).unsqueeze(1).expand(S, N, S)
        rows = vmap(pullback)(basis)[0]  # (S, N, S)
        frobenius[:, j] = rows.pow(2).sum(dim=(0, 2)).sqrt()
        # Spectral: power iteration v <- J^T J v / ||J^T J v||, per example (J is block-diagonal
        # across the batch, so normalising each example's block keeps them independent)
        v = torch.randn(N, S, generator=g, dtype=flat.dtype).to(flat.device)
        v = v / v.norm(dim=1, keepdim=True)
        for _ in range(power_iters):
            _, Jv = jvp(f, (s0,), (v,))
            w = pullback(Jv)[0]
            v = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
        _, Jv = jvp(f, (s0,), (v,))
        spectral[:, j] = Jv.norm(dim=1)
    return {"spectral": spectral, "frobenius": frobenius}


@torch.no_grad()
def recurrent_spectra(cell: Cell) -> dict[str, dict[str, float]]:
    """{gate block: {stat: value}} of W_hh, per gate block for the gated cells (torch's order:
    RNN h; LSTM i f g o; GRU r z n): sigma_max (largest singular value), spectral_radius (max
    |eigenvalue|) and two measures of non-normality, zero exactly for a normal matrix:
    commutator ||W W^T - W^T W||_F and henrici, Henrici's departure from normality
    sqrt(||W||_F^2 - sum |lambda_i|^2). Non-normal W can amplify a signal transiently although
    its eigenvalues say it decays. A cell without W_hh reports its own (the LRU: its diagonal
    lambda, normal by construction; minGRU/minLSTM: none)."""
    if not cell.recurrent_weights:
        return cell.recurrent_spectra() if hasattr(cell, "recurrent_spectra") else {}
    names = cell.block_names
    out = {}
    for name, W in zip(names, cell.weight_hh_l0.double().split(cell.hidden_size, dim=0)):
        eigenvalues = torch.linalg.eigvals(W)
        departure = torch.linalg.matrix_norm(W) ** 2 - (eigenvalues.abs() ** 2).sum()
        out[name] = {
            "sigma_max": float(torch.linalg.matrix_norm(W, ord=2)),
            "spectral_radius": float(eigenvalues.abs().max()),
            "commutator": float(torch.linalg.matrix_norm(W @ W.T - W.T @ W)),
            "henrici": float(departure.clamp_min(0).sqrt()),  # rounding can dip below 0
        }
    return out
