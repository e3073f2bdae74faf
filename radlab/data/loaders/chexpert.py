"""CheXpert v1.0 (label CSVs) and CheXpert Plus (reports with pre-split sections + CheXbert labels).

**CheXpert** (``load_chexpert``), layout::

    <root>/train.csv, <root>/valid.csv [, <root>/test.csv]
        Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, Enlarged Cardiomediastinum, ..., Support Devices
    <root>/train/patient00001/study1/view1_frontal.jpg ...

``Path`` starts with ``CheXpert-v1.0-small/`` or ``CheXpert-v1.0/``; that prefix is stripped and
the rest is joined to ``root``.  Labels are ``1.0``/``0.0``/``-1.0``/blank → 1/0/-1/None (the
labels *are* CheXpert-14).  ``train.csv`` → train, ``valid.csv`` → ``valid_as`` (default
``validate``; many works use it as test), ``test.csv`` → test.  No report text.

**CheXpert Plus** (``load_chexpert_plus``), layout::

    <root>/df_chexpert_plus_240401.csv   path_to_image, frontal_lateral, ap_pa, deid_patient_id,
                                         section_findings, section_impression, ..., split (train/valid)
    <root>/chexbert_labels/report_fixed.json    JSON lines {"path_to_image": ..., <14 labels>: 1/0/-1/null}
    <root>/<path_to_image> (``.jpg`` in the CSV; the PNG release is found by swapping the suffix)

Sections are already split into columns: ``findings_text`` = ``section_findings``,
``impression_text`` = ``section_impression`` (``section_method`` says which one the report
target is); ``valid`` → ``valid_as``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    LoaderError,
    LoadResult,
    chexpert_value,
    dumps_meta,
    finding,
    norm_split,
    read_csv,
)
from radlab.data.schema import CHEXPERT14, empty_chexpert, new_record

LAYOUT = "<root>/train.csv, <root>/valid.csv (CheXpert v1.0 label CSVs), images <root>/train/patientNNNNN/studyN/viewN_*.jpg"
PLUS_LAYOUT = ("<root>/df_chexpert_plus_240401.csv, optional <root>/chexbert_labels/report_fixed.json (JSON lines), "
               "images <root>/<path_to_image>")
_PREFIX = re.compile(r"^CheXpert-v1\.0(-small)?/")
_IDS = re.compile(r"(patient\d+)/(study\d+)")


def _findings_from_labels(chex: dict[str, int | None]) -> list[dict[str, Any]]:
    return [finding(n, certainty="present" if v == 1 else "uncertain")
            for n, v in chex.items() if v in (1, -1) and n != "No Finding"]



def load_chexpert(
    root: Path,
    *,
    limit: int | None = None,
    files: tuple[str, ...] = ("train.csv", "valid.csv"),
    valid_as: str = "validate",
    only_frontal: bool = False,
    check_images: bool = True,
) -> LoadResult:
    """Load CheXpert v1.0 label CSVs (see module docstring)."""
    res = LoadResult()
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"chexpert: required file not found: {path}\nexpected layout: {LAYOUT}")
        split = {"train": "train", "valid": norm_split(valid_as), "test": "test"}.get(Path(name).stem)
        if split is None:
            raise ValueError(f"chexpert: cannot tell the split of {name!r} (expected train/valid/test.csv) "
                             f"or bad valid_as={valid_as!r}")
        table = read_csv(path, ["Path", "Frontal/Lateral", "AP/PA", *CHEXPERT14])
        table.log_bad(res)
        for line, r in table.rows:
            if res.full(limit):
                return res
            rel = _PREFIX.sub("", str(r["Path"]).strip())
            m = _IDS.search(rel)
            if not m:
                res.skip(path, line, f"Path {r['Path']!r} has no patientNNNNN/studyN")
                continue
            fl, appa = str(r["Frontal/Lateral"]).strip(), str(r["AP/PA"]).strip().upper()
            if only_frontal and fl != "Frontal":
                continue
            try:
                chex = {n: chexpert_value(r[n]) for n in CHEXPERT14}
            except ValueError as exc:
                res.skip(path, line, str(exc))
                continue
            img = root / rel
            size = res.image_size(img, path, line, check=check_images)
            if size is None:
                continue
            width, height = size
            view = "LATERAL" if fl == "Lateral" else (appa if appa in ("PA", "AP") else "")
            rec = new_record(
                id=f"chexpert-{m.group(1)}_{m.group(2)}_{Path(rel).stem}",
                patient_id=m.group(1),
                study_id=f"{m.group(1)}_{m.group(2)}",
                split=split,
                source="chexpert",
                image_path=str(img),
                image_width=width,
                image_height=height,
                view=view,
                chexpert=chex,
                findings=_findings_from_labels(chex),
                meta=dumps_meta({"path": r["Path"], "sex": r.get("Sex", ""), "age": r.get("Age", ""),
                                 "frontal_lateral": fl, "ap_pa": appa}),
            )
            res.add(rec, path, line)
    return res


def _read_jsonl_labels(path: Path, res: LoadResult) -> dict[str, dict[str, int | None]]:
    out: dict[str, dict[str, int | None]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                key = str(obj["path_to_image"]).strip()
                out[key] = {c: chexpert_value(obj.get(c)) for c in CHEXPERT14}
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                res.skip(path, n, f"bad label line: {exc}")
    return out


def load_chexpert_plus(
    root: Path,
    *,
    limit: int | None = None,
    labels_file: str = "chexbert_labels/report_fixed.json",
    valid_as: str = "validate",
    only_frontal: bool = False,
    check_images: bool = True,
) -> LoadResult:
    """Load CheXpert Plus (see module docstring)."""
    path = root / "df_chexpert_plus_240401.csv"
    if not path.is_file():
        cands = sorted(root.glob("df_chexpert_plus_*.csv"))
        if not cands:
            raise FileNotFoundError(f"chexpert_plus: required file not found: {path}\nexpected layout: {PLUS_LAYOUT}")
        path = cands[-1]
    res = LoadResult()
    lpath = root / labels_file
    labels = _read_jsonl_labels(lpath, res) if labels_file and lpath.is_file() else {}
    table = read_csv(path, ["path_to_image", "frontal_lateral", "section_findings", "section_impression", "split"])
    if not table.rows:
        raise LoaderError(f"{path}: no data rows")
    table.log_bad(res)
    for line, r in table.rows:
        if res.full(limit):
            break
        rel = str(r["path_to_image"]).strip()
        m = _IDS.search(rel)
        if not m:
            res.skip(path, line, f"path_to_image {rel!r} has no patientNNNNN/studyN")
            continue
        split = norm_split(valid_as) if str(r["split"]).strip() == "valid" else norm_split(r["split"])
        if split is None:
            res.skip(path, line, f"unknown split {r['split']!r}")
            continue
        fl = str(r["frontal_lateral"]).strip()
        if only_frontal and fl != "Frontal":
            continue
        findings_text = " ".join(str(r["section_findings"]).split())
        impression = " ".join(str(r["section_impression"]).split())
        img = root / rel
        if not img.is_file() and img.with_suffix(".png").is_file():
            img = img.with_suffix(".png")
        size = res.image_size(img, path, line, check=check_images)
        if size is None:
            continue
        width, height = size
        chex = labels.get(rel, empty_chexpert())
        appa = str(r.get("ap_pa", "")).strip().upper()
        rec = new_record(
            id=f"chexpert_plus-{m.group(1)}_{m.group(2)}_{Path(rel).stem}",
            patient_id=str(r.get("deid_patient_id", "")).strip() or m.group(1),
            study_id=f"{m.group(1)}_{m.group(2)}",
            split=split,
            source="chexpert_plus",
            image_path=str(img),
            image_width=width,
            image_height=height,
            view="LATERAL" if fl == "Lateral" else (appa if appa in ("PA", "AP") else ""),
            findings_text=findings_text,
            impression_text=impression,
            section_method="findings" if findings_text else ("impression" if impression else ""),
            chexpert=dict(chex),
            findings=_findings_from_labels(chex),
            meta=dumps_meta({"path_to_image": rel, "has_labels": rel in labels,
                             "end_of_impression": str(r.get("section_end_of_impression", "")).strip()}),
        )
        res.add(rec, path, line)
    return res
