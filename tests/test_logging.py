"""What a sweep tells its user while it runs: one line per run with k/N done, a train.log in
every run directory, and no bare print in library code."""

import ast
from pathlib import Path

from study.runs import rundir
from tests.conftest import ROOT, study_run

TINY = ["task.length=12", "train.steps=6", "train.log_every=3", "train.eval_size=16"]
TINY += ["model.hidden_size=8"]


def test_a_sweep_counts_its_runs_and_each_run_keeps_a_log(tmp_path):
    proc = study_run("-m", "model=rnn,gru", "seed=0,1", *TINY, out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    done = [ln for ln in proc.stderr.splitlines() if ln.startswith("completed")]
    assert sorted(ln.rsplit("[", 1)[1] for ln in done) == [f"{k}/4 done]" for k in (1, 2, 3, 4)]
    for run in (tmp_path / "default").iterdir():
        log = (run / rundir.LOG).read_text().splitlines()
        evaluations = [ln for ln in log if " DEBUG " in ln]
        assert [ln.split("step ")[1].split(":")[0] for ln in evaluations] == ["0/6", "3/6", "6/6"]
        assert "completed" in log[-1] and run.name in log[-1]
    again = study_run("-m", "model=rnn,gru", "seed=0,1", *TINY, out=tmp_path)
    skips = [ln for ln in again.stderr.splitlines() if ln.startswith("skip")]
    assert len(skips) == 4 and all("/4 done]" in ln for ln in skips)


def test_an_ensemble_members_evaluations_go_to_its_own_log(tmp_path):
    proc = study_run("ensemble=2", *TINY, out=tmp_path)
    assert proc.returncode == 0, proc.stderr
    logs = {p.parent.name: p.read_text() for p in tmp_path.rglob(rundir.LOG)}
    assert len(logs) == 2
    for name, text in logs.items():  # three evaluations each, not six
        assert sum(" DEBUG " in ln for ln in text.splitlines()) == 3
        finished = [ln for ln in text.splitlines() if " completed " in ln]
        assert len(finished) == 1 and finished[0].split(" [")[0].endswith(name)  # its own line


# Command-line tools print their tables; a notebook's `show` prints its note. Everything else logs.
# (bench's tables print each row as it is measured)
PRINTS = {"main", "show", "collect", "print_summary", "show_summary", "print_causal"}
PRINTS |= {"_print_tables", "_print_reach", "_print_reach_medians"}  # print_summary's parts
PRINTS |= {f"{t}_table" for t in ("targets", "ensemble", "speed", "probe", "memory", "scan")}
PRINTS |= {"cuts_table", "lstm1997_table"}
PRINTS |= {"print_help"}  # study-run --help: the help text is the command's output
PRINTS |= {"print_compute", "print_windows", "print_beside", "print_compact"}  # --compute etc.


def test_library_code_logs_instead_of_printing():
    printing = []
    for path in sorted((ROOT / "study").rglob("*.py")):
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and fn.name not in PRINTS:
                calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
                if any(getattr(c.func, "id", None) == "print" for c in calls):
                    printing.append(f"{Path(path).relative_to(ROOT)}:{fn.name}")
    assert printing == []
