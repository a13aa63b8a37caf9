# One entry point for people and CI alike. `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install test lint typecheck pytest test-slow test-long demo bench soak clean

help:
	@echo "make demo   - set up .venv and run the sandbox demo (no Meta account needed)"
	@echo "make test   - set up .venv, then ruff, mypy (strict) and pytest"
	@echo "make test-slow - the long reliability variants as well"
	@echo "make bench  - run every benchmark in benchmarks/ (prints tables)"
	@echo "make test-long - scale rehearsals of many minutes (100k contacts through the CLI; not CI)"
	@echo "make soak   - 1,000 kill -9 points and 100,000 fuzzed inputs, figures into docs/reliability.md (hours; not CI)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not long" --durations=15

test: lint typecheck pytest

# pytest exits 5 when no test carries the marker: not a failure.
test-slow: $(STAMP)
	$(BIN)/pytest -q -m "slow and not long" --durations=15 || [ $$? -eq 5 ]

demo: $(STAMP)
	$(BIN)/wacamp demo

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# The soak, never in CI: SIGKILL at random moments of campaigns run / run-due / worker / webhooks serve
# on SQLite and PostgreSQL at 80 and 1,000 msg/s, and the fuzz tests scaled to 100,000 inputs; it
# writes its figures into docs/reliability.md. Smaller: make soak SOAK_ARGS="--kills 20 --fuzz 2000".
SOAK_ARGS ?=
# Scale rehearsals that take many minutes each (marker `long`), never in CI.
test-long: $(STAMP)
	$(BIN)/pytest -q -m long --durations=15 || [ $$? -eq 5 ]

soak: $(STAMP)
	$(BIN)/python scripts/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist

# docs/reliability.md from a run of tests/reliability (every tier: about 15 minutes on 2 cores).
.PHONY: reliability-report
reliability-report: $(STAMP)
	$(BIN)/python scripts/reliability_report.py
