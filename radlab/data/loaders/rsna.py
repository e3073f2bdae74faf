"""RSNA Pneumonia Detection (Kaggle 2018): ``stage_2_train_labels.csv`` + images.

Layout (``root``)::

    stage_2_train_labels.csv       patientId, x, y, width, height, Target   (one row per box;
                                   Target=0 rows have empty coordinates)
    stage_2_detailed_class_info.csv  patientId, class                       (optional)
    stage_2_train_images/<patientId>.dcm|.png|.jpg  (the Kaggle DICOMs as shipped, or an export;
                                                    also accepted: images/)

Boxes are top-left ``x, y, width, height`` pixels of the 1024×1024 image → normalised by 1024.
One record per ``patientId`` (one image each).  CheXpert-14: Target 1 → Pneumonia = 1 and Lung
Opacity = 1; Target 0 → both 0 (RSNA's negatives include "No Lung Opacity / Not Normal").
No official split: patient hash (80/10/10, ``seed``).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    ImageFinder,
    LoadResult,
    box_problem,
    dumps_meta,
    find_first,
    finding,
    hash_split,
    laterality_from_boxes,
    make_box,
    read_csv,
    to_float,
)
from radlab.data.schema import empty_chexpert, new_record
from radlab.formats import clip_box, pixel_xywh_to_norm

LAYOUT = "<root>/stage_2_train_labels.csv, images <root>/stage_2_train_images/<patientId>.dcm (or .png/.jpg)"
REF_SIZE = 1024.0


def load_rsna(
    root: Path,
    *,
    limit: int | None = None,
    image_dir: str = "",
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load RSNA Pneumonia (see module docstring)."""
    found = find_first(root, ["stage_2_train_labels.csv", "stage_2_train_labels.csv.zip", "stage_2_train_labels.csv.gz"])
    if found is None:
        raise FileNotFoundError(f"rsna: required file not found: {root / 'stage_2_train_labels.csv'}"
                                f"\nexpected layout: {LAYOUT}")
    path = found
    table = read_csv(path, ["patientId", "x", "y", "width", "height", "Target"])
    cls_path = root / "stage_2_detailed_class_info.csv"
    classes: dict[str, str] = {}
    if cls_path.is_file():
        ctable = read_csv(cls_path, ["patientId", "class"])
        classes = {r["patientId"].strip(): r["class"].strip() for _, r in ctable.rows}
    finder = ImageFinder([root / image_dir] if image_dir else [root / "stage_2_train_images", root / "images", root],
                         (".dcm", ".dicom", ".png", ".jpg"))
    res = LoadResult()
    groups: OrderedDict[str, list[tuple[int, dict[str, Any]]]] = OrderedDict()
    table.log_bad(res)
    for line, r in table.rows:
        pid = r["patientId"].strip()
        if not pid:
            res.skip(path, line, "empty patientId")
            continue
        groups.setdefault(pid, []).append((line, r))
    for pid, rows in groups.items():
        if res.full(limit):
            break
        first_line = rows[0][0]
        targets = {str(r["Target"]).strip() for _, r in rows}
        if not targets <= {"0", "1"} or len(targets) != 1:
            res.skip(path, first_line, f"patient {pid}: Target values {sorted(targets)} not a single 0 or 1")
            continue
        positive = targets == {"1"}
        img = (finder.find(pid) if check_images else None) or finder.default(pid)
        size = res.image_size(img, path, first_line, check=check_images, default=(int(REF_SIZE), int(REF_SIZE)))
        if size is None:
            continue
        width, height = size
        boxes: list[dict[str, Any]] = []
        if positive:
            for line, r in rows:
                raw = [to_float(r[k]) for k in ("x", "y", "width", "height")]
                norm = None if None in raw else pixel_xywh_to_norm(raw, REF_SIZE, REF_SIZE, clip=False)  # type: ignore[arg-type]
                problem = box_problem(raw, norm)
                if problem:
                    res.skip(path, line, problem)
                    continue
                boxes.append(make_box(len(boxes), "Lung Opacity", clip_box(norm), raw, "xywh_px@1024x1024"))  # type: ignore[arg-type]
            if not boxes:
                continue  # a positive patient whose every box was bad (each logged) would be mislabelled
        chex = empty_chexpert()
        chex["Pneumonia"] = chex["Lung Opacity"] = 1 if positive else 0
        findings = []
        if positive:
            ids = [b["box_id"] for b in boxes]
            findings.append(finding("Lung Opacity", laterality_from_boxes("Lung Opacity", [b["box"] for b in boxes]), ids))
        rec = new_record(
            id=f"rsna-{pid}",
            patient_id=pid,
            study_id=pid,
            split=hash_split(pid, seed),
            source="rsna",
            image_path=str(img),
            image_width=width,
            image_height=height,
            chexpert=chex,
            findings=findings,
            boxes=boxes,
            meta=dumps_meta({"target": int(positive), "class": classes.get(pid, "")}),
        )
        res.add(rec, path, first_line)
    return res
