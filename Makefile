# OpenPik: `make run` starts the stack on the tiny demo models, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
TINY_DIR ?= var/tiny

.PHONY: install check test run bench tiny clean

install: $(INSTALLED)

# constraints.txt pins every package (torch included) so pip never swaps the torch build.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# Lint, format and types (pyproject.toml says what each covers); part of `make test`.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: check
	scripts/ensure-redis.sh
	scripts/ensure-chromium.sh
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

$(TINY_DIR)/catalog.yaml: | install
	HF_HUB_OFFLINE=1 $(VENV)/bin/openpik-models make-tiny $(TINY_DIR)

tiny: $(TINY_DIR)/catalog.yaml

# The whole stack: Redis (started if none answers), the gateway and one worker, on the tiny
# demo models unless OPENPIK_CATALOG names a catalog. Ctrl-C stops what it started.
run: install
	@if [ -z "$$OPENPIK_CATALOG" ] && [ ! -f $(TINY_DIR)/catalog.yaml ]; then $(MAKE) --no-print-directory tiny; fi
	@PYTHONPATH=. $(PY) scripts/run_stack.py

# Ratios measured in one run (README "Benchmarks"); Redis DB 9 only. `bench/run.py --quick` for a smoke run.
bench: install
	scripts/ensure-redis.sh
	HF_HUB_OFFLINE=1 $(PY) bench/run.py
	OPENPIK_FUZZ_CASES=5000 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -s tests/test_fuzz.py

clean:
	rm -rf var .pytest_cache
