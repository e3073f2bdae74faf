"""Chest ImaGenome silver scene graphs → anatomy boxes (``kind="anatomy"``) on MIMIC-CXR-JPG images.

Layout::

    <root>/silver_dataset/splits/{train,valid,test}.csv           dicom_id, subject_id, study_id, ...
    <root>/silver_dataset/scene_graph/<dicom_id>_SceneGraph.json  {"image_id", "patient_id", "study_id",
                                                                   "viewpoint", "objects": [...], "attributes": [...]}
    <mimic_root>/mimic-cxr-2.0.0-metadata.csv(.gz)                Rows, Columns per dicom_id (required)
    <mimic_root>/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg     images

Boxes: ``objects[].original_x1, original_y1, original_x2, original_y2`` (original DICOM pixels, xyxy)
divided by the MIMIC metadata ``Columns``/``Rows`` (as RadVLM does; the ``x1..y2`` fields are on a
224² frame and are not used).  One box per region, label = ``bbox_name``.

Findings: every ``attributes[].attributes`` string ``category|polarity|name`` of category
anatomicalfinding / disease / tubesandlines / devices with polarity ``yes`` gives a finding at that
region (laterality from the region name, box id = the region's box).  CheXpert-14 from those names
(``IMAGENOME_TO_CHEXPERT``; ``tubesandlines``/``devices`` → Support Devices): ``yes`` → 1, ``no`` → 0
unless some region says yes.  Split: the silver split file the image is listed in (``valid`` →
validate), which follows MIMIC-CXR patients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    LoaderError,
    LoadResult,
    box_problem,
    dumps_meta,
    find_first,
    finding,
    laterality_from_text,
    make_box,
    read_csv,
    read_json,
    to_float,
)
from radlab.data.loaders.mimic_cxr import image_relpath
from radlab.data.schema import empty_chexpert, new_record
from radlab.formats import clip_box, pixel_xyxy_to_norm

LAYOUT = ("<root>/silver_dataset/splits/{train,valid,test}.csv, <root>/silver_dataset/scene_graph/<dicom_id>_SceneGraph.json, "
          "<mimic_root>/mimic-cxr-2.0.0-metadata.csv(.gz), images <mimic_root>/files/...")
IMAGENOME_TO_CHEXPERT: dict[str, str] = {
    "lung opacity": "Lung Opacity",
    "airspace opacity": "Lung Opacity",
    "pleural effusion": "Pleural Effusion",
    "atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "enlarged cardiac silhouette": "Cardiomegaly",
    "pulmonary edema/hazy opacity": "Edema",
    "fluid overload/heart failure": "Edema",
    "fracture": "Fracture",
    "rib fracture": "Fracture",
    "lung lesion": "Lung Lesion",
    "mass/nodule (not otherwise specified)": "Lung Lesion",
    "mediastinal widening": "Enlarged Cardiomediastinum",
    "mediastinal displacement": "Enlarged Cardiomediastinum",
}
FINDING_CATEGORIES = ("anatomicalfinding", "disease", "tubesandlines", "devices")


def _flatten(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list):
        return [s for x in v for s in _flatten(x)]
    return []


def load_imagenome(
    root: Path,
    *,
    limit: int | None = None,
    mimic_root: str = "",
    splits: tuple[str, ...] = ("train", "valid", "test"),
    check_images: bool = True,
) -> LoadResult:
    """Load Chest ImaGenome silver scene graphs (see module docstring)."""
    silver = root / "silver_dataset"
    mroot = Path(mimic_root) if mimic_root else root
    meta_path = find_first(mroot, ["mimic-cxr-2.0.0-metadata.csv", "mimic-cxr-2.0.0-metadata.csv.gz"])
    if meta_path is None:
        raise FileNotFoundError(f"imagenome: required file not found: {mroot / 'mimic-cxr-2.0.0-metadata.csv'} "
                                f"(box normalisation needs Rows/Columns)\nexpected layout: {LAYOUT}")
    mtable = read_csv(meta_path, ["dicom_id", "Rows", "Columns", "ViewPosition"])
    meta = {r["dicom_id"].strip(): r for _, r in mtable.rows}
    res = LoadResult()
    for split_name in splits:
        spath = silver / "splits" / f"{split_name}.csv"
        if not spath.is_file():
            raise FileNotFoundError(f"imagenome: required file not found: {spath}\nexpected layout: {LAYOUT}")
        split = {"train": "train", "valid": "validate", "test": "test"}.get(split_name)
        if split is None:
            raise ValueError(f"imagenome: unknown split file {split_name!r}")
        table = read_csv(spath, ["dicom_id", "subject_id", "study_id"])
        table.log_bad(res)
        for line, r in table.rows:
            if res.full(limit):
                return res
            dicom, subject, study = (str(r[k]).strip() for k in ("dicom_id", "subject_id", "study_id"))
            sg_path = silver / "scene_graph" / f"{dicom}_SceneGraph.json"
            if not sg_path.is_file():
                res.skip(spath, line, f"missing scene graph {sg_path}")
                continue
            m = meta.get(dicom)
            cols, rows = (to_float(m["Columns"]), to_float(m["Rows"])) if m else (None, None)
            if not cols or not rows:
                res.skip(spath, line, f"no Rows/Columns for dicom_id {dicom} in {meta_path.name}")
                continue
            path = mroot / image_relpath(subject, study, dicom)
            size = res.image_size(path, spath, line, check=check_images, default=(int(cols), int(rows)))
            if size is None:
                continue
            width, height = size
            try:
                sg = read_json(sg_path)
            except LoaderError as exc:
                res.skip(spath, line, str(exc))
                continue
            if not isinstance(sg, dict):
                res.skip(sg_path, "top level", "scene graph is not a JSON object")
                continue
            boxes: list[dict[str, Any]] = []
            region_box: dict[str, int] = {}
            for k, obj in enumerate(sg.get("objects") or []):
                name = str(obj.get("bbox_name", "")).strip() if isinstance(obj, dict) else ""
                if not name:
                    res.skip(sg_path, f"objects[{k}]", "object without bbox_name")
                    continue
                raw = [to_float(obj.get(f"original_{c}")) for c in ("x1", "y1", "x2", "y2")]
                norm = None if None in raw else pixel_xyxy_to_norm(raw, cols, rows, clip=False)  # type: ignore[arg-type]
                problem = box_problem(raw, norm)
                if problem:
                    res.skip(sg_path, f"objects[{k}] {name}", problem)
                    continue
                if name in region_box:
                    res.skip(sg_path, f"objects[{k}] {name}", "duplicate region")
                    continue
                region_box[name] = len(boxes)
                boxes.append(make_box(len(boxes), name, clip_box(norm), raw, f"xyxy_px@{int(cols)}x{int(rows)}",  # type: ignore[arg-type]
                                      kind="anatomy"))
            findings: list[dict[str, Any]] = []
            chex = empty_chexpert()
            seen: set[tuple[str, str]] = set()
            for att in sg.get("attributes") or []:
                if not isinstance(att, dict):
                    continue
                region = str(att.get("bbox_name", "")).strip()
                for s in _flatten(att.get("attributes")):
                    parts = s.split("|")
                    if len(parts) != 3 or parts[0] not in FINDING_CATEGORIES:
                        continue
                    cat, pol, name = parts[0], parts[1].strip().lower(), parts[2].strip().lower()
                    target = "Support Devices" if cat in ("tubesandlines", "devices") else IMAGENOME_TO_CHEXPERT.get(name)
                    if pol == "yes":
                        if target:
                            chex[target] = 1
                        if (name, region) not in seen:
                            seen.add((name, region))
                            ids = [region_box[region]] if region in region_box else []
                            findings.append(finding(name, laterality_from_text(region), ids, region=region))
                    elif pol == "no" and target and chex[target] is None:
                        chex[target] = 0
            view = str(m["ViewPosition"]).strip().upper() if m else ""
            rec = new_record(
                id=f"imagenome-{dicom}",
                patient_id=subject,
                study_id=study,
                split=split,
                source="imagenome",
                image_path=str(path),
                image_width=width,
                image_height=height,
                view=view if view in ("PA", "AP") else "",
                chexpert=chex,
                findings=findings,
                boxes=boxes,
                meta=dumps_meta({"dicom_id": dicom, "original_size": [cols, rows], "viewpoint": sg.get("viewpoint", "")}),
            )
            res.add(rec, spath, line)
    return res
