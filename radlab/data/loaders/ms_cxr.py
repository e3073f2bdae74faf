"""MS-CXR phrase grounding (``MS_CXR_Local_Alignment_v1.{0,1}.0.csv``) on MIMIC-CXR-JPG images.

CSV columns: ``dicom_id, category_name, label_text, path, x, y, w, h, image_width, image_height``
(+ ``split`` in v1.1.0).  One row per box; a phrase with several boxes repeats
(dicom_id, label_text).  Boxes are ``x, y, w, h`` pixels of the original image whose size is
``image_width × image_height`` → normalised with :func:`radlab.formats.pixel_xywh_to_norm`.

One record per image: a ``grounding`` entry per phrase (box ids of all its rows), a finding per
phrase (name = category, laterality/severity/certainty read from the phrase, falling back to box
side for laterality), CheXpert-14 = 1 for each category (all 8 MS-CXR categories are CheXpert
names); other labels stay ``None`` (MS-CXR is not exhaustive).

Split (``split_source``): ``"mimic"`` = the patient's MIMIC-CXR official split from
``mimic-cxr-2.0.0-split.csv(.gz)`` in ``root`` or ``image_root`` (keeps MS-CXR patients
disjoint from MIMIC training data); ``"official"`` = the CSV's ``split`` column (v1.1.0; known not
to be patient-disjoint); ``"hash"`` = patient hash; ``"auto"`` (default) = mimic, else hash.
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    LoaderError,
    LoadResult,
    box_problem,
    certainty_from_text,
    chexpert_from_names,
    dumps_meta,
    find_first,
    finding,
    grounding,
    hash_split,
    laterality_from_boxes,
    laterality_from_text,
    make_box,
    norm_split,
    read_csv,
    severity_from_text,
    to_float,
)
from radlab.data.schema import new_record
from radlab.formats import clip_box, pixel_xywh_to_norm

LAYOUT = ("<root>/MS_CXR_Local_Alignment_v1.1.0.csv (or v1.0.0), images at <image_root>/<path> "
          "(path = files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg)")
COLUMNS = ("dicom_id", "category_name", "label_text", "path", "x", "y", "w", "h", "image_width", "image_height")
CATEGORIES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Lung Opacity", "Pleural Effusion",
              "Pneumonia", "Pneumothorax")
_IDS = re.compile(r"p(\d+)/s(\d+)/")


def _find_csv(root: Path) -> Path:
    cands = sorted(root.glob("MS_CXR_Local_Alignment_v*.csv"))
    if not cands:
        raise FileNotFoundError(f"ms_cxr: required file not found: {root / 'MS_CXR_Local_Alignment_v1.1.0.csv'}"
                                f"\nexpected layout: {LAYOUT}")
    return cands[-1]  # newest version


def _mimic_splits(dirs: list[Path]) -> dict[str, str]:
    for d in dirs:
        p = find_first(d, ["mimic-cxr-2.0.0-split.csv", "mimic-cxr-2.0.0-split.csv.gz"])
        if p is not None:
            table = read_csv(p, ["subject_id", "split"])
            return {r["subject_id"].strip(): norm_split(r["split"]) or "train" for _, r in table.rows}
    return {}


def load_ms_cxr(
    root: Path,
    *,
    limit: int | None = None,
    csv_file: str = "",
    image_root: str = "",
    split_source: str = "auto",
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load MS-CXR (see module docstring).  ``image_root``: folder the CSV ``path`` is relative to
    (default ``root``)."""
    csv_path = root / csv_file if csv_file else _find_csv(root)
    if not csv_path.is_file():
        raise FileNotFoundError(f"ms_cxr: required file not found: {csv_path}\nexpected layout: {LAYOUT}")
    if split_source not in ("auto", "mimic", "official", "hash"):
        raise ValueError(f"ms_cxr: split_source must be auto|mimic|official|hash, got {split_source!r}")
    table = read_csv(csv_path, COLUMNS)
    if split_source == "official" and "split" not in table.columns:
        raise LoaderError(f"{csv_path}: split_source='official' needs a 'split' column (MS-CXR v1.1.0)")
    img_root = Path(image_root) if image_root else root
    mimic = _mimic_splits([root, img_root]) if split_source in ("auto", "mimic") else {}
    if split_source == "mimic" and not mimic:
        raise FileNotFoundError(f"ms_cxr: split_source='mimic' needs mimic-cxr-2.0.0-split.csv(.gz) in {root} or {img_root}")
    res = LoadResult()

    groups: OrderedDict[str, list[tuple[int, dict[str, Any]]]] = OrderedDict()
    table.log_bad(res)
    for line, r in table.rows:
        dicom = r["dicom_id"].strip()
        if not dicom:
            res.skip(csv_path, line, "empty dicom_id")
            continue
        groups.setdefault(dicom, []).append((line, r))

    for dicom, rows in groups.items():
        if res.full(limit):
            break
        first_line, first = rows[0]
        relpath = str(first["path"]).strip()
        m = _IDS.search(relpath)
        if not m:
            res.skip(csv_path, first_line, f"path {relpath!r} does not contain pNNNNNNNN/sNNNNNNNN/")
            continue
        subject, study = m.group(1), m.group(2)
        w, h = to_float(first["image_width"]), to_float(first["image_height"])
        if not w or not h or w <= 0 or h <= 0:
            res.skip(csv_path, first_line, f"image {dicom}: bad image_width/image_height {first['image_width']!r}x{first['image_height']!r}")
            continue
        path = img_root / relpath
        size = res.image_size(path, csv_path, first_line, check=check_images, default=(int(w), int(h)))
        if size is None:
            continue
        width, height = size
        boxes: list[dict[str, Any]] = []
        phrases: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        official = set()
        for line, r in rows:
            cat, phrase = str(r["category_name"]).strip(), str(r["label_text"]).strip()
            if cat not in CATEGORIES:
                res.skip(csv_path, line, f"unknown category_name {cat!r}")
                continue
            if not phrase:
                res.skip(csv_path, line, "empty label_text")
                continue
            if (to_float(r["image_width"]), to_float(r["image_height"])) != (w, h):
                res.skip(csv_path, line, f"image size differs from other rows of {dicom}")
                continue
            raw = [to_float(r[k]) for k in ("x", "y", "w", "h")]
            norm = None if None in raw else pixel_xywh_to_norm(raw, w, h, clip=False)  # type: ignore[arg-type]
            problem = box_problem(raw, norm)
            if problem:
                res.skip(csv_path, line, problem)
                continue
            bid = len(boxes)
            boxes.append(make_box(bid, cat, clip_box(norm), raw, f"xywh_px@{int(w)}x{int(h)}"))  # type: ignore[arg-type]
            phrases.setdefault((cat, phrase), []).append(bid)
            if "split" in r:
                official.add(str(r["split"]).strip())
        if not boxes:
            continue  # every row of this image was skipped (each logged above)
        findings, ground = [], []
        cats: defaultdict[str, int] = defaultdict(int)
        for (cat, phrase), ids in phrases.items():
            lat = laterality_from_text(phrase)
            if lat == "none":
                lat = laterality_from_boxes(cat, [boxes[i]["box"] for i in ids])
            findings.append(finding(cat, lat, ids, severity=severity_from_text(phrase),
                                    certainty=certainty_from_text(phrase)))
            ground.append(grounding(phrase, ids, True))
            cats[cat] += 1
        if split_source == "official":
            split = norm_split(next(iter(official), "")) if len(official) == 1 else None
            if split is None:
                res.skip(csv_path, first_line, f"image {dicom}: split column {sorted(official)} not one known split")
                continue
        elif mimic and subject in mimic:
            split = mimic[subject]
        elif split_source == "mimic":
            res.skip(csv_path, first_line, f"subject {subject} not in the MIMIC-CXR split file")
            continue
        else:
            split = hash_split(subject, seed)
        rec = new_record(
            id=f"ms_cxr-{dicom}",
            patient_id=subject,
            study_id=study,
            split=split,
            source="ms_cxr",
            image_path=str(path),
            image_width=width,
            image_height=height,
            view="",
            chexpert=chexpert_from_names(list(cats), {c: c for c in CATEGORIES}),
            findings=findings,
            boxes=boxes,
            grounding=ground,
            meta=dumps_meta({"dicom_id": dicom, "original_size": [w, h], "official_split": sorted(official),
                             "csv": csv_path.name}),
        )
        res.add(rec, csv_path, first_line)
    return res
