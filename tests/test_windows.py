"""The learning-rate windows (study/read/windows.py) against independent computations: the crossing
against numpy's interpolation, the edges of windows built with known edges, Student's t quantile
against its closed forms, and the power law's interval against its coverage by Monte Carlo."""

import math

import numpy as np
import pandas as pd
import pytest

from study.read import windows as W

RATES = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def test_the_crossing_is_where_the_log_linear_interpolation_is_one_half():
    for lr_in, p_in, lr_out, p_out in [(1e-2, 0.8, 1e-1, 0.2), (1e-3, 0.6, 3e-4, 0.0)]:
        x = W.crossing(lr_in, p_in, lr_out, p_out)
        xs, ps = np.log10([lr_in, lr_out]), [p_in, p_out]
        order = np.argsort(xs)
        assert np.interp(math.log10(x), xs[order], np.asarray(ps)[order]) == pytest.approx(0.5)
    assert W.crossing(1e-2, 0.8, 1e-1, 0.2) == pytest.approx(math.sqrt(1e-2 * 1e-1))


def runs_with(solved: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Runs and their metrics from {(model, T, lr): [solved per seed]}; a solved run solved at
    step 200 + 200 x its seed."""
    runs, metrics = [], []
    for (model, T, lr), seeds in solved.items():
        for seed, ok in enumerate(seeds):
            path = f"{model}/{T}/{lr}/{seed}"
            runs.append({"path": path, "model": model, "T": T, "lr": lr, "solved": ok,
                         "cfg.train.batch_size": 32, "baseline": 2.0})  # fmt: skip
            if ok:
                metrics.append({"path": path, "name": "solved", "step": 200 * (seed + 1),
                                "value": 1.0})  # fmt: skip
            # the final loss: 0.01 x the baseline if solved, else lower at a larger rate
            loss = 0.02 if ok else 2.0 / (1 + lr)
            metrics.append({"path": path, "name": "eval_loss", "step": 6000, "value": loss})
    return pd.DataFrame(runs), pd.DataFrame(metrics, columns=["path", "name", "step", "value"])


def test_windows_find_the_edges_they_were_built_with():
    k_closed = [0, 0, 3, 5, 5, 4, 1, 0]  # inside from 1e-3 to 3e-2
    k_open = [0, 0, 0, 1, 5, 5, 5, 5]  # inside from 1e-2 to the grid's end
    solved = {}
    for model, ks in [("closed", k_closed), ("open", k_open), ("never", [0] * 8)]:
        for lr, k in zip(RATES, ks):
            solved[(model, 100, lr)] = [s < k for s in range(5)]
    solved[("two rates", 100, 1e-3)] = [True] * 5
    solved[("two rates", 100, 1e-2)] = [True] * 5
    runs, metrics = runs_with(solved)
    w = W.windows(runs, metrics).set_index("model")
    assert "two rates" not in w.index  # fewer than MIN_RATES: not a window sweep
    c = w.loc["closed"]
    assert (c.lower, c.upper, c.lower_open, c.upper_open, c.gaps) == (1e-3, 3e-2, False, False, 0)
    assert c.lower_x == pytest.approx(W.crossing(1e-3, 0.6, 3e-4, 0.0))
    assert c.upper_x == pytest.approx(W.crossing(3e-2, 0.8, 1e-1, 0.2))
    assert 3e-4 < c.lower_x < 1e-3 and 3e-2 < c.upper_x < 1e-1
    # 5/5 at 3e-3 and 1e-2; the tie goes to fewer sequences: equal (same seeds), so the smaller rate
    assert c.best == 3e-3
    o = w.loc["open"]
    assert (o.lower, o.upper, o.upper_open) == (1e-2, 3e-1, True) and np.isnan(o.upper_x)
    assert not o.lower_open and 3e-3 < o.lower_x < 1e-2
    n = w.loc["never"]
    assert np.isnan(n.lower) and np.isnan(n.upper)
    assert n.best == 3e-1  # solved nowhere: the lowest final loss over the baseline


def test_the_best_rate_breaks_ties_by_fewer_sequences_then_by_the_final_loss():
    g = pd.DataFrame({"lr": [1e-3, 1e-2, 1e-1], "k": [5, 5, 3], "median": [6400.0, 3200.0, 100]})
    assert W.best_rate(g.assign(final=0.01)) == 1e-2
    never = pd.DataFrame({"lr": [1e-3, 1e-2], "k": 0, "median": np.nan, "final": [0.9, 1.0]})
    assert W.best_rate(never) == 1e-3


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_matches_its_closed_forms(p):
    assert W.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-6)
    assert W.t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-6)
    a = 4 * p * (1 - p)  # df = 4: Hill (1970)
    t4 = 2 * math.sqrt(math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a) - 1)
    assert W.t_quantile(p, 4) == pytest.approx(t4, rel=1e-6)


def test_the_power_law_recovers_an_exact_one():
    T = np.array([50, 100, 200, 500])
    fit = W.power_law(T, 3.0 * T**-0.7)
    assert fit["b"] == pytest.approx(-0.7) and fit["a"] == pytest.approx(3.0)
    assert fit["lo"] == pytest.approx(-0.7) and fit["hi"] == pytest.approx(-0.7)
    assert np.isnan(W.power_law(T[:2], T[:2] ** -1.0)["lo"])  # 2 points: a slope, no interval


def test_the_power_laws_interval_covers_the_exponent_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    T = np.array([50, 100, 200, 500])
    trials = 2000
    covered = 0
    for _ in range(trials):
        edge = 0.5 * T**-0.5 * 10 ** rng.normal(0, 0.1, len(T))
        fit = W.power_law(T, edge)
        covered += fit["lo"] <= -0.5 <= fit["hi"]
    # binomial sd at 2000 trials: 0.0049; 4 sd either side
    assert abs(covered / trials - 0.95) < 0.02


def test_study_learning_windows_prints_the_windows_of_the_sweeps_and_their_trends(
    tiny_study, capsys
):
    from study.read.learning import main

    main([str(tiny_study), "--windows"])
    out = capsys.readouterr().out
    assert "== learning-rate windows (study_lr; n = 12 runs)" in out  # 2 cells x 3 rates x 2 seeds
    table = out.split("edge = a x T^b")[0].splitlines()
    assert sum(line.split()[0] in ("RNN", "GRU") for line in table if line.strip()) == 2
    assert "95 % t-interval" in out


def test_study_learning_windows_says_when_there_is_no_sweep(tiny_study, capsys):
    from study.read.learning import main

    main([str(tiny_study / "study_adding"), "--windows"])  # one rate per (cell, T)
    assert "no learning-rate sweep under" in capsys.readouterr().out


def test_each_tuned_rate_is_the_rules_pick_from_the_committed_learning_rate_sweep():
    """conf/tuned/NAME.yaml holds a cell and a rate; the rate must be what the rule gives on the
    committed study_lr runs at T = 200 for that cell's label."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from study.read.labels import model_label
    from study.runs.rundir import flatten
    from tests.conftest import ROOT

    runs, tables = W.pooled_tables({"study_lr": ROOT / "results" / "reference" / "study_lr"})
    w = W.windows(runs, tables["metrics"])
    best = w[w["T"] == 200].set_index("model").best
    names = sorted(p.stem for p in (ROOT / "conf" / "tuned").glob("*.yaml"))
    assert len(names) == len(best) == 9
    labels = set()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for name in names:
            cfg = compose(config_name="config", overrides=[f"tuned={name}", "task.length=200"])
            row = pd.Series(flatten({"cfg": OmegaConf.to_container(cfg, resolve=True)}))
            assert cfg.train.optimizer.lr == best[model_label(row)], name
            labels.add(model_label(row))
    assert len(labels) == 9  # one file per cell


def test_the_tuned_table_stands_beside_the_fixed_one_with_fishers_p():
    def runs(model, T, lr, solved):
        return pd.DataFrame({"model": model, "T": T, "lr": lr, "solved": solved})

    fixed = pd.concat([runs("A", 200, 1e-3, [False] * 10), runs("B", 200, 1e-3, [True] * 10)])
    fixed = pd.concat([fixed, runs("C", 200, 1e-3, [True] * 5 + [False] * 5)])
    tuned = pd.concat([runs("A", 200, 3e-2, [True] * 10), runs("B", 200, 1e-2, [True] * 10)])
    d = W.beside_fixed(tuned, fixed).set_index("model")
    assert list(d.index) == ["A", "B"]  # C has no tuned runs
    assert (d.loc["A", "k_fixed"], d.loc["A", "k_own"], d.loc["A", "lr_own"]) == (0, 10, 3e-2)
    # 0/10 against 10/10: the observed table and its mirror, 2 / C(20, 10)
    assert d.loc["A", "p"] == pytest.approx(2 / math.comb(20, 10))
    assert d.loc["B", "p"] == 1.0
    assert W.ranking(d.reset_index(), "k_fixed", "n_fixed") == "B > A"
    assert W.ranking(d.reset_index(), "k_own", "n_own") == "A = B"


def test_study_learning_windows_prints_the_tuned_runs_beside_study_adding(tiny_study, capsys):
    from study.read.learning import main

    main([str(tiny_study), "--windows"])
    out = capsys.readouterr().out.split("== each cell at its own rate (study_tuned)")
    assert len(out) == 2
    rows = [line.split() for line in out[1].splitlines() if line.strip().startswith("RNN")]
    assert [row[:2] for row in rows] == [["RNN", "5"]]  # the one (cell, T) run in both
    assert "ranking at each cell's own rate: RNN" in out[1]
