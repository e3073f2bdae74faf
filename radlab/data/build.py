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

import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd

from radlab import runs
from radlab.config import StageRun
from radlab.data import phantom, schema, sources, tasks
from radlab.params import DataParams
from radlab.vocab import GROUNDING_KINDS, ParamError

POOLS = ("train", "validate", "grpo", "test")
@dataclass
class BuildResult:
    """What :func:`build_datasets` returns to the notebook.

    ``records[pool]`` lists schema records; ``datasets`` holds the ``sft``/``grpo``/``eval``
    DatasetDicts; ``counts`` is the task x split table; ``skipped`` one row per dropped record
    (``source, file, row, reason``); ``rows_read`` ``{source: rows its loader read}`` (the
    denominator of the lost shares in :meth:`skip_report`).
    """

    run_dir: Path
    records: dict[str, list[dict[str, Any]]]
    datasets: dict[str, datasets.DatasetDict]
    counts: pd.DataFrame
    skipped: pd.DataFrame
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)
    rows_read: dict[str, int] = field(default_factory=dict)

    def skip_groups(self) -> list[dict[str, Any]]:
        """Skipped rows by source and reason (:func:`radlab.data.sources.skip_groups`)."""
        return sources.skip_groups(self.skipped.to_dict("records"), self.rows_read)

    def skip_notes(self) -> list[str]:
        """Warnings for sources that lost more than half their rows, then one line per (source,
        reason) group (:func:`radlab.data.sources.skip_notes`); ``[]`` when nothing was skipped."""
        return sources.skip_notes(self.skip_groups(), self.rows_read)

    def skip_report(self) -> pd.DataFrame:
        """Print the skip notes' warnings and return the skips grouped by source and reason
        (columns ``source, reason, rows, share, examples``: the first files of each group by name,
        so a narrow column still shows them; every row with its full path is in ``skipped.csv``)."""
        for line in self.skip_notes():
            if line.startswith("WARNING"):
                print(line)
        print(f"skipped rows: {len(self.skipped):,}" + (f" of {sum(self.rows_read.values()):,} read" if self.rows_read else ""))
        groups = self.skip_groups()
        frame = pd.DataFrame(groups, columns=["source", "reason", "rows", "share", "examples"])
        frame["examples"] = frame["examples"].map(lambda files: ", ".join(Path(f).name for f in files))
        return frame

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary for ``DONE`` (``skip_notes``: the lines the index and the runner show)."""
        return {
            "records": {k: len(v) for k, v in self.records.items()},
            "rows": {f"{name}/{split}": len(dd[split]) for name, dd in self.datasets.items() for split in dd},
            "skipped": len(self.skipped),
            "rows_read": dict(self.rows_read),
            "skip_notes": self.skip_notes(),
            "seconds": round(self.seconds, 1),
        }


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


def phantom_config(params: DataParams) -> phantom.PhantomConfig:
    """The generator config the data params imply."""
    return phantom.PhantomConfig(
        image_size=params.image_size, difficulty=params.difficulty, prevalence=params.prevalence,
        p_mention_min=params.p_mention_min, p_mention_max=params.p_mention_max, p_uncertain=params.p_uncertain,
    )


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
            skipped.append({"source": "phantom", "file": f"phantom:{pool}", "row": i, "reason": str(exc)})
            continue
        _write_png(staging, rec["image_path"], png)
        by_pool[pool].append(rec)
    return by_pool, skipped


def enforce_patient_disjoint(by_pool: Mapping[str, list[dict[str, Any]]]) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Drop records whose patient already appears in an earlier pool (test wins over others:
    order test, validate, grpo, train).  Returns ``(pools, skipped rows)``."""
    return sources.enforce_patient_disjoint(by_pool)


def build_records(params: DataParams, run_dir: str | os.PathLike[str] | None = None, *,
                  rows_read: dict[str, int] | None = None) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Generate (phantom) or load (real sources) the records of every pool and write their PNGs.

    Returns ``({pool: [record, ...]}, skipped)`` with ``skipped`` rows ``{"source", "file", "row",
    "reason"}``; ``rows_read``, when given, gets ``{source: rows read}``.  Phantom images go to ``<run_dir>/records/images/<pool>/<id>.png`` (rendered into
    a staging folder swapped in whole); real images to ``records/images/<source>/<id>.png``,
    written one by one (temp + rename) so an interrupted build resumes
    (:func:`radlab.data.sources.real_records`).
    """
    run_dir = Path(run_dir) if run_dir is not None else params.run_dir
    if not params.is_phantom:
        return sources.real_records(sources.source_list(params), run_dir, seed=params.seed, image_size=params.image_size,
                                    resize_mode=params.resize_mode, workers=params.workers, rows_read=rows_read)
    if rows_read is not None:
        rows_read["phantom"] = sum(params.pool_sizes().values())
    staging = run_dir / "records" / ".images.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    out = _phantom_records(params, staging)
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


def _one_grounding_mix(mix: Mapping[str, float], rng: np.random.Generator) -> dict[str, float]:
    """GRPO/eval: one report row (when the mix has reports) and one grounding row of a kind drawn
    by the mix's grounding weights."""
    weights = np.array([mix.get(k, 0.0) for k in GROUNDING_KINDS], dtype=float)
    out: dict[str, float] = {"report": 1.0} if mix.get("report", 0.0) > 0 else {}
    if weights.sum() > 0:
        kind = GROUNDING_KINDS[int(rng.choice(len(weights), p=weights / weights.sum()))]
        out[kind] = 1.0
    return out


PHANTOM_VOCABULARY = tuple(n for n in phantom.FINDING_NAMES if n not in ("endotracheal tube", "enteric tube", "central venous catheter"))


@dataclass
class _Mixer:
    """Per-record task mix and abnormality vocabulary: the phantom's, or each real source's."""

    params: DataParams
    by_source: dict[str, sources.Source] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, params: DataParams, records: Mapping[str, list[dict[str, Any]]]) -> _Mixer:
        if params.is_phantom:
            return cls(params)
        by_source = {s.name: s for s in sources.source_list(params)}
        return cls(params, by_source, sources.source_vocabulary(r for recs in records.values() for r in recs))

    def mix(self, rec: Mapping[str, Any]) -> Mapping[str, float]:
        src = self.by_source.get(rec["source"])
        return src.mix if src is not None else self.params.mix()

    def vocabulary(self, rec: Mapping[str, Any]) -> Sequence[str]:
        return self.vocab.get(rec["source"], []) if self.by_source else PHANTOM_VOCABULARY


def _items(params: DataParams, pool: str, records: list[dict[str, Any]], *, fixed_per_case: bool,
           mixer: _Mixer | None = None) -> list[tuple[tasks.TaskItem, dict[str, Any]]]:
    mixer = mixer or _Mixer.of(params, {pool: records})
    out = []
    for rec in records:
        rng = _task_rng(params.seed, pool, rec["id"])
        mix = _one_grounding_mix(mixer.mix(rec), rng) if fixed_per_case else mixer.mix(rec)
        for item in tasks.items_for_record(rec, rng, mix=mix, box_format=params.box_format,
                                           negative_rate=params.negative_rate, vocabulary=mixer.vocabulary(rec)):
            out.append((item, rec))
    return out


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


def _rows(run_dir: str, items: list[tuple[tasks.TaskItem, dict[str, Any], int]], layout: str,
          box_format: str, thinking: bool) -> Iterator[dict[str, Any]]:
    """Dataset rows, one image read from disk per record (consecutive items share it)."""
    last: tuple[str, bytes] = ("", b"")
    for item, rec, k in items:
        rel = rec["image_path"]
        if last[0] != rel:
            last = (rel, (Path(run_dir) / rel).read_bytes())
        if layout == "sft":
            yield tasks.sft_row(item, last[1], k)
        else:
            yield tasks.grpo_row(item, last[1], box_format=box_format, thinking=thinking, k=k)


def _stream_dataset(params: DataParams, run_dir: Path, name: str, items: list[tuple[tasks.TaskItem, dict[str, Any], int]],
                    layout: str, thinking: bool = False) -> datasets.Dataset:
    """Write rows to Arrow as they are made (``Dataset.from_generator``): the images of a
    377k-image build never sit in memory together.  The fingerprint comes from the params that
    shape the rows (not the output folder), so rebuilds are byte-identical."""
    features = tasks.SFT_FEATURES if layout == "sft" else tasks.GRPO_FEATURES
    if not items:
        return tasks.rows_dataset([], features)
    shaping = {k: v for k, v in dataclasses.asdict(params).items() if k not in ("output_root", "experiment", "run_name", "workers", "n_gallery")}
    fingerprint = hashlib.blake2b(json.dumps([name, shaping], sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    return datasets.Dataset.from_generator(
        _rows, features=features, cache_dir=str(run_dir / DATASETS_CACHE), fingerprint=fingerprint,
        gen_kwargs={"run_dir": str(run_dir), "items": items, "layout": layout, "box_format": params.box_format,
                    "thinking": thinking},
    )


DATASETS_CACHE = "records/.arrow-cache"


def build_task_datasets(params: DataParams, records: Mapping[str, list[dict[str, Any]]], run_dir: Path) -> dict[str, datasets.DatasetDict]:
    """``{"sft": DatasetDict(train, validation), "grpo": DatasetDict(train), "eval": DatasetDict(test)}``.

    Rows are streamed to Arrow files under ``records/.arrow-cache`` (removed by
    :func:`build_datasets` once the datasets are saved).
    """
    cache = run_dir / DATASETS_CACHE
    if cache.exists():
        shutil.rmtree(cache)  # never reuse rows of an earlier (maybe interrupted) build
    mixer = _Mixer.of(params, records)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        sft = {split: _stream_dataset(params, run_dir, f"sft/{split}",
                                      _numbered(_items(params, pool, records[pool], fixed_per_case=False, mixer=mixer)), "sft")
               for pool, split in (("train", "train"), ("validate", "validation"))}
        grpo = _stream_dataset(params, run_dir, "grpo/train",
                               _numbered(_items(params, "grpo", records["grpo"], fixed_per_case=True, mixer=mixer)),
                               "grpo", params.thinking_grpo)
        ev = _stream_dataset(params, run_dir, "eval/test",
                             _numbered(_items(params, "test", records["test"], fixed_per_case=True, mixer=mixer)),
                             "grpo", params.thinking_eval)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return {
        "sft": datasets.DatasetDict(sft),
        "grpo": datasets.DatasetDict({"train": grpo}),
        "eval": datasets.DatasetDict({"test": ev}),
    }


def counts_table(dsets: Mapping[str, datasets.DatasetDict], records: Mapping[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """Rows ``dataset, split, source, task, grounding_kind, n`` (records counted as
    ``task="record"``; ``source`` is the record's source: the mix of a multi-source build)."""
    source_of = {r["id"]: r["source"] for recs in records.values() for r in recs}
    rows = []
    for pool, recs in records.items():
        for src, n in sorted(pd.Series([r["source"] for r in recs], dtype=object).value_counts().items()):
            rows.append({"dataset": "records", "split": pool, "source": src, "task": "record", "grounding_kind": "", "n": int(n)})
        if not recs:
            rows.append({"dataset": "records", "split": pool, "source": "", "task": "record", "grounding_kind": "", "n": 0})
    for name, dd in dsets.items():
        for split, ds in dd.items():
            df = ds.select_columns(["task", "grounding_kind", "record_id"]).to_pandas()
            df["source"] = df["record_id"].map(source_of).fillna("")
            for (src, task, kind), n in df.groupby(["source", "task", "grounding_kind"]).size().items():
                rows.append({"dataset": name, "split": split, "source": src, "task": task, "grounding_kind": kind, "n": int(n)})
    return pd.DataFrame(rows, columns=["dataset", "split", "source", "task", "grounding_kind", "n"])


def _save_dataset_dict(dd: datasets.DatasetDict, path: Path) -> None:
    """Save via a temp folder then swap it in, so readers never see a half-written dataset."""
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per split would drown the notebook output
    try:
        # An empty split still gets one (empty) Arrow shard: with none, load_from_disk fails.
        dd.save_to_disk(str(tmp), num_shards={split: 1 for split, ds in dd.items() if len(ds) == 0})
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
    """Run the whole data stage into ``params.run_dir`` and return what the notebook shows.

    The run begins here (:meth:`radlab.config.StageRun.begin`).  When the folder already holds this
    very run, finished, nothing is rebuilt or written: :func:`load_build_result` reads it back.
    """
    t0 = time.perf_counter()
    run_dir = params.run_dir
    if not StageRun.of(params).begin():
        return load_build_result(params, figures=figures)
    rows_read: dict[str, int] = {}
    records, skipped = build_records(params, run_dir, rows_read=rows_read)
    if not records["train"] or not records["test"]:
        runs.write_table(pd.DataFrame(skipped, columns=sources.SKIP_COLUMNS), run_dir / "skipped.csv")
        what = params.sources.strip() or params.source
        notes = sources.skip_notes(sources.skip_groups(skipped, rows_read), rows_read, max_lines=5)
        raise ParamError(f"source(s) {what!r}: no usable train or test records (skipped {len(skipped)}; "
                         f"see {run_dir / 'skipped.csv'})" + "".join(f"\n  {line}" for line in notes))
    rec_dd = records_dataset(records)
    dsets = build_task_datasets(params, records, run_dir)
    _save_dataset_dict(rec_dd, run_dir / "records" / "dataset")
    for name, dd in dsets.items():
        _save_dataset_dict(dd, run_dir / name)
    # Reopen the saved copies so nothing points into the streaming cache, then drop it.
    dsets = {name: datasets.load_from_disk(str(run_dir / name)) for name in dsets}
    shutil.rmtree(run_dir / DATASETS_CACHE, ignore_errors=True)
    counts = counts_table(dsets, records)
    skipped_df = pd.DataFrame(skipped, columns=sources.SKIP_COLUMNS)
    runs.write_table(counts, run_dir / "counts.csv")
    runs.write_table(skipped_df, run_dir / "skipped.csv")
    result = BuildResult(run_dir, records, dsets, counts, skipped_df, time.perf_counter() - t0, rows_read=rows_read)
    if figures:
        from radlab.data import plots

        result.figures = plots.save_all(result, n_gallery=params.n_gallery)
    result.seconds = time.perf_counter() - t0
    return result


def load_build_result(params: DataParams, *, figures: bool = True) -> BuildResult:
    """The :class:`BuildResult` of the finished data stage in ``params.run_dir``, read from disk
    (records, datasets, ``counts.csv``, ``skipped.csv``; figures redrawn, not saved)."""
    t0 = time.perf_counter()
    run_dir = params.run_dir
    loaded = load_stage_datasets(run_dir)
    records = {pool: loaded["records"][pool].to_list() for pool in loaded["records"]}
    dsets = {name: loaded[name] for name in ("sft", "grpo", "eval")}
    counts = pd.read_csv(run_dir / "counts.csv", keep_default_na=False)
    skipped = pd.read_csv(run_dir / "skipped.csv", keep_default_na=False)
    if "source" not in skipped.columns:  # written before skip rows named their source
        skipped.insert(0, "source", "")
    rows_read = {str(k): int(v) for k, v in (runs.read_summary(run_dir).get("rows_read") or {}).items()}
    print(f"{run_dir} holds this finished data stage: returning its datasets (set force=True to rebuild)")
    result = BuildResult(run_dir, records, dsets, counts, skipped, time.perf_counter() - t0, rows_read=rows_read)
    if figures:
        from radlab.data import plots

        result.figures = plots.make_all(result, n_gallery=params.n_gallery)
    return result


# The data stage's saved datasets: name -> folder under the data folder.
DATA_PARTS = {"records": "records/dataset", "sft": "sft", "grpo": "grpo", "eval": "eval"}


def open_saved(path: str | os.PathLike[str]) -> Any:
    """``datasets.load_from_disk(path)`` for a stage that *reads* a finished run folder.

    ``datasets`` writes the result of ``.map``/``.filter`` on a loaded dataset as ``cache-*.arrow``
    beside the dataset's own Arrow files, i.e. into the finished data run folder -- and TRL's
    trainers map the datasets they are given.  So this turns transform caching off for the
    process (``datasets.disable_caching()``): every transform result, radlab's and TRL's, goes to
    a temporary folder that ``datasets`` deletes when the process ends, and a finished run folder
    is only ever read.  (Reader processes recompute such maps on a rerun; they are cheap next to
    training.)
    """
    datasets.disable_caching()
    return datasets.load_from_disk(str(path))


def load_data_split(data_dir: str | os.PathLike[str], part: str) -> datasets.DatasetDict:
    """The data stage's saved ``part`` (``"records"``, ``"sft"``, ``"grpo"`` or ``"eval"``; its folder
    is :data:`DATA_PARTS`) as a ``DatasetDict`` of its splits: the one reader of the data stage's
    outputs.  Raises :class:`ParamError` naming the folder when the data stage did not write it.
    """
    if part not in DATA_PARTS:
        raise ValueError(f"unknown data part {part!r}; expected one of {sorted(DATA_PARTS)}")
    path = Path(data_dir) / DATA_PARTS[part]
    if not path.is_dir():
        raise ParamError(f"data folder {str(path)!r} does not exist; run notebooks/00_data.ipynb (the data stage) "
                         "first, or set data_dir")
    return open_saved(path)  # transforms never write cache files into the data folder


def load_stage_datasets(data_dir: str | os.PathLike[str]) -> dict[str, datasets.DatasetDict]:
    """Reload a finished data stage: ``{"records", "sft", "grpo", "eval"}`` DatasetDicts
    (:func:`load_data_split`).  Record ``image_path`` values are relative to ``data_dir``."""
    return {name: load_data_split(data_dir, name) for name in DATA_PARTS}


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
    "load_build_result", "load_data_split", "open_saved", "load_stage_datasets", "record_image", "minimal_pair_dataset", "counts_table", "records_dataset", "enforce_patient_disjoint", "params_from_dict",
]
