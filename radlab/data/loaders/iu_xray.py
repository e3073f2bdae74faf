"""IU X-ray / Open-i (``ecgen-radiology/<n>.xml`` reports, NLMCXR images).

Layout (``root``)::

    ecgen-radiology/<n>.xml     (also accepted: <root>/<n>.xml)
    images/CXR<n>_<k>_IM-<a>-<b>.png   (NLMCXR_png; also accepted: <root>/<id>.png)

Each XML report has ``<AbstractText Label="FINDINGS|IMPRESSION|COMPARISON|INDICATION">``,
``<parentImage id="CXR1_1_IM-0001-3001">`` per image (frontal *and* lateral; the XML does not say
which) and ``<MeSH><major>Term/qualifier/location</major>...</MeSH>`` weak labels.

One record per ``parentImage``; a report without images is skipped with a reason.  Text:
``findings_text`` = FINDINGS, ``impression_text`` = IMPRESSION (``XXXX`` de-identification marks are
kept as is).  Findings come from MeSH ``major`` terms (name = term, laterality from the location
parts, severity from the qualifiers); CheXpert-14 from the term (``MESH_TO_CHEXPERT``), ``normal``
→ No Finding = 1.  Patient = report (``uId``); split = patient hash (no official split).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    ImageFinder,
    LoadResult,
    chexpert_from_names,
    dumps_meta,
    finding,
    hash_split,
    laterality_from_text,
    severity_from_text,
)
from radlab.data.schema import new_record

LAYOUT = "<root>/ecgen-radiology/<n>.xml (Open-i report XML), images <root>/images/<parentImage id>.png"
MESH_TO_CHEXPERT: dict[str, str | None] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "pulmonary atelectasis": "Atelectasis",
    "atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "pulmonary edema": "Edema",
    "edema": "Edema",
    "opacity": "Lung Opacity",
    "density": "Lung Opacity",
    "pulmonary congestion": "Edema",
    "stents": "Support Devices",
    "airspace disease": "Lung Opacity",
    "infiltrate": "Lung Opacity",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "lung, hyperlucent": None,
    "fractures, bone": "Fracture",
    "thickening": "Pleural Other",
    "mediastinum": "Enlarged Cardiomediastinum",
    "catheters, indwelling": "Support Devices",
    "medical device": "Support Devices",
    "implanted medical device": "Support Devices",
    "tube, inserted": "Support Devices",
    "normal": "No Finding",
}


def _parse(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"XML parse error: {exc}") from exc


def load_iu_xray(
    root: Path,
    *,
    limit: int | None = None,
    image_dir: str = "",
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load IU X-ray report XMLs (see module docstring)."""
    xml_dir = root / "ecgen-radiology" if (root / "ecgen-radiology").is_dir() else root
    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise FileNotFoundError(f"iu_xray: no report XML files in {root / 'ecgen-radiology'}\nexpected layout: {LAYOUT}")
    finder = ImageFinder([root / image_dir] if image_dir else [root / "images", root / "NLMCXR_png", root],
                         (".png", ".jpg"))
    res = LoadResult()
    for f in files:
        if res.full(limit):
            break
        try:
            doc = _parse(f)
        except ValueError as exc:
            res.skip(f, "xml", str(exc))
            continue
        uid_el = doc.find("uId")
        uid = (uid_el.get("id") if uid_el is not None else None) or f.stem
        sections = {str(el.get("Label", "")).upper(): " ".join((el.text or "").split())
                    for el in doc.iter("AbstractText")}
        images = [el.get("id") for el in doc.iter("parentImage") if el.get("id")]
        if not images:
            res.skip(f, uid, "report has no parentImage")
            continue
        majors = [(el.text or "").strip() for el in doc.iter("major") if (el.text or "").strip()]
        terms, findings = [], []
        for mj in majors:
            parts = [p.strip() for p in mj.split("/")]
            term = parts[0]
            terms.append(term)
            if term.lower() == "normal":
                continue
            rest = " ".join(parts[1:])
            findings.append(finding(term, laterality_from_text(rest), region=rest, severity=severity_from_text(rest)))
        chex = chexpert_from_names(terms, MESH_TO_CHEXPERT)
        findings_text, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
        for k, image_id in enumerate(images):
            if res.full(limit):
                break
            path = (finder.find(image_id) if check_images else None) or finder.default(image_id)
            size = res.image_size(path, f, f"parentImage[{k}] {image_id}", check=check_images)
            if size is None:
                continue
            width, height = size
            meta: dict[str, Any] = {"report_file": f.name, "mesh_major": majors,
                                    "mesh_automatic": [(el.text or "").strip() for el in doc.iter("automatic")],
                                    "indication": sections.get("INDICATION", ""),
                                    "comparison": sections.get("COMPARISON", "")}
            rec = new_record(
                id=f"iu_xray-{image_id}",
                patient_id=uid,
                study_id=uid,
                split=hash_split(uid, seed),
                source="iu_xray",
                image_path=str(path),
                image_width=width,
                image_height=height,
                findings_text=findings_text,
                impression_text=impression,
                section_method="findings" if findings_text else ("impression" if impression else ""),
                chexpert=dict(chex),
                findings=[dict(x) for x in findings],
                meta=dumps_meta(meta),
            )
            res.add(rec, f, f"parentImage[{k}] {image_id}")
    return res
