"""Benchmark the training stages at demo size on this machine.

* SFT: seconds per optimizer step (demo geometry: ``radlab:tiny``, 128-px images, batch 16) and the
  share of it spent fetching/collating data (dataset decode + chat template + image processor).
* GRPO: seconds per step (demo geometry: 4 prompts x G=8 = 32 completions, up to 64 new tokens) and
  the shares spent in the reward functions and in data loading.  Target: rewards + data < 5% of a step.

The policy for GRPO is the SFT model of the first part (a few steps only), so completions are long
(near the 64-token cap): a worst case for generation, the realistic case for reward cost.

Usage::

    python bench/bench_training.py [--sft-steps 20] [--grpo-steps 6] [--threads 2] [--out bench/out]

Prints one JSON object with the timings.
"""

from __future__ import annotations

import argparse
import json
import os
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


class TimedLoader:
    """Wrap a DataLoader: time spent in ``next()`` (fetch + decode + collate) goes to ``seconds``."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Any:
        it = iter(self._loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - t0
            yield batch


def timed_trainer(cls: type) -> type:
    """A subclass of a TRL trainer whose train dataloader is a :class:`TimedLoader`."""

    class _Timed(cls):  # type: ignore[misc, valid-type]
        data_timer: TimedLoader | None = None

        def get_train_dataloader(self) -> Any:
            self.data_timer = TimedLoader(super().get_train_dataloader())
            return self.data_timer

    return _Timed


def build_data(root: Path) -> None:
    from radlab.config import load_yaml
    from radlab.data.build import build_datasets, params_from_dict

    values = load_yaml(Path(__file__).resolve().parents[1] / "params" / "demo" / "data.yaml")
    values.update(output_root=str(root), experiment="bench", n_train=300, n_validation=10, n_grpo=200, n_eval=20,
                  workers=1)
    build_datasets(params_from_dict(values), figures=False)


def bench_sft(root: Path, steps: int) -> dict[str, Any]:
    import trl

    from radlab import config
    from radlab.training import sft
    from radlab.training.common import step_timer_callback

    p = config.validate("sft", {"experiment": "bench", "output_root": str(root), "max_steps": steps,
                                "save_steps": 10_000, "logging_steps": 5, "warmup_steps": 0.0})
    data = sft.load_sft_data(p)
    model, processor, _ = sft.load_sft_model(p, p.run_dir, data)
    timer = step_timer_callback()
    trainer = timed_trainer(trl.SFTTrainer)(
        model=model, args=sft.sft_config(p, p.run_dir),
        train_dataset=sft.with_lengths(data["train"], processor).select_columns(["messages", "images", "length"]),
        processing_class=processor, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    trainer.save_model(str(p.run_dir / "model"))
    processor.save_pretrained(str(p.run_dir / "model"))
    step = sum(timer.times[1:]) / max(1, len(timer.times) - 1)
    data_s = trainer.data_timer.seconds if trainer.data_timer else float("nan")
    return {"sft_steps": steps, "sft_step_seconds": round(step, 4), "sft_train_seconds": round(total, 2),
            "sft_data_share": round(data_s / total, 4), "batch_size": p.per_device_train_batch_size}


def bench_grpo(root: Path, steps: int) -> dict[str, Any]:
    import trl

    from radlab import config
    from radlab.training import grpo
    from radlab.training.common import step_timer_callback

    p = config.validate("grpo", {"experiment": "bench", "output_root": str(root), "max_steps": steps,
                                 "save_steps": 10_000, "eval_every": 0, "eval_rows": 0, "completions_every": 0})
    data = grpo.load_grpo_data(p)
    model, processor, _ = grpo.load_grpo_model(p, p.run_dir)
    funcs, weights = grpo.build_rewards(p)
    timed = [Timed(f) for f in funcs]
    timer = step_timer_callback()
    from radlab.generation import vision_token_ids

    grpo.left_pad_prompts(processor)

    cfg = grpo.grpo_config(p, p.run_dir, reward_weights=weights,
                           generation_kwargs={"suppress_tokens": vision_token_ids(model)})
    trainer = timed_trainer(trl.GRPOTrainer)(
        model=model, reward_funcs=timed, args=cfg,
        train_dataset=data["train"], processing_class=processor, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t0
    step = sum(timer.times[1:]) / max(1, len(timer.times) - 1)
    reward_s = sum(t.seconds for t in timed)
    data_s = trainer.data_timer.seconds if trainer.data_timer else float("nan")
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    return {
        "grpo_steps": steps, "grpo_step_seconds": round(step, 4), "grpo_train_seconds": round(total, 2),
        "grpo_reward_share": round(reward_s / total, 4), "grpo_data_share": round(data_s / total, 4),
        "grpo_rewards_plus_data_share": round((reward_s + data_s) / total, 4),
        "reward_seconds": {t.__name__: round(t.seconds, 4) for t in timed},
        "completions_per_step": p.per_device_train_batch_size, "num_generations": p.num_generations,
        "max_completion_length": p.max_completion_length,
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
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
