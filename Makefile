# The only install path. `make test` on a fresh machine builds .venv, installs
# everything, lints and runs the tests; later runs reuse the venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test lint pytest clean

venv: $(STAMP)

# torch and torchvision must come from PyPI as a matching pair: the CPU-only
# torch wheel on local disk breaks torchvision's compiled ops (ENVIRONMENT.md),
# so pip runs without the machine's find-links configuration.
PIP := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip
$(STAMP): setup.py setup.cfg Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch torchvision
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint pytest

clean:
	rm -rf $(VENV) build *.egg-info
