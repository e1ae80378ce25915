"""The learning study's numbers (study/read/learning.py) against independent computations on
synthetic tables, and stop-on-solve against the same run trained without it."""

import functools
import math

import numpy as np
import pandas as pd
import pytest
import torch

from study.model import build_model
from study.read.learning import (
    beside_paper,
    early_step,
    gradient_reach,
    learn_times,
    plateau,
    solve_summary,
    solve_times,
    spearman,
    success_rates,
    summary,
    swept,
)
from study.tasks.adding import Adding
from study.train import Stream, TrainSettings
from tests.conftest import study_run, train_one


def _synthetic(seed=0, n_runs=40, evals=15, every=200):
    """Runs with a model, T and batch size, and metrics whose `solved` rows flip on and off at
    random after a random first success (or never): the truth kept apart as plain lists."""
    rng = np.random.default_rng(seed)
    runs, rows, truth = [], [], {}
    for i in range(n_runs):
        path = f"run{i}"
        batch = int(rng.choice([16, 32, 64]))
        model, T = ["A", "B", "C"][i % 3], [50, 200][i % 2]
        first = int(rng.integers(0, evals)) if rng.random() < 0.6 else None
        flags = []
        for j in range(evals):
            on = first is not None and j >= first and (j == first or rng.random() < 0.7)
            flags.append(on)
            rows += [{"path": path, "step": j * every, "name": "solved", "value": float(on)}]
            rows += [{"path": path, "step": j * every, "name": "eval_loss", "value": rng.random()}]
        truth[path] = None if first is None else first * every * batch
        solved = flags[-1]
        runs.append(
            {"path": path, "model": model, "T": T, "cfg.train.batch_size": batch, "solved": solved}
        )
    return pd.DataFrame(runs), pd.DataFrame(rows), truth


def test_sequences_to_solve_is_the_first_solved_evaluation_times_the_batch():
    runs, metrics, truth = _synthetic()
    got = solve_times(metrics.sample(frac=1, random_state=1), runs).set_index("path")
    for path, sequences in truth.items():
        value = got.loc[path, "sequences_to_solve"]
        assert math.isnan(value) if sequences is None else value == sequences, path


def test_a_run_under_the_stream_rule_counts_its_stopping_batch():
    runs = pd.DataFrame(
        {
            "path": ["eval", "stream"],
            "cfg.train.batch_size": [32, 32],
            "cfg.train.stream_window": [None, 2000],
        }  # fmt: skip
    )
    metrics = pd.DataFrame(
        {
            "path": ["eval", "eval", "stream", "stream"],
            "step": [400, 600, 400, 617],
            "name": ["solved", "solved", "solved", "stream_solved"],
            "value": [0.0, 1.0, 1.0, 1.0],
        }  # fmt: skip
    )
    got = solve_times(metrics, runs).set_index("path").sequences_to_solve
    assert got["eval"] == 600 * 32 and got["stream"] == 618 * 32


def test_sequences_to_learn_is_the_first_evaluation_below_a_tenth_of_the_baseline():
    rng = np.random.default_rng(7)
    rows, runs, truth = [], [], {}
    for i in range(20):
        path, base, batch = f"r{i}", float(rng.choice([1 / 6, 1 / 24])), int(rng.choice([16, 32]))
        curve = base * np.exp(rng.normal(0, 1.5, 30)) * 0.5
        for j, v in enumerate(curve):
            rows.append({"path": path, "step": 100 * j, "name": "eval_loss", "value": v})
        below = [j for j, v in enumerate(curve) if v < 0.1 * base]
        truth[path] = 100 * below[0] * batch if below else None
        runs.append({"path": path, "baseline": base, "cfg.train.batch_size": batch})
    got = learn_times(pd.DataFrame(rows), pd.DataFrame(runs)).set_index("path")
    for path, sequences in truth.items():
        value = got.loc[path, "sequences_to_learn"]
        assert math.isnan(value) if sequences is None else value == sequences, path


def test_success_at_each_threshold_counts_the_runs_whose_minimum_got_below_it():
    """A run counts at q when its lowest evaluation loss is below q x its baseline (counted here
    with plain min() per run, in shuffled run order), at the criterion when it solved; the side
    by side table writes each as k/n [Wilson interval]."""
    from study.read.analysis import wilson
    from study.read.learning import success_by_threshold, threshold_table

    rng = np.random.default_rng(3)
    rows, runs = [], []
    for i in range(30):
        path, base = f"r{i}", 1 / 6
        curve = base * np.exp(rng.uniform(-4, 0.2, 12))
        rows += [{"path": path, "step": 100 * j, "name": "eval_loss", "value": v}
                 for j, v in enumerate(curve)]  # fmt: skip
        runs.append({"path": path, "model": "AB"[i % 2], "T": 50, "baseline": base,
                     "cfg.train.batch_size": 8, "solved": bool(curve.min() < 0.01 * base),
                     "low": curve.min() / base})  # fmt: skip
    runs = pd.DataFrame(runs).sample(frac=1, random_state=1)
    tables = success_by_threshold(runs, pd.DataFrame(rows))
    assert list(tables) == ["criterion", "5%", "10%"]
    for name, q in (("criterion", 0.01), ("5%", 0.05), ("10%", 0.10)):
        for model in "AB":
            mine = runs[runs.model == model]
            k, n = int((mine.low < q).sum()), len(mine)
            row = tables[name].set_index("model").loc[model]
            assert (row.k, row.n) == (k, n), (name, model)
            lo, hi = wilson(k, n)
            text = threshold_table(tables).set_index("model").loc[model, name]
            assert text == f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def _wilson_by_inversion(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson interval from its definition: the p whose score statistic
    |k/n - p| / sqrt(p (1 - p) / n) equals z, found by bisection on either side of k/n."""

    def score(p):
        return abs(k / n - p) / math.sqrt(p * (1 - p) / n) - z

    def root(lo, hi):  # score(lo) and score(hi) differ in sign
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (score(mid) > 0) == (score(lo) > 0) else (lo, mid)
        return (lo + hi) / 2

    p = k / n
    lower = 0.0 if k == 0 else root(1e-15, min(p, 1 - 1e-15))
    upper = 1.0 if k == n else root(max(p, 1e-15), 1 - 1e-15)
    return lower, upper


def test_success_rates_count_seeds_and_their_wilson_intervals_invert_the_score_test():
    runs, _, _ = _synthetic(n_runs=60)
    rates = success_rates(runs)
    for _, row in rates.iterrows():
        group = runs[(runs.model == row.model) & (runs["T"] == row["T"])]
        k = sum(bool(s) for s in group.solved)
        assert (row.k, row.n) == (k, len(group))
        lo, hi = _wilson_by_inversion(k, len(group))
        assert row.lo == pytest.approx(lo, abs=1e-9) and row.hi == pytest.approx(hi, abs=1e-9)
    for k, n in [(0, 10), (10, 10), (3, 10), (1, 5)]:
        lo, hi = _wilson_by_inversion(k, n)
        got = success_rates(
            pd.DataFrame({"model": "A", "T": 1, "solved": [True] * k + [False] * (n - k)})
        )
        assert got.lo[0] == pytest.approx(lo, abs=1e-9) and got.hi[0] == pytest.approx(hi, abs=1e-9)


def test_the_tables_split_by_learning_rate_only_in_a_learning_rate_sweep():
    """study_lr varies the learning rate at one T: its tables go per learning rate. A sweep over
    T (whatever its learning rates) and a single learning rate go per T."""
    lr_sweep = pd.DataFrame({"T": [200] * 4, "lr": [1e-4, 1e-3, 1e-4, 1e-3]})
    assert swept(lr_sweep) == "lr"
    assert swept(lr_sweep.assign(T=[100, 200, 100, 200])) == "T"
    assert swept(lr_sweep.assign(lr=1e-3)) == "T"
    rates = success_rates(
        lr_sweep.assign(model="A", solved=[True, False, True, True]), ("model", "lr")
    )
    assert rates[["lr", "k", "n"]].values.tolist() == [[1e-4, 2, 2], [1e-3, 1, 2]]


def test_solve_summary_gives_numpys_quartiles_over_the_solved_runs():
    runs, metrics, truth = _synthetic(n_runs=90)
    summary = solve_summary(solve_times(metrics, runs), runs)
    for _, row in summary.iterrows():
        paths = runs[(runs.model == row.model) & (runs["T"] == row["T"])].path
        done = [truth[p] for p in paths if truth[p] is not None]
        assert (row.solved, row.n) == (len(done), len(paths))
        if done:
            q = np.percentile(done, [25, 50, 75])
            assert [row.q25, row["median"], row.q75] == pytest.approx(list(q))
            assert row["mean"] == pytest.approx(sum(done) / len(done))


def test_the_1997_runs_stand_beside_the_papers_means_and_no_other_runs_do():
    """Runs under the stream rule on the paper's settings get its number (Table 7: 74,000 at
    T = 100; Table 9: 31,390 for 6a), the others none; `wrong` is the median count of wrong
    evaluation sequences, (1 - accuracy) x eval_size, counted here by hand."""
    runs = pd.DataFrame(
        {
            "path": [f"r{i}" for i in range(7)],
            "model": ["cec", "cec", "cec", "cec", "cec", "lstm", "cec"],
            "task": ["Adding"] * 3 + ["TemporalOrder"] * 2 + ["Adding"] * 2,
            "T": [100, 100, 100, 100, 100, 100, 200],
            "cfg.task.bits": [None, None, None, 2, 2, None, None],
            "cfg.train.stream_window": [2000] * 5 + [None, 2000],
            "cfg.train.eval_size": [1000] * 7,
            "eval_metric": [0.999, 0.990, 0.995, 1.0, 0.998, 0.9, 0.99],
        }  # fmt: skip
    )
    runs["model"] = runs.model + "/" + runs.task  # one model name per task (study.read.labels)
    speed = pd.DataFrame(
        {
            "model": ["cec/Adding", "cec/TemporalOrder", "lstm/Adding", "cec/Adding"],
            "T": [100, 100, 100, 200],
            "mean": [1.0, 2.0, 3.0, 4.0],
        }  # fmt: skip
    )
    got = beside_paper(speed, runs).set_index("model")
    assert sorted(got.index) == ["cec/Adding", "cec/TemporalOrder"]
    assert got.loc["cec/Adding", "paper"] == 74_000 and got.loc["cec/Adding", "mean"] == 1.0
    assert got.loc["cec/Adding", "wrong"] == pytest.approx(5.0)  # median of 1, 10, 5
    assert got.loc["cec/TemporalOrder", "paper"] == 31_390
    assert got.loc["cec/TemporalOrder", "wrong"] == pytest.approx(1.0)  # median of 0, 2


def test_plateau_reads_the_last_half_of_each_run_relative_to_its_baseline():
    steps = np.arange(0, 6001, 200)
    curve = np.where(steps < 3000, 0.5, 1.0) * 0.2  # drops before the last half only
    curve[-3] = 0.19
    metrics = pd.DataFrame({"path": "p", "step": steps, "name": "eval_loss", "value": curve})
    runs = pd.DataFrame({"path": ["p"], "baseline": [0.2]})
    (row,) = plateau(metrics, runs).to_dict("records")
    assert row["from_step"] == 3000 and row["to_step"] == 6000
    assert row["rel_min"] == pytest.approx(0.95) and row["rel_max"] == pytest.approx(1.0)
    # every run solved: no failed run to read, an empty table with the same columns
    empty = plateau(metrics, runs.iloc[:0])
    assert empty.empty and {"path", "rel_min", "rel_max"} <= set(empty.columns)


def _ranks(values) -> list[float]:
    """Average ranks (1-based) by counting: smaller values, then half the ties."""
    v = list(values)
    return [1 + sum(u < x for u in v) + (sum(u == x for u in v) - 1) / 2 for x in v]


def test_spearman_equals_pearson_on_average_ranks_and_the_classic_formula():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    d = np.array(_ranks(x)) - np.array(_ranks(y))
    n = len(x)
    assert spearman(x, y)["rho"] == pytest.approx(1 - 6 * (d**2).sum() / (n * (n * n - 1)))
    # ties and "never solved" (inf): Pearson's r of the average ranks, computed by hand
    y2 = np.round(y, 0)
    y2[:5] = np.inf
    rx, ry = np.array(_ranks(x)), np.array(_ranks(y2))
    r = ((rx - rx.mean()) * (ry - ry.mean())).sum()
    r /= math.sqrt(((rx - rx.mean()) ** 2).sum() * ((ry - ry.mean()) ** 2).sum())
    got = spearman(x, y2)
    assert got["rho"] == pytest.approx(r) and got["n"] == n


def test_spearman_ranks_a_reach_that_underflowed_to_zero_lowest():
    """At T = 1000 a run's gradient reach can underflow to 0: it ranks below every positive
    reach (no log is taken, so no warning), as its rank 1 in a hand-ranked table says."""
    reach = [0.0, 1e-300, 1e-5, 0.5, 0.9]
    to_solve = [np.inf, 9e4, 1.5e5, 4e4, np.inf]
    ranks_x, ranks_y = [1, 2, 3, 4, 5], [4.5, 2, 3, 1, 4.5]
    assert spearman(reach, to_solve)["rho"] == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1])


def test_spearman_interval_covers_the_true_rank_correlation_about_95_percent():
    """Monte Carlo: bivariate normal samples with correlation r have Spearman's rank correlation
    (6 / pi) arcsin(r / 2); the interval should contain it in about 95 % of samples."""
    rng = np.random.default_rng(0)
    r, n, reps = -0.6, 40, 600
    truth = 6 / math.pi * math.asin(r / 2)
    cov = [[1, r], [r, 1]]
    hits = 0
    for _ in range(reps):
        x, y = rng.multivariate_normal([0, 0], cov, size=n).T
        s = spearman(x, y)
        hits += s["lo"] <= truth <= s["hi"]
    assert 0.92 <= hits / reps <= 0.98


def test_gradient_reach_is_the_median_at_the_earliest_evidence_over_the_last_step():
    """At each probed step its own rows only: the values at step 0 and at step 1000 differ, and
    the first probe after initialisation is found as 1000."""
    rng = np.random.default_rng(1)
    B, T = 9, 50
    rows, flow, expected = [], [], {0: {}, 1000: {}}
    for step in (0, 1000):
        for path, at_end in (("p", 2.0), ("q", 0.5)):
            firsts = []
            for b in range(B):
                lags = sorted(rng.choice(np.arange(1, T), 2, replace=False))
                for e, lag in enumerate(lags):
                    value = rng.lognormal()
                    rows.append({"path": path, "step": step, "example": b, "evidence": e,
                                 "lag": lag, "quantity": "input_grad", "value": value})  # fmt: skip
                    rows.append({"path": path, "step": step, "example": b, "evidence": e,
                                 "lag": lag, "quantity": "grad_norm_h", "value": 1e9})  # fmt: skip
                    if lag == lags[1]:
                        firsts.append(value)
            end = at_end * (1 + step / 1000)
            flow.append({"path": path, "step": step, "quantity": "input_grad", "stat": "median",
                         "lag": 0, "value": end})  # fmt: skip
            expected[step][path] = float(np.median(firsts)) / end
    evidence, flow = pd.DataFrame(rows), pd.DataFrame(flow)
    assert early_step(evidence) == 1000 and early_step(evidence[evidence.step == 0]) is None
    for step in (0, 1000):
        got = gradient_reach(evidence, flow, step=step)
        assert got.set_index("path").reach.to_dict() == pytest.approx(expected[step])


def test_stop_on_solve_stops_at_the_first_evaluation_the_full_run_counts_as_solved():
    """Train the same seed twice, with and without stop-on-solve, on a short adding problem an
    LSTM solves in a few hundred steps: the stopped run ends at the first evaluation where the
    task's own criterion holds on the full run's evaluation losses, with identical records."""
    task = Adding(length=4)
    settings = dict(steps=800, batch_size=32, log_every=50, eval_size=256, checkpoint_every=0)
    make_opt = functools.partial(torch.optim.Adam, lr=1e-2)

    def run(stop):
        torch.manual_seed(0)
        model = build_model("lstm", 2, 1, hidden_size=8)
        s = TrainSettings(**settings, stop_on_solve=stop)
        return train_one(model, task, make_opt, s, seed=0)

    full, stopped = run(None), run(True)
    m = full.metrics_frame().pivot(index="step", columns="name", values="value")
    first = next(s for s, r in m.iterrows() if task.solved(r.eval_loss, r.eval_metric))
    assert first < settings["steps"], "the test needs a run that solves within its budget"
    assert stopped.final["step"] == first == stopped.solved_step == full.solved_step
    assert stopped.final["solved"] and stopped.status == "completed"
    head = full.metrics_frame()
    head = head[head.step <= first].reset_index(drop=True)
    pd.testing.assert_frame_equal(stopped.metrics_frame(), head)


def test_the_stream_rule_holds_exactly_when_the_last_n_sequences_were_all_correct():
    """Stream against a brute force over the whole history, on random batches of per-sequence
    losses and hits with runs of successes long enough for the rule to hold now and then."""
    rng = np.random.default_rng(5)
    window, bound, B = 50, 0.02, 8
    stream, losses, hits = Stream(window, bound), [], []
    holds = []
    for _ in range(300):
        ok = rng.random(B) < (0.999 if rng.random() < 0.8 else 0.5)
        loss = rng.random(B) * (0.03 if rng.random() < 0.5 else 0.045)
        losses += loss.tolist()
        hits += ok.tolist()
        got = stream.holds_after(torch.tensor(loss), torch.tensor(ok, dtype=torch.float64))
        last_l, last_h = losses[-window:], hits[-window:]
        want = len(hits) >= window and all(last_h) and float(np.mean(last_l)) < bound
        assert got == want
        holds.append(got)
    assert 0 < sum(holds) < len(holds)  # both outcomes were exercised


def test_the_stream_rule_stops_a_run_where_it_holds_with_the_records_of_the_full_run():
    task = Adding(length=4)
    settings = dict(steps=600, batch_size=32, log_every=50, eval_size=256, checkpoint_every=0)
    make_opt = functools.partial(torch.optim.Adam, lr=1e-2)

    def run(**stream):
        torch.manual_seed(0)
        model = build_model("lstm", 2, 1, hidden_size=8)
        return train_one(model, task, make_opt, TrainSettings(**settings, **stream), seed=0)

    full, stopped = run(), run(stream_window=64, stream_loss=0.01)
    step = stopped.final["step"]
    assert step < settings["steps"] and stopped.solved_step == step
    m = stopped.metrics_frame()
    assert m[m.name == "stream_solved"].step.tolist() == [step]
    # up to the stop, the same records as the run without the rule (an evaluation added there)
    head = full.metrics_frame()
    head = head[(head.step < step) & (head.name != "stream_solved")].reset_index(drop=True)
    pd.testing.assert_frame_equal(m[m.step < step].reset_index(drop=True), head)


@pytest.mark.parametrize(
    "bad", [{"stream_window": 10}, {"stream_loss": 0.1}, {"stream_window": 0, "stream_loss": 0.1}]
)
def test_the_stream_keys_go_together_and_are_checked(bad):
    with pytest.raises(ValueError, match="train.stream_"):
        TrainSettings(**bad)


def test_the_1997_experiments_run_and_stand_beside_the_paper(tmp_path):
    """Both 1997 experiments through the real command (a tiny budget at the paper's T = 100),
    then the study's summary: its table beside the paper holds Table 7's and Table 9's means."""
    tiny = ["seed=0", "task.length=100", "model.hidden_size=4", "train.steps=2"]
    tiny += ["train.log_every=1", "train.eval_size=32", "train.batch_size=8"]
    for name, paper in (("hochreiter1997_adding", 74_000), ("hochreiter1997_order", 31_390)):
        study_run("-m", f"experiment={name}", *tiny, out=tmp_path, check=True)
        table = summary(tmp_path / name)["paper"]
        assert list(table.paper) == [paper] and list(table["T"]) == [100]
