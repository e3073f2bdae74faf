"""Training stages: SFT, cold-start SFT on ``<think>`` traces, GRPO (TRL trainers throughout).

Parameters (light, importable without torch): :class:`SFTParams`, :class:`ColdStartParams`,
:class:`GRPOParams`.  Stage functions live in :mod:`radlab.training.sft`,
:mod:`radlab.training.cold_start` and :mod:`radlab.training.grpo` and are re-exported here
lazily, so ``radlab.config.resolve`` (which imports this package for the dataclasses) never
pays for importing TRL.  ``python -m radlab.training <stage> --params file.yaml`` runs one
stage end to end (works under ``accelerate launch``).
"""

from __future__ import annotations

import importlib
from typing import Any

from radlab.training.params import ColdStartParams, GRPOParams, SFTParams, TrainingParams, split_list

_LAZY = {
    # common
    "setup_runtime": "common",
    "TrainResult": "common",
    "tidy_log_history": "common",
    "checkpoints": "common",
    # sft
    "load_sft_data": "sft",
    "load_sft_model": "sft",
    "sft_config": "sft",
    "train_sft": "sft",
    "sample_generations": "sft",
    "image_dependence": "sft",
    "run_sft": "sft",
    # cold start
    "build_traces": "cold_start",
    "verify_traces": "cold_start",
    "load_cold_start_model": "cold_start",
    "train_cold_start": "cold_start",
    "run_cold_start": "cold_start",
    "READING_GUIDE": "cold_start",
    "thinking_heldout": "cold_start",
    # grpo
    "load_grpo_data": "grpo",
    "load_grpo_model": "grpo",
    "build_rewards": "grpo",
    "grpo_config": "grpo",
    "train_grpo": "grpo",
    "heldout_scores": "grpo",
    "completions_table": "grpo",
    "run_grpo": "grpo",
}

STAGE_RUNNERS = {"sft": "run_sft", "cold_start": "run_cold_start", "grpo": "run_grpo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"radlab.training.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'radlab.training' has no attribute {name!r}")


__all__ = ["SFTParams", "ColdStartParams", "GRPOParams", "TrainingParams", "split_list", "STAGE_RUNNERS", *_LAZY]
