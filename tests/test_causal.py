"""The causal test's numbers (study/read/causal.py): the exact test and the difference interval
against published values and brute force, the arms table against hand counts on synthetic runs,
the verdicts as the experiment's header states them, and the real command on the tiny study."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from study.read.analysis import fisher_exact, newcombe, wilson
from study.read.causal import arms_table, verdicts
from study.read.labels import cut_label, model_label
from tests.conftest import study_run


def test_fisher_exact_matches_published_values():
    # Fisher's lady tasting tea, 3 of 4 against 1 of 4: two-sided p = 34/70 (Agresti 2002, 3.5)
    assert fisher_exact(3, 4, 1, 4) == pytest.approx(34 / 70, rel=1e-12)
    # 10/10 against 0/10: only the two extreme tables, each 1 / C(20, 10)
    assert fisher_exact(10, 10, 0, 10) == pytest.approx(2 / math.comb(20, 10), rel=1e-12)
    assert fisher_exact(5, 10, 5, 10) == pytest.approx(1.0)


def test_fisher_exact_equals_a_brute_force_enumeration_of_two_binomial_samples():
    """Conditioned on the margin, every assignment of the successes to the 20 trials is
    equally likely: count the ones whose table is at most as likely as the observed one."""
    n1 = n2 = 5
    for k1, k2 in [(5, 0), (4, 1), (3, 2), (5, 2)]:
        total = k1 + k2
        tables = [
            sum(a[:n1]) for a in set(itertools.permutations([1] * total + [0] * (10 - total)))
        ]
        counts = pd.Series(tables).value_counts()
        p = counts / counts.sum()
        brute = p[p <= p[k1] * (1 + 1e-7)].sum()
        assert fisher_exact(k1, n1, k2, n2) == pytest.approx(brute, rel=1e-12)


def test_newcombe_matches_his_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    lo, hi = newcombe(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_cut_labels_name_the_arm_and_its_dose():
    base = {"cfg.model.cell": "gru", "cfg.model.chrono": None}
    assert cut_label(pd.Series(base)) == "uncut"
    assert model_label(pd.Series(base)) == "GRU"
    run = pd.Series({**base, "cfg.model.cut": "hidden", "cfg.model.cut_prob": 0.5})
    assert cut_label(run) == "hidden cut p=0.5"
    assert model_label(run) == "GRU, hidden cut p=0.5"
    assert (
        cut_label(pd.Series({**base, "cfg.model.cut": "linear", "cfg.model.cut_scale": 0.3}))
        == "linear cut x0.3"
    )


def synthetic(arms: dict[str, list[int | None]], T=200, batch=32, steps=6000):
    """Runs and metrics of one GRU per arm: arms maps the cut (None: uncut) to each seed's solved
    step (None: never solved; its loss stays at the baseline)."""
    runs, metrics = [], []
    for cut, solved in arms.items():
        for seed, step in enumerate(solved):
            path = f"{cut}-{seed}"
            runs.append({"path": path, "cfg.model.cell": "gru", "cfg.model.cut": cut,
                         "cfg.task.length": T, "cfg.train.batch_size": batch,
                         "cfg.train.steps": steps, "baseline": 1.0, "solved": step is not None,
                         "cell": "gru", "seed": seed})  # fmt: skip
            for s in range(0, steps + 1, 1000):
                hit = step is not None and s >= step
                metrics += [
                    {"path": path, "step": s, "name": "eval_loss", "value": 0.001 if hit else 1.0},
                    {"path": path, "step": s, "name": "solved", "value": float(hit)},
                ]
    evidence = pd.DataFrame(columns=["path", "step", "example", "lag", "quantity", "value"])
    flow = pd.DataFrame(columns=["path", "step", "quantity", "stat", "lag", "value"])
    return pd.DataFrame(runs), pd.DataFrame(metrics), evidence, flow


def test_the_arms_table_counts_and_compares_each_arm_with_its_uncut_one():
    runs, metrics, evidence, flow = synthetic(
        {
            None: [1000, 2000, 1000, 3000, 2000],
            "linear": [None] * 5,
            "hidden": [4000, None, 5000, None, None],
        }  # fmt: skip
    )
    table = arms_table(runs, metrics, evidence, flow).set_index("arm")
    assert list(table.index) == ["uncut", "linear cut", "hidden cut"]  # the study's order
    assert table.k.tolist() == [5, 0, 2] and table.n.tolist() == [5, 5, 5]
    for arm, k in (("uncut", 5), ("linear cut", 0), ("hidden cut", 2)):
        assert (table.lo[arm], table.hi[arm]) == pytest.approx(wilson(k, 5))
    assert table.p_fisher["linear cut"] == pytest.approx(fisher_exact(0, 5, 5, 5))
    assert table["diff"]["hidden cut"] == pytest.approx(-0.6)
    assert (table.diff_lo["hidden cut"], table.diff_hi["hidden cut"]) == pytest.approx(
        newcombe(2, 5, 5, 5)
    )
    assert table.separated.tolist() == [False, True, False]  # 0/5: [0, .43] below [.57, 1]
    assert table.to_solve["uncut"] == 2000 * 32 and np.isnan(table.to_solve["linear cut"])
    assert table.flat["linear cut"] == 5 and table.flat["hidden cut"] == 3
    v = verdicts(table.reset_index())
    assert v.verdict.tolist() == [
        "the linear cut fails, the hidden cut learns: necessary and sufficient"
    ]


@pytest.mark.parametrize(
    "linear,hidden,verdict",
    [
        ([1000] * 5, [None] * 5, "the linear cut still learns: the headline is falsified"),
        ([None] * 5, [None] * 5, "both cuts fail: the linear path is necessary, not sufficient"),
    ],
)
def test_the_verdicts_are_the_ones_stated_before_the_runs(linear, hidden, verdict):
    tables = synthetic({None: [1000] * 5, "linear": linear, "hidden": hidden})
    assert verdicts(arms_table(*tables)).verdict.iloc[0].startswith(verdict)
    tables = synthetic({None: [None] * 5, "linear": linear, "hidden": hidden})
    assert verdicts(arms_table(*tables)).verdict.iloc[0].startswith("nothing decided")


def test_study_learning_prints_the_causal_table_of_the_tiny_study(tiny_study):
    proc = study_run(tiny_study / "study_causal", module="study.read.learning", timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "the causal test" in out and "verdicts" in out
    for arm in ("uncut", "linear cut", "hidden cut"):
        assert arm in out
    assert "RNN" in out  # the floor joined the experiment's folder


def test_looser_thresholds_count_the_runs_that_got_below_them_on_the_way():
    """A linear-cut arm that plateaus at 3 % of the baseline: 0/5 at the criterion, 5/5 at 5 %
    and 10 %; the verdict flips with the threshold, and the table says so."""
    from study.read.causal import threshold_tables

    runs, metrics, _, _ = synthetic({None: [1000] * 5, "linear": [None] * 5, "hidden": [2000] * 5})
    plateau = metrics.path.str.startswith("linear") & (metrics.name == "eval_loss")
    metrics.loc[plateau & (metrics.step >= 3000), "value"] = 0.03
    tables = threshold_tables(runs, metrics)
    assert list(tables) == ["criterion", "5%", "10%"]
    ks = {name: t.set_index("arm").k["linear cut"] for name, t in tables.items()}
    assert ks == {"criterion": 0, "5%": 5, "10%": 5}
    assert verdicts(tables["criterion"]).verdict.iloc[0].endswith("necessary and sufficient")
    assert "falsified" in verdicts(tables["5%"]).verdict.iloc[0]


def test_the_within_group_rank_correlation_is_not_the_pooled_one():
    """Two models: one reaches far and solves fast, the other neither; within each, reach and
    speed are unrelated (ranks reversed in one, equal in the other). Pooled rho is strongly
    negative, the within-group mean near zero: the pooled one says which model a run is."""
    from study.read.learning import spearman, within_groups

    d = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["b"] * 4,
            "T": 100,
            "reach": [1.0, 2.0, 3.0, 4.0, 1e-9, 2e-9, 3e-9, 4e-9],
            "to_solve": [10, 20, 30, 40, 400, 300, 200, 100],
        }
    )
    pooled = spearman(d.reach, d.to_solve)["rho"]
    w = within_groups(d)
    assert pooled < -0.5
    assert w["groups"] == w["defined"] == 2
    assert w["mean_rho"] == pytest.approx(0.0) and (w["min"], w["max"]) == (-1.0, 1.0)
