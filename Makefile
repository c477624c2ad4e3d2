# One command each: `make study` sets up .venv and runs the default study on CPU (one worker per core, or per
# GPU: WORKERS=auto; WORKERS=1 for one process); `make test` sets up .venv and runs ruff and the tests. Both
# create the virtual environment themselves.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STUDY ?= studies/schedule_shift.yaml
WORKERS ?= auto

.PHONY: setup study report test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $@

setup: $(VENV)/.installed

study: setup
	$(PY) -m harness.study $(STUDY) --workers $(WORKERS)
	$(PY) -m harness.report --study $$($(PY) -c "import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" $(STUDY))

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results reports/*/
