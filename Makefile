# zmem: two commands do everything on a fresh machine:
#   make demo   set up, then store a live process's real memory in a zram device
#   make test   set up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench compare clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/system-deps.sh
	./scripts/system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,plot]'
	touch $(STAMP)

demo: setup
	$(BIN)/zmem demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python -m zmem.bench

compare: setup
	$(BIN)/zmem compare

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
