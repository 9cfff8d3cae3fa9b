# kubeserve developer commands. Each target sets up what it needs (a virtualenv in .venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CRD := crds/serving.kubeserve.dev_inferenceservices.yaml
EXAMPLE ?= examples/canary.yaml

.PHONY: help install test lint crd demo render clean

help:
	@echo "make test    set up .venv and run the linters and the whole test suite"
	@echo "make demo    set up .venv and show what kubeserve makes of an example ($(EXAMPLE))"
	@echo "make crd     regenerate $(CRD) from the API models"
	@echo "make clean   remove .venv and caches"

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[operator,server,test]"
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install lint
	$(BIN)/python -m pytest

crd: install
	$(BIN)/kubeserve crd -o $(CRD)

demo: install
	$(BIN)/kubeserve validate -f $(EXAMPLE)
	$(BIN)/kubeserve render -f $(EXAMPLE)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
