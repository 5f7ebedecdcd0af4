# The one entry point. `make demo` and `make test` work on a fresh clone with only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every install is pinned, with hashes: requirements/dev.txt (runtime + dev tools) is what
# `make` installs; requirements/runtime.txt is the runtime alone, for deployments.
# `make lock` refreshes both from pyproject.toml.
LOCK   := requirements/dev.txt
DEMO   ?= manifests/all-providers.yaml
OUT    ?= results

.PHONY: install lock test lint format typecheck pytest validate demo bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check  # the lock is complete: nothing installed lacks a dependency
	touch $(STAMP)

lock: $(STAMP)
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --generate-hashes \
		--python-version 3.11 --upgrade -o requirements/dev.txt
	$(BIN)/uv pip compile --quiet pyproject.toml --generate-hashes \
		--python-version 3.11 --upgrade -o requirements/runtime.txt
	@echo "requirements/*.txt refreshed; run make test, then commit them"

lint: $(STAMP)
	$(BIN)/ruff check runner tests
	$(BIN)/ruff format --check runner tests

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format runner tests
	$(BIN)/ruff check --fix runner tests

# pytest exits 5 when it collected nothing: that is neither a pass nor an ordinary failure,
# so it is named and turned into a failure of its own.
pytest: $(STAMP)
	@rc=0; $(BIN)/python -m pytest -n 2 $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5); failing" >&2; exit 1; fi; \
	exit $$rc

test: lint typecheck pytest

validate: $(STAMP)
	$(BIN)/runner validate --sandbox manifests/*.yaml  # all but the keys: CI has none

demo: $(STAMP)
	$(BIN)/runner validate --sandbox $(DEMO)
	$(BIN)/runner plan $(DEMO)
	$(BIN)/runner run $(DEMO) --sandbox --out $(OUT) --report

# The micro-benchmarks print their tables; bench_report.py runs the scenarios of issue 12
# and writes tests/bench/report.json and REPORT.md (BENCH_QUICK=1: smaller sizes).
bench: $(STAMP)
	@set -e; for b in tests/bench/bench_*.py; do \
		[ "$$b" = tests/bench/bench_report.py ] && continue; \
		echo "== $$b"; $(BIN)/python $$b; done
	@echo "== tests/bench/bench_report.py"; $(BIN)/python tests/bench/bench_report.py

# Mutation testing (not part of `make test`, not in CI: tens of minutes). Which modules and
# which tests: [tool.mutmut] in pyproject.toml. MUTANTS picks a subset by mutmut's names,
# e.g. make mutate MUTANTS='runner.store.sanitize*'; mutants/ keeps the results between runs.
MUTANTS ?=
mutate: $(STAMP)
	$(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results
	$(BIN)/python -m tests.mutation_score

clean:
	rm -rf $(VENV) mutants .pytest_cache .mypy_cache .ruff_cache .hypothesis
