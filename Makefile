# `make run` runs the main job, `make test` the tests; both install into .venv first.
PY := .venv/bin/python
STAMP := .venv/.installed
PARALLEL := hydra/launcher=joblib hydra.launcher.n_jobs=2
REFERENCE := init_ratio init_rnn_scale init_lstm_forget_bias memory_path lags_adding matched dynamics
REFERENCE += study_adding study_adding_long study_lr study_copy hochreiter1997_adding
REFERENCE += hochreiter1997_order
# Every sweep groups its seeds into stacked ensembles where that pays (`ensemble=auto`, the
# default: docs/sweeps.md). The causal test (docs/study.md section 7), measured with 2 workers
# and ensembles of 5: study_causal and its floor at T = 100 and 200 about 68 minutes, T = 500
# about 110 minutes (4.4 process-hours).
REFERENCE += study_causal study_causal_floor study_causal_1997
# How the learning-rate window moves with T (issue 30): study_lr's rates at T = 50, 100, 500 for
# the five main cells.
REFERENCE += study_lr_lag
# Success against T at each cell's own learning rate (conf/tuned/, issue 30).
REFERENCE += study_tuned
# Copy memory at H = 128, each cell at its own rate, the chrono LSTM with T_max = 3T/2 (issue 30).
REFERENCE += study_copy_wide study_copy_wide_chrono
# The LRU, minGRU and minLSTM in 2 GLU blocks (study/model/block.py): their learning-rate window
# at T = 200, matched to study_lr's LSTM by parameter count (issue 30).
REFERENCE += study_blocks_lr

.PHONY: install run test reference figures notebooks browser
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The main job: a small default sweep (8.6-17 minutes on 2 cores), then its figures and the
# HTML report (results/main/report.html: one offline file, its path printed last).
run: $(STAMP)
	$(PY) -m study.run -m experiment=init_ratio out_dir=results/main $(PARALLEL)
	$(PY) -m study.run -m experiment=quick out_dir=results/main $(PARALLEL)
	$(PY) -m study.read.figures results/main
	$(PY) -m study.read.report results/main

test: $(STAMP) browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n auto --dist worksteal  # a worker per core (pytest-xdist); idle ones take queued tests

# The study's reference results, committed under results/reference: every experiment of
# REFERENCE, each `experiment=NAME`. What the committed runs took, measured from their run.json
# (`study-collect results/reference --compute`), is in the README ("The reference study's
# compute") and docs/numbers/compute.txt. It resumes where it stopped, skipping finished runs.
reference: $(STAMP)
	for e in $(REFERENCE); do $(PY) -m study.run -m experiment=$$e out_dir=results/reference $(PARALLEL) || exit 1; done
	$(PY) -m study.read.figures results/reference --out results/figures
	$(PY) -m study.read.report results/reference

# The report's test drives Debian's chromium headless; installed here when missing (needs root;
# without it that one test is skipped, and says so).
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the browser test of the report will be skipped"

# Jupyter Lab on the notebooks (installs the `notebooks` extra once). The .py files open as
# notebooks (jupytext); each redraws its figures from results/reference, training nothing.
notebooks: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,notebooks]'
	.venv/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)  # root: containers
