# `make run` runs the main job, `make test` the tests; both install into .venv first.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: install run test
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m study.run

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest
