"""Real data for the data stage: several datasets in one mixture, patient-disjoint pools, and the
images pre-resized once, in parallel, resumably.

``sources`` (a data parameter) lists the datasets, comma separated, in the shared item syntax
(:func:`radlab.vocab.parse_items`)::

    mimic_cxr:root=/data/mimic-cxr-jpg:report=1.0:n_train=230980,
    vindr:root=/data/vindr-cxr:abnormality=3:abnormality_all=2:n_train=15000

Item keys (all optional except ``root``):

=====================  =========================================================================
``root``               the dataset folder (the loader's documented layout)
``loader``             a name in :data:`radlab.data.loaders.LOADERS` (default: the item name, so
                       one loader can feed two items under different names)
``limit``              read at most this many records (0: all)
``n_train`` ...        cases per pool from this source (``n_train``, ``n_validation``, ``n_grpo``,
``n_eval``             ``n_eval``); default: the data params' global value; more than the source
                       has means all of them
``report`` ...         task weights (:data:`TASK_KEYS`): SFT rows per record of that task (RadVLM's
``phrase``             repeat factors: 3 = every record thrice); GRPO/eval rows draw one grounding
                       kind by these weights.  A source that names no task uses the global
                       ``mix_*``; one that names some feeds only those
any other key          a loader option (``only_frontal=true``, ``fuse=none``, ``boxes_only=true``);
                       an unknown one is an error naming the loader's accepted options
=====================  =========================================================================

Loader options are typed by the loader's signature, like every other parameter: ``true``/``false``
for a bool, ``3`` for an int, ``0.5`` for a float, text for a str (quote text YAML would read as
a number: ``image_dir='2020'``).  A list option (VinDr's and ImaGenome's ``splits``, CheXpert's
``files``, SIIM's ``image_dirs``) separates its values with ``+`` (:data:`LIST_SEP`; commas
separate items): ``splits=train+test``, ``files=train.csv+valid.csv``; a single value is a list of
one (``splits=train``).  A wrong value is a :class:`ParamError` naming the item, the option and
what it accepts.

Splits and pools.  Each record keeps its loader's split (official where the dataset has one).
Datasets that share patients share a *patient family* (:data:`PATIENT_FAMILIES`: MS-CXR and Chest
ImaGenome are MIMIC-CXR patients; CheXpert Plus is CheXpert's); within a family a MIMIC-CXR
source's official split wins, so MS-CXR and ImaGenome records follow MIMIC's split.  Train
patients are hashed into the GRPO pool per family, so one patient is in one pool in every source;
:func:`enforce_patient_disjoint` then drops (and logs) any record whose patient is already in
another pool.  Pools are filled by a seeded hash order of record ids (a uniform sample, not the
first rows of a file sorted by patient).

Images.  Every kept record's image is read once (``radlab.data.images.load_image``: PNG/JPEG or
DICOM), resized so its long side is ``image_size`` (``resize_mode="longest"``) or letterboxed onto
an ``image_size`` square (``"letterbox"``: one size for every image, which vLLM rollouts need;
boxes follow the padding), and written to ``records/images/<source>/<id>.png`` by ``workers``
processes with a tqdm bar.  Each PNG is written to a temp name and renamed, and carries its
resize facts in a ``radlab`` text chunk, so an interrupted build resumes: a PNG that exists with
the right size is not read again.  Unreadable images (corrupt DICOM, missing codec) are skipped
with the file and the reason in ``skipped.csv``.  Only records (metadata) are in memory, never
the images.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlab.data import schema, tasks
from radlab.vocab import GROUNDING_KINDS, ParamError, parse_items

if TYPE_CHECKING:
    from radlab.params import DataParams

POOLS = ("train", "validate", "grpo", "test")
TASK_KEYS = ("report", *GROUNDING_KINDS)
SIZE_KEYS = {"n_train": "train", "n_validation": "validate", "n_grpo": "grpo", "n_eval": "test"}
LIST_SEP = "+"  # between the values of a list-valued loader option inside one sources item
# Datasets whose patients are the same people: their ids share one namespace and one split.
PATIENT_FAMILIES = {
    "mimic_cxr": "mimic", "ms_cxr": "mimic", "imagenome": "mimic",
    "chexpert": "chexpert", "chexpert_plus": "chexpert",
}
# Within a family, the source whose split is the official one for every member.
SPLIT_AUTHORITY = {"mimic": "mimic_cxr"}
IMAGES_REL = "records/images"
PNG_META_KEY = "radlab"


@dataclass(frozen=True)
class Source:
    """One parsed ``sources`` item."""

    name: str
    loader: str
    root: str
    limit: int = 0
    sizes: Mapping[str, int] = field(default_factory=dict)  # pool -> cases
    mix: Mapping[str, float] = field(default_factory=dict)  # task key -> weight
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The patient namespace (:data:`PATIENT_FAMILIES`, else the loader name)."""
        return PATIENT_FAMILIES.get(self.loader, self.loader)


def parse_sources(text: str, *, sizes: Mapping[str, int], mix: Mapping[str, float]) -> list[Source]:
    """Parse the ``sources`` parameter; ``sizes`` (pool -> cases) and ``mix`` (task -> weight)
    are the global defaults.  Raises :class:`ParamError` naming the item and key."""
    from radlab.data.loaders import LOADERS

    out: list[Source] = []
    for name, opts in parse_items(text):
        opts = dict(opts)
        where = f"parameter 'sources': item {name!r}"
        loader = str(opts.pop("loader", name))
        if loader not in LOADERS:
            raise ParamError(f"{where}: unknown loader {loader!r}; known: {sorted(LOADERS)} (or set loader=NAME)")
        root = opts.pop("root", None)
        if not root:
            raise ParamError(f"{where}: needs root=DIR (the dataset folder)")
        limit = opts.pop("limit", 0)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ParamError(f"{where}: limit must be an int >= 0, got {limit!r}")
        pool_sizes = dict(sizes)
        for key, pool in SIZE_KEYS.items():
            if key in opts:
                v = opts.pop(key)
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ParamError(f"{where}: {key} must be an int >= 0, got {v!r}")
                pool_sizes[pool] = v
        weights = {k: opts.pop(k) for k in TASK_KEYS if k in opts}
        for k, v in weights.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ParamError(f"{where}: task weight {k} must be a number >= 0, got {v!r}")
        task_mix = {k: float(weights.get(k, 0.0)) for k in TASK_KEYS} if weights else {k: float(mix[k]) for k in TASK_KEYS}
        if sum(task_mix.values()) <= 0:
            raise ParamError(f"{where}: feeds no task (every weight is 0)")
        opts = _check_loader_options(where, loader, opts)
        out.append(Source(name, loader, str(root), limit, pool_sizes, task_mix, opts))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ParamError(f"parameter 'sources': item name(s) {dupes} given twice; name one e.g. "
                         f"'{dupes[0]}_b:loader={dupes[0]}:root=...'")
    return out


def source_list(params: DataParams) -> list[Source]:
    """The real sources of the data params: the parsed ``sources``, or ``source``/``source_root``
    as one item with the global sizes and mix; ``[]`` for the phantom.  Raises :class:`ParamError`
    naming the item (or the unknown ``source``)."""
    from radlab.data.loaders import LOADERS

    if params.sources.strip():
        return parse_sources(params.sources, sizes=params.pool_sizes(), mix=params.mix())
    if params.is_phantom:
        return []
    if params.source not in LOADERS:
        raise ParamError(f"source {params.source!r}: unknown dataset; known: {sorted(LOADERS)} or 'phantom'")
    return [Source(params.source, params.source, params.source_root, params.source_limit,
                   params.pool_sizes(), params.mix())]


def _check_loader_options(where: str, loader: str, opts: Mapping[str, Any]) -> dict[str, Any]:
    """``opts`` typed by the loader's signature (``{"splits": "train+test"}`` -> ``{"splits":
    ("train", "test")}``); an unknown key or a wrong value is a :class:`ParamError`."""
    from radlab.data.loaders import option_types

    types_ = option_types(loader)
    unknown = sorted(set(opts) - set(types_))
    if unknown:
        raise ParamError(f"{where}: unknown key(s) {unknown}; source keys: root, loader, limit, "
                         f"{', '.join(SIZE_KEYS)}, {', '.join(TASK_KEYS)}; options of loader {loader!r}: {list(types_)}")
    return {key: _typed_option(where, loader, key, value, types_[key]) for key, value in opts.items()}


def _typed_option(where: str, loader: str, key: str, value: Any, tp: Any) -> Any:
    """One option value as the loader's annotation ``tp`` wants it (see the module docstring)."""
    import typing

    import yaml

    from radlab.vocab import type_name, type_ok

    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        elem = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        parts = ([yaml.safe_load(p.strip()) if p.strip() else None for p in value.split(LIST_SEP)]
                 if isinstance(value, str) else [value])
        if all(p is not None and type_ok(p, elem) for p in parts):
            return tuple(parts)
        wants = f"a list of {type_name(elem)}, values separated by {LIST_SEP!r} (e.g. {key}=a{LIST_SEP}b, or one value)"
    elif origin is dict or (typing.get_args(tp) and any(typing.get_origin(a) is dict for a in typing.get_args(tp))):
        raise ParamError(f"{where}: option {key!r} of loader {loader!r} is a mapping ({type_name(tp)}); "
                         f"it cannot be written in a sources item (call radlab.data.loaders.load with it)")
    elif type_ok(value, tp):
        return float(value) if tp is float else value
    else:
        wants = {bool: "true or false", int: "an int", float: "a number (e.g. 0.5)",
                 str: f"text (quote a value YAML reads as a number or bool: {key}='{value}')"}.get(tp, type_name(tp))
    raise ParamError(f"{where}: option {key!r} of loader {loader!r} must be {wants}, got {value!r}")


def check_roots(sources: Sequence[Source]) -> None:
    """Every source root must be a folder (a clear error before any file is read)."""
    for s in sources:
        if not Path(s.root).expanduser().is_dir():
            raise ParamError(f"parameter 'sources': item {s.name!r}: root {s.root!r} is not a folder")


# --------------------------------------------------------------------------------------------
# Records -> pools
# --------------------------------------------------------------------------------------------


def hash_unit(text: str) -> float:
    """A stable number in [0, 1) from ``text``."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") / 2**64


def patient_key(source: Source, rec: Mapping[str, Any]) -> str:
    """``"<family>:<patient_id>"``: one person in every dataset of a family."""
    return f"{source.family}:{rec['patient_id']}"


def load_source(source: Source) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(records, skipped)`` from the source's loader; ``record["source"]`` becomes the item
    name.  Loader errors become :class:`ParamError` naming the item and root."""
    from radlab.data import loaders

    try:
        res = loaders.load(source.loader, source.root, limit=source.limit or None, **dict(source.options))
    except (KeyError, ValueError, FileNotFoundError, TypeError) as exc:  # LoaderError is a ValueError
        raise ParamError(f"source {source.name!r} (loader {source.loader!r}, root {source.root!r}): {exc}") from exc
    recs = []
    for rec in res.records:
        rec = dict(rec)
        rec["source"] = source.name
        recs.append(rec)
    return recs, [dict(s) for s in res.skipped]


def assign_pools(loaded: Sequence[tuple[Source, list[dict[str, Any]]]], seed: int
                 ) -> tuple[dict[str, list[tuple[Source, dict[str, Any]]]], list[dict[str, Any]]]:
    """Split records of every source into :data:`POOLS`, patient-disjoint across sources.

    Returns ``({pool: [(source, record), ...]}, skipped)``.  See the module docstring for the
    rules (family split authority, per-family GRPO hash, seeded fill order, per-source caps).
    """
    skipped: list[dict[str, Any]] = []
    # 1. Official split of the family's authority (MIMIC-CXR for MS-CXR and ImaGenome).
    authority: dict[str, str] = {}
    for src, recs in loaded:
        if SPLIT_AUTHORITY.get(src.family) == src.loader:
            for rec in recs:
                authority.setdefault(patient_key(src, rec), rec["split"])
    # 2. GRPO share per family, so a patient is hashed the same way in every source.
    totals: dict[str, list[int]] = {}
    for src, _ in loaded:
        t = totals.setdefault(src.family, [0, 0])
        t[0] += src.sizes["grpo"]
        t[1] += src.sizes["train"] + src.sizes["grpo"]
    share = {fam: (g / n if n else 0.0) for fam, (g, n) in totals.items()}
    candidates: dict[str, list[tuple[Source, dict[str, Any]]]] = {p: [] for p in POOLS}
    for src, recs in loaded:
        per_pool: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
        for rec in recs:
            key = patient_key(src, rec)
            split = authority.get(key, rec["split"])
            if split != rec["split"]:
                rec = {**rec, "split": split}
            pool = split
            if pool == "train" and hash_unit(f"{seed}:grpo:{key}") < share[src.family]:
                pool = "grpo"
            per_pool[pool].append(rec)
        for pool, items in per_pool.items():
            items.sort(key=lambda r: hash_unit(f"{seed}:order:{r['id']}"))
            candidates[pool].extend((src, r) for r in items[: src.sizes[pool]])
    kept, dropped = enforce_patient_disjoint(candidates, key=lambda item: patient_key(item[0], item[1]),
                                             file_of=lambda item: item[1]["image_path"],
                                             source_of=lambda item: item[0].name)
    seen_ids: set[str] = set()
    out: dict[str, list[tuple[Source, dict[str, Any]]]] = {p: [] for p in POOLS}
    for pool in POOLS:
        for src, rec in kept[pool]:
            if rec["id"] in seen_ids:
                skipped.append({"source": src.name, "file": rec["image_path"], "row": rec["id"],
                                "reason": f"record id {rec['id']!r} of source {src.name!r} repeats another source's"})
                continue
            seen_ids.add(rec["id"])
            out[pool].append((src, rec))
    return out, skipped + dropped


def enforce_patient_disjoint(by_pool: Mapping[str, list[Any]], *, key: Callable[[Any], str] | None = None,
                             file_of: Callable[[Any], str] | None = None, source_of: Callable[[Any], str] | None = None
                             ) -> tuple[dict[str, list[Any]], list[dict[str, Any]]]:
    """Drop items whose patient already appears in an earlier pool (test wins over others:
    order test, validate, grpo, train).  Items are records (default ``key``: ``patient_id``,
    ``source_of``: ``source``) or anything ``key`` maps to a patient key.  Returns ``(pools,
    skipped rows)``."""
    key = key or (lambda rec: rec["patient_id"])
    file_of = file_of or (lambda rec: rec["image_path"])
    source_of = source_of or (lambda rec: rec.get("source", ""))
    seen: dict[str, str] = {}
    out: dict[str, list[Any]] = {}
    skipped: list[dict[str, Any]] = []
    for pool in ("test", "validate", "grpo", "train"):
        keep = []
        for i, item in enumerate(by_pool.get(pool, [])):
            k = key(item)
            owner = seen.setdefault(k, pool)
            if owner != pool:
                skipped.append({"source": source_of(item), "file": file_of(item), "row": i,
                                "reason": f"patient {k!r} of pool {pool!r} already in pool {owner!r}"})
                continue
            keep.append(item)
        out[pool] = keep
    return {p: out.get(p, []) for p in POOLS}, skipped


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def image_relpath(source: str, rid: str) -> str:
    """``records/images/<source>/<id>.png`` (by source, not pool: a resumed build whose pool sizes
    changed still finds its images)."""
    return f"{IMAGES_REL}/{safe_name(source)}/{safe_name(rid)}.png"


@dataclass(frozen=True)
class ImageJob:
    """Resize ``src`` into ``run_dir / rel``."""

    src: str
    rel: str
    size: int
    mode: str


def _done_png(dst: Path, job: ImageJob) -> dict[str, Any] | None:
    """The stored facts of a finished PNG of the same size and mode, else ``None``."""
    from PIL import Image

    try:
        with Image.open(dst) as im:
            info = json.loads(im.text.get(PNG_META_KEY, "null") or "null")  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("size") != job.size or info.get("mode") != job.mode or info.get("src") != job.src:
        return None
    return info


def resize_image(job: ImageJob, run_dir: str) -> dict[str, Any]:
    """Read, resize and write one image (a worker's unit of work).

    Returns the facts stored in the PNG: ``src``, ``size``, ``mode``, ``width``/``height`` (of the
    PNG), ``transform`` (``[scale, pad_x, pad_y]`` and ``in_size``) and ``dicom`` (header fields,
    DICOM only), plus ``resumed``; or ``{"error": reason}`` when the image cannot be read.
    """
    from PIL import PngImagePlugin

    from radlab.data import images

    dst = Path(run_dir) / job.rel
    done = _done_png(dst, job) if dst.exists() else None
    if done is not None:
        return {**done, "resumed": True}
    try:
        img = images.load_image(job.src)
        dicom = img.info.get("dicom")
        out, t = images.preprocess(img, job.size, mode=job.mode)
    except (OSError, ValueError) as exc:  # ImageLoadError is an OSError
        return {"error": str(exc)}
    info = {"src": job.src, "size": job.size, "mode": job.mode, "width": out.width, "height": out.height,
            "transform": {"in_size": list(t.in_size), "scale": t.scale, "pad_x": t.pad_x, "pad_y": t.pad_y}}
    if dicom:
        info["dicom"] = dicom
    meta = PngImagePlugin.PngInfo()
    meta.add_text(PNG_META_KEY, json.dumps(info, sort_keys=True))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    out.save(tmp, format="PNG", compress_level=1, pnginfo=meta)
    os.replace(tmp, dst)
    return {**info, "resumed": False}


def _resize_star(args: tuple[ImageJob, str]) -> dict[str, Any]:
    return resize_image(*args)


def resize_all(jobs: Sequence[ImageJob], run_dir: str | os.PathLike[str], workers: int,
               desc: str = "images") -> list[dict[str, Any]]:
    """:func:`resize_image` over ``jobs`` (in order) with ``workers`` forked processes and a tqdm
    bar.  Only the small result dicts come back; pixels stay in the workers."""
    from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

    items = [(j, str(run_dir)) for j in jobs]
    bar = tqdm(total=len(items), desc=desc, unit="img", mininterval=1.0)
    try:
        if workers <= 1 or len(items) < 2 * workers or "fork" not in mp.get_all_start_methods():
            out = []
            for it in items:
                out.append(_resize_star(it))
                bar.update()
            return out
        with mp.get_context("fork").Pool(workers) as pool:
            out = []
            for res in pool.imap(_resize_star, items, chunksize=max(1, min(64, len(items) // (workers * 16)))):
                out.append(res)
                bar.update()
            return out
    finally:
        bar.close()


def apply_resize(rec: dict[str, Any], info: Mapping[str, Any], rel: str) -> dict[str, Any]:
    """The record pointing at its resized PNG: size, boxes moved by the letterbox padding (a
    ``longest`` resize leaves normalised boxes as they are), and ``meta`` gaining
    ``source_image``, ``source_size``, ``resize`` and the DICOM header fields."""
    from radlab.data import images

    t = info["transform"]
    rec = dict(rec)
    if info["mode"] == "letterbox" and rec["boxes"]:
        tr = images.Transform(tuple(t["in_size"]), (info["width"], info["height"]), t["scale"], t["pad_x"], t["pad_y"], "letterbox")
        moved = images.transform_boxes([b["box"] for b in rec["boxes"]], tr)
        rec["boxes"] = [{**b, "box": [round(v, 6) for v in m]} for b, m in zip(rec["boxes"], moved)]
    meta = json.loads(rec.get("meta") or "{}")
    meta.update(source_image=info["src"], source_size=list(t["in_size"]), resize=info["mode"])
    if info.get("dicom"):
        meta["dicom"] = info["dicom"]
    rec.update(image_path=rel, image_width=int(info["width"]), image_height=int(info["height"]),
               meta=json.dumps(meta, sort_keys=True, default=str))
    return rec


def remove_stale_images(run_dir: Path, keep: Iterable[str]) -> int:
    """Delete PNGs under ``records/images/`` that no kept record points at (an earlier, larger
    build) and leftover temp files; returns how many were removed."""
    keep_set = {str(run_dir / k) for k in keep}
    root = run_dir / IMAGES_REL
    n = 0
    if not root.is_dir():
        return 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if p not in keep_set:
                os.unlink(p)
                n += 1
    return n


def real_records(sources: Sequence[Source], run_dir: Path, *, seed: int, image_size: int, resize_mode: str,
                 workers: int, rows_read: dict[str, int] | None = None
                 ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Load every source, assign pools, pre-resize the kept images; ``({pool: records}, skipped)``
    with skipped rows ``{"source", "file", "row", "reason"}``.  ``rows_read``, when given, gets
    ``{source: records + rows its loader skipped}`` (the denominator of :func:`skip_notes`)."""
    check_roots(sources)
    loaded: list[tuple[Source, list[dict[str, Any]]]] = []
    skipped: list[dict[str, Any]] = []
    for src in sources:
        recs, skips = load_source(src)
        if rows_read is not None:
            rows_read[src.name] = len(recs) + len(skips)
        good = []
        for i, rec in enumerate(recs):
            try:
                schema.validate_record(rec)
            except schema.SchemaError as exc:
                skips.append({"file": rec.get("image_path", ""), "row": i, "reason": str(exc)})
                continue
            good.append(rec)
        loaded.append((src, good))
        skipped += [{"source": src.name, **s} for s in skips]
    pools, dropped = assign_pools(loaded, seed)
    skipped += dropped
    jobs, where = [], []
    for pool in POOLS:
        for src, rec in pools[pool]:
            path = Path(rec["image_path"])
            path = path if path.is_absolute() else Path(src.root) / path
            jobs.append(ImageJob(str(path), image_relpath(src.name, rec["id"]), image_size, resize_mode))
            where.append((pool, rec))
    results = resize_all(jobs, run_dir, workers)
    out: dict[str, list[dict[str, Any]]] = {p: [] for p in POOLS}
    for job, (pool, rec), info in zip(jobs, where, results):
        if "error" in info:
            skipped.append({"source": rec["source"], "file": job.src, "row": rec["id"],
                            "reason": f"image unreadable: {info['error']}"})
            continue
        out[pool].append(apply_resize(rec, info, job.rel))
    remove_stale_images(run_dir, [r["image_path"] for recs in out.values() for r in recs])
    return out, skipped


# --------------------------------------------------------------------------------------------
# Skipped rows, summarised
# --------------------------------------------------------------------------------------------

SKIP_COLUMNS = ["source", "file", "row", "reason"]
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_KEEP_WORD = re.compile(r"^[A-Za-z_][\w.-]*\.(csv|json|jsonl|gz|txt|xml)[:,;)]?$")


def reason_kind(reason: str) -> str:
    """A skip reason without its one-row details, so rows group by cause: paths become
    ``<file>``, quoted values holding digits, ``/`` or ``:`` become ``'…'`` and other words with
    digits ``#``.  ``"missing image file /d/images/0001_000.png"`` -> ``"missing image file
    <file>"``; ``"patient 'nih:7' of pool 'grpo' already in pool 'test'"`` -> ``"patient '…' of
    pool 'grpo' already in pool 'test'"``."""
    text = _QUOTED.sub(lambda m: "'…'" if re.search(r"[\d/:\\]", m.group(0)) else m.group(0), str(reason))
    words: list[str] = []
    for word in text.split():
        if _KEEP_WORD.match(word) or word == "'…'":
            pass
        elif "/" in word or "\\" in word:
            word = "<file>" + (word[-1] if word[-1] in ":,;)" else "")
        elif any(c.isdigit() for c in word):
            word = "#" + (word[-1] if word[-1] in ":,;)" else "")
        if words and word.startswith("#") and words[-1].startswith("#"):
            words[-1] = word  # a run of numbers ("[0.1, 0.2, ...]") is one '#'
        else:
            words.append(word)
    return " ".join(words)


def _example(row: Mapping[str, Any]) -> str:
    """What one skipped row is about: the path its reason names (the missing image), else
    ``<file> row <row>`` (the table line)."""
    for word in str(row.get("reason", "")).split():
        word = word.strip("'\",;:()")
        if "/" in word or "\\" in word:
            return word
    return f"{row.get('file', '')} row {row.get('row', '')}"


def skip_groups(skipped: Iterable[Mapping[str, Any]], rows_read: Mapping[str, int], *, examples: int = 3
                ) -> list[dict[str, Any]]:
    """Skipped rows counted by source and :func:`reason_kind`, largest first::

        [{"source": "nih", "reason": "missing image file <file>", "rows": 111204, "share": 0.99,
          "examples": ["/d/images/00000001_000.png", ...]}, ...]

    ``share`` is ``rows`` over the source's ``rows_read`` (``None`` when unknown); ``examples``
    the first ``examples`` rows of the group, in skip order (:func:`_example`)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in skipped:
        src = str(row.get("source", "") or "")
        g = groups.setdefault((src, reason_kind(row.get("reason", ""))), {"rows": 0, "examples": []})
        g["rows"] += 1
        if len(g["examples"]) < examples:
            g["examples"].append(_example(row))
    out = []
    for (src, kind), g in groups.items():
        total = rows_read.get(src)
        out.append({"source": src, "reason": kind, "rows": g["rows"],
                    "share": round(g["rows"] / total, 4) if total else None, "examples": g["examples"]})
    return sorted(out, key=lambda g: (-g["rows"], g["source"], g["reason"]))


def skip_notes(groups: Sequence[Mapping[str, Any]], rows_read: Mapping[str, int], *, max_lines: int = 12) -> list[str]:
    """Lines for a reader: first a ``WARNING`` for each source that lost more than half of the
    rows it read, then one line per (source, reason) group, largest first::

        WARNING: source 'nih' lost 111,308 of 112,120 rows (99%): check its root and layout (skipped.csv)
        nih: 111,204 rows: missing image file <file> (e.g. /d/images/00000001_000.png, ...)
    """
    lost: dict[str, int] = {}
    for g in groups:
        lost[g["source"]] = lost.get(g["source"], 0) + int(g["rows"])
    lines = [f"WARNING: source {src!r} lost {n:,} of {rows_read[src]:,} rows ({n / rows_read[src]:.0%}): "
             f"check its root and layout (every row in skipped.csv)"
             for src, n in lost.items() if rows_read.get(src) and n > rows_read[src] / 2]
    for g in groups[:max_lines]:
        lines.append(f"{g['source'] or '(no source)'}: {g['rows']:,} row{'s' if g['rows'] != 1 else ''}: {g['reason']}"
                     + (f" (e.g. {', '.join(g['examples'])})" if g["examples"] else ""))
    if len(groups) > max_lines:
        rest = sum(int(g["rows"]) for g in groups[max_lines:])
        lines.append(f"... {len(groups) - max_lines} more reason(s), {rest:,} rows: see skipped.csv")
    return lines


def source_vocabulary(records: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``{source: [finding names with a box]}``: what one-class abnormality prompts may ask a
    record of that source about (VinDr's classes for VinDr, NIH's for NIH)."""
    out: dict[str, list[str]] = {}
    for rec in records:
        names = out.setdefault(rec["source"], [])
        for name in tasks.finding_names(rec):
            if name not in names:
                names.append(name)
    return {k: sorted(v) for k, v in out.items()}
