"""The unified sample schema: one record per image, whatever the source dataset.

Every loader (phantom or real) emits plain dicts of this shape; :func:`validate_record`
checks the invariants and :data:`FEATURES` stores them as a Hugging Face ``datasets`` table
(Arrow on disk).  A record looks like::

    {
      "id": "phantom-train-000017", "patient_id": "phantom-p000017", "study_id": "...",
      "split": "train" | "validate" | "test", "source": "phantom" | "mimic_cxr" | ...,
      "image_path": "/abs/or/relative.png", "image_width": 256, "image_height": 256,
      "view": "PA" | "AP" | "LATERAL" | "",
      "findings_text": "...", "impression_text": "...", "section_method": "findings",
      "chexpert": {"Atelectasis": 1 | 0 | -1 | None, ... 14 keys},   # None = not mentioned
      "findings": [{"name", "laterality", "region", "severity", "certainty", "box_ids"}],
      "boxes": [{"box_id", "kind", "label", "box": [x0,y0,x1,y1] in [0,1], "raw": [4], "raw_format"}],
      "grounding": [{"phrase", "box_ids", "groundable"}],
      "meta": "{json string of anything source specific}",
    }

Boxes are normalised ``[x0, y0, x1, y1]`` on the *stored* image; ``raw`` keeps the source's
own numbers (``raw_format`` says which convention, e.g. ``"xywh_px@1024x1024"``) for audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import datasets

CHEXPERT14 = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
# CheXbert's "5" subset used by the 5-label micro/macro F1.
CHEXPERT5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

SPLITS = ("train", "validate", "test")
LATERALITIES = ("left", "right", "bilateral", "none")
CERTAINTIES = ("present", "uncertain")
BOX_KINDS = ("finding", "anatomy", "device")

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "patient_id": datasets.Value("string"),
        "study_id": datasets.Value("string"),
        "split": datasets.Value("string"),
        "source": datasets.Value("string"),
        "image_path": datasets.Value("string"),
        "image_width": datasets.Value("int32"),
        "image_height": datasets.Value("int32"),
        "view": datasets.Value("string"),
        "findings_text": datasets.Value("string"),
        "impression_text": datasets.Value("string"),
        "section_method": datasets.Value("string"),
        "chexpert": {name: datasets.Value("int8") for name in CHEXPERT14},
        "findings": datasets.List(
            {
                "name": datasets.Value("string"),
                "laterality": datasets.Value("string"),
                "region": datasets.Value("string"),
                "severity": datasets.Value("string"),
                "certainty": datasets.Value("string"),
                "box_ids": datasets.List(datasets.Value("int32")),
            }
        ),
        "boxes": datasets.List(
            {
                "box_id": datasets.Value("int32"),
                "kind": datasets.Value("string"),
                "label": datasets.Value("string"),
                "box": datasets.List(datasets.Value("float32"), length=4),
                "raw": datasets.List(datasets.Value("float32")),
                "raw_format": datasets.Value("string"),
            }
        ),
        "grounding": datasets.List(
            {
                "phrase": datasets.Value("string"),
                "box_ids": datasets.List(datasets.Value("int32")),
                "groundable": datasets.Value("bool"),
            }
        ),
        "meta": datasets.Value("string"),
    }
)


class SchemaError(ValueError):
    """A record breaks the unified schema; the message names the record id and the field."""


def empty_chexpert() -> dict[str, int | None]:
    """All 14 labels "not mentioned"."""
    return {name: None for name in CHEXPERT14}


def new_record(**fields: Any) -> dict[str, Any]:
    """A record with every field defaulted, overridden by ``fields`` (unknown keys raise)."""
    rec: dict[str, Any] = {
        "id": "",
        "patient_id": "",
        "study_id": "",
        "split": "train",
        "source": "",
        "image_path": "",
        "image_width": 0,
        "image_height": 0,
        "view": "",
        "findings_text": "",
        "impression_text": "",
        "section_method": "",
        "chexpert": empty_chexpert(),
        "findings": [],
        "boxes": [],
        "grounding": [],
        "meta": "{}",
    }
    unknown = set(fields) - set(rec)
    if unknown:
        raise SchemaError(f"unknown record field(s): {sorted(unknown)}")
    rec.update(fields)
    return rec


def validate_record(rec: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaError` naming the record and field if an invariant is broken.

    Invariants: required ids present; split known; boxes inside [0,1] with x0<x1, y0<y1;
    box ids unique; every ``box_ids`` reference in findings/grounding resolves; chexpert
    values in {1, 0, -1, None} over exactly the 14 names.
    """
    rid = rec.get("id") or "<no id>"

    def fail(field: str, msg: str) -> None:
        raise SchemaError(f"record {rid!r}: field {field!r}: {msg}")

    missing = set(FEATURES) - set(rec)
    if missing:
        fail(sorted(missing)[0], "missing")
    for key in ("id", "patient_id", "source"):
        if not rec[key]:
            fail(key, "empty")
    if rec["split"] not in SPLITS:
        fail("split", f"{rec['split']!r} not in {SPLITS}")
    chex = rec["chexpert"]
    if set(chex) != set(CHEXPERT14):
        fail("chexpert", f"keys differ from CheXpert-14: {sorted(set(chex) ^ set(CHEXPERT14))}")
    for name, v in chex.items():
        if v not in (1, 0, -1, None):
            fail(f"chexpert.{name}", f"value {v!r} not in 1/0/-1/None")
    ids: set[int] = set()
    for i, b in enumerate(rec["boxes"]):
        if b["box_id"] in ids:
            fail(f"boxes[{i}].box_id", f"duplicate id {b['box_id']}")
        ids.add(b["box_id"])
        if b["kind"] not in BOX_KINDS:
            fail(f"boxes[{i}].kind", f"{b['kind']!r} not in {BOX_KINDS}")
        box = b["box"]
        if len(box) != 4 or not all(0.0 <= float(v) <= 1.0 for v in box):
            fail(f"boxes[{i}].box", f"{box} not 4 values in [0,1]")
        if not (box[0] < box[2] and box[1] < box[3]):
            fail(f"boxes[{i}].box", f"{box} needs x0<x1 and y0<y1")
    for group in ("findings", "grounding"):
        for i, item in enumerate(rec[group]):
            for bid in item["box_ids"]:
                if bid not in ids:
                    fail(f"{group}[{i}].box_ids", f"box id {bid} does not resolve")
    for i, f in enumerate(rec["findings"]):
        if f["laterality"] not in LATERALITIES:
            fail(f"findings[{i}].laterality", f"{f['laterality']!r} not in {LATERALITIES}")
        if f["certainty"] not in CERTAINTIES:
            fail(f"findings[{i}].certainty", f"{f['certainty']!r} not in {CERTAINTIES}")


def report_text(rec: Mapping[str, Any]) -> str:
    """The report-generation target: findings, else impression (``section_method`` says which)."""
    return (rec.get("findings_text") or rec.get("impression_text") or "").strip()


def to_dataset(records: Iterable[Mapping[str, Any]]) -> datasets.Dataset:
    """Validate every record and build an Arrow-backed dataset with :data:`FEATURES`."""
    rows = []
    for rec in records:
        validate_record(rec)
        rows.append(dict(rec))
    return datasets.Dataset.from_list(rows, features=FEATURES)
