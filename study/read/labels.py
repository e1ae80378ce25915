"""The study's one vocabulary for a run: a readable name of its recurrence, initialisation and
gradient-path cut (`model`), its lag `T` and its learning rate `lr`, from the flattened config
columns (cfg.*) that study.read.results.load_runs reads. Every reader takes them from here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NAMES = {"mingru": "minGRU", "minlstm": "minLSTM", "lru": "LRU"}  # display names of cells


def model_label(run: pd.Series) -> str:
    """A readable name for a run's recurrence, its initialisation and its gradient-path cut
    (", linear cut" and the like; nothing for an uncut run: cut_label)."""
    base, arm = base_label(run), cut_label(run)
    return base if arm == "uncut" else f"{base}, {arm}"


def cut_label(run: pd.Series) -> str:
    """The arm of the causal test a run is in: "uncut", or "<path> cut", with its dose where
    it has one ("hidden cut x0.3", "hidden cut p=0.5"; study/model/cut.py)."""
    path = run.get("cfg.model.cut")
    if not isinstance(path, str):
        return "uncut"
    scale, prob = run.get("cfg.model.cut_scale"), run.get("cfg.model.cut_prob")
    dose = "" if scale is None or pd.isna(scale) or scale == 0 else f" x{scale:g}"
    dose += "" if prob is None or pd.isna(prob) or prob == 1 else f" p={prob:g}"
    return f"{path} cut{dose}"


def base_label(run: pd.Series) -> str:
    """A readable name for a run's recurrence and its initialisation, and the block it sits in
    where it has one ("LRU, 2 GLU blocks": study/model/block.py)."""
    block, layers = run.get("cfg.model.block"), run.get("cfg.model.layers")
    if not isinstance(block, str):
        return cell_label(run)
    layers = 1 if layers is None or pd.isna(layers) else int(layers)
    blocks = "block" if layers == 1 else "blocks"
    return f"{cell_label(run)}, {layers} {block.upper()} {blocks}"


def cell_label(run: pd.Series) -> str:
    """A readable name for a run's cell and its initialisation."""
    cell = run["cfg.model.cell"]
    if cell == "lstm":
        if run.get("cfg.model.forget_gate") is False:
            return "LSTM, no forget gate (1997)"
        bias, chrono = run.get("cfg.model.forget_bias"), run.get("cfg.model.chrono")
        if chrono is not None and not pd.isna(chrono):
            return f"LSTM, chrono T_max={_t_max(run, chrono)}"
        return "LSTM" if bias is None or pd.isna(bias) else f"LSTM, forget bias {bias:g}"
    if cell == "rnn":
        init, gain = run.get("cfg.model.recurrent_init"), run.get("cfg.model.recurrent_gain")
        name = "RNN" if run.get("cfg.model.nonlinearity", "tanh") == "tanh" else "ReLU RNN"
        return name if init == "default" else f"{name}, {init} ×{gain:g}"
    chrono = run.get("cfg.model.chrono")
    if cell == "gru" and chrono is not None and not pd.isna(chrono):
        return f"GRU, chrono T_max={_t_max(run, chrono)}"
    shift = run.get("cfg.model.options.forget_bias_shift")
    if cell == "minlstm" and shift is not None and not pd.isna(shift):
        return f"minLSTM, forget bias {shift:+g}"
    return NAMES.get(cell, cell.upper())


RELATIVE_T_MAX = {1.0: "T", 1.5: "3T/2", 2.0: "2T"}  # T_max as a multiple of the lag, written


def _t_max(run: pd.Series, chrono: float) -> str:
    """chrono's T_max as written in a label: relative to the run's lag T where it is one of
    RELATIVE_T_MAX's multiples ("T", "3T/2": one label across T), else the number."""
    T = run.get("cfg.task.length")
    for ratio, text in RELATIVE_T_MAX.items():
        if T and chrono == ratio * T:
            return text
    return f"{chrono:g}"


def vocabulary(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with `model` (model_label: one name per config across lags), `T` (the task's
    length) and `lr` (the learning rate) columns, as every reader names them."""
    if runs.empty or "cfg.model.cell" not in runs:  # no run, or none whose config could be read
        return runs
    lr = runs.get("cfg.train.optimizer.lr", pd.Series(np.nan, runs.index))
    T = runs.get("cfg.task.length", pd.Series(np.nan, runs.index))
    known = runs["cfg.model.cell"].map(lambda cell: isinstance(cell, str))
    model = runs[known].apply(model_label, axis=1).reindex(runs.index)
    return runs.assign(model=model, T=T, lr=lr)
