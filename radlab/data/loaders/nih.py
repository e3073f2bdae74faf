"""NIH ChestX-ray14: ``Data_Entry_2017*.csv`` labels + ``BBox_List_2017.csv`` boxes + PNGs.

Layout (``root``)::

    Data_Entry_2017_v2020.csv | Data_Entry_2017.csv     (required)
    BBox_List_2017.csv                                   (optional: boxes for 880 images)
    train_val_list.txt, test_list.txt                    (optional: official patient-wise split)
    images/<Image Index>  (also accepted: images_001/images/<Image Index>, or <root>/<Image Index>)

Quirks handled (see data_formats.md §1.8):

* ``Data_Entry`` header ``..., OriginalImage[Width,Height], OriginalImagePixelSpacing[x,y]``
  splits each bracketed header over two CSV columns (and the 2017 file adds a trailing empty
  column), so columns are read *by position*, never by name.
* ``BBox_List_2017.csv`` header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``: the box
  header spans four columns; read positionally too.  Boxes are ``x, y, w, h`` float pixels of the
  1024×1024 PNG → normalised by 1024 (valid for any uniformly resized copy).
* The box list says ``Infiltrate`` where the labels say ``Infiltration``.

One record per image (``boxes_only=True``: only images with at least one box).  CheXpert-14
mapping (NIH's list is exhaustive per image, so a mapped class that is absent is 0):
Atelectasis, Cardiomegaly, Consolidation, Edema, Pneumonia, Pneumothorax → same name;
Effusion → Pleural Effusion; Infiltration → Lung Opacity; Mass, Nodule → Lung Lesion;
Pleural_Thickening → Pleural Other; No Finding → No Finding; Emphysema, Fibrosis, Hernia → none.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    ImageFinder,
    LoaderError,
    LoadResult,
    box_problem,
    chexpert_from_names,
    dumps_meta,
    find_first,
    finding,
    hash_split,
    laterality_from_boxes,
    make_box,
    read_csv_rows,
    to_float,
)
from radlab.data.schema import new_record
from radlab.formats import clip_box, pixel_xywh_to_norm

LAYOUT = ("<root>/Data_Entry_2017_v2020.csv (or Data_Entry_2017.csv), optional <root>/BBox_List_2017.csv, "
          "optional train_val_list.txt/test_list.txt, images in <root>/images/")
NIH_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
    "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding",
)
# BBox_List spelling → Data_Entry spelling.
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "No Finding": "No Finding",
}
REF_SIZE = 1024.0


def _read_lines(path: Path) -> set[str]:
    return {ln.strip() for ln in path.read_text().splitlines() if ln.strip()}


def _read_boxes(path: Path, res: LoadResult) -> dict[str, list[tuple[int, str, list[float], list[float]]]]:
    """``Image Index`` → [(line, label, raw xywh, normalised xyxy)] from BBox_List_2017.csv."""
    rows = read_csv_rows(path)
    if not rows or rows[0][1][:2] != ["Image Index", "Finding Label"] or len(rows[0][1]) < 6:
        raise LoaderError(f"{path}: row 1: expected header 'Image Index,Finding Label,Bbox [x,y,w,h],,,' "
                          f"with 6 columns, got {rows[0][1] if rows else 'empty file'}")
    out: dict[str, list[tuple[int, str, list[float], list[float]]]] = defaultdict(list)
    for line, raw_cells in rows[1:]:
        if len(raw_cells) < 6 or any(c.strip() for c in raw_cells[6:]):
            res.skip(path, line, f"{len(raw_cells)} fields; expected 6 (Image Index, Finding Label, x, y, w, h)")
            continue
        cells = [c.strip() for c in raw_cells[:6]]
        name, label = cells[0], BOX_LABEL_ALIASES.get(cells[1], cells[1])
        if not name:
            res.skip(path, line, "empty Image Index")
            continue
        if label not in NIH_LABELS or label == "No Finding":
            res.skip(path, line, f"unknown finding label {cells[1]!r}")
            continue
        raw = [to_float(c) for c in cells[2:6]]
        norm = None if None in raw else pixel_xywh_to_norm(raw, REF_SIZE, REF_SIZE, clip=False)  # type: ignore[arg-type]
        problem = box_problem(raw, norm)
        if problem:
            res.skip(path, line, problem)
            continue
        out[name].append((line, label, raw, clip_box(norm)))  # type: ignore[arg-type]
    return out


def _finder(root: Path) -> ImageFinder:
    """PNG folders: ``images/``, the NIH/Kaggle ``images_001/images/`` ... parts, then ``root``."""
    return ImageFinder([root / "images", *sorted(root.glob("images_*/images")), root])


def load_nih(
    root: Path,
    *,
    limit: int | None = None,
    boxes_only: bool = False,
    seed: int = 0,
    val_fraction: float = 0.1,
    check_images: bool = True,
) -> LoadResult:
    """Load NIH ChestX-ray14 (see module docstring for files and mapping).

    ``boxes_only``: keep only images listed in BBox_List_2017.csv.  Split: the official
    ``test_list.txt`` → test, ``train_val_list.txt`` → train/validate by patient hash
    (``val_fraction``); without the lists every patient is hashed 80/10/10 with ``seed``.
    """
    entry = find_first(root, ["Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv.gz"])
    if entry is None:
        raise FileNotFoundError(f"nih: required file not found: {root / 'Data_Entry_2017_v2020.csv'} "
                                f"(or Data_Entry_2017.csv)\nexpected layout: {LAYOUT}")
    res = LoadResult()
    bbox_path = find_first(root, ["BBox_List_2017.csv", "BBox_List_2017.csv.gz"])
    boxes_by_image = _read_boxes(bbox_path, res) if bbox_path else {}
    test_list = root / "test_list.txt"
    trainval_list = root / "train_val_list.txt"
    official_test = _read_lines(test_list) if test_list.is_file() else None
    finder = _finder(root)

    rows = read_csv_rows(entry)
    if not rows or rows[0][1][:2] != ["Image Index", "Finding Labels"] or len(rows[0][1]) < 11:
        raise LoaderError(f"{entry}: row 1: expected the Data_Entry header 'Image Index,Finding Labels,...,"
                          f"OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]' (11 columns)")
    for line, raw_cells in rows[1:]:
        if res.full(limit):
            break
        if len(raw_cells) < 11 or any(v.strip() for v in raw_cells[11:]):
            res.skip(entry, line, f"{len(raw_cells)} fields; expected 11")
            continue
        c = [v.strip() for v in raw_cells[:11]]
        name, labels_cell, follow, pid_cell, age, sex, view = c[:7]
        if not name:
            res.skip(entry, line, "empty Image Index")
            continue
        if boxes_only and name not in boxes_by_image:
            continue  # not a skip: the caller asked for boxed images only
        labels = [s.strip() for s in labels_cell.split("|") if s.strip()]
        unknown = [lab for lab in labels if lab not in NIH_LABELS]
        if not labels or unknown:
            res.skip(entry, line, f"unknown finding label(s) {unknown or [labels_cell]}")
            continue
        patient = name.split("_")[0] if "_" in name else (pid_cell.zfill(8) if pid_cell else "")
        if not patient:
            res.skip(entry, line, "no patient id")
            continue
        path = (finder.find(name) if check_images else None) or finder.default(name)
        size = res.image_size(path, entry, line, check=check_images, default=(int(REF_SIZE), int(REF_SIZE)))
        if size is None:
            continue
        width, height = size
        if official_test is not None and name in official_test:
            split = "test"
        elif official_test is not None and trainval_list.is_file():
            split = hash_split(patient, seed, (1 - val_fraction, val_fraction, 0.0))
        else:
            split = hash_split(patient, seed)

        boxes: list[dict[str, Any]] = []
        by_label: dict[str, list[int]] = defaultdict(list)
        for _bline, label, raw, norm in boxes_by_image.get(name, []):
            bid = len(boxes)
            boxes.append(make_box(bid, label, norm, raw, "xywh_px@1024x1024"))
            by_label[label].append(bid)
        frontal = view.upper() in ("PA", "AP")
        names = [lab for lab in labels if lab != "No Finding"] + [lab for lab in by_label if lab not in labels]
        findings = [
            finding(lab, laterality_from_boxes(lab, [boxes[b]["box"] for b in by_label[lab]], frontal=frontal),
                    by_label[lab])
            for lab in names
        ]
        rec = new_record(
            id=f"nih-{Path(name).stem}",
            patient_id=patient,
            study_id=Path(name).stem,
            split=split,
            source="nih",
            image_path=str(path),
            image_width=width,
            image_height=height,
            view=view.upper() if view.upper() in ("PA", "AP") else "",
            chexpert=chexpert_from_names(labels + list(by_label), NIH_TO_CHEXPERT, covered_negative=True),
            findings=findings,
            boxes=boxes,
            meta=dumps_meta({"follow_up": follow, "age": age, "sex": sex, "finding_labels": labels,
                             "original_size": [to_float(c[7]), to_float(c[8])],
                             "pixel_spacing": [to_float(c[9]), to_float(c[10])]}),
        )
        # No Finding is exclusive: a stray box on a "No Finding" image would contradict it.
        if rec["chexpert"]["No Finding"] == 1 and len(labels) > 1:
            res.skip(entry, line, f"'No Finding' combined with other labels {labels}")
            continue
        res.add(rec, entry, line)
    return res
