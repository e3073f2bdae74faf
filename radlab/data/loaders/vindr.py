"""VinDr-CXR (PhysioNet v1.0.0 layout, or the Kaggle VinBigData download as it is).

Layout (``root``)::

    annotations/annotations_{train,test}.csv    image_id, rad_id|rad_ID, class_name, x_min, y_min, x_max, y_max
                                                (also accepted at <root>/annotations_{split}.csv, or Kaggle's
                                                <root>/train.csv with the extra class_id column)
    image_resolutions_{train,test}.json         {image_id: [Rows, Columns]}  (root or annotations/; RadVLM)
    {train,test}/<image_id>.dicom               (PhysioNet's DICOMs, read directly)
    {train,test}_jpg/<image_id>.jpg | {train,test}/<image_id>.png|.jpg      (or an export)

Boxes are ``x_min, y_min, x_max, y_max`` in *original DICOM pixels*; the size is not in the CSV.
For a DICOM it is the file's own Rows/Columns.  For an export it comes from the resolutions JSON,
else (``size_from_image=True``) from the stored image's header, which is only right when the
stored image keeps the DICOM grid (RadVLM's 512² JPGs do **not**: use the JSON with them).
Rows = height, Columns = width.

Train images are read by 3 radiologists independently; ``fuse="wbf"`` (default) merges the
readers' boxes per (image, class) by weighted box fusion with all scores 1 at IoU 0.1 on
normalised coordinates, rounded to 3 decimals, as RadVLM does; ``fuse="none"`` keeps every
reader's box (reader ids in ``meta.box_readers``).  ``No finding`` rows give no boxes; the image's
``No Finding`` label is 1 only when every row of the image says so.

CheXpert-14 mapping (absent mapped class = 0, the local labels being exhaustive per reader):
Aortic enlargement → Enlarged Cardiomediastinum; Atelectasis, Cardiomegaly, Consolidation, Edema,
Lung Opacity, Pneumothorax → same; Infiltration → Lung Opacity; Nodule/Mass, Lung cavity, Lung cyst
→ Lung Lesion; Pleural effusion → Pleural Effusion; Pleural thickening → Pleural Other; Rib
fracture, Clavicle fracture → Fracture; Pneumonia (global) → Pneumonia; No finding → No Finding;
ILD, Pulmonary fibrosis, Calcification, Emphysema, Enlarged PA, Mediastinal shift, Other lesion and
the other global labels → none.

Splits.  PhysioNet layout (test annotations present): the official train/test split is kept and
``val_fraction`` of train images is hashed into validate.  VinDr has no patient ids there (images
are anonymised one per patient), so the image id stands in.

Kaggle layout (VinBigData: ``<root>/train.csv`` with ``class_id``, ``train/<image_id>.dicom``, and
no test annotations -- Kaggle's test labels were never released): the folder loads as it is.  Only
train is read, and its images are hashed into train / validate / test (80/10/10,
:func:`radlab.data.loaders._common.hash_split`, as for the other datasets without an official
split) by patient: the DICOM header's PatientID where it has one (then also the record's
``patient_id``), else the image id.  Asking for ``splits=test`` without test annotations is an
error naming the missing file.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Sequence
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
    read_csv,
    read_json,
    to_float,
)
from radlab.data.schema import new_record
from radlab.formats import box_iou, clip_box, pixel_xyxy_to_norm

LAYOUT = ("<root>/annotations/annotations_{train,test}.csv (or Kaggle's <root>/train.csv alone: train only, "
          "validate and test hashed from it), images <root>/{train,test}/<image_id>.dicom (or an export "
          "<root>/{train,test}_jpg/<image_id>.jpg | <root>/{train,test}/<image_id>.png with "
          "<root>/[annotations/]image_resolutions_{train,test}.json)")
LOCAL_LABELS = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture", "Consolidation",
    "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration", "Lung cavity", "Lung cyst", "Lung Opacity",
    "Mediastinal shift", "Nodule/Mass", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis", "Rib fracture", "Other lesion",
)
GLOBAL_LABELS = ("COPD", "Lung tumor", "Pneumonia", "Tuberculosis", "Other diseases", "Other disease", "No finding")
VINDR_TO_CHEXPERT: dict[str, str | None] = {
    "Aortic enlargement": "Enlarged Cardiomediastinum",
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Infiltration": "Lung Opacity",
    "Lung Opacity": "Lung Opacity",
    "Nodule/Mass": "Lung Lesion",
    "Lung cavity": "Lung Lesion",
    "Lung cyst": "Lung Lesion",
    "Pleural effusion": "Pleural Effusion",
    "Pleural thickening": "Pleural Other",
    "Pneumothorax": "Pneumothorax",
    "Rib fracture": "Fracture",
    "Clavicle fracture": "Fracture",
    "Pneumonia": "Pneumonia",
    "No finding": "No Finding",
}


def weighted_boxes_fusion(boxes: Sequence[Sequence[float]], iou_thr: float = 0.1) -> list[tuple[list[float], list[int]]]:
    """Fuse same-class normalised xyxy boxes (all scores 1): ``[(fused_box, member_indices)]``.

    Same clustering as ``ensemble_boxes.weighted_boxes_fusion`` with one model, unit scores and
    weights: boxes are visited in the order that library visits equal-score boxes (reverse input
    order); each joins the existing cluster whose current fused box has the highest IoU
    *strictly above* ``iou_thr``, else starts a cluster; a cluster's box is the mean of its
    members.  (The ``ensemble-boxes`` package itself is not a dependency: importing it pulls in
    numba.)
    """
    clusters: list[list[int]] = []
    fused: list[list[float]] = []
    for i in reversed(range(len(boxes))):
        b = [float(v) for v in boxes[i]]
        best, best_iou = -1, iou_thr
        for k, f in enumerate(fused):
            iou = box_iou(f, b)
            if iou > best_iou:
                best, best_iou = k, iou
        if best < 0:
            clusters.append([i])
            fused.append(b)
        else:
            clusters[best].append(i)
            members = [boxes[j] for j in clusters[best]]
            fused[best] = [sum(float(m[c]) for m in members) / len(members) for c in range(4)]
    return [(f, sorted(c)) for f, c in zip(fused, clusters)]


def _resolutions(root: Path, split: str) -> dict[str, tuple[float, float]]:
    """``image_id`` → ``(width, height)`` from ``image_resolutions_{split}.json`` ([Rows, Columns])."""
    p = find_first(root, [f"image_resolutions_{split}.json", f"annotations/image_resolutions_{split}.json"])
    if p is None:
        return {}
    data = read_json(p)
    if not isinstance(data, dict):
        raise LoaderError(f"{p}: expected a JSON object image_id -> [Rows, Columns]")
    out = {}
    for k, v in data.items():
        if isinstance(v, list) and len(v) == 2 and all(to_float(x) for x in v):
            out[str(k)] = (float(v[1]), float(v[0]))
    return out


def _finder(root: Path, split: str, image_dir: str) -> ImageFinder:
    dirs = [root / image_dir] if image_dir else [root / f"{split}_jpg", root / split, root / f"{split}_png", root]
    return ImageFinder(dirs, (".dicom", ".dcm", ".jpg", ".png", ".jpeg"))


def _has_dicoms(finder: ImageFinder) -> bool:
    """True when an image folder of ``finder`` holds DICOMs (their headers give the original size)."""
    return any(n.lower().endswith((".dicom", ".dcm")) for d in finder.dirs for n in finder._names(d))


def load_vindr(
    root: Path,
    *,
    limit: int | None = None,
    splits: tuple[str, ...] = (),
    fuse: str = "wbf",
    iou_thr: float = 0.1,
    image_dir: str = "",
    size_from_image: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load VinDr-CXR (see module docstring).  ``splits``: which official annotation files to read
    (``("train", "test")``, or one of them); empty: every one the folder has -- both for
    PhysioNet's layout, train alone (hashed into train/validate/test) for Kaggle's."""
    if fuse not in ("wbf", "none"):
        raise ValueError(f"vindr: fuse must be 'wbf' or 'none', got {fuse!r}")
    if isinstance(splits, str):
        raise ValueError(f"vindr: splits must be a list of split names such as ('train',), got the string {splits!r}")
    bad = [s for s in splits if s not in ("train", "test")]
    if bad:
        raise ValueError(f"vindr: official splits are 'train' and 'test', got {bad[0]!r}")
    files = {split: find_first(root, [f"annotations/annotations_{split}.csv", f"annotations_{split}.csv",
                                      # Kaggle's VinBigData ships the train annotations as train.csv (+ class_id).
                                      *(["train.csv"] if split == "train" else [])])
             for split in ("train", "test")}
    # No test annotations (Kaggle's download): validate and test come from train by a patient hash.
    hashed = files["test"] is None
    res = LoadResult()
    for split in splits or [s for s in ("train", "test") if files[s] is not None or s == "train"]:
        csv_path = files[split]
        if csv_path is None:
            raise FileNotFoundError(f"vindr: required file not found: {root / 'annotations' / f'annotations_{split}.csv'}"
                                    f"\nexpected layout: {LAYOUT}")
        # rad_id is optional: a consensus (test) file without reader ids is read as reader "consensus".
        table = read_csv(csv_path, ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"],
                         aliases={"rad_ID": "rad_id"})
        table.log_bad(res)
        finder = _finder(root, split, image_dir)
        sizes = _resolutions(root, split)
        if not sizes and not size_from_image and not _has_dicoms(finder):
            raise FileNotFoundError(
                f"vindr: image size source missing for split {split!r}: neither {root / f'image_resolutions_{split}.json'} "
                f"nor {root / 'annotations' / f'image_resolutions_{split}.json'} exists and the images are not DICOMs; "
                f"pass size_from_image=True only if the stored images keep the original DICOM size\nexpected layout: {LAYOUT}")
        groups: OrderedDict[str, list[tuple[int, dict[str, Any]]]] = OrderedDict()
        for line, r in table.rows:
            iid = r["image_id"].strip()
            if not iid:
                res.skip(csv_path, line, "empty image_id")
                continue
            groups.setdefault(iid, []).append((line, r))
        for iid, rows in groups.items():
            if res.full(limit):
                return res
            _load_image(res, finder, csv_path, split, iid, rows, sizes, fuse=fuse, iou_thr=iou_thr,
                        size_from_image=size_from_image, val_fraction=val_fraction, seed=seed,
                        check_images=check_images, hashed=hashed)
    return res


def _stored_image(res: LoadResult, path: Path, csv_path: Path, line: int) -> tuple[tuple[int, int] | None, str]:
    """``((width, height), DICOM PatientID or "")`` of the stored image, one header read;
    ``(None, "")`` after logging it missing or unreadable."""
    from radlab.data.images import ImageLoadError, dicom_header, is_dicom

    if not (path.is_file() and is_dicom(path)):
        return res.image_size(path, csv_path, line), ""
    try:
        head = dicom_header(path)
    except ImageLoadError:
        res.skip(csv_path, line, f"unreadable image file {path}")
        return None, ""
    return (int(head["width"]), int(head["height"])), str(head.get("patient_id", "")).strip()


def _load_image(res: LoadResult, finder: ImageFinder, csv_path: Path, split: str, iid: str,
                rows: list[tuple[int, dict]], sizes: dict[str, tuple[float, float]], *, fuse: str, iou_thr: float,
                size_from_image: bool, val_fraction: float, seed: int, check_images: bool, hashed: bool) -> None:
    first_line = rows[0][0]
    found = finder.find(iid) if (check_images or size_from_image) else None
    path = found or finder.default(iid)
    stored, dicom_patient = None, ""
    if check_images or size_from_image:
        stored, dicom_patient = _stored_image(res, path, csv_path, first_line)
        if stored is None:
            return
    from radlab.data.images import is_dicom

    # A DICOM *is* the original grid; an export needs the JSON (or size_from_image).
    own = stored is not None and (size_from_image or is_dicom(path))
    ref = sizes.get(iid) or (tuple(float(v) for v in stored) if own and stored else None)
    if ref is None:
        res.skip(csv_path, first_line, f"image {iid}: no size in image_resolutions_{split}.json")
        return
    w, h = ref
    per_class: OrderedDict[str, list[tuple[list[float], list[float], str]]] = OrderedDict()
    classes: list[str] = []
    n_nofinding = 0
    for line, r in rows:
        cls = str(r["class_name"]).strip()
        if cls == "No finding":
            n_nofinding += 1
            continue
        if cls not in LOCAL_LABELS and cls not in GLOBAL_LABELS:
            res.skip(csv_path, line, f"unknown class_name {cls!r}")
            continue
        classes.append(cls)
        if cls in GLOBAL_LABELS:
            continue  # image-level label without a box
        raw = [to_float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")]
        norm = None if None in raw else pixel_xyxy_to_norm(raw, w, h, clip=False)  # type: ignore[arg-type]
        problem = box_problem(raw, norm)
        if problem:
            res.skip(csv_path, line, problem)
            continue
        per_class.setdefault(cls, []).append((clip_box(norm), raw, r.get("rad_id", "").strip() or "consensus"))  # type: ignore[arg-type]
    if not classes and not n_nofinding:
        return  # every row skipped (logged)
    raw_format = f"xyxy_px@{int(w)}x{int(h)}"
    boxes: list[dict[str, Any]] = []
    readers: dict[int, list[str]] = {}
    by_class: dict[str, list[int]] = defaultdict(list)
    for cls, items in per_class.items():
        if fuse == "wbf":
            for fused, members in weighted_boxes_fusion([it[0] for it in items], iou_thr):
                box = clip_box([round(v, 3) for v in fused])
                if not (box[0] < box[2] and box[1] < box[3]):
                    res.skip(csv_path, first_line, f"image {iid}: fused {cls} box {box} degenerate after rounding")
                    continue
                raw_mean = [sum(items[m][1][c] for m in members) / len(members) for c in range(4)]
                bid = len(boxes)
                boxes.append(make_box(bid, cls, box, raw_mean, raw_format + ",wbf_mean"))
                readers[bid] = [items[m][2] for m in members]
                by_class[cls].append(bid)
        else:
            for box, raw, rad in items:
                bid = len(boxes)
                boxes.append(make_box(bid, cls, box, raw, raw_format))  # type: ignore[arg-type]
                readers[bid] = [rad]
                by_class[cls].append(bid)
    present = list(dict.fromkeys(classes))
    # A local class whose every box was rejected keeps its label but gets no finding entry: an
    # empty box list would read as "nothing to ground" to the task builder.  Global labels
    # (Pneumonia, COPD, ...) are image-level findings with no boxes by design.
    unlocalised = [c for c in present if c in LOCAL_LABELS and not by_class.get(c)]
    findings = [
        finding(c, laterality_from_boxes(c, [boxes[b]["box"] for b in by_class.get(c, [])]), by_class.get(c, []))
        for c in present
        if c not in unlocalised
    ]
    labels = present + (["No finding"] if n_nofinding and not present else [])
    patient = iid
    if split == "test":
        out_split = "test"
    elif hashed:
        patient = dicom_patient or iid
        out_split = hash_split(patient, seed)
    else:
        out_split = hash_split(iid, seed, (1 - val_fraction, val_fraction, 0.0))
    rec = new_record(
        id=f"vindr-{iid}",
        patient_id=patient,
        study_id=iid,
        split=out_split,
        source="vindr",
        image_path=str(path),
        image_width=int(stored[0]) if stored else int(w),
        image_height=int(stored[1]) if stored else int(h),
        view="PA",
        chexpert=chexpert_from_names(labels, VINDR_TO_CHEXPERT, covered_negative=True),
        findings=findings,
        boxes=boxes,
        meta=dumps_meta({"original_size": [w, h], "fuse": fuse, "box_readers": {str(k): v for k, v in readers.items()},
                         "readers": sorted({r.get("rad_id", "").strip() or "consensus" for _, r in rows}),
                         "n_no_finding_rows": n_nofinding, "unlocalised": unlocalised}),
    )
    res.add(rec, csv_path, first_line)
