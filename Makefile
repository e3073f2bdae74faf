# radlab: `make demo` runs the whole pipeline on the embedded default, `make test` runs the tests.
# Both create .venv on first use and install what they need; nothing else is required.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch. GPU users: install your CUDA torch into .venv first; an importable torch
# is left alone. Extra pip flags for it (e.g. an index URL) go in TORCH_PIP_ARGS.
TORCH          ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.radlab-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EXPERIMENT ?= demo
JOBS ?= 2
# Replicates: SEEDS=0,1,2 adds <run>_s1, <run>_s2 beside the one-draw runs for every training run whose
# params file sets no seeds of its own (demo: sft, sft_more, cold_start, grpo, grpo_think; grpo_bleu says
# seeds: 0); the analysis pools them. Empty: one training draw per run.
SEEDS ?=

.PHONY: install demo test lint bench clean-runs help

help:
	@echo "make demo   - run data -> sft -> cold_start -> grpo -> analysis on params/demo, writes runs/demo/"
	@echo "              SEEDS=0,1,2 adds replicate training runs (seeds 1, 2) that the analysis pools"
	@echo "make test   - run the test suite (unit, params, notebook smoke runs)"
	@echo "make lint   - ruff on radlab/, tests/, bench/ and the nbstripout check"
	@echo "make bench  - run every benchmark in bench/ and print its figures"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.radlab-installed-*
	touch $@

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/radlab run $(EXPERIMENT) --jobs $(JOBS)$(if $(SEEDS), --seeds $(SEEDS))

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check radlab tests bench
	$(BIN)/nbstripout --verify notebooks/*.ipynb

bench: install
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; HF_HUB_OFFLINE=1 $(BIN)/python $$b; done

clean-runs:
	rm -rf runs/$(EXPERIMENT)
