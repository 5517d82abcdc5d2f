# The README's two commands: `make demo` and `make test`. Each makes .venv and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The three folders, checked by ruff; mypy --strict reads them as the one package they install as.
PACKAGES := notifykit transports backup
# transports/ and backup/ install as notifykit.transports and notifykit.backup (pyproject's
# package-dir). mypy cannot follow that mapping, so it reads a tree of links shaped like the wheel.
TYPECHECK := build/typecheck
# `make demo DEMO_ARGS='--size 1GiB'` passes options to `notifykit-backup demo`.
DEMO_ARGS ?=

.PHONY: demo test lint docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# scripts/link-ceph-bindings: Debian's python3-rados/python3-rbd (not on PyPI) into the venv, when installed.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[all]'
	$(BIN)/python scripts/link-ceph-bindings
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python scripts/link-ceph-bindings
	touch $@ $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/notifykit-backup demo $(DEMO_ARGS)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(PACKAGES) tests benchmarks examples
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/notifykit
	ln -s $(CURDIR)/notifykit/*.py $(CURDIR)/notifykit/py.typed $(TYPECHECK)/notifykit/
	ln -s $(CURDIR)/transports $(TYPECHECK)/notifykit/transports
	ln -s $(CURDIR)/backup $(TYPECHECK)/notifykit/backup
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy --strict -p notifykit
	MYPYPATH=$(TYPECHECK) $(BIN)/mypy --strict examples/*.py examples/plugin/notifykit_syslog

# mkdocstrings (griffe) cannot follow the package-dir mapping either: it reads its own link tree.
docs: $(VENV)/.installed-dev
	rm -rf build/apidoc && mkdir -p build/apidoc/notifykit
	ln -s $(CURDIR)/notifykit/*.py $(CURDIR)/notifykit/py.typed build/apidoc/notifykit/
	ln -s $(CURDIR)/transports build/apidoc/notifykit/transports
	ln -s $(CURDIR)/backup build/apidoc/notifykit/backup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache site
