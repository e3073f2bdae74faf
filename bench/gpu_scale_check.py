"""GPU scale check: a few GRPO steps of a random-init model with the Qwen3-VL-2B architecture on
512 px phantom CXRs, through radlab's own GRPO path, in three rollout set-ups.

    python bench/gpu_scale_check.py                       # hf, vllm, lora; 5 steps each
    python bench/gpu_scale_check.py --modes vllm --steps 10 --prompts 16
    python bench/gpu_scale_check.py --build-only --dims tiny   # CPU: build model + data, no training

Modes (each runs in its own process, so one mode's GPU memory never counts against the next):

* ``hf``    full fine-tuning, rollouts with ``transformers`` generate;
* ``vllm``  full fine-tuning, rollouts with vLLM in colocate mode (``pip install -e .[gpu]``);
  the data are letterboxed to one size, which vLLM needs (TRL issue #6401);
* ``lora``  a LoRA adapter (rank 16, all linear layers), rollouts with ``transformers``;
* ``lora_vllm`` LoRA with vLLM rollouts (not in the default set).

Printed per mode (and written to ``<out>/gpu_scale_check.json``): seconds per optimizer step
(median over the steps after the first, which compiles kernels and warms the allocator), rollout
tokens per second (completion tokens generated / time inside TRL's generate call, from TRL's own
profiling points), peak GPU memory (torch's peak allocation, and the device's peak used memory,
which includes vLLM's KV cache), trainable parameters.  Every figure comes with the GPU name, the
library versions and the date.  Without a CUDA GPU the script exits with status 2 and says so.

The model: Qwen3-VL-2B-Instruct's dimensions (:data:`QWEN3_VL_2B`, from the model's
``config.json`` on the Hugging Face hub, written out here because the hub is not reachable at run
time), randomly initialised in bf16.  The tokenizer is radlab's small BPE tokenizer padded with
placeholder tokens to the real vocabulary size (151,936), so the embedding and LM-head shapes,
and the logits' memory, are the real model's.  A random model's rollouts run to the token budget,
so every step generates the full ``--max-completion-length``: a worst case for rollout length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Qwen/Qwen3-VL-2B-Instruct config.json (Hugging Face hub, read 2025-10): text and vision towers.
QWEN3_VL_2B: dict[str, dict[str, Any]] = {
    "text": {
        "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-6, "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20], "tie_word_embeddings": True,
    },
    "vision": {
        "depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16, "patch_size": 16,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 2048, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17], "hidden_act": "gelu_pytorch_tanh",
    },
}
# The same layout at a size a CPU builds in seconds (tests and --dims tiny).
TINY: dict[str, dict[str, Any]] = {
    "text": {**QWEN3_VL_2B["text"], "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 2048,
             "mrope_section": [6, 5, 5], "max_position_embeddings": 4096},
    "vision": {**QWEN3_VL_2B["vision"], "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
               "out_hidden_size": 128, "num_position_embeddings": 256, "deepstack_visual_indexes": [0]},
}
DIMS = {"2b": QWEN3_VL_2B, "tiny": TINY}
MODES = {"hf": (False, False), "vllm": (True, False), "lora": (False, True), "lora_vllm": (True, True)}
GENERATE_POINTS = ("vLLM.generate", "transformers.generate", "transformers.generate_batch")
NO_GPU_EXIT = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default="hf,vllm,lora", help=f"comma-separated subset of {list(MODES)}")
    p.add_argument("--steps", type=int, default=5, help="GRPO optimizer steps per mode (>= 2: the first is warm-up)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (group size G)")
    p.add_argument("--max-completion-length", type=int, default=256, help="rollout token budget")
    p.add_argument("--image-size", type=int, default=512, help="phantom image side in pixels (multiple of 32)")
    p.add_argument("--dims", choices=sorted(DIMS), default="2b", help="model dimensions: the real 2B, or tiny (CPU tests)")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.35, help="vLLM's GPU memory share (colocate)")
    p.add_argument("--out", default="/tmp/radlab_gpu_scale", help="working folder (model, data, runs, JSON)")
    p.add_argument("--build-only", action="store_true", help="build the model and data, print their sizes, exit (runs on a CPU)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        p.error(f"--modes: unknown {bad or args.modes!r}; choose from {list(MODES)}")
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is warm-up and not timed)")
    if args.image_size < 32 or args.image_size % 32:
        p.error("--image-size must be a multiple of 32")
    if args.prompts < 1 or args.num_generations < 2:
        p.error("--prompts must be >= 1 and --num-generations >= 2")
    args.mode_list = modes
    return args


# --------------------------------------------------------------------------------------------
# model and data
# --------------------------------------------------------------------------------------------


def qwen3vl_config(dims: dict[str, dict[str, Any]], tokenizer: Any) -> Any:
    """A ``Qwen3VLConfig`` with ``dims`` and radlab's special-token ids."""
    from transformers import Qwen3VLConfig

    from radlab.models import SPECIAL_TOKENS

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    t = dict(dims["text"])
    rope = {"rope_type": "default", "rope_theta": t.pop("rope_theta"), "mrope_section": t.pop("mrope_section"),
            "mrope_interleaved": True}
    tie = t.pop("tie_word_embeddings")
    text = {**t, "rope_parameters": rope, "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": tie}
    return Qwen3VLConfig(
        text_config=text, vision_config=dict(dims["vision"]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie,
    )


def build_model(out: Path, dims: dict[str, dict[str, Any]], *, image_size: int, device: str = "cpu",
                dtype: str = "float32", seed: int = 0) -> Path:
    """Write a random-init model with ``dims`` plus radlab's processor to ``out/model``.

    radlab's tokenizer is padded with placeholder tokens to the model's vocabulary size.  Returns
    the model folder (reused when it exists with the same dims).
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from radlab import models

    folder = out / "model"
    stamp = json.dumps({"dims": dims, "image_size": image_size, "dtype": dtype, "seed": seed}, sort_keys=True)
    if (folder / "scale_check.json").is_file() and (folder / "scale_check.json").read_text() == stamp:
        return folder
    base = models.build_tiny_qwen3vl(out / "tokenizer", "tiny", max_pixels=image_size * image_size, seed=seed)
    processor = models.load_processor(str(base))
    tok = processor.tokenizer
    vocab = dims["text"]["vocab_size"]
    if len(tok) < vocab:
        tok.add_tokens([f"<|radlab_unused_{i}|>" for i in range(vocab - len(tok))], special_tokens=True)
    if len(tok) != vocab:
        raise ValueError(f"tokenizer has {len(tok)} tokens, more than the model's vocab_size {vocab}")
    config = qwen3vl_config(dims, tok)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(old)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.pad_token_id]
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    tmp = out / "model.building"
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    (tmp / "scale_check.json").write_text(stamp)
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def count_parameters(dims: dict[str, dict[str, Any]]) -> int:
    """Parameters of a model with ``dims`` (built on the meta device: no memory, no init)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    class _Tok:
        def convert_tokens_to_ids(self, t: str) -> int:
            return 1 + hash(t) % 1000

    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(qwen3vl_config(dims, _Tok()))
    return sum(p.numel() for p in model.parameters())


def build_data(out: Path, args: argparse.Namespace) -> Path:
    """Phantom data at ``--image-size`` with enough GRPO prompts for every step (all images one size)."""
    from radlab.data import build
    from radlab.params import DataParams

    params = DataParams(output_root=str(out / "runs"), experiment="gpu_scale", image_size=args.image_size,
                        n_train=8, n_validation=0, n_grpo=args.prompts * args.steps, n_eval=8,
                        mix_abnormality=1.0, mix_abnormality_all=0.0, mix_anatomy=0.0, mix_phrase=0.0,
                        workers=min(8, os.cpu_count() or 1), n_gallery=2)
    if not (params.run_dir / "grpo").is_dir():
        build.build_datasets(params, figures=False)
    return params.run_dir


# --------------------------------------------------------------------------------------------
# one mode (child process)
# --------------------------------------------------------------------------------------------


class RolloutTokens:
    """A zero-weight reward that counts the completion tokens of every rollout batch."""

    __name__ = "rollout_tokens"

    def __init__(self) -> None:
        self.tokens = 0
        self.completions = 0

    def __call__(self, completions: list[Any], completion_ids: list[list[int]] | None = None, **_: Any) -> list[float]:
        ids = completion_ids or []
        self.tokens += sum(len(c) for c in ids)
        self.completions += len(ids)
        return [0.0] * len(completions)


def grpo_values(args: argparse.Namespace, mode: str, model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """GRPO params of one mode: the paper's loss settings (KL 0.01, clip 0.2/0.28), bf16,
    gradient checkpointing, no held-out checks or checkpoints in the timed steps."""
    from radlab.params import GRPOParams

    use_vllm, lora = MODES[mode]
    values: dict[str, Any] = {
        "experiment": "gpu_scale", "output_root": str(Path(args.out) / "runs"), "run_name": f"grpo_{mode}",
        "data_dir": str(data_dir), "init_model": str(model_dir), "max_steps": args.steps,
        "per_device_train_batch_size": args.prompts * args.num_generations, "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length, "learning_rate": 1.0e-06, "beta": 0.01,
        "epsilon": 0.2, "epsilon_high": 0.28, "loss_type": "dapo", "bf16": True, "gradient_checkpointing": True,
        "use_vllm": use_vllm, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": args.vllm_gpu_memory_utilization,
        "lora": lora, "max_pixels": args.image_size * args.image_size, "eval_every": 0, "eval_rows": 0,
        "completions_every": 0, "save_steps": 10_000, "logging_steps": 1, "tasks": "report,grounding",
    }
    names = {f.name for f in fields(GRPOParams)}
    for budget in ("max_train_seconds", "max_flops", "max_train_flops"):  # no budget but the step count
        if budget in names:
            values[budget] = 0
    return {k: v for k, v in values.items() if k in names}


def run_mode(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """Train ``args.steps`` GRPO steps in ``mode``; returns the measured figures."""
    import torch
    from transformers import TrainerCallback
    from trl.extras import profiling

    from radlab import config
    from radlab.training import grpo
    from radlab.training.common import setup_runtime

    out = Path(args.out)
    params = config.validate("grpo", grpo_values(args, mode, out / "model", out / "runs" / "gpu_scale" / "data"))
    setup_runtime(params)
    timings: dict[str, float] = defaultdict(float)
    original = profiling.ProfilingContext._log_metrics

    def record(self: Any, duration: float) -> None:  # TRL's own timing points around generate
        timings[self.name] += duration
        original(self, duration)

    profiling.ProfilingContext._log_metrics = record  # type: ignore[method-assign]

    class StepProbe(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.device_peak = 0
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self._t)
            free, total = torch.cuda.mem_get_info()
            self.device_peak = max(self.device_peak, total - free)

    torch.cuda.reset_peak_memory_stats()
    data = grpo.load_grpo_data(params)
    model, processor, _ = grpo.load_grpo_model(params, params.run_dir)
    funcs, weights = grpo.build_rewards(params)
    counter, probe = RolloutTokens(), StepProbe()
    params.run_dir.mkdir(parents=True, exist_ok=True)
    result = grpo.train_grpo(params, params.run_dir, model, processor, data, [*funcs, counter], [*weights, 0.0],
                             extra_callbacks=[probe])
    gen_s = sum(timings[k] for k in GENERATE_POINTS)
    trainable = sum(p.numel() for p in result.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in result.model.parameters())
    timed = probe.times[1:] or probe.times
    return {
        "mode": mode, "steps": len(probe.times), "s_per_step": statistics.median(timed),
        "s_first_step": probe.times[0] if probe.times else float("nan"),
        "rollout_tokens": counter.tokens, "completions": counter.completions, "generate_s": gen_s,
        "rollout_tokens_per_s": counter.tokens / gen_s if gen_s > 0 else float("nan"),
        "weight_sync_s": timings.get("sync_weights", 0.0),
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_device_used_gib": probe.device_peak / 2**30,
        "params_total": total, "params_trainable": trainable,
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """GPU, library versions and the date: printed beside every figure."""
    import torch
    import transformers
    import trl

    info: dict[str, Any] = {"date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "python": platform.python_version(),
                            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except ImportError:
        info["vllm"] = "not installed"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def table(rows: list[dict[str, Any]]) -> str:
    """The printed table; ``vs hf`` is each mode's s/step over the ``hf`` mode's, measured in the same run."""
    base = next((r["s_per_step"] for r in rows if r["mode"] == "hf" and "error" not in r), None)
    head = "| mode | s/step | vs hf | rollout tok/s | peak alloc GiB | peak device GiB | trainable params |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['mode']} | failed: {r['error'][:80]} | | | | | |")
            continue
        ratio = f"{r['s_per_step'] / base:.2f}x" if base else "-"
        lines.append(f"| {r['mode']} | {r['s_per_step']:.2f} | {ratio} | {r['rollout_tokens_per_s']:.0f} "
                     f"| {r['peak_allocated_gib']:.1f} | {r['peak_device_used_gib']:.1f} | {r['params_trainable'] / 1e6:.1f}M |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.child:
        print("RESULT " + json.dumps(run_mode(args, args.child)), flush=True)
        return 0
    if args.build_only:
        folder = build_model(out, DIMS[args.dims], image_size=args.image_size)
        data_dir = build_data(out, args)
        print(json.dumps({"model": str(folder), "parameters": count_parameters(DIMS[args.dims]), "data": str(data_dir)}))
        return 0
    if not torch.cuda.is_available():
        print("gpu_scale_check: needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); "
              "nothing was measured. Run it on a GPU machine, or use --build-only to check the model and data "
              "set-up on this one.", file=sys.stderr)
        return NO_GPU_EXIT
    t0 = time.perf_counter()
    build_model(out, DIMS[args.dims], image_size=args.image_size, device="cuda", dtype="bfloat16")
    build_data(out, args)
    setup_s = time.perf_counter() - t0
    rows = []
    for mode in args.mode_list:
        cmd = [sys.executable, __file__, "--child", mode, *(argv if argv is not None else sys.argv[1:])]
        env = dict(os.environ)
        if MODES[mode][0]:  # TRL's vLLM colocate mode runs inside a (one-process) torch.distributed group
            env.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": env.get("MASTER_PORT", "29517")})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode == 0 and found:
            rows.append(json.loads(found[-1][len("RESULT "):]))
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            rows.append({"mode": mode, "error": f"exit {proc.returncode}: {tail[0]}"})
            (out / f"{mode}.log").write_text(proc.stdout + proc.stderr)
    info = machine()
    report = {"machine": info, "setup_s": setup_s, "args": {k: v for k, v in vars(args).items() if k != "mode_list"},
              "parameters": count_parameters(DIMS[args.dims]), "results": rows}
    (out / "gpu_scale_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"Qwen3-VL-{args.dims} architecture, random init ({report['parameters'] / 1e9:.2f}B parameters), "
          f"{args.prompts} prompts x G={args.num_generations} per step, {args.max_completion_length} completion tokens, "
          f"{args.image_size} px; {args.steps} steps per mode (median of steps 2..{args.steps})")
    print(f"machine: {info.get('gpu', '?')} ({info.get('gpu_memory_gib', '?')} GiB), torch {info['torch']}, "
          f"transformers {info['transformers']}, trl {info['trl']}, vllm {info['vllm']}, {info['date_utc']} UTC")
    print(table(rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
