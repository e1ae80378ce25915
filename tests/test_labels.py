"""Model labels: one name per configuration across the lags it ran at."""

import pandas as pd

from study.read.labels import model_label


def test_a_chrono_t_max_tied_to_the_lag_is_written_relative_to_it():
    def label(chrono, T, cell="lstm"):
        return model_label(pd.Series({"cfg.model.cell": cell, "cfg.model.chrono": chrono,
                                      "cfg.task.length": T}))  # fmt: skip

    assert {label(T, T) for T in (50, 100, 200)} == {"LSTM, chrono T_max=T"}
    assert {label(1.5 * T, T) for T in (50, 100, 200)} == {"LSTM, chrono T_max=3T/2"}
    assert label(750, 200) == "LSTM, chrono T_max=750" and label(150, 100, "gru").startswith("GRU")
    assert label(300, 100) == "LSTM, chrono T_max=300"  # 3T: a number, not a ratio
