"""Jacobians of the recurrent map: their singular values against lag, the Lyapunov spectrum of
the dynamics, and the spectra of the recurrent weights.

For an example and a lag k, J_k = d s_{T-1} / d s_{T-1-k} is the Jacobian of the last state with
respect to the state k steps earlier, with the inputs held fixed; s is the full recurrent state
(h for the RNN and GRU, [h, c] for the LSTM, [h, s] for the LRU). J_k is the product of the
per-step Jacobians A_t = d s_t / d s_{t-1}:

    J_k = A_{T-1} A_{T-2} ... A_{T-k}

`jacobian_spectra` forms each A_t exactly (the cell's closed form, or S forward-mode products of
one step with torch.func.jvp; all steps of a block at once) and multiplies them from the end
backward, so one sweep gives J_k at every lag; its singular values say how many directions of
the state survive k steps. A tanh
RNN obeys ||J_k|| <= sigma_max(W_hh)^k (Pascanu et al. 2013, with gamma = 1 since |tanh'| <= 1).

The same sweep runs the QR (Benettin) iteration Q_j R_j = A_{T-j}^T Q_{j-1} on the transposed
Jacobians: the adjoint dynamics, the very map that carries a gradient back one step. A product
and its transpose share their singular values, so the mean of log|diag R_j| after a transient
estimates the Lyapunov exponents lambda_1 >= ... >= lambda_S of the recurrence along the data's
trajectory: the gradient in the i-th direction changes by about exp(lambda_i) per step.

The estimate starts from Q = I, so over a short sequence it carries a start-up bias of order
1/T: at the probes' T = 100, against a T = 4000 reference, about 0.01 per step for the tanh RNN,
LSTM and GRU at initialisation (tests/test_dynamics.py bounds it). Where the gaps between
exponents are tiny, Q turns slowly and the bias grows (the LRU's ring puts dozens of exponents
within 0.01 of each other: -0.012 estimated against the exact -0.0013). A cell whose Jacobian is
one constant matrix therefore gives its exponents exactly (Cell.exact_exponents, the LRU).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.func import jvp, vmap

from study.model.cells import Cell

# A direction that shrinks by more than this in one step has collapsed: below it float64 rounding,
# not the dynamics, sets |R_ii| (a dead ReLU unit, the LRU's h), so its exponent floors at
# log(1e-12) = -27.6 per step.
COLLAPSED = 1e-12


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


def step_jacobians(cell: Cell, gx: Tensor, prev: Tensor, valid: Tensor | None) -> Tensor:
    """A_t = d s_t / d s_{t-1} for a block of c steps of N examples, (N, c, S, S).

    gx: (N, c, G) the inputs of those steps; prev: (N, c, S) the flat states before each;
    valid: (N, c) or None. From the cell's closed form where it has one; otherwise every
    (example, step) pair is one row of a single batched step, and column j of every A_t comes
    from one forward-mode product with the basis vector e_j."""
    N, c, S = prev.shape
    g, s = gx.reshape(N * c, -1), prev.reshape(N * c, S)
    keep = None if valid is None else valid.reshape(N * c, 1)
    closed = cell.step_jacobian(g, tuple(s.split(cell.state_sizes, dim=1)), keep)
    if closed is not None:  # the classic cells' closed forms (study/model/cells.py)
        return closed.reshape(N, c, S, S)

    def step(state: Tensor) -> Tensor:
        new, _ = cell.step(g, tuple(state.split(cell.state_sizes, dim=1)), keep)
        return torch.cat(new, dim=1)

    basis = torch.eye(S, dtype=s.dtype, device=s.device).unsqueeze(1).expand(S, N * c, S)
    columns = vmap(lambda e: jvp(step, (s,), (e,))[1])(basis)  # (S, N*c, S): [j, pair, i]
    return columns.permute(1, 2, 0).reshape(N, c, S, S)


@torch.no_grad()
def jacobian_spectra(
    cell: Cell,
    gx: Tensor,
    states: dict[str, list[Tensor]],
    lags: list[int],
    valid: Tensor | None = None,
    exponents: int = 32,
    transient: float = 0.1,
    block: int = 64,
) -> dict[str, Tensor]:
    """Singular values of J_k at each lag, and the Lyapunov spectrum, for the N examples given.

    gx: (N, T, G) the cell's input projections; states: the trajectory's states, T each (N, .).
    Returns {"sigma": (N, len(lags), S), each row sorted descending; "lyapunov": (N, m), the
    top m = min(exponents, S) exponents, descending, in units of per step}. The first
    `transient` fraction of the backward steps (while Q turns towards the growing directions)
    does not count; padded steps (valid False, where A_t = I) neither. The running product is
    rescaled at every step (its log scale kept apart), so long lags do not underflow; float64
    resolves singular values down to about 1e-16 of the largest at the same lag.
    """
    flat = torch.cat([torch.stack(states[name], dim=1) for name in cell.state_names], dim=2)
    flat, gx = flat.detach(), gx.detach()  # (N, T, S)
    N, T, S = flat.shape
    eye = torch.eye(S, dtype=flat.dtype, device=flat.device).expand(N, S, S)
    G, log_scale = eye.clone(), torch.zeros(N, dtype=flat.dtype, device=flat.device)
    m = min(exponents, S)  # QR of S x m per step: the top m exponents cost far less than all S
    Q = eye[:, :, :m].clone()
    log_r = torch.zeros(N, m, dtype=flat.dtype, device=flat.device)
    counted = torch.zeros(N, dtype=flat.dtype, device=flat.device)
    skip = math.floor(transient * (T - 1))  # backward steps before the exponents count
    sigma = torch.zeros(N, len(lags), S, dtype=flat.dtype, device=flat.device)
    at_lag = {k: j for j, k in enumerate(lags)}
    exact = cell.exact_exponents()  # None: estimated by the QR iteration below
    k = 0  # lag of the product so far: G = J_k
    for end in range(T, 1, -block):  # blocks of steps t in [first, end), walked from the end
        first = max(1, end - block)
        v = None if valid is None else valid[:, first:end]
        A = step_jacobians(cell, gx[:, first:end], flat[:, first - 1 : end - 1], v)
        for i in range(end - first - 1, -1, -1):  # t = first + i, backward
            a = A[:, i]
            k += 1
            G = G @ a
            norm = torch.linalg.matrix_norm(G).clamp_min(1e-300)  # 0 only if J_k is exactly 0
            G, log_scale = G / norm[:, None, None], log_scale + norm.log()
            if k in at_lag:
                values = torch.linalg.svdvals(G)  # descending
                sigma[:, at_lag[k]] = values * log_scale.exp()[:, None]
            if exact is not None:
                continue
            Q, R = torch.linalg.qr(a.transpose(1, 2) @ Q)
            if k > skip:
                use = torch.ones_like(counted) if v is None else v[:, i].to(flat.dtype)
                shrink = R.diagonal(dim1=1, dim2=2).abs().clamp_min(COLLAPSED)
                log_r += use[:, None] * shrink.log()
                counted += use
    lyapunov = log_r / counted.clamp_min(1)[:, None]
    if exact is not None:  # floored as the estimate floors a collapsed direction
        top = exact.to(flat).clamp_min(math.log(COLLAPSED)).sort(descending=True).values[:m]
        lyapunov = top.expand(N, m).clone()
    return {"sigma": sigma, "lyapunov": lyapunov.sort(dim=1, descending=True).values}


@torch.no_grad()
def recurrent_spectra(cell: Cell) -> dict[str, dict[str, float]]:
    """{gate block: {stat: value}} of W_hh, per gate block for the gated cells (torch's order:
    RNN h; LSTM i f g o; GRU r z n): sigma_max (largest singular value), spectral_radius (max
    |eigenvalue|) and two measures of non-normality, zero exactly for a normal matrix:
    commutator ||W W^T - W^T W||_F and henrici, Henrici's departure from normality
    sqrt(||W||_F^2 - sum |lambda_i|^2). Non-normal W can amplify a signal transiently although
    its eigenvalues say it decays. A cell without W_hh reports its own (the LRU: its diagonal
    lambda, normal by construction; minGRU/minLSTM: none); a stack of layers each layer's, the
    block's name numbered by layer ("h1", "lambda2")."""
    if cell.inner_cells():  # a stack of layers (study/model/block.py): each layer's, numbered
        return {
            f"{block}{l}": stats
            for l, inner in enumerate(cell.inner_cells(), 1)
            for block, stats in recurrent_spectra(inner).items()
        }
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
