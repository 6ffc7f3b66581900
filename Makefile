# The two commands the README opens with: `make demo` and `make test`. Both set themselves up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CHECKOV_VENV := .venv-checkov

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# checkov pins its own dependency versions, so it lives in a venv of its own.
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

setup: $(VENV)/.installed node_modules/.installed $(CHECKOV_VENV)/.installed

demo: $(VENV)/.installed node_modules/.installed
	$(PY) -m devtools.demo $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Data-plane figures (1 / 3 / 8 partitions), then mirror sync (first run, 5 % churn).
bench: $(VENV)/.installed node_modules/.installed
	$(PY) -m devtools.benchmark $(ARGS)
	$(PY) -m devtools.sync_benchmark $(SYNC_ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .demo
