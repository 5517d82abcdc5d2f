# The README's two commands: `make demo` and `make test`. Each makes .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The three packages (backup/ once it has code), checked by ruff and mypy --strict.
PACKAGES := notifykit transports $(if $(wildcard backup/*.py),backup)
# `make demo DEMO_ARGS='--size 1GiB'` passes options to `notifykit-backup demo`.
DEMO_ARGS ?=

.PHONY: demo test lint docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/notifykit-backup demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(PACKAGES) tests benchmarks examples
	$(BIN)/mypy --strict $(PACKAGES)
	$(BIN)/mypy --strict examples/*.py examples/plugin/notifykit_syslog

docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache site
