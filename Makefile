# make demo  - install into .venv, pull the offline default model, run the whole chain on an offline corpus
# make test  - install into .venv and run the whole test suite (what CI runs)
# make test-fast - the tier to run while working: no real model, no subprocess, cluster or kill tests
PYTHON ?= python3
VENV   ?= .venv
# CPU-only machines: torch 2.13.0's CPU wheel is already on disk. Installing
# torch first stops pip from pulling a multi-GB CUDA build for `torch>=...`.
TORCH  ?= torch==2.13.0
# megatron-core's IndexedDataset reads the Megatron layout in tests/test_export.py (see pyproject.toml)
MEGATRON ?= megatron-core==0.16.1
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attninf-installed

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test]"
	$(BIN)/pip install -q --disable-pip-version-check --no-deps "$(MEGATRON)"
	touch $(STAMP)

demo: install
	$(BIN)/attninf model pull
	$(BIN)/attninf run configs/demo.yaml

# the report test renders the page in headless Chromium (Debian's package)
test: install
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "no chromium: the browser check will be skipped"
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not heavy"

clean:
	rm -rf $(VENV) demo-out build *.egg-info
