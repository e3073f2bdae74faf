"""The GRPO stage (notebook ``03_grpo``): TRL's ``GRPOTrainer`` with radlab's clinical rewards.

Steps, one call each in the notebook::

    info = setup_runtime(params)
    data = load_grpo_data(params)            # {"train": prompts, "heldout": eval subset}
    model, processor, path = load_grpo_model(params, run_dir)
    funcs, weights = build_rewards(params)   # radlab.rewards.build_reward_funcs by name
    result = train_grpo(params, run_dir, model, processor, data, funcs, weights)
    scores = heldout_scores(params, run_dir, result.model, processor, data, funcs)

Both tasks train in one run: every reward returns ``None`` on the other task's rows, which TRL
leaves out of the weighted sum.  ``thinking=True`` switches every prompt to the thinking form
(``radlab.data.tasks.THINK_TRIGGER``) and adds the ``think_format`` reward (by default).

Outputs besides the common ones (``model/``, ``trainer_state.json``, ``log_history.csv``):
``completions.parquet`` (sampled completions with per-reward scores and advantages every
``completions_every`` steps), ``heldout.csv`` (greedy held-out scores logged during training),
``heldout_final.csv`` (per-sample final greedy scores) and figures ``grpo_rewards``,
``grpo_dynamics``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import runs
from radlab.data.build import load_data_split
from radlab.formats import completion_text
from radlab.generation import generate, vision_token_ids
from radlab.params import GRPOParams
from radlab.training.common import (
    TrainResult,
    begin_run,
    common_trainer_args,
    compute_budget,
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
from radlab.vocab import ParamError, parse_item, split_list

HELDOUT_PREFIX = "heldout/"


def mix_tasks(ds: Any, report_fraction: float, seed: int) -> Any:
    """Resample rows so that ``report_fraction`` of them are report rows (0 = unchanged).

    Keeps as many rows as possible: the scarcer task is kept whole and the other subsampled.
    """
    if report_fraction <= 0 or "task" not in ds.column_names:
        return ds
    tasks = np.asarray(ds["task"])
    rep, gro = np.flatnonzero(tasks == "report"), np.flatnonzero(tasks != "report")
    if len(rep) == 0 or len(gro) == 0:
        return ds
    n_total = min(len(rep) / report_fraction, len(gro) / (1.0 - report_fraction))
    n_rep, n_gro = int(round(n_total * report_fraction)), int(round(n_total * (1.0 - report_fraction)))
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(rep, n_rep, replace=False), rng.choice(gro, n_gro, replace=False)])
    return ds.select(sorted(keep.tolist()))


def heldout_subset(ds: Any, per_task: int, seed: int) -> Any:
    """Up to ``per_task`` seeded rows of each task (the periodic greedy check)."""
    if per_task <= 0:
        return ds.select([])
    rng = np.random.default_rng(seed)
    tasks = np.asarray(ds["task"]) if "task" in ds.column_names else np.asarray(["all"] * len(ds))
    keep: list[int] = []
    for t in sorted(set(tasks.tolist())):
        idx = np.flatnonzero(tasks == t)
        keep.extend(rng.choice(idx, min(per_task, len(idx)), replace=False).tolist())
    return ds.select(sorted(keep))


VLLM_SIZE_ISSUE = "TRL issue #6401"


def image_sizes(ds: Any, column: str = "image", batch_size: int = 512) -> dict[tuple[int, int], int]:
    """``{(width, height): rows}`` of an image column, read from the image headers in batches
    (no pixels decoded, never the whole column in memory)."""
    import io

    import datasets
    from PIL import Image

    if column not in ds.column_names or len(ds) == 0:
        return {}
    raw = ds.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    sizes: dict[tuple[int, int], int] = {}
    for batch in raw.iter(batch_size=batch_size):
        for item in batch[column]:
            src = io.BytesIO(item["bytes"]) if item.get("bytes") else item["path"]
            with Image.open(src) as im:
                sizes[im.size] = sizes.get(im.size, 0) + 1
    return sizes


def check_vllm_image_sizes(ds: Any, *, use_vllm: bool, where: str = "grpo/train") -> None:
    """With ``use_vllm``, every image of ``ds`` must have one size, else a :class:`ParamError`.

    Qwen3-VL rollouts in vLLM colocate mode crash in ``get_rope_index`` or silently corrupt the
    prompt when the images of a batch differ in size (TRL issue #6401).  The data stage's
    ``resize_mode: letterbox`` gives every image the same ``image_size x image_size`` canvas.
    """
    if not use_vllm:
        return
    sizes = image_sizes(ds)
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h} ({n} rows)" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        raise ParamError(
            f"use_vllm=True needs images of one size, but {where} has {len(sizes)} sizes ({common}, ...): with vLLM "
            f"rollouts, Qwen3-VL batches of mixed image sizes crash in get_rope_index or silently corrupt the prompt "
            f"({VLLM_SIZE_ISSUE}). Fix: rebuild the data stage with resize_mode: letterbox (every image "
            f"image_size x image_size, boxes moved with the padding), or set use_vllm: false.")


def load_grpo_data(params: GRPOParams) -> Any:
    """``DatasetDict(train=GRPO prompts, heldout=eval subset)`` in the GRPO column layout.

    Both splits are filtered to ``params.tasks`` and switched to ``params.thinking``'s prompt
    form; train is re-mixed (``report_fraction``) and subsampled (``max_train_prompts``), held-out
    rows are ``eval_rows`` per task from ``eval/test``.  With ``use_vllm`` the train images must
    share one size (:func:`check_vllm_image_sizes`).
    """
    import datasets

    from radlab.data.tasks import with_thinking

    tasks = split_list(params.tasks)
    train = filter_tasks(load_data_split(params.data_dir, "grpo")["train"], tasks)
    train = with_thinking(train, params.thinking)
    train = mix_tasks(train, params.report_fraction, params.seed)
    train = subsample(train, params.max_train_prompts, params.seed)
    check_vllm_image_sizes(train, use_vllm=params.use_vllm)
    ev = filter_tasks(load_data_split(params.data_dir, "eval")["test"], tasks)
    heldout = with_thinking(heldout_subset(ev, params.eval_rows, params.seed), params.thinking)
    return datasets.DatasetDict({"train": train, "heldout": heldout})


def load_grpo_model(params: GRPOParams, run_dir: str | os.PathLike[str]) -> tuple[Any, Any, str]:
    """The starting policy (SFT or cold-start ``model/``), full or LoRA."""
    return prepare_model(params, run_dir, name_or_path=params.init_model)


def build_rewards(params: GRPOParams) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """Reward functions and weights by registry name (``radlab.rewards.build_reward_funcs``)."""
    from radlab.clinical.backends import BackendUnavailable
    from radlab.rewards import ANNOTATED_REWARDS, build_reward_funcs

    names = list(params.reward_names)  # items, e.g. "f1radgraph:level=complete"
    base = {parse_item(n)[0] for n in names}
    # The annotator is every annotated reward's backend unless its item sets one.
    options = {n: {"backend": params.annotator} for n in base if n in ANNOTATED_REWARDS}
    try:
        return build_reward_funcs(names, list(params.reward_weights), **options)
    except (KeyError, ValueError) as exc:
        raise ParamError(f"parameter 'reward_names': {exc.args[0]}") from exc
    except BackendUnavailable as exc:
        raise ParamError(f"parameter 'annotator': {params.annotator!r} cannot run here: {exc}") from exc


def grpo_config(params: GRPOParams, run_dir: str | os.PathLike[str], **overrides: Any) -> Any:
    """``trl.GRPOConfig`` for ``params`` via ``HfArgumentParser.parse_dict``: every GRPOConfig
    field by name (:func:`common_trainer_args`), ``overrides`` last.

    ``per_device_train_batch_size`` counts completions (prompts x ``num_generations``);
    ``epsilon_high=0`` means symmetric clipping; ``reward_weights`` follow ``reward_names``.
    """
    from trl import GRPOConfig

    values = common_trainer_args(params, run_dir)
    values.update(
        epsilon_high=params.epsilon_high or params.epsilon,
        reward_weights=[float(w) for w in params.reward_weights],
    )
    values.update(overrides)
    return parse_config(GRPOConfig, values)


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def score_rows(
    rows: Any,
    texts: Sequence[str],
    ids: Sequence[Sequence[int]],
    funcs: Sequence[Callable[..., list[float | None]]],
    *,
    trainer_state: Any = None,
) -> pd.DataFrame:
    """Per-row scores of completions ``texts`` for dataset ``rows`` under every reward.

    Rewards get the same kwargs as inside TRL (all columns but ``prompt``; conversational
    completions).  Returns columns ``id, task, completion`` and one per reward (NaN = not
    applicable to that row's task).
    """
    cols = {c: rows[c] for c in rows.column_names if c != "prompt"}
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    out = pd.DataFrame({
        "id": cols.get("id", [str(i) for i in range(len(texts))]),
        "task": cols.get("task", [""] * len(texts)),
        "completion": list(texts),
    })
    for fn in funcs:
        vals = fn(prompts=rows["prompt"], completions=completions, completion_ids=[list(i) for i in ids],
                  trainer_state=trainer_state, log_extra=lambda *a, **k: None, log_metric=lambda *a, **k: None,
                  **cols)
        out[fn.__name__] = [np.nan if v is None else float(v) for v in vals]
    return out


def mean_scores(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """Mean of each reward over the rows it applies to (NaN-skipping)."""
    out = {}
    for n in names:
        vals = frame[n].dropna() if n in frame else pd.Series(dtype=float)
        if len(vals):
            out[n] = float(vals.mean())
    return out


def heldout_callback(
    processor: Any, rows: Any, funcs: Sequence[Callable[..., Any]], every: int, max_new_tokens: int
) -> Any:
    """A ``TrainerCallback`` scoring greedy generations on ``rows`` every ``every`` steps.

    Logs ``heldout/<reward>`` into ``state.log_history`` (so the values survive in checkpoints
    and ``trainer_state.json``) at the first step of the session (0, or the resumed step), every
    ``every`` steps and at the last step.
    Runs on the main process only; the others wait at the next collective.
    """
    from transformers import TrainerCallback

    names = [f.__name__ for f in funcs]

    class HeldoutEval(TrainerCallback):
        def __init__(self) -> None:
            self.seconds = 0.0
            self.records: list[dict[str, Any]] = []

        def _run(self, state: Any, model: Any) -> None:
            if len(rows) == 0 or not state.is_world_process_zero:
                return
            t0 = time.perf_counter()
            gens = generate(model, processor, rows["prompt"], rows["image"], max_new_tokens=max_new_tokens)
            texts, ids = [g.text for g in gens], [list(g.ids) for g in gens]
            scores = mean_scores(score_rows(rows, texts, ids, funcs, trainer_state=state), names)
            entry = {"step": state.global_step, **{HELDOUT_PREFIX + k: v for k, v in scores.items()}}
            entry[HELDOUT_PREFIX + "mean_length"] = float(np.mean([len(i) for i in ids]))
            state.log_history.append(entry)
            self.records.append(entry)
            self.seconds += time.perf_counter() - t0

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self._run(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if every > 0 and state.global_step % every == 0:
                self._run(state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            done = {r["step"] for r in self.records}
            if state.global_step not in done:
                self._run(state, model)

    return HeldoutEval()


def completions_recorder(path: Path, every: int, weights: Sequence[float], task_of: dict[str, str]) -> Any:
    """A ``TrainerCallback`` writing the last sampled generation batch every ``every`` steps.

    Reads what GRPOTrainer keeps for its own completion logging (prompts, completions, per-reward
    scores, advantages of the latest generation batch) at log time.  Appends to ``path``
    (``completions.parquet``: ``step, task, prompt, completion, <reward...>, reward, advantage``),
    keeping rows of earlier sessions when resumed.
    """
    from transformers import TrainerCallback

    class CompletionsRecorder(TrainerCallback):
        def __init__(self) -> None:
            self.trainer: Any = None
            self.last = -1
            self.frame = pd.read_parquet(path) if path.exists() else pd.DataFrame()

        def on_log(self, args, state, control, **kwargs):
            if self.trainer is None or every <= 0 or not state.is_world_process_zero:
                return
            step = state.global_step
            if step == self.last or (self.last >= 0 and step - self.last < every and step % every):
                return
            logs = getattr(self.trainer, "_logs", None)
            if not logs or not logs.get("completion"):
                return
            self.last = step
            prompts = [message_text(p[-1]) if isinstance(p, list) else str(p) for p in logs["prompt"]]
            table = pd.DataFrame({
                "step": step,
                "task": [task_of.get(p, "") for p in prompts],
                "prompt": prompts,
                "completion": [completion_text(c) for c in logs["completion"]],
            })
            total = np.zeros(len(table))
            for (name, vals), w in zip(logs["rewards"].items(), weights):
                arr = np.asarray(list(vals), dtype=float)
                table[name] = arr
                total += w * np.nan_to_num(arr)
            table["reward"] = total
            table["advantage"] = list(logs["advantages"])
            if len(self.frame):
                self.frame = self.frame[self.frame["step"] != step]
            self.frame = pd.concat([self.frame, table], ignore_index=True)
            runs.write_table(self.frame, path)

    return CompletionsRecorder()


REWARD_PANELS = (
    ("total reward (sampled)", ["reward"]),
    ("rewards per function (sampled)", ["rewards/*/mean"]),
    ("held-out greedy", [HELDOUT_PREFIX + "*"]),
)
DYNAMICS_PANELS = (
    ("completion length", ["completions/mean_length", "completions/mean_terminated_length"]),
    ("KL to reference", ["kl"]),
    ("groups with zero reward std", ["frac_reward_zero_std"]),
    ("token entropy", ["entropy"]),
    ("clipped completions", ["completions/clipped_ratio"]),
    ("learning rate", ["learning_rate"]),
)


def _heldout_mean_length_excluded(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["metric"] != HELDOUT_PREFIX + "mean_length"]


def left_pad_prompts(processor: Any) -> None:
    """Make the processor pad on the left, as GRPO's prompts are.

    TRL 1.16 re-runs the processor on the prompts for the loss forward pass with the tokenizer's
    own padding side; with right padding (radlab's embedded tokenizer) ``mm_token_type_ids`` no
    longer line up with the left-padded prompt ids when prompts differ in length, and Qwen3-VL's
    3-D rope index fails with a shape mismatch.  (SFT's collator sets right padding itself.)
    """
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"


def train_grpo(
    params: GRPOParams,
    run_dir: str | os.PathLike[str],
    model: Any,
    processor: Any,
    data: Any,
    funcs: Sequence[Callable[..., list[float | None]]],
    weights: Sequence[float],
    *,
    extra_callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Run TRL's ``GRPOTrainer`` and write the standard outputs plus completions and held-out logs."""
    from trl import GRPOTrainer

    run_dir = Path(run_dir)

    def figures(frame: pd.DataFrame) -> dict[str, Any]:
        return {**plot_metrics(_heldout_mean_length_excluded(frame), REWARD_PANELS, run_dir, "grpo_rewards"),
                **plot_metrics(frame, DYNAMICS_PANELS, run_dir, "grpo_dynamics")}

    if not begin_run(params, run_dir):
        return finished_result(run_dir, model, figures)
    resume_from = resume_checkpoint(params, run_dir)
    if resume_from is None and is_main_process():
        for stale in ("completions.parquet", "heldout.csv"):
            (run_dir / stale).unlink(missing_ok=True)
    overrides: dict[str, Any] = {"reward_weights": [float(w) for w in weights]}
    if not params.use_vllm and vision_token_ids(model):
        # TRL suppresses only the image pad token; a sampled <|vision_start|> breaks the 3-D rope
        # positions of the loss forward pass.  (vLLM rollouts take their own sampling params.)
        overrides["generation_kwargs"] = {"suppress_tokens": vision_token_ids(model)}
    cfg = grpo_config(params, run_dir, **overrides)
    left_pad_prompts(processor)
    train = data["train"]
    task_of = {message_text(p[-1]): t for p, t in zip(train["prompt"], train["task"])} if "task" in train.column_names else {}
    # Before the compute budget: a frozen vision side (scale 0) is then counted as not trained.
    trainer_cls = trainer_with_vision_lr(GRPOTrainer, model, params.vision_lr_scale)
    budget, timer = compute_budget(params, model, processor), step_timer_callback()
    held = heldout_callback(processor, data["heldout"], funcs, params.eval_every, params.max_completion_length)
    recorder = completions_recorder(run_dir / "completions.parquet", params.completions_every, list(weights), task_of)
    trainer = trainer_cls(
        model=model,
        reward_funcs=list(funcs),
        args=cfg,
        train_dataset=train,
        processing_class=processor,
        callbacks=[budget, timer, held, recorder, *extra_callbacks],
    )
    recorder.trainer = trainer
    if getattr(trainer, "ref_model", None) is not None:  # beta > 0: its forward is training compute too
        budget.counter.attach(trainer.ref_model, getattr(processor.tokenizer, "pad_token_id", None))

    result = run_training(trainer, params, run_dir, processor, resume_from=resume_from, budget=budget, timer=timer,
                          figure=figures)
    if is_main_process():
        hist = [e for e in trainer.state.log_history if any(k.startswith(HELDOUT_PREFIX) for k in e)]
        runs.write_table(pd.DataFrame(hist), run_dir / "heldout.csv")
    result.extra["heldout_seconds"] = held.seconds
    return result


def completions_table(run_dir: str | os.PathLike[str], per_step: int = 4) -> pd.DataFrame:
    """The first ``per_step`` recorded completions of each logged step from ``completions.parquet``
    (columns ``step, task, prompt, completion, <reward...>, reward, advantage``); empty if none."""
    path = Path(run_dir) / "completions.parquet"
    if not path.exists():
        return pd.DataFrame()
    frame = pd.read_parquet(path)
    return frame.groupby("step").head(per_step) if len(frame) else frame


def heldout_scores(
    params: GRPOParams,
    run_dir: str | os.PathLike[str],
    model: Any,
    processor: Any,
    data: Any,
    funcs: Sequence[Callable[..., list[float | None]]],
) -> pd.DataFrame:
    """Final greedy held-out scores: writes ``heldout_final.csv`` (per sample; not into a finished
    run folder), returns means per task."""
    rows = data["heldout"]
    if len(rows) == 0:
        return pd.DataFrame(columns=["task", "reward", "mean", "n"])
    gens = generate(model, processor, rows["prompt"], rows["image"], max_new_tokens=params.max_completion_length)
    texts, ids = [g.text for g in gens], [list(g.ids) for g in gens]
    frame = score_rows(rows, texts, ids, funcs)
    if writable(run_dir):
        runs.write_table(frame.assign(completion=[csv_safe(t) for t in frame["completion"]]),
                         Path(run_dir) / "heldout_final.csv")
    out = []
    for task, sub in frame.groupby("task"):
        for fn in funcs:
            vals = sub[fn.__name__].dropna()
            if len(vals):
                out.append({"task": task, "reward": fn.__name__, "mean": float(vals.mean()), "n": int(len(vals))})
    return pd.DataFrame(out, columns=["task", "reward", "mean", "n"])


def run_grpo(params: GRPOParams, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole notebook in one call (CLI / ``accelerate launch``); returns the DONE summary."""
    from radlab.training.common import setup_runtime

    setup_runtime(params)
    data = load_grpo_data(params)
    model, processor, _ = load_grpo_model(params, run_dir)
    funcs, weights = build_rewards(params)
    result = train_grpo(params, run_dir, model, processor, data, funcs, weights)
    scores = heldout_scores(params, run_dir, result.model, processor, data, funcs) if is_main_process() else None
    return grpo_summary(result, scores)


def grpo_summary(result: TrainResult, scores: pd.DataFrame | None) -> dict[str, Any]:
    """The GRPO run's ``DONE`` summary (notebook and CLI alike): the trainer's plus the held-out
    reward means of :func:`heldout_scores` (``heldout_<task>_<reward>``); NaN becomes ``None``."""
    summary = result.summary()
    if scores is not None:
        summary.update({f"heldout_{r.task}_{r.reward}": round(r.mean, 5) for r in scores.itertuples()})
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}
