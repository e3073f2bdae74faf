"""Benchmark the training stages' step cost against a bare TRL loop, at demo geometry, in one run.

For each of SFT and GRPO the same model (same initial weights), data and optimisation settings
run twice, interleaved (bare, radlab, bare):

* **bare**: TRL's own trainer (``SFTTrainer`` / ``GRPOTrainer``) with no radlab callbacks, no per-module
  learning rate and no outputs: the floor that TRL itself costs on this machine.  Its config comes from
  radlab's builders (``radlab.training.sft_config`` / ``grpo_config``, the config the radlab run trains
  with), with checkpoints off and logging at most once, so both runs train with the same settings;
* **radlab**: radlab's stage function (``train_sft_rows`` / ``train_grpo``) with everything it adds:
  the compute counter and budget, the step timer, GRPO's completions recorder and held-out check
  (only at the start and the end at these step counts: outside the timed steps), the outputs.

It prints, as ratios against the bare loop measured in the same run (so a loaded machine slows both),
the mean seconds per optimizer step (the first step of each run is excluded: warm-up), the counted
training FLOPs per step (radlab.training.compute), and GRPO's share of a step spent in the rewards.
Demo geometry: ``radlab:tiny``, 128-px phantom images, SFT batch 16, GRPO 4 prompts x G=8 and up to
64 new tokens from an SFT model of a few steps (so completions run long: a worst case for rollouts).

Usage::

    python bench/bench_training.py [--sft-steps 20] [--grpo-steps 6] [--threads 2] [--out bench/out]

Prints one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Timed:
    """A reward function wrapper that accumulates its wall time (``seconds``) and calls."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


# What the bare loop's config changes in radlab's: no checkpoints, no reporting, (almost) no logging.
BARE_OVERRIDES: dict[str, Any] = {"save_strategy": "no", "report_to": "none", "logging_steps": 10_000}


def build_data(root: Path) -> None:
    from radlab.config import load_yaml
    from radlab.data.build import build_datasets, params_from_dict

    values = load_yaml(Path(__file__).resolve().parents[1] / "params" / "demo" / "data.yaml")
    values.update(output_root=str(root), experiment="bench", n_train=300, n_validation=10, n_grpo=200, n_eval=20,
                  workers=1)
    build_datasets(params_from_dict(values), figures=False)


def _mean_step(times: list[float]) -> float:
    times = times[1:] if len(times) > 1 else times
    return sum(times) / max(1, len(times))


def _fresh(model_dir: Path) -> tuple[Any, Any]:
    from radlab.models import load_model_and_processor

    return load_model_and_processor(str(model_dir), dtype="float32", device="cpu")


def bare_sft(p: Any, model_dir: Path, train: Any, out: Path) -> float:
    """Seconds per step of TRL's SFTTrainer alone (same model, rows, batch and learning rate)."""
    import trl

    from radlab.training import sft_config
    from radlab.training.common import step_timer_callback

    model, processor = _fresh(model_dir)
    cfg = sft_config(p, out, **BARE_OVERRIDES)
    timer = step_timer_callback()
    trl.SFTTrainer(model=model, args=cfg, train_dataset=train.select_columns(["messages", "images"]),
                   processing_class=processor, callbacks=[timer]).train()
    return _mean_step(timer.times)


def bench_sft(root: Path, steps: int) -> dict[str, Any]:
    from radlab import config
    from radlab.training import sft

    p = config.validate("sft", {"experiment": "bench", "output_root": str(root), "max_steps": steps,
                                "save_steps": 10_000, "logging_steps": 5, "warmup_steps": 0.0,
                                "vision_warmup_steps": 0, "lr_scheduler_type": "constant"})
    data = sft.load_sft_data(p)
    model, processor, path = sft.load_sft_model(p, p.run_dir, data)
    bare = [bare_sft(p, Path(path), data["train"], root / "bare_sft")]
    result = sft.train_sft_rows(p, p.run_dir, model, processor, data["train"])
    bare.append(bare_sft(p, Path(path), data["train"], root / "bare_sft"))
    bare_s = sum(bare) / len(bare)
    return {"sft_steps": steps, "batch_size": p.per_device_train_batch_size,
            "sft_step_seconds_bare": round(bare_s, 4), "sft_step_seconds_radlab": round(result.step_seconds, 4),
            "sft_step_ratio_radlab_over_bare": round(result.step_seconds / bare_s, 3),
            "sft_flops_per_step": result.train_flops / max(1, result.global_step)}


def bare_grpo(p: Any, model_dir: Path, train: Any, funcs: list[Any], weights: list[float], out: Path) -> float:
    """Seconds per step of TRL's GRPOTrainer alone (same policy, prompts, rewards and settings)."""
    import trl

    from radlab.generation import vision_token_ids
    from radlab.training import grpo_config
    from radlab.training.common import step_timer_callback
    from radlab.training.grpo import left_pad_prompts

    model, processor = _fresh(model_dir)
    left_pad_prompts(processor)
    # The rollout settings train_grpo adds to the config: these weights, vision tokens never sampled.
    cfg = grpo_config(p, out, reward_weights=list(weights), generation_kwargs={"suppress_tokens": vision_token_ids(model)},
                      **BARE_OVERRIDES)
    timer = step_timer_callback()
    trl.GRPOTrainer(model=model, reward_funcs=funcs, args=cfg, train_dataset=train, processing_class=processor,
                    callbacks=[timer]).train()
    return _mean_step(timer.times)


def bench_grpo(root: Path, steps: int) -> dict[str, Any]:
    from radlab import config
    from radlab.training import grpo

    p = config.validate("grpo", {"experiment": "bench", "output_root": str(root), "max_steps": steps,
                                 "save_steps": 10_000, "eval_every": 0, "eval_rows": 0, "completions_every": 0,
                                 "max_train_flops": 0.0})
    data = grpo.load_grpo_data(p)
    model, processor, path = grpo.load_grpo_model(p, p.run_dir)
    funcs, weights = grpo.build_rewards(p)
    bare = [bare_grpo(p, Path(path), data["train"], funcs, weights, root / "bare_grpo")]
    timed = [Timed(f) for f in funcs]
    t0 = time.perf_counter()
    result = grpo.train_grpo(p, p.run_dir, model, processor, data, timed, weights)
    total = time.perf_counter() - t0
    bare.append(bare_grpo(p, Path(path), data["train"], funcs, weights, root / "bare_grpo"))
    bare_s = sum(bare) / len(bare)
    log = result.log_history
    lengths = log.loc[log["metric"] == "completions/mean_length", "value"].tolist()
    return {
        "grpo_steps": steps, "completions_per_step": p.per_device_train_batch_size,
        "num_generations": p.num_generations, "max_completion_length": p.max_completion_length,
        "grpo_step_seconds_bare": round(bare_s, 4), "grpo_step_seconds_radlab": round(result.step_seconds, 4),
        "grpo_step_ratio_radlab_over_bare": round(result.step_seconds / bare_s, 3),
        "grpo_flops_per_step": result.train_flops / max(1, result.global_step),
        "grpo_reward_share": round(sum(t.seconds for t in timed) / total, 4),
        "mean_completion_length": round(sum(lengths) / len(lengths), 1) if lengths else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft-steps", type=int, default=20)
    ap.add_argument("--grpo-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="runs folder to keep (default: a temp folder)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        t0 = time.perf_counter()
        build_data(root)
        result: dict[str, Any] = {"threads": args.threads, "data_seconds": round(time.perf_counter() - t0, 1)}
        result.update(bench_sft(root, args.sft_steps))
        result.update(bench_grpo(root, args.grpo_steps))
        result["cuda"] = torch.cuda.is_available()
        for sub in ("bare_sft", "bare_grpo"):
            shutil.rmtree(root / sub, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
