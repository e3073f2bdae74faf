"""Phantom cases, part 4: a study rendered and reported becomes a schema record (:class:`Case`);
:func:`generate_case` / :func:`generate` make cases by key, :func:`minimal_pairs` the probes that
differ in one finding."""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from radlab.data import schema
from radlab.data.phantom.render import render
from radlab.data.phantom.report import _lobe, compose_report
from radlab.data.phantom.sampling import (
    GENERATOR_VERSION,
    POOL_SPLIT,
    SOURCE,
    TEST_POOLS,
    Finding,
    Patient,
    PhantomConfig,
    Study,
    _patient_key,
    _sample_finding,
    case_key,
    rng_for,
    sample_acquisition,
    sample_patient,
    sample_study,
)

# --------------------------------------------------------------------------------------------
# Cases -> records
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A generated case: the schema ``record`` and its ``image`` ``(S, S)`` uint8."""

    record: dict[str, Any]
    image: np.ndarray

    def png_bytes(self) -> bytes:
        """The image as PNG bytes (deterministic for a given Pillow version)."""
        buf = io.BytesIO()
        # Level 1: noisy X-rays barely compress further, and level 6 costs 5x the time.
        Image.fromarray(self.image).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def finding_region(f: Finding) -> str:
    """The anatomical region a finding is reported in (ImaGenome-style names where possible)."""
    sides = ["right", "left"] if f.side == "bilateral" else [f.side]
    if f.kind == "effusion":
        return " and ".join(f"{s} costophrenic angle" for s in sides)
    if f.kind == "pneumothorax":
        return f"{f.side} apical zone"
    if f.kind in ("airspace", "lesion"):
        return _lobe(f.side, f.zone)
    if f.kind == "atelectasis":
        return " and ".join(f"{s} lower lung zone" for s in sides)
    if f.kind == "cardiomegaly":
        return "cardiac silhouette"
    if f.kind == "edema":
        return "right hilar structures and left hilar structures"
    return {"endotracheal tube": "trachea", "enteric tube": "abdomen", "central venous catheter": "mediastinum"}.get(f.name, "")


def _record_id(pool: str, index: int) -> str:
    return f"phantom-{pool}-{index:06d}"


def render_case(key: str, patient: Patient, study: Study, *, pool: str, index: int, cfg: PhantomConfig,
                image_path: str = "") -> Case:
    """Render ``study`` and write its report: the schema record plus the image."""
    r = render(patient, study, cfg.image_size)
    findings_text, impression, chex, stmts = compose_report(key, study, test=pool in TEST_POOLS, cfg=cfg)
    boxes: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for f, fboxes in zip(study.findings, r.finding_boxes):
        ids = []
        for b in fboxes:
            if not (b[0] < b[2] and b[1] < b[3]):
                continue  # a mask clipped away entirely (cannot happen with the default geometry)
            ids.append(len(boxes))
            boxes.append({"box_id": len(boxes), "kind": "device" if f.kind == "devices" else "finding",
                          "label": f.name, "box": b, "raw": list(b), "raw_format": "xyxy_norm"})
        findings.append({"name": f.name, "laterality": f.side, "region": finding_region(f),
                         "severity": f.severity, "certainty": f.certainty, "box_ids": ids})
    for region, b in r.anatomy.items():
        boxes.append({"box_id": len(boxes), "kind": "anatomy", "label": region, "box": b, "raw": list(b), "raw_format": "xyxy_norm"})
    grounding = []
    for s in stmts:
        phrase = s.text.rstrip(".")
        if s.finding is not None:
            grounding.append({"phrase": phrase, "box_ids": findings[s.finding]["box_ids"], "groundable": True})
        else:
            grounding.append({"phrase": phrase, "box_ids": [], "groundable": False})
    meta = {
        "generator": GENERATOR_VERSION, "key": key, "patient_key": patient.key, "pool": pool,
        "ctr": round(study.ctr, 4), "visibility": [round(f.visibility, 4) for f in study.findings],
        "config": dataclasses.asdict(cfg),
    }
    pid = patient.key.split(":")
    rec = schema.new_record(
        id=_record_id(pool, index),
        patient_id=f"phantom-{pid[1]}-p{int(pid[2]):06d}",
        study_id=f"phantom-{pool}-s{index:06d}",
        split=POOL_SPLIT[pool],
        source=SOURCE,
        image_path=image_path,
        image_width=cfg.image_size,
        image_height=cfg.image_size,
        view="PA",
        findings_text=findings_text,
        impression_text=impression,
        section_method="template",
        chexpert=chex,
        findings=findings,
        boxes=boxes,
        grounding=grounding,
        meta=json.dumps(meta, sort_keys=True),
    )
    return Case(rec, r.image)


def generate_case(seed: int, pool: str, index: int, cfg: PhantomConfig | None = None, *, image_path: str = "") -> Case:
    """Case ``index`` of ``pool`` for ``seed``: deterministic, independent of any other case."""
    cfg = cfg or PhantomConfig()
    key = case_key(seed, pool, index)
    patient = sample_patient(_patient_key(seed, pool, index, cfg), cfg)
    study = sample_study(key, patient, cfg)
    return render_case(key, patient, study, pool=pool, index=index, cfg=cfg, image_path=image_path)


def generate(seed: int, pool: str, n: int, cfg: PhantomConfig | None = None, start: int = 0) -> list[Case]:
    """Cases ``start .. start+n-1`` of ``pool`` (single process; see ``radlab.data.build`` for pools)."""
    return [generate_case(seed, pool, i, cfg) for i in range(start, start + n)]


# --------------------------------------------------------------------------------------------
# Minimal pairs and shortcut probes
# --------------------------------------------------------------------------------------------


@dataclass
class MinimalPair:
    """Two cases on the same patient and acquisition that differ in one controlled way.

    ``kind`` is ``"presence"`` (``a`` without, ``b`` with ``finding``) or ``"laterality"``
    (``a`` and ``b`` have ``finding`` on opposite sides).  A model that ignores the image
    answers both members identically.
    """

    kind: str
    finding: str
    a: Case
    b: Case


_PAIR_KINDS = ("cardiomegaly", "effusion", "pneumothorax", "airspace", "lesion", "atelectasis", "edema")
_LATERAL_KINDS = ("effusion", "pneumothorax", "airspace", "lesion", "atelectasis")


def minimal_pairs(seed: int, n: int, cfg: PhantomConfig | None = None, *, pool: str = "test") -> list[MinimalPair]:
    """``n`` minimal pairs from ``pool`` (alternating presence and laterality pairs).

    Each pair starts from case ``i``'s patient with its other findings removed, adds one
    confidently visible finding (presence) or mirrors it to the other side (laterality).
    """
    cfg = cfg or PhantomConfig()
    out: list[MinimalPair] = []
    for i in range(n):
        key = case_key(seed, pool, i)
        patient = sample_patient(_patient_key(seed, pool, i, cfg), cfg)
        rng = rng_for(key, "pair")
        lateral = i % 2 == 1
        kind = (_LATERAL_KINDS if lateral else _PAIR_KINDS)[int(rng.integers(len(_LATERAL_KINDS if lateral else _PAIR_KINDS)))]
        conf = dataclasses.replace(cfg, p_uncertain=0.0)
        f, ctr = _sample_finding(kind, rng, patient, conf)
        if lateral and f.side == "bilateral":
            f.side = "right"
        acq = sample_acquisition(key, cfg)
        with_f = Study([f], ctr if ctr is not None else patient.base_ctr, acq)
        if lateral:
            g = dataclasses.replace(f, side="left" if f.side == "right" else "right", params=dict(f.params))
            other = Study([g], with_f.ctr, acq)
            a = render_case(key, patient, with_f, pool=pool, index=i, cfg=cfg)
            b = render_case(key, patient, other, pool=pool, index=i, cfg=cfg)
        else:
            a = render_case(key, patient, Study([], patient.base_ctr, acq), pool=pool, index=i, cfg=cfg)
            b = render_case(key, patient, with_f, pool=pool, index=i, cfg=cfg)
        for tag, c in (("a", a), ("b", b)):
            c.record["id"] = f"phantom-pair-{i:06d}-{tag}"
        out.append(MinimalPair("laterality" if lateral else "presence", f.name, a, b))
    return out
