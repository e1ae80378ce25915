"""The probes. This folder: Jacobian spectra and Lyapunov exponents (jacobians), the gradient's
signal-to-noise ratio (snr). This module: gradient-flow probes, what reaches each state and
position, per example, as tidy rows, and the schedule that runs them all (run_probes).

"Total" gradient means everything that reaches s_t from the loss: through the readout at this
and later steps and back through the recurrence. For the LSTM, dL/dc_t includes the same-step
path through h_t = o_t * tanh(c_t), as in the usual BPTT delta. Norms are per example (the
gradient of that example's own loss, not of the batch mean) so they do not depend on the batch
size, then summarised over the batch by mean and median (the statistics the readers use,
study.runs.rundir.FLOW_STATS).
Left-padded positions are left out. Probes run in float64 on a copy of the model, on the batch
of the step they describe.

Quantities (the `quantity` column of grad_flow.parquet; `state` says which tensor):
  grad_norm            ||dl/dh_t||, ||dl/dc_t||: the total backpropagated gradient
  grad_norm_cell_path  the part of it that travelled along the linear path alone: for the LSTM
                       dc_{t+1}/dc_t = diag(f_{t+1}) (state c), for the GRU the direct
                       dh_{t+1}/dh_t = diag(z_{t+1}) term of h = (1-z)*n + z*h (state h)
  forget_product       mean over units of prod_{r>t} f_r, the cell path's gain from t to T-1
  gate_mean            mean gate activation (i, f, o for the LSTM; r, z for the GRU)
  gate_saturation      fraction of gate units below 1-s or above s (s = `saturation`)
  tanh_saturation      RNN: fraction of units with |h_t| > s
  input_grad           ||dl/dx_t|| (state x)
  jacobian_spectral    ||d s_{T-1} / d s_t||_2 at log-spaced lags (state s, see jacobians.py)
  jacobian_frobenius   the same in Frobenius norm
  jacobian_sigma_min   the smallest singular value of d s_{T-1} / d s_t
  jacobian_alive       how many of its singular values exceed `alive_threshold`: how many
                       directions of the state survive that many steps
  grad_signal, grad_noise, grad_snr
                       the gradient signal-to-noise per lag (state theta, stat "value";
                       study/probes/snr.py)
Besides: evidence.parquet holds, per example, ||dl/dx_t|| at the task's evidence positions with
their lag (quantity input_grad); weights.parquet the spectra of W_hh per gate block;
lyapunov.parquet the top Lyapunov exponents per example; metrics.parquet gets the effective
horizon, the largest Lyapunov exponent and how many are near zero.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from study.checks import require_int, require_number
from study.model import SequenceModel
from study.probes.jacobians import jacobian_spectra, log_spaced_lags, recurrent_spectra
from study.probes.snr import gradient_snr
from study.runs import rundir
from study.tasks.base import Batch, Task

QUANTILE = {"mean": None, "median": 0.5}  # statistic -> quantile (None: the mean)
STATS = {stat: QUANTILE[stat] for stat in rundir.FLOW_STATS}
FLOW_COLUMNS = ["step", "quantity", "state", "position", "lag", "stat", "value"]


@dataclass
class ProbeSettings:
    precision: str = "float64"  # dtype of the probe copy (float32 underflows at long lags)
    every: int = 0  # probe at step 0, the last step and every this many steps; 0 = every log step
    jacobian_examples: int = 2  # examples whose step Jacobians are chained exactly; 0 = off
    jacobian_lags: int = 8  # about this many log-spaced lags from 1 to T-1
    jacobian_every: int = 1000  # Jacobian, Lyapunov and SNR probes: at the ends and every this many
    alive_threshold: float = 1e-3  # a direction survives k steps while its singular value is above
    lyapunov_exponents: int = 32  # the top this many Lyapunov exponents
    lyapunov_transient: float = 0.1  # fraction of the steps before the exponents count
    lyapunov_zero: float = 0.01  # |exponent| below this per step counts as near zero
    snr_batches: int = 0  # independent minibatches for the gradient SNR per lag; 0 = off
    saturation: float = 0.95  # a unit is saturated beyond this (gates: also below 1 - it)
    horizon_fraction: float = 1e-3  # effective horizon: median gradient above this x the last
    flow_lags: int | None = None  # keep about this many log-spaced lags in grad_flow; None = all

    def __post_init__(self):
        if self.precision not in ("float64", "float32"):
            bad = f"probe.precision={self.precision!r}"
            raise ValueError(f"{bad} is invalid: allowed float64, float32")
        for key in ("every", "jacobian_examples", "jacobian_every", "snr_batches"):
            require_int(f"probe.{key}", getattr(self, key), 0)
        if self.flow_lags is not None:
            require_int("probe.flow_lags", self.flow_lags, 2)
        for key in ("jacobian_lags", "lyapunov_exponents"):
            require_int(f"probe.{key}", getattr(self, key), 1)
        require_number("probe.saturation", self.saturation)
        require_number("probe.horizon_fraction", self.horizon_fraction)
        require_number("probe.alive_threshold", self.alive_threshold, 0, strict=True)
        require_number("probe.lyapunov_zero", self.lyapunov_zero, 0, strict=True)
        require_number("probe.lyapunov_transient", self.lyapunov_transient, 0)
        if not self.lyapunov_transient < 1:
            bad = f"probe.lyapunov_transient={self.lyapunov_transient!r}"
            raise ValueError(f"{bad} is invalid: must be in [0, 1)")
        if self.snr_batches == 1:
            raise ValueError("probe.snr_batches=1 is invalid: the noise needs 2 or more (0 = off)")
        if not 0.5 < self.saturation < 1:
            raise ValueError(
                f"probe.saturation={self.saturation!r} is invalid: must be in (0.5, 1)"
            )
        if not 0 < self.horizon_fraction < 1:
            bad = f"probe.horizon_fraction={self.horizon_fraction!r}"
            raise ValueError(f"{bad} is invalid: must be in (0, 1)")

    def due(self, step: int, steps: int, log_every: int) -> tuple[bool, bool]:
        """The probe schedule, the one place it is decided: (probe at this step?, with the
        Jacobian probes?). Probes run at step 0, at the last step and every `every` steps, where
        every=0 means at every evaluation (each `log_every` steps); the Jacobian probes (Jacobian
        spectra and Lyapunov exponents, gradient SNR: the expensive ones) only when asked for,
        at those ends and every `jacobian_every` steps."""
        ends = step in (0, steps)
        every = self.every or log_every
        probe = ends or step % every == 0
        asked = self.jacobian_examples > 0 or self.snr_batches > 0
        scheduled = self.jacobian_every > 0 and step % self.jacobian_every == 0
        jacobians = asked and (ends or scheduled)
        return probe, probe and jacobians


@dataclass
class ProbeResult:
    flow: pd.DataFrame  # FLOW_COLUMNS
    evidence: pd.DataFrame  # step, example, evidence, position, lag, quantity, value
    weights: pd.DataFrame  # step, block, stat, value
    lyapunov: pd.DataFrame  # step, example, index, value (per step; index 1 the largest)
    scalars: dict  # per-step numbers for the metrics table


def batch_summary(values: Tensor, valid: Tensor | None = None) -> dict[str, np.ndarray]:
    """values: (B, T) per-example numbers -> {stat: (T,)} over the batch, ignoring padding."""
    v = values.detach().double()
    if valid is not None:
        v = v.masked_fill(~valid, float("nan"))
    out = {}
    for stat, q in STATS.items():
        s = v.nanmean(dim=0) if q is None else v.nanquantile(q, dim=0)
        out[stat] = s.cpu().numpy()
    return out


def tidy(
    step: int,
    quantity: str,
    summaries: dict[str, dict[str, np.ndarray]],
    T: int,
    positions: np.ndarray | None = None,
) -> pd.DataFrame:
    """{state: {stat: values}} -> rows FLOW_COLUMNS; values are at `positions` (default 0..T-1)."""
    frames = []
    for state, by_stat in summaries.items():
        for stat, values in by_stat.items():
            pos = np.arange(len(values)) if positions is None else np.asarray(positions)
            frames.append(
                pd.DataFrame(
                    {
                        "step": step,
                        "quantity": quantity,
                        "state": state,
                        "position": pos,
                        "lag": T - 1 - pos,
                        "stat": stat,
                        "value": values,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def effective_horizon(by_lag: np.ndarray, fraction: float) -> int:
    """The largest lag k such that by_lag[j] >= fraction * by_lag[0] for every j <= k
    (by_lag[0] is the last position). Equals len - 1 when the gradient never drops that far."""
    ok = np.asarray(by_lag) >= fraction * by_lag[0]
    return int(len(ok) - 1 if ok.all() else np.argmin(ok) - 1)


def gradient_flow(
    model: SequenceModel, task: Task, batch: Batch, dtype: torch.dtype = torch.float64
) -> tuple[dict, dict[str, Tensor]]:
    """Per-example ||dl_b/ds_t||, (B, T) for every state s, on a copy of the model in `dtype`.

    float64 by default: a tanh RNN's gradient shrinks by ~0.5 per step at initialisation, which
    leaves float32's range (~1e-38) within about a hundred steps; the probe reports the value of
    the derivative, not where float32 happens to flush it to zero. Training is untouched: it
    does its own float32 backward pass. Differentiating the *sum* of per-example losses gives
    each example's own gradient, since s_t of example b influences only l_b.

    Returns (parts, norms): parts holds the probe model, batch, trajectory and the gradients
    with respect to the inputs and the readout outputs, for the other probes.
    """
    probe_model = copy.deepcopy(model).to(dtype)
    b = batch.apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
    x = b.x.detach().requires_grad_(True)
    traj = probe_model(x, b.valid)
    loss_sum = task.loss(task.select(traj.y), b).sum()
    names = list(traj.states)
    flat = [s for name in names for s in traj.states[name]]
    grads = torch.autograd.grad(loss_sum, [x, traj.y, *flat])
    T = x.shape[1]
    norms = {
        name: torch.stack([g.norm(dim=-1) for g in grads[2 + k * T : 2 + (k + 1) * T]], dim=1)
        for k, name in enumerate(names)
    }
    parts = {"model": probe_model, "batch": b, "traj": traj, "dx": grads[0], "dy": grads[1]}
    return parts, norms


def cell_path_gradient(parts: dict) -> tuple[str, Tensor] | None:
    """The part of the state gradient that travelled only along the cell's linear path,
    (B, T, S): g_t = carry_{t+1}(g_{t+1}) + injection_t (Cell.linear_path: the LSTM's f on c,
    the GRU's z on h, the linear-recurrence cells' whole state path), with the injection the
    gradient arriving from the readout at step t. None for the RNN, which has no such path."""
    model, traj, dy = parts["model"], parts["traj"], parts["dy"]
    direct_h = dy @ model.readout.weight  # dl/dh_t through the readout only, (B, T, H)
    path = model.cell.linear_path(traj, direct_h)
    if path is None:
        return None
    state, inject, carry = path
    valid = parts["batch"].valid
    T = inject.shape[1]
    # a cut of this very path (study/model/cut.py) scales what it carries from step t to t-1 by s_t
    cut = traj.cut if traj.cut is not None and traj.cut[0] == model.cell.linear_path_cut else None
    g = [None] * T
    g[T - 1] = inject[:, T - 1]
    for t in range(T - 2, -1, -1):
        back = carry(g[t + 1], t + 1)
        if cut is not None:
            back = back * cut[1][t + 1].to(back.dtype)
        if valid is not None:  # a padded step holds the state: its carry is the identity
            back = torch.where(valid[:, t + 1, None], back, g[t + 1])
        g[t] = back + inject[:, t]
    return state, torch.stack(g, dim=1)


def run_probes(
    model: SequenceModel,
    task: Task,
    batch: Batch,
    step: int,
    settings: ProbeSettings,
    jacobians: bool = True,
    data: torch.Generator | None = None,
) -> ProbeResult:
    """Every probe of one log step, on the batch of that step, before its update. The Jacobian
    probes only if `jacobians`: the Jacobian spectra and Lyapunov exponents (settings.
    jacobian_examples of the batch's examples) and the gradient SNR (settings.snr_batches fresh
    minibatches of the batch's size, drawn from `data`, a stream apart from training's)."""
    dtype = getattr(torch, settings.precision)
    parts, norms = gradient_flow(model, task, batch, dtype)
    b, cell = parts["batch"], parts["model"].cell
    T, valid = b.x.shape[1], b.valid
    rows = [tidy(step, "grad_norm", {n: batch_summary(v, valid) for n, v in norms.items()}, T)]
    rows += path_rows(parts, step, settings.saturation)
    input_grad = parts["dx"].norm(dim=-1)  # (B, T)
    rows.append(tidy(step, "input_grad", {"x": batch_summary(input_grad, valid)}, T))

    scalars, lyapunov = {}, pd.DataFrame()
    if jacobians:
        jacobian, lyapunov, scalars = jacobian_rows(parts, step, settings)
        rows += jacobian + snr_rows(parts, task, step, settings, dtype, data)
    memory = batch_summary(norms[cell.memory], valid)["median"][::-1]  # by lag, lag 0 first
    scalars["effective_horizon"] = effective_horizon(memory, settings.horizon_fraction)
    flow = pd.concat(rows, ignore_index=True)
    if settings.flow_lags is not None:  # compact tables: log-spaced lags, the first and last kept
        keep = {0, T - 1, *log_spaced_lags(T, settings.flow_lags)}
        spectra = flow.quantity.str.startswith("jacobian_")  # already at their own lags
        flow = flow[spectra | flow.lag.isin(keep)].reset_index(drop=True)
    weights = pd.DataFrame(
        [
            {"step": step, "block": block, "stat": stat, "value": value}
            for block, by_stat in recurrent_spectra(model.cell).items()
            for stat, value in by_stat.items()
        ]
    )
    return ProbeResult(flow, evidence_rows(b, input_grad, step), weights, lyapunov, scalars)


def path_rows(parts: dict, step: int, s: float) -> list[pd.DataFrame]:
    """What the recurrence does along the way: the gradient on the linear path alone, the LSTM's
    forget-gate products, gate means and saturations (threshold s), the tanh RNN's saturation."""
    traj, b, cell = parts["traj"], parts["batch"], parts["model"].cell
    T, valid, rows = b.x.shape[1], b.valid, []
    path = cell_path_gradient(parts)
    if path is not None:
        state, g = path
        summary = {state: batch_summary(g.norm(dim=-1), valid)}
        rows.append(tidy(step, "grad_norm_cell_path", summary, T))
    if cell.kind == "lstm":
        log_f = torch.stack(traj.gates["f"], dim=1).clamp_min(1e-300).log()
        if valid is not None:
            log_f = log_f.masked_fill(~valid.unsqueeze(2), 0.0)
        # prod_{r=t+1}^{T-1} f_r = exp(sum of log f over r > t): a reversed cumulative sum
        after = log_f.flip(1).cumsum(1).flip(1) - log_f
        rows.append(
            tidy(step, "forget_product", {"f": batch_summary(after.exp().mean(-1), valid)}, T)
        )
    gate_mean, gate_sat = {}, {}
    for name, values in traj.gates.items():
        v = torch.stack(values, dim=1)
        gate_mean[name] = batch_summary(v.mean(-1), valid)
        gate_sat[name] = batch_summary(((v > s) | (v < 1 - s)).double().mean(-1), valid)
    if gate_mean:
        rows += [tidy(step, "gate_mean", gate_mean, T), tidy(step, "gate_saturation", gate_sat, T)]
    if cell.kind == "rnn" and cell.nonlinearity == "tanh":
        h = torch.stack(traj.states["h"], dim=1)
        sat = {"h": batch_summary((h.abs() > s).double().mean(-1), valid)}
        rows.append(tidy(step, "tanh_saturation", sat, T))
    return rows


def jacobian_rows(parts: dict, step: int, settings: ProbeSettings):
    """The Jacobian spectra at log-spaced lags and the Lyapunov exponents of the first
    settings.jacobian_examples examples: (flow rows, lyapunov table, scalars)."""
    traj, b, cell = parts["traj"], parts["batch"], parts["model"].cell
    B, T, _ = b.x.shape
    N = min(settings.jacobian_examples, B)  # examples whose Jacobians are computed
    lags = log_spaced_lags(T, settings.jacobian_lags)
    if N == 0 or not lags:
        return [], pd.DataFrame(), {}
    gx = cell.project_inputs(b.x[:N])
    sub = {n: [st[:N] for st in v] for n, v in traj.states.items()}
    v = None if b.valid is None else b.valid[:N]
    m, transient = settings.lyapunov_exponents, settings.lyapunov_transient
    jac = jacobian_spectra(cell, gx, sub, lags, v, m, transient)
    sigma = jac["sigma"]  # (N, lags, S), descending
    by_lag = {
        "spectral": sigma[:, :, 0],
        "frobenius": sigma.pow(2).sum(dim=2).sqrt(),
        "sigma_min": sigma[:, :, -1],
        "alive": (sigma > settings.alive_threshold).sum(dim=2).double(),
    }
    positions = T - 1 - np.asarray(lags)
    rows = [tidy(step, f"jacobian_{name}", {"s": batch_summary(values)}, T, positions)
            for name, values in by_lag.items()]  # fmt: skip
    exponents = jac["lyapunov"].cpu().numpy()  # (N, m)
    lyapunov = pd.DataFrame(
        {
            "step": step,
            "example": np.repeat(np.arange(N), exponents.shape[1]),
            "index": np.tile(np.arange(1, exponents.shape[1] + 1), N),
            "value": exponents.ravel(),
        }
    )
    near_zero = (np.abs(exponents) < settings.lyapunov_zero).sum(axis=1)
    scalars = {"lyapunov_max": float(exponents[:, 0].mean()),
               "lyapunov_near_zero": float(near_zero.mean())}  # fmt: skip
    return rows, lyapunov, scalars


def snr_rows(parts, task, step, settings: ProbeSettings, dtype, data) -> list[pd.DataFrame]:
    """The gradient signal-to-noise per lag over settings.snr_batches fresh minibatches."""
    if settings.snr_batches == 0:
        return []
    b, T = parts["batch"], parts["batch"].x.shape[1]
    data = torch.Generator().manual_seed(step) if data is None else data
    draws = [task.sample(b.x.shape[0], data) for _ in range(settings.snr_batches)]
    draws = [d.apply(lambda t: t.to(dtype) if t.is_floating_point() else t) for d in draws]
    snr = gradient_snr(parts["model"], task, [d.to(b.x.device) for d in draws])
    return [tidy(step, f"grad_{name}", {"theta": {"value": snr[name].cpu().numpy()}}, T)
            for name in ("signal", "noise", "snr")]  # fmt: skip


def evidence_rows(b: Batch, input_grad: Tensor, step: int) -> pd.DataFrame:
    """||dl/dx_t|| at the task's evidence positions, per example, with its lag."""
    B, T, _ = b.x.shape
    ev = b.evidence
    n_ev = ev.shape[1]
    return pd.DataFrame(
        {
            "step": step,
            "example": np.repeat(np.arange(B), n_ev),
            "evidence": np.tile(np.arange(n_ev), B),
            "position": ev.cpu().numpy().ravel(),
            "lag": (T - 1 - ev).cpu().numpy().ravel(),
            "quantity": "input_grad",
            "value": input_grad.gather(1, ev).detach().cpu().numpy().ravel(),
        }
    )
