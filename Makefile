# radlab: `make demo` runs the whole pipeline on the embedded default, `make test` runs the tests.
# Both create .venv on first use and install what they need; nothing else is required.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Every package is pinned in requirements/lock.txt (pip-tools; `make lock` regenerates it from
# pyproject.toml, keeping the pins it can). torch is the CPU build: GPU users install their CUDA
# torch into .venv first; an importable torch is left alone and the lock installs around it.
# Extra pip flags for the CPU torch (e.g. --index-url https://download.pytorch.org/whl/cpu where
# pip.conf gives no find-links holding it) go in TORCH_PIP_ARGS.
LOCK           := requirements/lock.txt
TORCH          ?= $(shell grep -E '^torch==' $(LOCK) | cut -d' ' -f1)
TORCH_PIP_ARGS ?=
LOCK_ARGS      ?=
STAMP := $(VENV)/.radlab-installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)
EXPERIMENT ?= demo
JOBS ?= 2
# Replicates: SEEDS=0,1,2 adds <run>_s1, <run>_s2 beside the one-draw runs for every training run whose
# params file sets no seeds of its own (demo: sft, sft_more, cold_start, grpo, grpo_think; grpo_bleu says
# seeds: 0); the analysis pools them. Empty: one training draw per run.
SEEDS ?=

.PHONY: install lock demo test test-fast lint bench clean-runs help

help:
	@echo "make lock   - regenerate requirements/lock.txt (every package pinned) from pyproject.toml"
	@echo "make demo   - run data -> sft -> cold_start -> grpo -> analysis on params/demo, writes runs/demo/"
	@echo "              SEEDS=0,1,2 adds replicate training runs (seeds 1, 2) that the analysis pools"
	@echo "make test   - run the test suite (unit, params, notebook smoke runs)"
	@echo "make test-fast - the suite without the tests marked slow (papermill runs, kernels, browser)"
	@echo "make lint   - ruff on radlab/, tests/, bench/, the nbstripout check and the import layers (lint-imports)"
	@echo "make bench  - run every benchmark in bench/ and print its figures"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -q "$$(grep -E '^pip==' $(LOCK) | cut -d' ' -f1)"
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	grep -v -E '^torch==' $(LOCK) | $(BIN)/python -m pip install -q -r /dev/stdin
	$(BIN)/python -m pip install -q --no-deps -e .
	@$(BIN)/python -m pip check || { echo "pip check failed: a requirement of pyproject.toml missing from $(LOCK) needs make lock"; exit 1; }
	rm -f $(VENV)/.radlab-installed-*
	touch $@

install: $(STAMP)

# --upgrade-package NAME (in LOCK_ARGS) moves one pin; --upgrade moves them all.
lock: | $(BIN)/python
	$(BIN)/python -m piptools --version >/dev/null 2>&1 || \
		$(BIN)/python -m pip install -q "$$(grep -E '^pip-tools==' $(LOCK) | cut -d' ' -f1)"
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/python -m piptools compile --quiet --strip-extras --allow-unsafe \
		--extra dev --extra lock --annotation-style=line --no-emit-index-url --no-emit-find-links $(LOCK_ARGS) \
		-o $(LOCK) pyproject.toml requirements/lock.in

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/radlab run $(EXPERIMENT) --jobs $(JOBS)$(if $(SEEDS), --seeds $(SEEDS))

test: install
	$(BIN)/lint-imports --no-logo
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The edit-test loop: everything but @pytest.mark.slow (under 3 minutes on 2 cores); CI runs `test`.
test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check radlab tests bench
	$(BIN)/nbstripout --verify notebooks/*.ipynb
	$(BIN)/lint-imports --no-logo

bench: install
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; HF_HUB_OFFLINE=1 $(BIN)/python $$b; done

clean-runs:
	rm -rf runs/$(EXPERIMENT)
