"""One evaluation path for every checkpoint: batched generation, per-sample scores, CIs.

The analysis stage (``notebooks/04_analysis.ipynb``) compares the models of one experiment on
the data stage's held-out split (``runs/<exp>/data/eval/``, GRPO column layout):

1. :func:`radlab.experiment.discover_models` finds every finished training run of the experiment
   and labels its model from its params (``sft``, ``sft_more``, ``sft+grpo``, ``cold_start``,
   ``cold_start+grpo``, ``sft+grpo[bleu]`` ...); an unfinished one becomes a visible note.
2. :func:`load_eval_rows` takes a seeded subset of ``n_eval`` rows per task.
3. :func:`radlab.generation.generate` (the one generation path, shared with the training stages)
   decodes the prompts in left-padded batches, greedy by default.  It reports per row the
   completion text, its token count and whether it stopped at EOS/pad (else: truncated).
4. :func:`evaluate_model` caches each model's generations in ``analysis/generations/`` keyed by
   the model's weights and the evaluation fingerprint, so re-rendering the notebook does not
   regenerate; answers are taken after the last ``</think>`` for thinking models.
5. :func:`score_rows` scores every row with ``radlab.metrics`` (one column per metric);
   :func:`results_table` and :func:`comparisons_table` turn the per-sample table into the
   ``results.csv`` / ``comparisons.csv`` contracts of ``docs/architecture.md``.

Tables, figures and the generated findings paragraph live in :mod:`radlab.analysis`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from radlab import runs
from radlab.config import StageRun
from radlab.data.schema import CHEXPERT14
from radlab.experiment import Comparison, ModelSpec, discover_models, resolve_comparisons
from radlab.formats import answer_text, format_boxes
from radlab.generation import GENERATION_VERSION, Generation, generate
from radlab.params import AnalysisParams, ParamError
from radlab.shortcuts import SHORTCUT_MODELS

TASKS = ("report", "grounding")


# ----------------------------------------------------------------------------------------------
# Evaluation rows
# ----------------------------------------------------------------------------------------------

EVAL_COLUMNS = ("prompt", "image", "task", "grounding_kind", "reference_report", "reference_boxes",
                "box_format", "thinking", "answer", "id", "record_id", "finding")


def load_eval_dataset(data_dir: str | os.PathLike[str], split: str = "test") -> Any:
    """The data stage's held-out ``datasets.Dataset`` (``<data_dir>/eval/<split>``).

    Only ``eval/`` is read (not the SFT/GRPO sets), so an analysis can run against a data folder
    that holds just the evaluation split.
    """
    from radlab.data.build import open_saved

    path = Path(data_dir) / "eval"
    if not path.is_dir():
        raise ParamError(f"data_dir: {path} does not exist; run notebooks/00_data.ipynb (the data stage) first")
    ev = open_saved(path)  # transforms never write cache files into the data folder
    if hasattr(ev, "keys"):
        if split not in ev:
            raise ParamError(f"eval_split: {split!r} not in {path} (has {list(ev.keys())})")
        ev = ev[split]
    missing = [c for c in EVAL_COLUMNS if c not in ev.column_names]
    if missing:
        raise ValueError(f"{path} is missing columns {missing} (docs/architecture.md 'GRPO / eval columns')")
    return ev


def select_indices(tasks: Sequence[str], ids: Sequence[str], n_per_task: int, seed: int) -> list[int]:
    """Row indices of a seeded subset of ``n_per_task`` items per task (all if 0 or fewer exist).

    Drawn over distinct ``(task, id)`` keys, so rows sharing an id (e.g. a thinking and a
    non-thinking prompt of one item) stay together; returned in dataset order.  The subset does
    not depend on the models, so every model is scored on the same items (the paired tests need it).
    """
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for task in sorted(set(tasks)):
        keys = sorted({k for t, k in zip(tasks, ids) if t == task})
        if n_per_task and len(keys) > n_per_task:
            chosen = set(rng.choice(len(keys), size=n_per_task, replace=False).tolist())
            keys = [k for j, k in enumerate(keys) if j in chosen]
        wanted = set(keys)
        keep.update(i for i, (t, k) in enumerate(zip(tasks, ids)) if t == task and k in wanted)
    return sorted(keep)


@dataclass
class EvalSet:
    """The evaluation rows every model is scored on.

    ``rows``: row dicts in the GRPO/eval column layout (PIL ``image``), each with ``_index``, its
    position in ``dataset`` (the selected ``datasets.Dataset`` subset, or ``None`` for in-memory
    rows).  ``notes`` records anything a reader should know (e.g. a missing prompt mode).
    """

    rows: list[dict[str, Any]]
    dataset: Any = None
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dataset(cls, dataset: Any, n_per_task: int, seed: int) -> EvalSet:
        """Select ``n_per_task`` items per task from a ``datasets.Dataset`` or a list of row dicts."""
        if isinstance(dataset, list):
            idx = select_indices([r["task"] for r in dataset], [r["id"] for r in dataset], n_per_task, seed)
            rows = [dict(dataset[i]) for i in idx]
            sub = None
        else:
            idx = select_indices(list(dataset["task"]), list(dataset["id"]), n_per_task, seed)
            sub = dataset.select(idx)
            rows = [dict(r) for r in sub]
        for j, r in enumerate(rows):
            r["_index"] = j
        return cls(rows, sub)

    def by_key(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``(task, id) -> row`` (references are shared by a thinking/non-thinking pair)."""
        return {(r["task"], r["id"]): r for r in self.rows}

    def for_mode(self, thinking: bool) -> tuple[list[dict[str, Any]], str]:
        """Every item once, with its prompt in a model's mode (thinking or not), plus a note.

        Prompts in the other mode are switched with the data stage's rule (:func:`switch_thinking`),
        keeping ids, images and references, so thinking and non-thinking models answer the same
        items and pair in the comparisons.  The note says how many prompts were switched.
        """
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.rows:
            key = (r["task"], r["id"])
            if bool(r.get("thinking", False)) == thinking:
                out[key] = dict(r)  # a native prompt wins over a switched one
            elif key not in out:
                out[key] = switch_thinking(r, thinking)
        rows = sorted(out.values(), key=lambda r: r["_index"])
        switched = sum(bool(r.get("_switched", False)) for r in rows)
        note = (f"{switched} of {len(rows)} eval prompts switched to the {'thinking' if thinking else 'plain'} form"
                if switched else "")
        return rows, note

    def counts(self) -> pd.DataFrame:
        """Rows per task, grounding kind and prompt mode (``task, grounding_kind, thinking, n``)."""
        df = pd.DataFrame({"task": [r["task"] for r in self.rows],
                           "grounding_kind": [r.get("grounding_kind") or "" for r in self.rows],
                           "thinking": [bool(r.get("thinking", False)) for r in self.rows]})
        return df.value_counts().rename("n").reset_index().sort_values(["task", "grounding_kind", "thinking"])


def load_eval_set(params: AnalysisParams) -> EvalSet:
    """The seeded evaluation subset of ``params.data_dir``'s ``eval/<eval_split>``."""
    return EvalSet.from_dataset(load_eval_dataset(params.data_dir, params.eval_split), params.n_eval, params.seed)


def switch_thinking(row: Mapping[str, Any], thinking: bool) -> dict[str, Any]:
    """A copy of an eval row with its prompt in the thinking (or plain) form.

    The same rule as :func:`radlab.data.tasks.with_thinking`: the text parts lose any trailing
    ``THINK_TRIGGER`` and get it back when ``thinking``.  Marks the copy ``_switched``.
    """
    from radlab.data.tasks import THINK_TRIGGER

    msgs = []
    for msg in row["prompt"]:
        parts = msg["content"]
        if isinstance(parts, list):
            parts = [{**p, "text": p["text"].removesuffix(THINK_TRIGGER) + (THINK_TRIGGER if thinking else "")}
                     if p.get("type") == "text" and isinstance(p.get("text"), str) else p for p in parts]
        msgs.append({**msg, "content": parts})
    return {**row, "prompt": msgs, "thinking": bool(thinking), "_switched": True}


def eval_fingerprint(rows: Sequence[Mapping[str, Any]]) -> str:
    """Hash of what a model sees and is scored against: ids, prompts, images and references."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: (r["task"], r["id"], bool(r["thinking"]))):
        h.update(json.dumps([r["id"], r["task"], r["prompt"], r["reference_report"], r["reference_boxes"],
                             r["box_format"], bool(r["thinking"])], sort_keys=True, default=str).encode())
        img = r.get("image")
        if img is not None:
            h.update(np.asarray(img).tobytes())
    return h.hexdigest()[:16]


def reference_text(row: Mapping[str, Any]) -> str:
    """The reference as text: the report, or the boxes in the row's own box format."""
    if row["task"] == "report":
        return str(row["reference_report"])
    boxes = row.get("reference_boxes") or []
    return format_boxes([list(b) for b in boxes], row.get("box_format") or "norm") if len(boxes) else ""


# ----------------------------------------------------------------------------------------------
# Answers
# ----------------------------------------------------------------------------------------------


def extract_answer(text: str, thinking: bool) -> tuple[str, bool]:
    """``(answer, missing_think)`` of one completion.

    Thinking models are scored on the text after the last ``</think>``; without one (or with
    nothing after it) the answer is ``""`` (scored 0, as the rewards do) and ``missing_think`` is
    True.  Non-thinking models are scored on the whole text (or on the part after a think block
    they emitted anyway); ``missing_think`` is always False for them.
    """
    ans = answer_text(text, thinking=thinking)
    if ans is None:
        return "", True
    return ans, False


# ----------------------------------------------------------------------------------------------
# Per-model evaluation with a cache
# ----------------------------------------------------------------------------------------------


def _weights_signature(path: str) -> list[tuple[str, int, int]]:
    folder = Path(path)
    if not folder.is_dir():
        return []
    sig = []
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            st = f.stat()
            sig.append((f.name, st.st_size, st.st_mtime_ns))
    return sig


def generation_key(model_path: str, fingerprint: str, settings: Mapping[str, Any]) -> str:
    """Cache key: the model folder (absolute path and weight files' size/mtime), the evaluation
    fingerprint and the generation settings."""
    resolved = model_path if model_path.startswith("radlab:") else str(Path(model_path).resolve())
    blob = json.dumps({"model": resolved, "weights": _weights_signature(model_path), "eval": fingerprint,
                       "settings": dict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def evaluate_model(
    spec: ModelSpec,
    rows: Sequence[Mapping[str, Any]],
    *,
    cache_dir: str | os.PathLike[str] | None,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
    label: str | None = None,
    use_cache: bool = True,
    build_dir: str | os.PathLike[str] | None = None,
    cache_only: bool = False,
) -> pd.DataFrame | None:
    """Generate (or load cached) completions of one model on ``rows``.

    ``label`` names the model in the output (default ``spec.name``; e.g. ``shuffled_image`` for
    the SFT model on shuffled images).  Returns one row per input row: ``model, id, task,
    grounding_kind, record_id, finding, thinking, thinking_prompt, completion, prediction, reference, box_format, n_tokens,
    truncated, missing_think, seconds, cached`` (``thinking`` = the model's mode, which decides
    answer extraction; ``seconds`` = wall time of the whole generation, repeated; ``NaN`` and
    ``cached=True`` when read from the cache).  With ``cache_only`` it returns ``None`` instead
    of generating when the cache has no entry.
    """
    name = label or spec.name
    images = [r["image"] for r in rows]
    fingerprint = eval_fingerprint(rows)
    settings = {"max_new_tokens": max_new_tokens, "do_sample": do_sample,
                "temperature": temperature if do_sample else None, "seed": seed, "thinking": spec.thinking,
                # Greedy output does not depend on the batch; a sampled row depends on its batch.
                "batch_size": batch_size if do_sample else None,
                # bf16 on a GPU and fp32 on the CPU may decode differently: keep their caches apart.
                "device": device or "auto", "dtype": dtype or "auto", "generation": GENERATION_VERSION}
    key = generation_key(spec.path, fingerprint, settings)
    cache_path = Path(cache_dir) / f"{_safe(name)}-{key}.parquet" if cache_dir is not None else None
    if use_cache and cache_path is not None and cache_path.exists():
        cached = pd.read_parquet(cache_path)
        if list(cached["id"]) == [r["id"] for r in rows]:
            gens = [Generation(t, int(n), bool(f)) for t, n, f in
                    zip(cached["completion"], cached["n_tokens"], cached["finished"])]
            return generation_frame(name, spec.thinking, rows, gens, float("nan"), cached=True)
    if cache_only:
        return None

    from radlab.models import load_model_and_processor

    model, processor = load_model_and_processor(spec.path, device=device or None, dtype=dtype or None,
                                                build_dir=build_dir)
    t0 = time.perf_counter()
    gens = generate(model, processor, [r["prompt"] for r in rows], images, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, seed=seed,
                    progress=True, desc=f"generate {name}")
    seconds = time.perf_counter() - t0
    del model, processor
    gc.collect()
    if cache_path is not None:
        cache = pd.DataFrame({"id": [r["id"] for r in rows], "completion": [g.text for g in gens],
                              "n_tokens": [g.n_tokens for g in gens], "finished": [g.finished for g in gens]})
        cache["model_path"] = spec.path
        cache["key"] = key
        runs.write_table(cache, cache_path)
    return generation_frame(name, spec.thinking, rows, gens, seconds)


def generation_frame(name: str, thinking: bool, rows: Sequence[Mapping[str, Any]],
                     gens: Sequence[Generation], seconds: float, cached: bool = False) -> pd.DataFrame:
    """One row per (eval row, generation) with the answer extracted by the model's think rule
    (columns as documented in :func:`evaluate_model`)."""
    records = []
    for r, g in zip(rows, gens):
        answer, missing = extract_answer(g.text, thinking)
        records.append({
            "model": name, "id": r["id"], "task": r["task"], "grounding_kind": r.get("grounding_kind") or "",
            "record_id": r.get("record_id", ""), "finding": r.get("finding", ""),
            "thinking": thinking, "thinking_prompt": bool(r.get("thinking", False)), "completion": g.text,
            "prediction": answer, "reference": reference_text(r), "box_format": r.get("box_format") or "norm",
            "n_tokens": g.n_tokens, "truncated": not g.finished, "missing_think": missing, "seconds": seconds,
            "cached": cached,
        })
    return pd.DataFrame.from_records(records)


def predictions_frame(name: str, rows: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> pd.DataFrame:
    """Per-row frame (same columns as :func:`evaluate_model`) for a non-model baseline that
    writes its answers directly (e.g. the text-only prior)."""
    gens = [Generation(str(p), 0, True) for p in predictions]
    return generation_frame(name, False, rows, gens, float("nan"))


# ----------------------------------------------------------------------------------------------
# Scoring, results and comparisons
# ----------------------------------------------------------------------------------------------


def score_rows(frame: pd.DataFrame, rows_by_key: Mapping[tuple[str, str], Mapping[str, Any]], *,
               backend: str = "rules") -> pd.DataFrame:
    """Add ``radlab.metrics``' per-sample columns to a generations frame (same row order).

    ``rows_by_key`` maps ``(task, id)`` to the evaluation row (references, box format).  Raw
    completions are scored with each row's ``thinking`` flag (the model's mode), so the metrics
    apply the same answer rule as the rewards.  Report rows get ``score_reports``' columns
    (including the ``chexpert_pred/<label>``, ``chexpert_ref/<label>`` inputs of the corpus
    CheXpert F1s), grounding rows ``score_grounding``'s; the other task's columns are NaN.
    Boolean diagnostics become 0/1 floats so that they summarise like metrics.
    """
    from radlab import metrics

    parts = []
    for task, sub in frame.groupby("task", sort=False):
        refs = [rows_by_key[(task, i)] for i in sub["id"]]
        preds, flags = list(sub["completion"]), [bool(t) for t in sub["thinking"]]
        if task == "report":
            scores = metrics.score_reports(preds, [str(r["reference_report"]) for r in refs], thinking=flags,
                                           backend=backend)
        elif task == "grounding":
            scores = metrics.score_grounding(preds, [r["reference_boxes"] for r in refs],
                                             [r.get("box_format") or "norm" for r in refs], thinking=flags)
        else:
            raise ValueError(f"unknown task {task!r}")
        scores.index = sub.index
        parts.append(pd.concat([sub, scores.drop(columns=[c for c in scores.columns if c in sub.columns])], axis=1))
    out = pd.concat(parts).loc[frame.index] if parts else frame.copy()
    for col in ("truncated", "missing_think", "answered"):
        if col in out:
            out[col] = out[col].astype(float)
    return out


# Per-sample diagnostics summarised next to the metrics (rates or means).
DIAGNOSTICS = ("truncated", "missing_think", "answered", "n_tokens", "n_pred")


def summary_metrics(sub: pd.DataFrame) -> list[str]:
    """Metrics to summarise for one model × task group: the known metrics with a value in the
    group, the corpus CheXpert F1s when the label columns are filled, then the diagnostics."""
    from radlab import metrics

    def has(col: str) -> bool:
        return col in sub and pd.to_numeric(sub[col], errors="coerce").notna().any()

    names = [m for m in metrics.KNOWN_METRICS if has(m)]
    labels = [metrics.CHEXPERT_PRED_PREFIX + k for k in CHEXPERT14]
    if all(has(c) for c in labels):
        names += list(metrics.CORPUS_METRICS)
    names += [d for d in DIAGNOSTICS if has(d)]
    return names


def task_groups(per_sample: pd.DataFrame) -> Iterable[tuple[str, pd.DataFrame]]:
    """``("report", rows)``, ``("grounding", rows)`` and one ``("grounding:<kind>", rows)`` per
    grounding kind (Table 2's columns; also with a single kind, so the table has its name)."""
    for task in TASKS:
        sub = per_sample[per_sample["task"] == task]
        if sub.empty:
            continue
        yield task, sub
        if task == "grounding":
            kinds = sorted(k for k in sub["grounding_kind"].unique() if k)
            if kinds:
                for kind in kinds:
                    yield f"grounding:{kind}", sub[sub["grounding_kind"] == kind]


def _group(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    base, _, kind = task.partition(":")
    sub = frame[frame["task"] == base]
    return sub[sub["grounding_kind"] == kind] if kind else sub


RESULTS_COLUMNS = ["model", "task", "metric", "value", "ci_low", "ci_high", "n"]
COMPARISONS_COLUMNS = ["model_a", "model_b", "task", "metric", "diff", "ci_low", "ci_high", "n"]


def results_table(per_sample: pd.DataFrame, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Long results table ``model, task, metric, value, ci_low, ci_high, n``.

    One row per model × task group (:func:`task_groups`) × metric (:func:`summary_metrics`):
    ``radlab.metrics.summarise`` gives the point value (mean over rows; corpus F1 for the CheXpert
    micro/macro metrics) and a seeded percentile-bootstrap CI; ``n`` counts the rows it used.
    """
    from radlab import metrics

    out = []
    for model, m in per_sample.groupby("model", sort=False):
        for task, sub in task_groups(m):
            summary = metrics.summarise(sub.reset_index(drop=True), n_boot, seed, metrics=summary_metrics(sub), ci=ci)
            for rec in summary.to_dict("records"):
                out.append({"model": model, "task": task, **rec})
    return pd.DataFrame(out, columns=RESULTS_COLUMNS)


def comparisons_table(per_sample: pd.DataFrame, pairs: Sequence[tuple[str, str]], *, n_boot: int = 2000,
                      ci: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Paired comparisons ``model_a, model_b, task, metric, diff, ci_low, ci_high, n`` (diff = a − b).

    For each pair whose models both exist, rows are matched on ``(task, id)`` and
    ``radlab.metrics.paired_bootstrap`` resamples the matched rows jointly (corpus metrics are
    recomputed for both models on each resample).  Pairs with a missing model are skipped (see
    :func:`radlab.experiment.resolve_comparisons`).
    """
    from radlab import metrics

    models = set(per_sample["model"])
    out = []
    for a, b in pairs:
        if a == b or a not in models or b not in models:
            continue
        A = per_sample[per_sample["model"] == a]
        B = per_sample[per_sample["model"] == b]
        for task, sub_a in task_groups(A):
            sub_b = _group(B, task)
            keys = sub_a[["task", "id"]].merge(sub_b[["task", "id"]], on=["task", "id"])
            if keys.empty:
                continue
            fa = keys.merge(sub_a, on=["task", "id"], how="left")
            fb = keys.merge(sub_b, on=["task", "id"], how="left")
            names = [m for m in summary_metrics(fa) if m in set(summary_metrics(fb))]
            res = metrics.paired_bootstrap(fa, fb, n_boot, seed, metrics=names, ci=ci)
            for rec in res.to_dict("records"):
                out.append({"model_a": a, "model_b": b, "task": task, **rec})
    return pd.DataFrame(out, columns=COMPARISONS_COLUMNS)


# ----------------------------------------------------------------------------------------------
# Shortcut baselines
# ----------------------------------------------------------------------------------------------


def shortcut_frames(params: AnalysisParams, evalset: EvalSet, specs: Sequence[ModelSpec]
                    ) -> tuple[list[pd.DataFrame], list[EvalJob], list[str]]:
    """The ``text_only`` baseline's answers, the ``shuffled_image`` generation job, and notes.

    Both run on any data source (:mod:`radlab.shortcuts`).  ``text_only`` needs the data stage's
    training records (``<data_dir>/records``); ``shuffled_image`` is ``params.shortcut_model``
    reading a derangement of the evaluation images, so it shows how much of its score needs the
    right image.  A baseline that cannot run is left out with a note saying why.
    """
    from radlab import shortcuts

    notes: list[str] = []
    frames: list[pd.DataFrame] = []
    jobs: list[EvalJob] = []
    if not params.shortcuts:
        return frames, jobs, ["shortcut baselines skipped: shortcuts=False"]
    rows, _ = evalset.for_mode(False)
    try:
        records = shortcuts.train_records(params.data_dir)
        preds, note = shortcuts.text_only_predictions(rows, records)
        frames.append(predictions_frame("text_only", rows, preds))
        if note:
            notes.append(note)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        notes.append(f"text_only skipped: no usable training records in {params.data_dir}/records ({exc})")
    spec = next((s for s in specs if s.run == params.shortcut_model), None)
    if spec is None:
        notes.append(f"shuffled_image skipped: shortcut_model {params.shortcut_model!r} was not evaluated")
    elif evalset.dataset is None or len(rows) < 2:
        notes.append("shuffled_image skipped: needs the evaluation rows as a datasets.Dataset with >= 2 rows")
    else:
        subset = evalset.dataset.select([r["_index"] for r in rows])
        shuffled = [switch_thinking(r, False) if r["thinking"] else dict(r)
                    for r in shortcuts.shuffled_images(subset, seed=params.seed)]
        jobs.append(EvalJob(dataclasses.replace(spec, thinking=False), shuffled, "shuffled_image"))
    return frames, jobs, notes


# ----------------------------------------------------------------------------------------------
# The whole evaluation
# ----------------------------------------------------------------------------------------------


@dataclass
class EvalJob:
    """One generation to run: ``spec`` on ``rows``, reported under ``label`` (default the spec's name)."""

    spec: ModelSpec
    rows: list[dict[str, Any]]
    label: str | None = None

    def cost(self, params: AnalysisParams) -> float:
        """Rough decode cost (rows x token budget), used to hand out the longest jobs first."""
        return len(self.rows) * settings_of(params, self.spec)["max_new_tokens"]


def _job_kwargs(params: AnalysisParams, job: EvalJob, cache_dir: Path, build_dir: Path | None) -> dict[str, Any]:
    return {"cache_dir": cache_dir, "label": job.label, "device": params.device or None, "dtype": params.dtype or None,
            "use_cache": params.use_cache, "build_dir": build_dir, **settings_of(params, job.spec)}


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _cpu_only(params: AnalysisParams) -> bool:
    if params.device:
        return params.device == "cpu"
    import torch

    return not torch.cuda.is_available()


def run_jobs(params: AnalysisParams, jobs: Sequence[EvalJob], cache_dir: Path,
             build_dir: Path | None = None) -> list[pd.DataFrame]:
    """Generate every job (cached ones are read back); returns one frame per job, in job order.

    On the CPU with ``params.workers > 1`` the uncached jobs run in that many spawned processes,
    each with an equal share of this process's torch threads: a small model decodes token by
    token, so one process cannot keep several cores busy, and separate processes can.  On a GPU
    everything runs here (the device is already shared by the batch).
    """
    import torch

    frames: list[pd.DataFrame | None] = [None] * len(jobs)
    kwargs = [_job_kwargs(params, j, cache_dir, build_dir) for j in jobs]
    pending = []
    for i, (job, kw) in enumerate(zip(jobs, kwargs)):
        cached = evaluate_model(job.spec, job.rows, **kw, cache_only=True)
        if cached is not None:
            frames[i] = cached
        else:
            pending.append(i)
    workers = min(params.workers, len(pending))
    if workers > 1 and _cpu_only(params):
        import concurrent.futures
        import multiprocessing

        threads = max(1, torch.get_num_threads() // workers)
        # Longest first, so the last job to start is a short one (less idle time at the end).
        pending.sort(key=lambda i: -jobs[i].cost(params))
        with concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(threads,)) as pool:
            futures = {i: pool.submit(evaluate_model, jobs[i].spec, jobs[i].rows, **kwargs[i]) for i in pending}
            for i, fut in futures.items():
                frames[i] = fut.result()
    else:
        for i in pending:
            frames[i] = evaluate_model(jobs[i].spec, jobs[i].rows, **kwargs[i])
    return cast(list[pd.DataFrame], frames)  # every slot is filled above


@dataclass
class Evaluation:
    """What :func:`evaluate_all` returns.

    ``per_sample``: one scored row per model × evaluation row (see :func:`evaluate_model` and
    :func:`score_rows` for columns); ``results`` / ``comparisons``: the CSV contracts;
    ``timings``: ``model, rows, seconds, items_per_s, cached``; ``notes``: skipped models and
    probes, in the order they arose; ``skipped_pairs``: comparisons that lacked a model.
    """

    per_sample: pd.DataFrame
    results: pd.DataFrame
    comparisons: pd.DataFrame
    timings: pd.DataFrame
    specs: list[ModelSpec]
    notes: list[str]
    skipped_pairs: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    pairs: list[Comparison] = field(default_factory=list)


def evaluate_all(params: AnalysisParams, specs: Sequence[ModelSpec], evalset: EvalSet,
                 run_dir: str | os.PathLike[str], notes: Sequence[str] = ()) -> Evaluation:
    """Generate, score and summarise every model (and the shortcut baselines); write the outputs.

    Writes ``per_sample.parquet``, ``results.csv``, ``comparisons.csv`` and ``timings.csv`` to
    ``run_dir``; generations are cached in ``run_dir/generations/``.  The run begins here
    (:meth:`radlab.config.StageRun.begin`); when ``run_dir`` holds this very analysis, finished,
    nothing is generated or written and :func:`load_evaluation` reads its tables back.
    """
    run_dir = Path(run_dir)
    if not StageRun.of(params, run_dir).begin():
        return load_evaluation(params, specs, evalset, run_dir, notes)
    cache_dir = run_dir / "generations"
    build_dir = params.experiment_dir / "models"
    notes = list(notes) + list(evalset.notes)
    jobs: list[EvalJob] = []
    for spec in specs:
        rows, note = evalset.for_mode(spec.thinking)
        if note:
            notes.append(f"{spec.name}: {note}")
        jobs.append(EvalJob(spec, rows))
    frames, shortcut_jobs, shortcut_notes = shortcut_frames(params, evalset, specs)
    jobs += shortcut_jobs
    notes += shortcut_notes
    frames = run_jobs(params, jobs, cache_dir, build_dir) + frames
    if not frames:
        raise RuntimeError("no model could be evaluated: " + "; ".join(notes))
    generations = pd.concat(frames, ignore_index=True)
    per_sample = score_rows(generations, evalset.by_key(), backend=params.annotator)
    timings = (generations.groupby("model", sort=False)
               .agg(rows=("id", "size"), seconds=("seconds", "first"), cached=("cached", "first")).reset_index())
    timings["items_per_s"] = timings["rows"] / timings["seconds"]
    timings = timings[["model", "rows", "seconds", "items_per_s", "cached"]]
    results = results_table(per_sample, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    declared, skipped_pairs = declared_comparisons(params, specs, per_sample)
    pairs = [(c.label_a, c.label_b) for c in declared]
    comparisons = comparisons_table(per_sample, pairs, n_boot=params.n_boot, ci=params.ci, seed=params.seed)
    paths = write_outputs(run_dir, per_sample, results, comparisons)
    paths["timings"] = runs.write_table(timings, run_dir / "timings.csv")
    return Evaluation(per_sample, results, comparisons, timings, list(specs), notes, skipped_pairs, paths, declared)


def declared_comparisons(params: AnalysisParams, specs: Sequence[ModelSpec], per_sample: pd.DataFrame) -> tuple[list[Comparison], list[str]]:
    """``params.comparisons`` resolved against the models in ``per_sample`` (runs by their run
    name, shortcut baselines by theirs): ``(declared pairs, notes on pairs skipped)``."""
    evaluated = set(per_sample["model"])
    run_labels = {s.run: s.name for s in specs if s.name in evaluated}
    run_labels.update({m: m for m in SHORTCUT_MODELS if m in evaluated})
    return resolve_comparisons(params.comparisons, run_labels)


def load_evaluation(params: AnalysisParams, specs: Sequence[ModelSpec], evalset: EvalSet,
                    run_dir: str | os.PathLike[str], notes: Sequence[str] = ()) -> Evaluation:
    """The :class:`Evaluation` of the finished analysis in ``run_dir``, read from its tables."""
    run_dir = Path(run_dir)
    paths = {"per_sample": run_dir / "per_sample.parquet", "results": run_dir / "results.csv",
             "comparisons": run_dir / "comparisons.csv", "timings": run_dir / "timings.csv"}
    per_sample = pd.read_parquet(paths["per_sample"])
    results = pd.read_csv(paths["results"])
    comparisons = pd.read_csv(paths["comparisons"])
    timings = pd.read_csv(paths["timings"]) if paths["timings"].exists() else pd.DataFrame()
    declared, skipped_pairs = declared_comparisons(params, specs, per_sample)
    print(f"{run_dir} holds this finished analysis: returning its tables (set force=True to evaluate again)")
    return Evaluation(per_sample, results, comparisons, timings, list(specs), list(notes) + list(evalset.notes),
                      skipped_pairs, paths, declared)


def write_outputs(run_dir: str | os.PathLike[str], per_sample: pd.DataFrame, results: pd.DataFrame,
                  comparisons: pd.DataFrame) -> dict[str, Path]:
    """Write ``per_sample.parquet``, ``results.csv`` and ``comparisons.csv`` atomically."""
    run_dir = Path(run_dir)
    ps = per_sample.copy()
    for col in ("truncated", "missing_think"):
        if col in ps:
            ps[col] = ps[col].astype(float)
    return {
        "per_sample": runs.write_table(ps, run_dir / "per_sample.parquet"),
        "results": runs.write_table(results[RESULTS_COLUMNS], run_dir / "results.csv"),
        "comparisons": runs.write_table(comparisons[COMPARISONS_COLUMNS], run_dir / "comparisons.csv"),
    }


def settings_of(params: AnalysisParams, spec: ModelSpec) -> dict[str, Any]:
    """Generation settings of one model under ``params`` (thinking models get the longer budget)."""
    return {"batch_size": params.batch_size,
            "max_new_tokens": params.max_new_tokens_thinking if spec.thinking else params.max_new_tokens,
            "do_sample": params.do_sample, "temperature": params.temperature, "seed": params.seed}


__all__ = [
    "COMPARISONS_COLUMNS", "DIAGNOSTICS", "EvalSet", "Evaluation", "RESULTS_COLUMNS", "TASKS", "comparisons_table",
    "discover_models", "eval_fingerprint", "evaluate_all", "load_evaluation", "evaluate_model", "extract_answer", "generation_frame",
    "generation_key", "load_eval_dataset", "load_eval_set", "predictions_frame", "reference_text", "results_table",
    "score_rows", "select_indices", "settings_of", "shortcut_frames", "summary_metrics", "switch_thinking",
    "task_groups", "write_outputs",
]
