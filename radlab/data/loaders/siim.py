"""SIIM-ACR Pneumothorax (Kaggle 2019): ``train-rle.csv`` masks + nested DICOM folders.

Layout (``root``)::

    train-rle.csv                                   ImageId, EncodedPixels   (one row per mask
                                                    component; ``-1`` = no pneumothorax)
    dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm   (the DICOMs as shipped, nested;
    dicom-images-test/...                           any depth: the folders are searched recursively)

``EncodedPixels`` is SIIM's *relative*, column-major run-length encoding: pairs ``start length``
where each start counts from the end of the previous run, over the image flattened column by
column (pixel ``(x, y)`` is index ``x * height + y``).  Each row becomes one box: the bounding
box of its mask, normalised by the DICOM's own Columns/Rows (1024² in the release).  Label
``Pneumothorax``; CheXpert-14 Pneumothorax = 1 with a mask, 0 for ``-1``.  The patient is the
DICOM's PatientID (the image id when absent); no official split: patient hash (80/10/10, ``seed``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from radlab.data.loaders._common import (
    ImageFinder,
    LoadResult,
    dumps_meta,
    find_first,
    finding,
    hash_split,
    laterality_from_boxes,
    make_box,
    read_csv,
)
from radlab.data.schema import empty_chexpert, new_record

LAYOUT = "<root>/train-rle.csv, DICOMs <root>/dicom-images-train/<study>/<series>/<ImageId>.dcm (nested, any depth)"


def rle_box(rle: str, width: int, height: int) -> tuple[list[float], int]:
    """``([x0, y0, x1, y1] in pixels, pixel count)`` of one SIIM mask (pixel-edge convention:
    ``x1``/``y1`` are one past the last pixel).  Raises ``ValueError`` on a malformed or
    out-of-image encoding."""
    values = [int(v) for v in rle.split()]
    if not values or len(values) % 2:
        raise ValueError(f"EncodedPixels needs start/length pairs, got {len(values)} numbers")
    mask = np.zeros(width * height, dtype=bool)
    pos = 0
    for start, length in zip(values[0::2], values[1::2]):
        if start < 0 or length <= 0:
            raise ValueError(f"run start {start} / length {length} must be >= 0 / > 0")
        pos += start
        if pos + length > mask.size:
            raise ValueError(f"run ends at pixel {pos + length}, beyond the {width}x{height} image")
        mask[pos:pos + length] = True
        pos += length
    grid = mask.reshape(width, height)  # [x, y]: column-major
    xs, ys = np.nonzero(grid)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)], int(mask.sum())


def load_siim(
    root: Path,
    *,
    limit: int | None = None,
    image_dirs: tuple[str, ...] = ("dicom-images-train", "dicom-images-test"),
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load SIIM-ACR Pneumothorax (see module docstring)."""
    from radlab.data.images import ImageLoadError, dicom_header

    path = find_first(root, ["train-rle.csv", "stage_2_train.csv", "train-rle.csv.gz"])
    if path is None:
        raise FileNotFoundError(f"siim: required file not found: {root / 'train-rle.csv'}\nexpected layout: {LAYOUT}")
    table = read_csv(path, ["ImageId", "EncodedPixels"])
    res = LoadResult()
    table.log_bad(res)
    finder = ImageFinder([root / d for d in image_dirs] + [root], (".dcm", ".dicom"), recursive=True)
    groups: OrderedDict[str, list[tuple[int, str]]] = OrderedDict()
    for line, r in table.rows:
        iid = r["ImageId"].strip()
        if not iid:
            res.skip(path, line, "empty ImageId")
            continue
        groups.setdefault(iid, []).append((line, r["EncodedPixels"].strip()))
    for iid, rows in groups.items():
        if res.full(limit):
            break
        first_line = rows[0][0]
        img = (finder.find(iid) if check_images else None) or finder.default(iid)
        size = res.image_size(img, path, first_line, check=check_images, default=(1024, 1024))
        if size is None:
            continue
        w, h = size
        patient = iid
        if check_images:
            try:
                patient = dicom_header(img).get("patient_id") or iid
            except ImageLoadError as exc:
                res.skip(path, first_line, str(exc))
                continue
        boxes: list[dict[str, Any]] = []
        negative = [line for line, rle in rows if rle == "-1"]
        positive = [(line, rle) for line, rle in rows if rle != "-1"]
        if negative and positive:
            res.skip(path, first_line, f"image {iid}: both '-1' and masks")
            continue
        bad = False
        for line, rle in positive:
            try:
                px, n = rle_box(rle, w, h)
            except ValueError as exc:
                res.skip(path, line, f"image {iid}: {exc}")
                bad = True
                break
            norm = [px[0] / w, px[1] / h, px[2] / w, px[3] / h]
            boxes.append(make_box(len(boxes), "Pneumothorax", norm, px, f"xyxy_px@{w}x{h},rle_pixels={n}"))
        if bad:
            continue  # a half-read mask would under-state the finding
        chex = empty_chexpert()
        chex["Pneumothorax"] = 1 if boxes else 0
        findings = []
        if boxes:
            findings.append(finding("Pneumothorax", laterality_from_boxes("Pneumothorax", [b["box"] for b in boxes]),
                                    [b["box_id"] for b in boxes]))
        rec = new_record(
            id=f"siim-{iid}",
            patient_id=patient,
            study_id=iid,
            split=hash_split(patient, seed),
            source="siim",
            image_path=str(img),
            image_width=w,
            image_height=h,
            chexpert=chex,
            findings=findings,
            boxes=boxes,
            meta=dumps_meta({"n_masks": len(positive)}),
        )
        res.add(rec, path, first_line)
    return res
