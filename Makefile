# The two commands: `make demo` (serve the demo trial) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: demo test lint install serve clean bench-quick bench mutation mutation-audit mutation-services mutation-eligibility

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet -e '.[serve,pdf]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,serve,pdf]'
	touch $@

install: $(VENV)/.installed

# The demo runs in mode "demo" (a banner on every page says so); PORT=8080 make demo for another
# port, HOST=0.0.0.0 to serve beyond this machine.
demo: $(VENV)/.installed
	IWRS_ENVIRONMENT=demo $(FLASK) iwrs init
	IWRS_ENVIRONMENT=demo $(FLASK) iwrs demo
	@echo "This is a DEMO (made-up data, not for real subjects)."
	@echo "Serving the demo trial at http://$(HOST):$(PORT)/ on port $(PORT) (Ctrl-C to stop)."
	@echo "Another port: make demo PORT=8080 (or PORT=8080 make demo)."
	IWRS_ENVIRONMENT=demo $(FLASK) run --host $(HOST) --port $(PORT)

# gthread: a throttled sign-in waits out its tarpit on one of 8 threads, never a whole worker
# (IWRS_SIGN_IN_TARPIT_MAX, 4 by default, stays below --threads; iwrs/web/throttle.py).
serve: $(VENV)/.installed
	$(BIN)/gunicorn --worker-class gthread --workers 4 --threads 8 --bind $(HOST):$(PORT) wsgi:app

# Benchmarks (issue 13): gunicorn on PostgreSQL (127.0.0.1:5432) and SQLite, load from another
# process; results in bench/results/. Not part of `make test`.
bench-quick: $(VENV)/.installed-test
	$(BIN)/python bench/bench_http.py --quick

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_http.py

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

# Mutation testing (issue 14; tests/MUTATION.md): mutmut on the modules [tool.mutmut] names, each
# mutant against the unit tests that cover it; resumes where it stopped. Not part of `make test`.
# MUTANTS narrows the run by mutant name, e.g. MUTANTS='supply.*' (named mutants are re-run even
# when they have a result).
MUTATION_CHILDREN ?= 2
mutation: $(VENV)/.installed-test
	nice -n 10 $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(BIN)/python tests/mutation_report.py

# The slower profiles of pyproject.toml ([tool.iwrs-mutation.*]), each run from a copy in
# build/mutation/<profile>/ (tests/mutation_profile.py): the audit chain and the randomize, dispense
# and unblind services against their database tests on SQLite; the eligibility engine.
mutation-audit: $(VENV)/.installed-test
	MUTATION_CHILDREN=$(MUTATION_CHILDREN) $(BIN)/python tests/mutation_profile.py audit $(MUTANTS)

mutation-services: $(VENV)/.installed-test
	MUTATION_CHILDREN=$(MUTATION_CHILDREN) $(BIN)/python tests/mutation_profile.py services $(MUTANTS)

mutation-eligibility: $(VENV)/.installed-test
	MUTATION_CHILDREN=$(MUTATION_CHILDREN) $(BIN)/python tests/mutation_profile.py eligibility $(MUTANTS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache mutants
