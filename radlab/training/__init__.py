"""Training stages: SFT, cold-start SFT on ``<think>`` traces, GRPO (TRL trainers throughout).

Parameters live in :mod:`radlab.params` (:class:`~radlab.params.SFTParams`,
:class:`~radlab.params.ColdStartParams`, :class:`~radlab.params.GRPOParams`).  Stage functions live
in :mod:`radlab.training.sft`, :mod:`radlab.training.cold_start` and :mod:`radlab.training.grpo`
and are re-exported here for the notebooks.  ``python -m radlab.training <stage> --params file.yaml``
runs one stage end to end (works under ``accelerate launch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from radlab.training.cold_start import (
    READING_GUIDE,
    build_traces,
    cold_start_summary,
    load_cold_start_model,
    run_cold_start,
    thinking_heldout,
    train_cold_start,
    verify_traces,
)
from radlab.training.common import TrainResult, checkpoints, setup_runtime, tidy_log_history
from radlab.training.grpo import (
    build_rewards,
    completions_table,
    grpo_config,
    grpo_summary,
    heldout_scores,
    load_grpo_data,
    load_grpo_model,
    run_grpo,
    train_grpo,
)
from radlab.training.sft import (
    image_dependence,
    load_sft_data,
    load_sft_model,
    run_sft,
    sample_generations,
    sft_config,
    sft_summary,
    train_sft,
)
from radlab.vocab import TRAINING_STAGES

# stage -> the function that runs it end to end: (params, run_dir) -> summary for DONE.
STAGE_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "sft": run_sft,
    "cold_start": run_cold_start,
    "grpo": run_grpo,
}
assert tuple(STAGE_RUNNERS) == TRAINING_STAGES, (tuple(STAGE_RUNNERS), TRAINING_STAGES)

__all__ = [
    "STAGE_RUNNERS", "READING_GUIDE", "TrainResult", "build_rewards", "build_traces", "checkpoints",
    "cold_start_summary", "completions_table", "grpo_config", "grpo_summary", "heldout_scores", "image_dependence", "load_cold_start_model",
    "load_grpo_data", "load_grpo_model", "load_sft_data", "load_sft_model", "run_cold_start", "run_grpo", "run_sft",
    "sample_generations", "setup_runtime", "sft_config", "sft_summary", "thinking_heldout", "tidy_log_history", "train_cold_start",
    "train_grpo", "train_sft", "verify_traces",
]
