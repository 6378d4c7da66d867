# make demo  - install into .venv, pull the offline default model, find its retrieval heads
# make test  - install into .venv and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
# CPU-only machines: torch 2.13.0's CPU wheel is already on disk. Installing
# torch first stops pip from pulling a multi-GB CUDA build for `torch>=...`.
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attninf-installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

demo: install
	$(BIN)/attninf model pull
	$(BIN)/attninf detect-heads --config configs/quick.yaml --out demo-out/heads.json

test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-out build *.egg-info
