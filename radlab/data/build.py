"""The data stage: records -> SFT / GRPO / eval datasets in ``runs/<exp>/data/``.

Pools and splits (patient-disjoint by construction):

=========  ==================  =====================================================
pool       schema ``split``    used for
=========  ==================  =====================================================
train      train               SFT rows (``sft/train``)
validate   validate            SFT validation rows (``sft/validation``)
grpo       train               GRPO prompts (``grpo/train``): *fresh patients* that SFT
                               never saw, so RL is not scored on memorised images
test       test                evaluation rows (``eval/test``); phantom test reports also
                               use held-out paraphrase templates
=========  ==================  =====================================================

Row counts: each SFT record gives ``mix_report`` report rows and ``mix_<kind>`` rows of each
grounding kind (expected values; fractions are Bernoulli).  GRPO and eval records give exactly
one report row and one grounding row whose kind is drawn with the ``mix_<kind>`` weights, so
``n_eval`` test cases give ``n_eval`` items per task.

Outputs (``docs/architecture.md``): ``records/`` (DatasetDict of schema records per pool, plus
``images/<pool>/<id>.png``; ``image_path`` is relative to the data run folder), ``sft/``,
``grpo/``, ``eval/``, ``counts.csv``, ``skipped.csv``, ``figures/``.  The same params give
byte-identical Arrow files.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from radlab import runs
from radlab.data import phantom, schema, tasks
from radlab.params import PHANTOM, DataParams, ParamError

POOLS = ("train", "validate", "grpo", "test")


@dataclass
class BuildResult:
    """What :func:`build_datasets` returns to the notebook.

    ``records[pool]`` lists schema records; ``datasets`` holds the ``sft``/``grpo``/``eval``
    DatasetDicts; ``counts`` is the task x split table; ``skipped`` one row per dropped record.
    """

    run_dir: Path
    records: dict[str, list[dict[str, Any]]]
    datasets: dict[str, datasets.DatasetDict]
    counts: pd.DataFrame
    skipped: pd.DataFrame
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for ``DONE``."""
        return {
            "records": {k: len(v) for k, v in self.records.items()},
            "rows": {f"{name}/{split}": len(dd[split]) for name, dd in self.datasets.items() for split in dd},
            "skipped": len(self.skipped),
            "seconds": round(self.seconds, 1),
        }


def phantom_config(params: DataParams) -> phantom.PhantomConfig:
    """The generator config the data params imply."""
    return phantom.PhantomConfig(
        image_size=params.image_size, difficulty=params.difficulty, prevalence=params.prevalence,
        p_mention_min=params.p_mention_min, p_mention_max=params.p_mention_max, p_uncertain=params.p_uncertain,
    )


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


IMAGES_REL = "records/images"


def _image_relpath(pool: str, rid: str) -> str:
    return f"{IMAGES_REL}/{pool}/{rid}.png"


def _phantom_worker(args: tuple[int, str, int, phantom.PhantomConfig]) -> tuple[dict[str, Any], bytes]:
    seed, pool, index, cfg = args
    case = phantom.generate_case(seed, pool, index, cfg)
    case.record["image_path"] = _image_relpath(pool, case.record["id"])
    return case.record, case.png_bytes()


def _map(fn: Any, jobs: list[Any], workers: int) -> list[Any]:
    """``[fn(j) for j in jobs]``, in order; forked worker processes when it pays off."""
    if workers <= 1 or len(jobs) < 64 or "fork" not in mp.get_all_start_methods():
        return [fn(j) for j in jobs]
    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=max(8, len(jobs) // (workers * 8)))


def _write_png(staging: Path, rel: str, data: bytes) -> None:
    """Write into the staging folder that :func:`build_records` swaps in as a whole (one rename
    for the folder instead of a temp file + rename per image)."""
    path = staging / Path(rel).relative_to(IMAGES_REL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _phantom_records(params: DataParams, staging: Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    cfg = phantom_config(params)
    jobs = [(params.seed, pool, i, cfg) for pool, n in params.pool_sizes().items() for i in range(n)]
    results = _map(_phantom_worker, jobs, params.workers)
    by_pool: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
    skipped: list[dict[str, Any]] = []
    for (_, pool, i, _), (rec, png) in zip(jobs, results):
        try:
            schema.validate_record(rec)
        except schema.SchemaError as exc:
            skipped.append({"file": f"phantom:{pool}", "row": i, "reason": str(exc)})
            continue
        _write_png(staging, rec["image_path"], png)
        by_pool[pool].append(rec)
    return by_pool, skipped


def _hash_unit(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (patient-level pool assignment)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") / 2**64


def _load_real(params: DataParams) -> Any:
    """Call the loader registry (``radlab.data.loaders.load``); errors name the source."""
    try:
        from radlab.data import loaders
    except ImportError as exc:  # pragma: no cover - the package exists in the repo
        raise ParamError(f"source {params.source!r}: radlab.data.loaders cannot be imported ({exc})") from exc
    load = getattr(loaders, "load", None)
    if load is None:
        raise ParamError(f"source {params.source!r}: radlab.data.loaders.load is not available yet; use source='phantom'")
    try:
        return load(params.source, params.source_root, limit=params.source_limit or None)
    except (KeyError, ValueError, FileNotFoundError) as exc:  # LoaderError is a ValueError
        raise ParamError(f"source {params.source!r} (source_root {params.source_root!r}): {exc}") from exc


def _real_image(rec: Mapping[str, Any], root: str, size: int) -> tuple[bytes, int, int]:
    """Read a real image as 8-bit grey (``radlab.data.images.load_image``) and resize it so the
    longer side is ``size``, keeping the aspect ratio.  Returns ``(png, width, height)``.

    Normalised boxes are invariant under an aspect-preserving resize of the whole image, so
    the record's boxes stay valid as they are.
    """
    from radlab.data import images

    path = Path(rec["image_path"])
    if not path.is_absolute():
        path = Path(root) / path
    img, _ = images.preprocess(images.load_image(path), size, mode="longest")
    return tasks.png_bytes(img), img.width, img.height


def _real_records(params: DataParams, staging: Path) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    result = _load_real(params)
    skipped = [dict(s) for s in getattr(result, "skipped", [])]
    grpo_share = params.n_grpo / max(1, params.n_train + params.n_grpo)
    by_pool: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
    sizes = params.pool_sizes()
    for i, rec in enumerate(result.records):
        rec = dict(rec)
        try:
            schema.validate_record(rec)
        except schema.SchemaError as exc:
            skipped.append({"file": rec.get("image_path", ""), "row": i, "reason": str(exc)})
            continue
        pool = rec["split"]
        if pool == "train" and _hash_unit(f"{params.seed}:{rec['patient_id']}") < grpo_share:
            pool = "grpo"
        if len(by_pool[pool]) >= sizes[pool]:
            continue
        rel = _image_relpath(pool, _safe_name(rec["id"]))
        try:
            png, width, height = _real_image(rec, params.source_root, params.image_size)
        except (OSError, ValueError) as exc:
            skipped.append({"file": rec["image_path"], "row": i, "reason": f"image unreadable: {exc}"})
            continue
        _write_png(staging, rel, png)
        rec.update(image_path=rel, image_width=width, image_height=height)
        by_pool[pool].append(rec)
    by_pool, dropped = enforce_patient_disjoint(by_pool)
    return by_pool, skipped + dropped


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def enforce_patient_disjoint(by_pool: Mapping[str, list[dict[str, Any]]]) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Drop records whose patient already appears in an earlier pool (test wins over others:
    order test, validate, grpo, train).  Returns ``(pools, skipped rows)``."""
    seen: dict[str, str] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    skipped: list[dict[str, Any]] = []
    for pool in ("test", "validate", "grpo", "train"):
        keep = []
        for i, rec in enumerate(by_pool.get(pool, [])):
            owner = seen.setdefault(rec["patient_id"], pool)
            if owner != pool:
                skipped.append({"file": rec["image_path"], "row": i,
                                "reason": f"patient {rec['patient_id']!r} of pool {pool!r} already in pool {owner!r}"})
                continue
            keep.append(rec)
        out[pool] = keep
    return {p: out[p] for p in POOLS}, skipped


def build_records(params: DataParams, run_dir: str | os.PathLike[str] | None = None) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Generate (phantom) or load (real) the records of every pool and write their PNGs.

    Returns ``({pool: [record, ...]}, skipped)`` with ``skipped`` rows ``{"file", "row",
    "reason"}``.  Images go to ``<run_dir>/records/images/<pool>/<id>.png``.
    """
    run_dir = Path(run_dir) if run_dir is not None else params.run_dir
    staging = run_dir / "records" / ".images.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    if params.source == PHANTOM:
        out = _phantom_records(params, staging)
    else:
        out = _real_records(params, staging)
    final = run_dir / IMAGES_REL
    if final.exists():
        shutil.rmtree(final)  # also drops stale PNGs of an earlier, larger build
    os.replace(staging, final)
    return out


# --------------------------------------------------------------------------------------------
# Task datasets
# --------------------------------------------------------------------------------------------


def _task_rng(seed: int, pool: str, record_id: str) -> np.random.Generator:
    return phantom.rng_for(f"{seed}:tasks:{pool}", record_id)


def _one_grounding_mix(params: DataParams, rng: np.random.Generator) -> dict[str, float]:
    """GRPO/eval: one report row and one grounding row of a kind drawn by the mix weights."""
    weights = np.array([getattr(params, f"mix_{k}") for k in tasks.GROUNDING_KINDS], dtype=float)
    mix: dict[str, float] = {"report": 1.0}
    if weights.sum() > 0:
        kind = tasks.GROUNDING_KINDS[int(rng.choice(len(weights), p=weights / weights.sum()))]
        mix[kind] = 1.0
    return mix


def _items(params: DataParams, pool: str, records: list[dict[str, Any]], *, fixed_per_case: bool) -> list[tuple[tasks.TaskItem, dict[str, Any]]]:
    vocab = [n for n in phantom.FINDING_NAMES if n not in ("endotracheal tube", "enteric tube", "central venous catheter")]
    out = []
    for rec in records:
        rng = _task_rng(params.seed, pool, rec["id"])
        mix = _one_grounding_mix(params, rng) if fixed_per_case else params.mix()
        for item in tasks.items_for_record(rec, rng, mix=mix, box_format=params.box_format,
                                           negative_rate=params.negative_rate, vocabulary=vocab):
            out.append((item, rec))
    return out


def _png_of(run_dir: Path, rec: Mapping[str, Any], cache: dict[str, bytes]) -> bytes:
    rel = rec["image_path"]
    if rel not in cache:
        cache[rel] = (run_dir / rel).read_bytes()
    return cache[rel]


def _numbered(items: list[tuple[tasks.TaskItem, dict[str, Any]]]) -> list[tuple[tasks.TaskItem, dict[str, Any], int]]:
    """Give repeated (record, kind) items a running number so row ids are unique."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for item, rec in items:
        key = (item.record_id, item.grounding_kind or item.task)
        k = seen.get(key, 0)
        seen[key] = k + 1
        out.append((item, rec, k))
    return out


def build_task_datasets(params: DataParams, records: Mapping[str, list[dict[str, Any]]], run_dir: Path) -> dict[str, datasets.DatasetDict]:
    """``{"sft": DatasetDict(train, validation), "grpo": DatasetDict(train), "eval": DatasetDict(test)}``."""
    cache: dict[str, bytes] = {}
    sft: dict[str, datasets.Dataset] = {}
    for pool, split in (("train", "train"), ("validate", "validation")):
        rows = [tasks.sft_row(item, _png_of(run_dir, rec, cache), k)
                for item, rec, k in _numbered(_items(params, pool, records[pool], fixed_per_case=False))]
        sft[split] = tasks.sft_dataset(rows)
    cache.clear()
    grpo_rows = [tasks.grpo_row(item, _png_of(run_dir, rec, cache), box_format=params.box_format,
                                thinking=params.thinking_grpo, k=k)
                 for item, rec, k in _numbered(_items(params, "grpo", records["grpo"], fixed_per_case=True))]
    cache.clear()
    eval_rows = [tasks.grpo_row(item, _png_of(run_dir, rec, cache), box_format=params.box_format,
                                thinking=params.thinking_eval, k=k)
                 for item, rec, k in _numbered(_items(params, "test", records["test"], fixed_per_case=True))]
    return {
        "sft": datasets.DatasetDict(sft),
        "grpo": datasets.DatasetDict({"train": tasks.grpo_dataset(grpo_rows)}),
        "eval": datasets.DatasetDict({"test": tasks.grpo_dataset(eval_rows)}),
    }


def counts_table(dsets: Mapping[str, datasets.DatasetDict], records: Mapping[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Rows ``dataset, split, task, grounding_kind, n`` (records counted as ``task="record"``)."""
    rows = [{"dataset": "records", "split": pool, "task": "record", "grounding_kind": "", "n": len(recs)}
            for pool, recs in records.items()]
    for name, dd in dsets.items():
        for split, ds in dd.items():
            df = ds.select_columns(["task", "grounding_kind"]).to_pandas()
            for (task, kind), n in df.groupby(["task", "grounding_kind"]).size().items():
                rows.append({"dataset": name, "split": split, "task": task, "grounding_kind": kind, "n": int(n)})
    return pd.DataFrame(rows, columns=["dataset", "split", "task", "grounding_kind", "n"])


def _save_dataset_dict(dd: datasets.DatasetDict, path: Path) -> None:
    """Save via a temp folder then swap it in, so readers never see a half-written dataset."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per split would drown the notebook output
    try:
        dd.save_to_disk(str(tmp))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def records_dataset(records: Mapping[str, list[dict[str, Any]]]) -> datasets.DatasetDict:
    """Schema records per pool as a DatasetDict with :data:`schema.FEATURES`."""
    out = {}
    for pool, recs in records.items():
        out[pool] = schema.to_dataset(recs) if recs else tasks.rows_dataset([], schema.FEATURES)
    return datasets.DatasetDict(out)


def build_datasets(params: DataParams, *, figures: bool = True) -> BuildResult:
    """Run the whole data stage into ``params.run_dir`` and return what the notebook shows."""
    t0 = time.perf_counter()
    run_dir = params.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    records, skipped = build_records(params, run_dir)
    if not records["train"] or not records["test"]:
        raise ParamError(f"source {params.source!r}: no usable train or test records (skipped {len(skipped)}; see skipped.csv)")
    rec_dd = records_dataset(records)
    dsets = build_task_datasets(params, records, run_dir)
    _save_dataset_dict(rec_dd, run_dir / "records" / "dataset")
    for name, dd in dsets.items():
        _save_dataset_dict(dd, run_dir / name)
    counts = counts_table(dsets, records)
    skipped_df = pd.DataFrame(skipped, columns=["file", "row", "reason"])
    runs.write_table(counts, run_dir / "counts.csv")
    runs.write_table(skipped_df, run_dir / "skipped.csv")
    result = BuildResult(run_dir, records, dsets, counts, skipped_df, time.perf_counter() - t0)
    if figures:
        from radlab.data import plots

        result.figures = plots.save_all(result, n_gallery=params.n_gallery)
    result.seconds = time.perf_counter() - t0
    return result


def load_stage_datasets(data_dir: str | os.PathLike[str]) -> dict[str, datasets.DatasetDict]:
    """Reload a finished data stage: ``{"records", "sft", "grpo", "eval"}`` DatasetDicts.

    Record ``image_path`` values are relative to ``data_dir``.  Errors name the missing folder.
    """
    data_dir = Path(data_dir)
    out = {}
    for name, rel in (("records", "records/dataset"), ("sft", "sft"), ("grpo", "grpo"), ("eval", "eval")):
        path = data_dir / rel
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: missing; run notebooks/00_data.ipynb (the data stage) first")
        out[name] = datasets.load_from_disk(str(path))
    return out


def minimal_pair_dataset(params: DataParams, n: int) -> datasets.Dataset:
    """Evaluation rows for ``n`` phantom minimal pairs (:func:`radlab.data.phantom.minimal_pairs`).

    Per pair member (``a``, ``b``): one report row and one one-class grounding row asking for
    the pair's finding (boxes on ``b`` for presence pairs; on opposite sides for laterality
    pairs).  GRPO/eval columns; ``id`` is ``phantom-pair-<i>-<a|b>:<kind>:0`` so members pair up
    by the prefix before ``-a``/``-b``.
    """
    cfg = phantom_config(params)
    rows = []
    for pair in phantom.minimal_pairs(params.seed, n, cfg, pool="test"):
        for case in (pair.a, pair.b):
            rec = case.record
            png = case.png_bytes()
            rng = _task_rng(params.seed, "pairs", rec["id"])
            report = tasks.report_item(rec, rng)
            ground = tasks.abnormality_item(rec, rng, box_format=params.box_format, negative_rate=0.0,
                                            vocabulary=[pair.finding])
            if ground is not None and ground.finding != pair.finding:
                ground = None  # only ask about the pair's finding
            for item in (report, ground):
                if item is not None:
                    rows.append(tasks.grpo_row(item, png, box_format=params.box_format,
                                               thinking=params.thinking_eval))
    return tasks.grpo_dataset(rows)


def record_image(data_dir: str | os.PathLike[str], rec: Mapping[str, Any]) -> Any:
    """The PIL image (mode ``"L"``) of a record of a finished data stage in ``data_dir``."""
    from PIL import Image

    path = Path(rec["image_path"])
    path = path if path.is_absolute() else Path(data_dir) / path
    with Image.open(path) as im:
        return im.convert("L")


def params_from_dict(values: Mapping[str, Any]) -> DataParams:
    """``DataParams`` from a plain mapping (validated like the notebook's parameters)."""
    from radlab import config

    return config.validate("data", dict(values), source="params_from_dict")


__all__ = [
    "BuildResult", "POOLS", "build_records", "build_task_datasets", "build_datasets",
    "load_stage_datasets", "record_image", "minimal_pair_dataset", "counts_table", "records_dataset", "enforce_patient_disjoint", "params_from_dict",
]
