"""The SFT stage (notebook ``01_sft``) and the SFT helpers the cold-start stage reuses.

Steps, one call each in the notebook::

    info = setup_runtime(params)
    data = load_sft_data(params)                      # DatasetDict train/validation, conversational rows
    model, processor, path = load_sft_model(params, run_dir, data)
    result = train_sft(params, run_dir, model, processor, data)
    gens = sample_generations(params, run_dir, result.model, processor, data)
    dep = image_dependence(params, run_dir, model, processor, data)

Rows (TRL conversational SFT): ``{"messages": [user: [image, text], assistant: [text]],
"images": [PIL], "task": str, "id": str}``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import runs
from radlab.data.build import load_data_split
from radlab.generation import generate
from radlab.params import SFTParams, _SFTLikeParams
from radlab.training.common import (
    TrainResult,
    begin_run,
    common_trainer_args,
    compute_budget,
    corpus_from_sft,
    csv_safe,
    filter_tasks,
    finished_result,
    is_main_process,
    message_text,
    parse_config,
    plot_metrics,
    prepare_model,
    resume_checkpoint,
    run_training,
    step_timer_callback,
    subsample,
    trainer_with_vision_lr,
    writable,
)
from radlab.vocab import split_list

LOSS_PANELS = (("training loss", ["loss"]), ("learning rate", ["learning_rate"]), ("grad norm", ["grad_norm"]))


def load_sft_data(params: SFTParams) -> Any:
    """The data stage's SFT ``DatasetDict`` restricted to ``params.tasks`` (train subsampled).

    Returns ``DatasetDict`` with ``train`` and, when the data stage wrote it, ``validation``.
    """
    import datasets

    dd = load_data_split(params.data_dir, "sft")
    tasks = split_list(params.tasks)
    out = {name: filter_tasks(ds, tasks) for name, ds in dd.items()}
    out["train"] = subsample(out["train"], params.max_train_rows, params.seed)
    return datasets.DatasetDict(out)


WARMUP_FILE = "vision_warmup.json"


def load_sft_model(params: SFTParams, run_dir: str | os.PathLike[str], data: Any) -> tuple[Any, Any, str]:
    """The starting model: ``init_model`` if set, else ``model_name_or_path`` (embedded built here).

    With ``vision_warmup_steps > 0`` and no ``init_model``, the vision tower is warm-started first
    (:mod:`radlab.training.vision_warmup`, cached under ``<output_root>/.cache/vision_warmup/``);
    its summary goes to ``<run_dir>/vision_warmup.json``.
    """
    name = params.init_model or params.model_name_or_path
    corpus = corpus_from_sft(data["train"]) if not params.init_model else None
    model, processor, path = prepare_model(params, run_dir, name_or_path=name, corpus=corpus)
    if runs.is_complete(run_dir):  # the finished run's trained model came back: nothing to warm up
        return model, processor, path
    warm = Path(run_dir) / WARMUP_FILE
    if is_main_process():
        warm.unlink(missing_ok=True)
    if params.vision_warmup_steps > 0 and not params.init_model:
        from radlab.training.common import partial_state
        from radlab.training.vision_warmup import warm_start_vision

        # The main process trains and fills the cache; the others then load it from there.
        with partial_state().main_process_first():
            summary = warm_start_vision(
                model, processor, params.data_dir, path, Path(params.output_root) / ".cache" / "vision_warmup",
                steps=params.vision_warmup_steps, learning_rate=params.vision_warmup_lr,
                batch_size=params.vision_warmup_batch_size, seed=params.seed)
        if is_main_process():
            runs.write_json(warm, summary)
    return model, processor, path


LENGTH_COLUMN = "length"


def with_lengths(rows: Any, processor: Any) -> Any:
    """``rows`` plus a ``length`` column: text tokens of all messages (the image tokens are about
    the same for every row of one image size, so they do not change the grouping).

    ``[{"messages": [...], "images": [...]}, ...] -> same rows + {"length": 57}``
    """
    tok = getattr(processor, "tokenizer", processor)

    def count(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        texts = [" ".join(message_text(m) for m in msgs) for msgs in batch["messages"]]
        return {LENGTH_COLUMN: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]}

    return rows.map(count, batched=True, batch_size=1000, desc="token lengths")


def sft_config(params: _SFTLikeParams, run_dir: str | os.PathLike[str], **overrides: Any) -> Any:
    """``trl.SFTConfig`` for ``params`` via ``HfArgumentParser.parse_dict``: every SFTConfig field
    by name (:func:`common_trainer_args`), ``overrides`` last.

    ``max_length=None`` unless set: TRL's default (1024) cuts through image tokens of large
    images and fails with an image-token mismatch.  ``remove_unused_columns=False`` keeps the
    ``images`` column for the vision collator.
    """
    from trl import SFTConfig

    values = common_trainer_args(params, run_dir)
    values.update(
        train_sampling_strategy="group_by_length" if params.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
        max_length=params.max_length or None,
    )
    values.update(overrides)
    return parse_config(SFTConfig, values)


def train_sft_rows(
    params: _SFTLikeParams,
    run_dir: str | os.PathLike[str],
    model: Any,
    processor: Any,
    train: Any,
    *,
    figure_name: str = "loss",
    extra_callbacks: list[Any] | None = None,
) -> TrainResult:
    """Run TRL's ``SFTTrainer`` on conversational rows and write the standard outputs.

    Resumes from the last checkpoint when ``params.resume``; a ``max_train_flops`` budget stops
    cleanly (checkpoint + final model).  Returns a :class:`TrainResult`; ``result.model`` is the
    trained model (merged when LoRA).  When ``run_dir`` holds this very run, finished, nothing is
    trained: its saved results come back (``result.reused``) with ``model`` as the trained model.
    """
    from trl import SFTTrainer

    run_dir = Path(run_dir)

    def figure(frame: pd.DataFrame) -> dict[str, Any]:
        return plot_metrics(frame, LOSS_PANELS, run_dir, figure_name)

    if not begin_run(params, run_dir):
        return finished_result(run_dir, model, figure)
    resume_from = resume_checkpoint(params, run_dir)
    cfg = sft_config(params, run_dir)
    # Before the compute budget: a frozen vision side (scale 0) is then counted as not trained.
    trainer_cls = trainer_with_vision_lr(SFTTrainer, model, params.vision_lr_scale)
    budget, timer = compute_budget(params, model, processor), step_timer_callback()
    if params.group_by_length and LENGTH_COLUMN not in train.column_names:
        train = with_lengths(train, processor)
    keep = [c for c in ("messages", "images", LENGTH_COLUMN) if c in train.column_names]
    trainer = trainer_cls(
        model=model,
        args=cfg,
        train_dataset=train.select_columns(keep),
        processing_class=processor,
        callbacks=[budget, timer, *(extra_callbacks or [])],
    )
    result = run_training(
        trainer, params, run_dir, processor, resume_from=resume_from, budget=budget, timer=timer,
        figure=figure,
    )
    return result


def train_sft(params: SFTParams, run_dir: str | os.PathLike[str], model: Any, processor: Any, data: Any) -> TrainResult:
    """SFT on ``data["train"]`` (report + grounding mix)."""
    return train_sft_rows(params, run_dir, model, processor, data["train"])


# --------------------------------------------------------------------------------------------
# held-out checks
# --------------------------------------------------------------------------------------------


def heldout_rows(params: _SFTLikeParams, data: Any | None = None) -> Any:
    """Held-out conversational rows: the SFT ``validation`` split, else ``eval/test`` as messages.

    ``eval/test`` rows (GRPO layout + ``answer``) become ``{"messages": prompt + [assistant
    answer], "images": [image], "task", "id"}``.
    """
    if data is not None and "validation" in data and len(data["validation"]):
        return data["validation"]
    ev = load_data_split(params.data_dir, "eval")["test"]

    def to_messages(row: dict[str, Any]) -> dict[str, Any]:
        answer = {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
        return {"messages": list(row["prompt"]) + [answer], "images": [row["image"]]}

    return ev.map(to_messages, remove_columns=[c for c in ev.column_names if c not in ("task", "id")])


def _split_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """``(prompt messages, reference answer)`` of a conversational row (last assistant turn)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], message_text(messages[last])


def sample_generations(
    params: _SFTLikeParams,
    run_dir: str | os.PathLike[str],
    model: Any,
    processor: Any,
    data: Any | None = None,
    *,
    name: str = "generations",
) -> pd.DataFrame:
    """Greedy generations on a few held-out rows (tasks interleaved) next to their references.

    Writes ``<run_dir>/<name>.csv`` with columns ``id, task, prompt, reference, generation``.
    """
    rows = heldout_rows(params, data)
    n = min(params.generation_rows, len(rows))
    if n == 0:
        return pd.DataFrame(columns=["id", "task", "prompt", "reference", "generation"])
    order = _interleave_tasks(rows, n, params.seed)
    sel = rows.select(order)
    prompts, refs = zip(*(_split_messages(m) for m in sel["messages"]))
    images = [imgs[0] for imgs in sel["images"]]
    texts = [g.text for g in generate(model, processor, list(prompts), images, max_new_tokens=params.max_new_tokens)]
    frame = pd.DataFrame({
        "id": sel["id"] if "id" in sel.column_names else [str(i) for i in order],
        "task": sel["task"] if "task" in sel.column_names else [""] * n,
        "prompt": [message_text(p[-1]) for p in prompts],
        "reference": list(refs),
        "generation": [csv_safe(t) for t in texts],
    })
    if writable(run_dir):
        runs.write_table(frame, Path(run_dir) / f"{name}.csv")
    return frame


def _interleave_tasks(rows: Any, n: int, seed: int) -> list[int]:
    """``n`` seeded row indices, alternating tasks so both appear in a short table."""
    rng = np.random.default_rng(seed)
    tasks = rows["task"] if "task" in rows.column_names else ["all"] * len(rows)
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_task.setdefault(t, []).append(i)
    pools = [list(rng.permutation(v)) for _, v in sorted(by_task.items())]
    out: list[int] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(int(pool.pop(0)))
    return out


def row_losses(model: Any, processor: Any, examples: list[dict[str, Any]], *, batch_size: int = 8) -> list[float]:
    """Per-row mean assistant-token cross-entropy (nats/token) under ``model``.

    Uses TRL's own vision collator with ``assistant_only_loss=True``, so the tokens scored are
    exactly those SFT trains on.
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor=processor, max_length=None, assistant_only_loss=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[float] = []
    try:
        for start in range(0, len(examples), batch_size):
            # TRL's collator writes the PIL images into the message dicts in place; copy the
            # messages so a later call with other images (the shuffled condition) is not fooled.
            chunk = examples[start:start + batch_size]
            batch = collator([{"messages": copy.deepcopy(e["messages"]), "images": e["images"]} for e in chunk])
            labels = batch.pop("labels").to(device)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.inference_mode():
                logits = model(**batch).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                ignore_index=-100, reduction="none",
            ).view(shift_labels.shape)
            mask = (shift_labels != -100).float()
            out.extend((nll.sum(1) / mask.sum(1).clamp(min=1)).tolist())
    finally:
        model.train(was_training)
    return out


def image_dependence(
    params: SFTParams,
    run_dir: str | os.PathLike[str],
    model: Any,
    processor: Any,
    data: Any | None = None,
) -> pd.DataFrame:
    """Does the report depend on the image?  Held-out report loss, true vs shuffled image.

    Each of ``image_check_rows`` held-out report rows is scored twice: with its own image and
    with another row's image (a seeded derangement, so no row keeps its own).  A model that
    writes reports from the text prior alone scores both the same.  Writes
    ``image_dependence.csv``: rows ``true_image``, ``shuffled_image`` and ``shuffled_minus_true``
    with ``mean_loss`` (nats/token), ``std_err``, ``n`` and ``frac_true_better``.
    """
    cols = ["condition", "mean_loss", "std_err", "n", "frac_true_better"]
    rows = heldout_rows(params, data)
    if "task" in rows.column_names:
        rows = rows.select([i for i, t in enumerate(rows["task"]) if t == "report"])
    n = min(params.image_check_rows, len(rows))
    if n < 2:
        return pd.DataFrame(columns=cols)
    rows = rows.shuffle(seed=params.seed).select(range(n))
    examples = [{"messages": r["messages"], "images": r["images"]} for r in rows]
    perm = np.random.default_rng(params.seed).permutation(n)
    perm = np.roll(perm, 1)[np.argsort(perm)]  # i -> next element of a random cycle: never itself
    shuffled = [{"messages": e["messages"], "images": examples[int(perm[i])]["images"]} for i, e in enumerate(examples)]
    true_l = np.array(row_losses(model, processor, examples))
    shuf_l = np.array(row_losses(model, processor, shuffled))
    diff = shuf_l - true_l

    def se(x: np.ndarray) -> float:
        return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")

    frame = pd.DataFrame([
        {"condition": "true_image", "mean_loss": true_l.mean(), "std_err": se(true_l), "n": n, "frac_true_better": np.nan},
        {"condition": "shuffled_image", "mean_loss": shuf_l.mean(), "std_err": se(shuf_l), "n": n, "frac_true_better": np.nan},
        {"condition": "shuffled_minus_true", "mean_loss": diff.mean(), "std_err": se(diff), "n": n,
         "frac_true_better": float((diff > 0).mean())},
    ], columns=cols)
    if writable(run_dir):
        runs.write_table(frame, Path(run_dir) / "image_dependence.csv")
    return frame


def run_sft(params: SFTParams, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole notebook in one call (CLI / ``accelerate launch``); returns the DONE summary."""
    from radlab.training.common import setup_runtime

    setup_runtime(params)
    data = load_sft_data(params)
    model, processor, _ = load_sft_model(params, run_dir, data)
    result = train_sft(params, run_dir, model, processor, data)
    if not is_main_process():
        return result.summary()
    gens = sample_generations(params, run_dir, result.model, processor, data)
    dep = image_dependence(params, run_dir, result.model, processor, data)
    return sft_summary(result, run_dir, gens, dep)


def sft_summary(result: TrainResult, run_dir: str | os.PathLike[str], generations: pd.DataFrame,
                dependence: pd.DataFrame) -> dict[str, Any]:
    """The SFT run's ``DONE`` summary (notebook and CLI alike): the trainer's
    (:meth:`TrainResult.summary`), the number of sample generations, the held-out image-loss gap
    (:func:`image_dependence`'s ``shuffled_minus_true`` row; ``None`` when skipped) and the vision
    warm start's summary and FLOPs (the warm start is training compute of this run too, also when it
    came from the cache: the analysis adds ``vision_warmup_flops`` to the run's compute)."""
    summary = result.summary()
    summary["generations"] = len(generations)
    warm = runs.read_json(Path(run_dir) / WARMUP_FILE)
    if warm:
        summary["vision_warmup"] = {k: warm.get(k) for k in ("cache", "key", "steps", "seconds", "final_loss", "flops")}
        summary["vision_warmup_flops"] = float(warm.get("flops") or 0.0)
    summary["image_loss_gap"] = round(float(dependence["mean_loss"].iloc[-1]), 5) if len(dependence) else None
    return summary
