"""Machinery shared by the training stages: runtime, data, model, TRL configs, callbacks, outputs.

Everything here wraps TRL / transformers / accelerate; nothing re-implements a trainer.  The
stage modules (:mod:`radlab.training.sft`, :mod:`radlab.training.cold_start`,
:mod:`radlab.training.grpo`) call these helpers in the order their notebook shows.

Run folder layout written by a training stage (``<output_root>/<experiment>/<run_name>/``)::

    params.yaml, env.json  written by StageRun.begin() when the model is loaded for training
    base_model/          embedded model built for this experiment (SFT from radlab:<size> only)
    checkpoints/         TRL checkpoints checkpoint-<step>/ (resume reads the last one)
    model/               final model + processor (LoRA merged), what the next stage loads
    adapter/             the LoRA adapter itself (LoRA runs only)
    trainer_state.json   transformers TrainerState of the final step (log history included)
    log_history.csv      tidy log: step, epoch, metric, value
    figures/             curves (png + pdf)

A finished run folder (``DONE``) is never written to: if its ``params.yaml`` equals the new
params, :func:`prepare_model` loads its ``model/`` and the ``train_*`` functions return its saved
results (:func:`finished_result`) instead of training; if they differ, :func:`begin_run` raises
:class:`ParamError` unless ``force=True``.  The held-out helpers write their tables only into a
run in progress (:func:`writable`).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radlab import runs
from radlab.config import StageRun
from radlab.params import ParamError, TrainingParams
from radlab.training.compute import VISION_PARAM

CHECKPOINTS = "checkpoints"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


# --------------------------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------------------------


def partial_state() -> Any:
    """accelerate's process state (one process outside ``accelerate launch``).

    ``cpu=True`` without CUDA: accelerate only recognises a multi-process CPU launch (gloo)
    when asked for the CPU explicitly; otherwise every process believes it is alone and the
    main-process-first / barrier logic silently does nothing.
    """
    from accelerate import PartialState

    return PartialState(cpu=use_cpu())


def is_main_process() -> bool:
    """True on the process that writes run-folder files."""
    return bool(partial_state().is_main_process)


def setup_runtime(params: TrainingParams) -> dict[str, Any]:
    """Seed everything and set torch's CPU threads; returns what was set (for the notebook).

    Threads: ``params.torch_threads`` if > 0, else ``$RADLAB_NUM_THREADS`` (the pipeline runner
    sets it when stages share the cores), else torch's default.
    """
    import torch
    from transformers import set_seed

    threads = params.torch_threads or int(os.environ.get("RADLAB_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    set_seed(params.seed)
    state = partial_state()
    return {
        "device": str(state.device),
        "num_processes": state.num_processes,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "seed": params.seed,
    }


def use_cpu() -> bool:
    """No CUDA device: TRL must be told (``use_cpu=True``) or it asks accelerate for one."""
    import torch

    return not torch.cuda.is_available()


# Outputs of an earlier run that a new run replaces: removed when it begins, so the folder never
# holds a model that its params.yaml did not produce.
STALE_OUTPUTS = ("model", "adapter", "trainer_state.json", "log_history.csv")


def begin_run(params: TrainingParams, run_dir: str | os.PathLike[str]) -> bool:
    """Start the run in ``run_dir`` (:meth:`radlab.config.StageRun.begin` on the main process).

    Returns ``False`` (writing nothing) when the folder holds this very run, finished: the caller
    then returns the saved outputs.  Raises :class:`ParamError` on every process when it holds a
    finished run with other params and ``force`` is off.
    """
    run = StageRun.of(params, run_dir)
    run.check()
    if run.reusable:
        return False
    state = partial_state()
    if state.is_main_process:
        run.begin(stale=STALE_OUTPUTS)
    state.wait_for_everyone()
    return True


def writable(run_dir: str | os.PathLike[str]) -> bool:
    """True on the main process while the run is in progress (no ``DONE``): a finished run
    folder stays as it is when a notebook re-runs its later cells."""
    return is_main_process() and not runs.is_complete(run_dir)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def load_data_split(data_dir: str | os.PathLike[str], part: str) -> Any:
    """``<data_dir>/<part>`` (``sft``, ``grpo``, ``eval``, ``records``) as saved by the data stage.

    Raises :class:`ParamError` naming the folder when the data stage did not write it.
    """
    from radlab.data.build import open_saved

    path = Path(data_dir) / part
    if not path.exists():
        raise ParamError(f"data folder {str(path)!r} does not exist; run notebooks/00_data.ipynb first (or set data_dir)")
    return open_saved(path)  # transforms (ours and TRL's) never write cache files into the data folder


def filter_tasks(ds: Any, tasks: Sequence[str]) -> Any:
    """Rows whose ``task`` is in ``tasks`` (a no-op when every row already is)."""
    if "task" not in ds.column_names:
        return ds
    present = set(ds.unique("task"))
    if present <= set(tasks):
        return ds
    keep = [i for i, t in enumerate(ds["task"]) if t in set(tasks)]
    return ds.select(keep)


def subsample(ds: Any, n: int, seed: int) -> Any:
    """A seeded random subset of ``n`` rows (all rows when ``n`` is 0 or larger than the table)."""
    if n <= 0 or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message whose content is a str or a list of typed parts."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") == "text")


def corpus_from_sft(ds: Any, limit: int = 20000) -> list[str]:
    """Prompt and answer texts of SFT rows, for the embedded tokenizer's BPE merges."""
    texts: list[str] = []
    for messages in ds.select(range(min(limit, len(ds))))["messages"]:
        texts.extend(message_text(m) for m in messages)
    return [t for t in texts if t.strip()]


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------


def prepare_model(
    params: TrainingParams,
    run_dir: str | os.PathLike[str],
    *,
    name_or_path: str,
    corpus: Iterable[str] | None = None,
) -> tuple[Any, Any, str]:
    """Load ``name_or_path`` (full or LoRA per ``params``) with the one loading path.

    An embedded spec ``radlab:<size>`` is first built into ``<run_dir>/base_model/`` with
    ``corpus`` (the data's prompts and answers) added to the tokenizer corpus; a resumed run
    reuses the folder it built before (the checkpoint's weights only fit that tokenizer).  Under
    ``accelerate launch`` the main process builds while the others wait.  Returns
    ``(model, processor, resolved_path)``; the model stays on CPU (the trainer places it).

    This is where a training run begins (:func:`begin_run`): when ``run_dir`` already holds this
    very run, finished, its trained ``model/`` is loaded instead and nothing is written.
    """
    from radlab.models import build_tiny_qwen3vl, embedded_spec, load_model_and_processor

    dtype = "bfloat16" if params.bf16 else "float32"
    if not begin_run(params, run_dir):
        final = str(Path(run_dir) / "model")
        print(f"{run_dir} holds this finished run: loading its trained model/ (set force=True to train again)")
        model, processor = load_model_and_processor(final, lora=None, dtype=dtype, device="cpu",
                                                    max_pixels=params.max_pixels or None)
        return model, processor, final
    size = embedded_spec(name_or_path)
    if size is not None:
        target = Path(run_dir) / "base_model"
        with partial_state().main_process_first():
            if is_main_process() and not (params.resume and (target / "config.json").exists()):
                build_tiny_qwen3vl(target, size, corpus=list(corpus or []), seed=params.seed,
                                   max_pixels=params.max_pixels or None)
        name_or_path = str(target)
    model, processor = load_model_and_processor(
        name_or_path, lora=params.lora_dict(), dtype=dtype, device="cpu", max_pixels=params.max_pixels or None,
        trust_remote_code=params.trust_remote_code,
    )
    return model, processor, name_or_path


# --------------------------------------------------------------------------------------------
# TRL configs
# --------------------------------------------------------------------------------------------


def common_trainer_args(params: TrainingParams, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The stage's TRL config values: every TRL field the params carry (:meth:`trl_values`, by
    name), plus what radlab derives (:data:`radlab.params.TRL_EXCLUDED`) and its "0 = unset" values.

    TRL's own defaults (``bf16=True``, ``gradient_checkpointing=True``) are GPU choices that
    make these small models 1.1-1.6x slower on CPU, so both come from ``params`` (radlab's
    defaults: off); ``bf16`` is dropped on a CPU-only machine.
    """
    cpu = use_cpu()
    values = params.trl_values()
    values.update(
        output_dir=str(Path(run_dir) / CHECKPOINTS),
        use_cpu=cpu,
        remove_unused_columns=False,
        max_steps=params.max_steps if params.max_steps > 0 else -1,
        save_total_limit=params.save_total_limit or None,
        bf16=bool(params.bf16 and not cpu),
    )
    return values


def parse_config(config_cls: type, values: dict[str, Any]) -> Any:
    """Build a TRL config with ``HfArgumentParser.parse_dict`` (typed, rejects unknown keys).

    This is the same parser TRL's CLI uses, minus ``sys.argv``: a notebook never sees argv.
    """
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser((config_cls,)).parse_dict(dict(values), allow_extra_keys=False)
    return config


# --------------------------------------------------------------------------------------------
# checkpoints / resume
# --------------------------------------------------------------------------------------------


def checkpoints(run_dir: str | os.PathLike[str]) -> list[Path]:
    """``<run_dir>/checkpoints/checkpoint-<step>`` folders, by step, that hold a trainer state."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def resume_checkpoint(params: TrainingParams, run_dir: str | os.PathLike[str]) -> str | None:
    """The checkpoint to resume from, or ``None`` for a fresh start.

    ``resume=True``: the last complete ``checkpoint-*`` (``None`` with a note when there is none).
    ``resume=False``: a fresh run replaces the stage, so stale checkpoints of an earlier run are
    removed; otherwise a later resume could pick a checkpoint of a different run.
    """
    found = checkpoints(run_dir)
    if params.resume:
        if found:
            return str(found[-1])
        print(f"resume=True but no checkpoint in {Path(run_dir) / CHECKPOINTS}; starting from scratch")
        return None
    if found and is_main_process():
        print(f"fresh run: removing {len(found)} old checkpoint(s) in {Path(run_dir) / CHECKPOINTS}")
        shutil.rmtree(Path(run_dir) / CHECKPOINTS, ignore_errors=True)
    partial_state().wait_for_everyone()
    return None


# --------------------------------------------------------------------------------------------
# per-module learning rate
# --------------------------------------------------------------------------------------------

def vision_parameter_names(model: Any) -> list[str]:
    """Names of ``model``'s vision-side parameters (:data:`VISION_PARAM`), e.g.
    ``["model.visual.patch_embed.proj.weight", ..., "model.visual.merger.linear_fc2.bias"]``."""
    return [n for n, _ in model.named_parameters() if VISION_PARAM.search(n)]


def trainer_with_vision_lr(trainer_cls: type, model: Any, vision_lr_scale: float) -> type:
    """``trainer_cls``, or a subclass whose optimizer runs the vision side at ``vision_lr_scale``
    times each group's learning rate; ``vision_lr_scale == 0`` freezes it (``requires_grad``
    off, so it is not in the optimizer at all).

    The split happens in ``create_optimizer``, before the scheduler is built, so schedules and
    warm-up scale both groups alike; it works under DDP and FSDP (names keep the module path).  A
    DeepSpeed config with its own ``optimizer`` section bypasses ``create_optimizer`` (and so this
    scale): leave that section out and the trainer's AdamW is used.
    Why: a warm-started (or pretrained) vision tower keeps its features while the language model
    learns to read them, instead of being rewritten at the language model's rate.
    """
    if vision_lr_scale == 1.0:
        return trainer_cls
    names = set(vision_parameter_names(model))
    if not names:
        raise ParamError("parameter 'vision_lr_scale' != 1 but the model has no vision parameters "
                         f"(looked for names matching {VISION_PARAM.pattern!r})")
    if vision_lr_scale == 0.0:
        for n, p in model.named_parameters():
            if n in names:
                p.requires_grad_(False)
        return trainer_cls

    class VisionLRTrainer(trainer_cls):  # type: ignore[misc, valid-type]
        def create_optimizer(self, model: Any = None) -> Any:
            fresh = self.optimizer is None
            opt = super().create_optimizer(model)
            if fresh:
                split_vision_groups(opt, self.model if model is None else model, vision_lr_scale)
            return opt

    VisionLRTrainer.__name__ = VisionLRTrainer.__qualname__ = f"{trainer_cls.__name__}WithVisionLR"
    return VisionLRTrainer


def split_vision_groups(optimizer: Any, model: Any, scale: float) -> None:
    """Split every param group of a fresh (never stepped) ``optimizer`` into its vision part, at
    ``scale`` x the group's ``lr``, and the rest; other group settings (weight decay) are kept."""
    vision = {id(p) for n, p in model.named_parameters() if VISION_PARAM.search(n)}
    groups = []
    for g in optimizer.param_groups:
        parts = ([p for p in g["params"] if id(p) not in vision], [p for p in g["params"] if id(p) in vision])
        for params, factor in zip(parts, (1.0, scale)):
            if params:
                groups.append({**g, "params": params, "lr": g["lr"] * factor})
    optimizer.param_groups = groups


# --------------------------------------------------------------------------------------------
# callbacks
# --------------------------------------------------------------------------------------------


def compute_budget(params: TrainingParams, model: Any, processor: Any) -> Any:
    """The compute-budget callback for ``model`` (``params.max_train_flops``; 0 = count only).

    Put it first in the trainer's callbacks: it closes the count at ``on_step_end`` before other
    callbacks generate (held-out checks are not training compute).  A reference model is added
    with ``callback.counter.attach(ref_model, pad_id)``.
    """
    from radlab.training.compute import FlopCounter, compute_budget_callback

    pad = getattr(getattr(processor, "tokenizer", processor), "pad_token_id", None)
    return compute_budget_callback(FlopCounter([(model, pad)]), params.max_train_flops)


def step_timer_callback() -> Any:
    """A ``TrainerCallback`` recording the wall time of every optimizer step (``.times``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t)

    return StepTimer()


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a training step hands back to its notebook.

    ``log_history`` is the tidy log (columns ``step, epoch, metric, value``); ``step_seconds``
    the mean wall time per optimizer step of this session (first step excluded when possible);
    ``figures`` maps a name (``"loss"``, ``"grpo_rewards"``...) to its matplotlib Figure (also saved
    as ``figures/<name>.png|pdf``); ``reused`` is True when the run folder already held this
    finished run and nothing was trained (timings then come from its ``DONE``);
    ``train_flops`` the training compute counted by :mod:`radlab.training.compute` (all sessions
    of a resumed run), ``stopped_by_budget`` whether ``max_train_flops`` ended the run.
    """

    model_dir: Path
    global_step: int
    train_seconds: float
    step_seconds: float
    resumed_from: str | None
    stopped_by_budget: bool
    log_history: pd.DataFrame
    train_flops: float = 0.0
    max_train_flops: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict, repr=False)
    model: Any = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def summary(self) -> dict[str, Any]:
        """JSON-friendly scalars for ``DONE`` and the notebook."""
        last = last_values(self.log_history)
        return {
            "model_dir": str(self.model_dir),
            "global_step": self.global_step,
            "train_seconds": round(self.train_seconds, 2),
            "step_seconds": round(self.step_seconds, 4),
            "train_flops": float(self.train_flops),
            "max_train_flops": float(self.max_train_flops),
            "resumed_from": self.resumed_from,
            "stopped_by_budget": self.stopped_by_budget,
            **{f"final_{k}": v for k, v in last.items()},
        }


def tidy_log_history(log_history: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """TrainerState.log_history (a list of dicts) as a long table ``step, epoch, metric, value``.

    Non-numeric entries are dropped; one row per (logged step, metric).
    """
    rows = []
    for entry in log_history:
        step = entry.get("step")
        epoch = entry.get("epoch")
        for key, value in entry.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            rows.append({"step": step, "epoch": epoch, "metric": key, "value": float(value)})
    return pd.DataFrame(rows, columns=["step", "epoch", "metric", "value"])


def csv_safe(text: str) -> str:
    """``text`` with control characters (bar newline and tab) replaced by U+FFFD.

    An untrained policy's byte-level decoding can emit NUL or carriage returns, which CSV
    readers then split into bogus rows; tables that hold model text pass it through this.
    """
    return "".join(ch if ch in "\n\t" or unicodedata.category(ch) != "Cc" else "\ufffd" for ch in text)


def last_values(frame: pd.DataFrame, metrics: Iterable[str] = ("loss", "reward", "train_loss")) -> dict[str, float]:
    """Last logged value of each of ``metrics`` present in a tidy log."""
    out = {}
    for m in metrics:
        sub = frame[frame["metric"] == m]
        if len(sub):
            out[m] = round(float(sub["value"].iloc[-1]), 5)
    return out


def plot_metrics(
    frame: pd.DataFrame,
    panels: Sequence[tuple[str, Sequence[str]]],
    run_dir: str | os.PathLike[str],
    name: str,
) -> dict[str, Any]:
    """One figure with a panel per ``(title, [metric, ...])`` that has data: ``{name: Figure}``
    (``{}`` when no metric has data), saved as ``figures/<name>.png|pdf`` while the run is in
    progress (:func:`writable`).

    Metrics whose name contains a ``*`` are prefix patterns (``"rewards/*/mean"``).
    """
    import matplotlib.pyplot as plt

    def matching(pattern: str) -> list[str]:
        if "*" not in pattern:
            return [pattern] if (frame["metric"] == pattern).any() else []
        rx = re.compile("^" + re.escape(pattern).replace(r"\*", ".+") + "$")
        return sorted(m for m in frame["metric"].unique() if rx.match(m))

    filled = [(title, [m for p in pats for m in matching(p)]) for title, pats in panels]
    filled = [(t, ms) for t, ms in filled if ms]
    if not filled:
        return {}
    cols = min(3, len(filled))
    rows = math.ceil(len(filled) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, metrics) in zip(axes.flat, filled):
        for m in metrics:
            sub = frame[frame["metric"] == m].sort_values("step")
            ax.plot(sub["step"], sub["value"], marker="." if len(sub) < 40 else None, label=m)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(metrics) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(filled):]:
        ax.axis("off")
    fig.tight_layout()
    if writable(run_dir):
        runs.save_figure(fig, run_dir, name)
    plt.close(fig)  # the notebook displays the returned Figure; an open one would show twice
    return {name: fig}


def save_final_model(trainer: Any, processor: Any, params: TrainingParams, run_dir: str | os.PathLike[str]) -> Path:
    """Save the trained model and processor to ``<run_dir>/model/`` atomically.

    Full fine-tuning: ``trainer.save_model`` (gathers sharded weights under DeepSpeed/FSDP).
    LoRA: the adapter goes to ``adapter/`` and the merged model to ``model/``, so the next stage
    and the evaluation load a plain model.  Written to ``.model.tmp`` and renamed, so a killed
    save never leaves a half-written ``model/``.
    """
    run_dir = Path(run_dir)
    final, tmp = run_dir / "model", run_dir / ".model.tmp"
    state = partial_state()
    if state.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    state.wait_for_everyone()
    if params.lora:
        trainer.save_model(str(run_dir / "adapter"))
        if state.is_main_process:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
            merged.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            trainer.model = merged
    else:
        trainer.save_model(str(tmp))
        if state.is_main_process:
            processor.save_pretrained(tmp)
    if state.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    state.wait_for_everyone()
    return final


def write_training_outputs(trainer: Any, run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``trainer_state.json`` and ``log_history.csv`` (tidy) into the run folder; returns the table."""
    run_dir = Path(run_dir)
    frame = tidy_log_history(trainer.state.log_history)
    if is_main_process():
        with runs.atomic_path(run_dir / "trainer_state.json") as tmp:
            trainer.state.save_to_json(str(tmp))
        runs.write_table(frame, run_dir / "log_history.csv")
    return frame


def run_training(
    trainer: Any,
    params: TrainingParams,
    run_dir: str | os.PathLike[str],
    processor: Any,
    *,
    resume_from: str | None,
    budget: Any,
    timer: Any,
    figure: Callable[[pd.DataFrame], dict[str, Any]],
) -> TrainResult:
    """``trainer.train`` then the standard outputs: final model, trainer state, tidy log, figures.

    Every stage's trainer appends its live progress to ``<run_dir>/progress.jsonl`` here, with the
    compute counted so far (``flops``) and the budget (``max_flops``, when there is one).
    ``budget`` is the :func:`~radlab.training.compute.compute_budget_callback` the trainer holds.
    """
    from radlab.training.compute import progress_fields
    from radlab.training.progress import progress_callback

    echo = None
    if params.disable_tqdm:
        # Without a bar transformers prints every step's log dict (PrinterCallback): thousands of lines
        # in a notebook and its HTML page. Show the runner's compact lines instead (every tenth of the run).
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        echo = print
    trainer.add_callback(progress_callback(run_dir, extra=progress_fields, echo=echo))
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    finally:
        budget.counter.close()
    seconds = time.perf_counter() - t0
    model_dir = save_final_model(trainer, processor, params, run_dir)
    frame = write_training_outputs(trainer, run_dir)
    figures = figure(frame)
    times = timer.times[1:] if len(timer.times) > 1 else timer.times
    return TrainResult(
        model_dir=model_dir,
        global_step=int(trainer.state.global_step),
        train_seconds=seconds,
        step_seconds=float(sum(times) / len(times)) if times else float("nan"),
        resumed_from=resume_from,
        stopped_by_budget=budget.stopped_at is not None,
        log_history=frame,
        train_flops=budget.total,
        max_train_flops=budget.max_flops,
        figures=figures,
        model=trainer.model,
    )


def finished_result(run_dir: str | os.PathLike[str], model: Any,
                    figure: Callable[[pd.DataFrame], dict[str, Any]]) -> TrainResult:
    """The :class:`TrainResult` of the finished run in ``run_dir``, read from its files.

    ``model`` is the trained model (what :func:`prepare_model` loaded from ``model/``); the log
    comes from ``log_history.csv``, the step from ``trainer_state.json``, timings from ``DONE``;
    ``figure`` redraws the curves (nothing is saved: the folder is finished).
    """
    run_dir = Path(run_dir)
    done = runs.read_summary(run_dir)
    state = runs.read_json(run_dir / "trainer_state.json")
    log_path = run_dir / "log_history.csv"
    frame = (pd.read_csv(log_path) if log_path.exists() and log_path.stat().st_size
             else pd.DataFrame(columns=["step", "epoch", "metric", "value"]))

    def number(key: str) -> float:
        value = done.get(key)
        return float(value) if isinstance(value, (int, float)) else float("nan")

    print(f"{run_dir} holds this finished run: returning its saved results (set force=True to train again)")
    return TrainResult(
        model_dir=run_dir / "model",
        global_step=int(state.get("global_step", done.get("global_step", 0)) or 0),
        train_seconds=number("train_seconds"),
        step_seconds=number("step_seconds"),
        resumed_from=done.get("resumed_from"),
        stopped_by_budget=bool(done.get("stopped_by_budget", False)),
        log_history=frame,
        train_flops=number("train_flops"),
        max_train_flops=number("max_train_flops"),
        figures=figure(frame),
        model=model,
        reused=True,
    )
