"""COCO-format box annotations (TBX11K, MS-CXR's JSON, any detector export).

Input: one JSON ``{"images": [{"id", "file_name", "width", "height", ...}], "annotations":
[{"id", "image_id", "category_id", "bbox": [x, y, w, h] px, ...}], "categories": [{"id",
"name", ...}]}``.  Output: one record per image; each annotation becomes a ``finding`` box
(normalised xyxy via :func:`radlab.formats.pixel_xywh_to_norm` on the image's ``width/height``)
and a finding entry named after its category.  Images without annotations (TBX11K's healthy
films) become records with no boxes.

COCO has no patient ids: the image file stem stands in for the patient, so the hash split is
image-level (patient-disjoint only if the dataset has one image per patient, as TBX11K does).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    LoaderError,
    LoadResult,
    box_problem,
    chexpert_from_names,
    dumps_meta,
    finding,
    hash_split,
    laterality_from_boxes,
    make_box,
    norm_split,
    read_json,
    require_file,
    to_float,
)
from radlab.data.schema import empty_chexpert, new_record
from radlab.formats import clip_box, pixel_xywh_to_norm

LAYOUT = "<root>/<annotation_file>.json (COCO: images/annotations/categories) and images under <root>/<image_dir>/<file_name>"


def _find_annotation(root: Path) -> Path:
    cands = sorted(root.glob("*.json")) + sorted(root.glob("annotations/**/*.json"))
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise FileNotFoundError(f"coco: no annotation JSON under {root}\nexpected layout: {LAYOUT}")
    raise LoaderError(f"coco: several JSON files under {root} ({[str(c) for c in cands]}); pass annotation_file=")


def _guess_split(path: Path) -> str | None:
    m = re.search(r"(train|val|valid|validation|test)", path.stem, re.I)
    return norm_split(m.group(1)) if m else None


def load_coco(
    root: Path,
    *,
    limit: int | None = None,
    annotation_file: str = "",
    image_dir: str = "",
    source: str = "coco",
    split: str = "",
    seed: int = 0,
    label_map: dict[str, str | None] | None = None,
    check_images: bool = True,
) -> LoadResult:
    """Load a COCO box JSON.

    ``annotation_file``: path relative to ``root`` (or absolute); default the single JSON in
    ``root`` or ``root/annotations/**``.  ``image_dir``: folder ``file_name`` is relative to;
    default the first of ``imgs/``, ``images/``, ``root`` that holds the first image.
    ``split``: fixed split for all images; default from the file name (``*train*`` → train,
    ``*val*`` → validate, ``*test*`` → test), else :func:`hash_split` of the image stem.
    ``label_map``: category name → CheXpert-14 name (or ``None``); default no mapping.
    """
    ann_path = Path(annotation_file) if annotation_file else _find_annotation(root)
    if not ann_path.is_absolute():
        ann_path = root / ann_path
    require_file(ann_path, source, LAYOUT)
    data = read_json(ann_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LoaderError(f"{ann_path}: not a COCO JSON (top-level 'images' list missing)")
    anns = data.get("annotations") or []
    cats = {c.get("id"): str(c.get("name", "")) for c in data.get("categories") or [] if isinstance(c, dict)}
    res = LoadResult()

    fixed_split = ""
    if split:
        fixed_split = norm_split(split) or ""
        if not fixed_split:
            raise ValueError(f"{source}: split {split!r} is not train/validate/test")
    else:
        fixed_split = _guess_split(ann_path) or ""

    by_image: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    image_ids = {im.get("id") for im in data["images"] if isinstance(im, dict)}
    for i, ann in enumerate(anns):
        row = f"annotations[{i}]"
        if not isinstance(ann, dict):
            res.skip(ann_path, row, "annotation is not an object")
            continue
        if ann.get("image_id") not in image_ids:
            res.skip(ann_path, row, f"image_id {ann.get('image_id')!r} not in images")
            continue
        if ann.get("category_id") not in cats:
            res.skip(ann_path, row, f"unknown category_id {ann.get('category_id')!r}")
            continue
        by_image[ann["image_id"]].append((i, ann))

    img_dir = _image_dir(root, image_dir, data["images"])
    for j, im in enumerate(data["images"]):
        if res.full(limit):
            break
        row = f"images[{j}]"
        if not isinstance(im, dict) or not im.get("file_name"):
            res.skip(ann_path, row, "image entry without file_name")
            continue
        path = img_dir / str(im["file_name"])
        w, h = to_float(im.get("width")), to_float(im.get("height"))
        size = res.image_size(path, ann_path, row, check=check_images)
        if size is None:
            continue
        if w is None or h is None:
            w, h = float(size[0]), float(size[1])
        if not w or not h or w <= 0 or h <= 0:
            res.skip(ann_path, row, f"image {im['file_name']!r} has no usable width/height")
            continue

        stem = Path(str(im["file_name"])).stem
        boxes, findings = [], []
        labels: list[str] = []
        for i, ann in by_image.get(im.get("id"), []):
            bb = ann.get("bbox")
            raw = [to_float(v) for v in bb] if isinstance(bb, list) and len(bb) == 4 else [None] * 4
            norm = None if None in raw else pixel_xywh_to_norm(raw, w, h, clip=False)  # type: ignore[arg-type]
            problem = box_problem(raw, norm)
            if problem:
                res.skip(ann_path, f"annotations[{i}]", problem)
                continue
            name = cats[ann["category_id"]]
            bid = len(boxes)
            box = clip_box(norm)  # type: ignore[arg-type]
            boxes.append(make_box(bid, name, box, raw, f"xywh_px@{int(w)}x{int(h)}"))  # type: ignore[arg-type]
            findings.append(finding(name, laterality_from_boxes(name, [box]), [bid]))
            labels.append(name)
        rec = new_record(
            id=f"{source}-{stem}",
            patient_id=stem,
            study_id=stem,
            split=fixed_split or hash_split(stem, seed),
            source=source,
            image_path=str(path),
            image_width=int(w),
            image_height=int(h),
            view="",
            chexpert=chexpert_from_names(labels, label_map) if label_map else empty_chexpert(),
            findings=findings,
            boxes=boxes,
            meta=dumps_meta({"coco_image_id": im.get("id"), "file_name": im["file_name"],
                             "annotation_file": str(ann_path)}),
        )
        res.add(rec, ann_path, row)
    return res


def _image_dir(root: Path, image_dir: str, images: list) -> Path:
    if image_dir:
        return root / image_dir
    first = next((str(im["file_name"]) for im in images if isinstance(im, dict) and im.get("file_name")), None)
    for cand in (root / "imgs", root / "images", root):
        if first is None or (cand / first).is_file():
            return cand
    return root


def load_tbx11k(root: Path, *, limit: int | None = None, split: str = "", seed: int = 0,
                check_images: bool = True) -> LoadResult:
    """TBX11K: ``annotations/json/TBX11K_{train,val}.json`` + ``imgs/{tb,health,sick}/*.png``.

    Loads every ``TBX11K_*.json`` found (train, then val); categories are TB kinds (no
    CheXpert-14 counterpart, so labels stay ``None``).  The TB-specific ``source`` is ``tbx11k``.
    """
    files = sorted((root / "annotations" / "json").glob("TBX11K_*.json"))
    if not files:
        raise FileNotFoundError(
            f"tbx11k: no annotations/json/TBX11K_*.json under {root}\nexpected layout: "
            "<root>/annotations/json/TBX11K_train.json, <root>/imgs/{tb,health,sick}/*.png")
    out = LoadResult()
    for f in files:
        remaining = None if limit is None else limit - len(out.records)
        if remaining is not None and remaining <= 0:
            break
        part = load_coco(root, limit=remaining, annotation_file=str(f), image_dir="imgs", source="tbx11k",
                         split=split, seed=seed, check_images=check_images)
        out.records += part.records
        out.skipped += part.skipped
    return out
