"""CheXpert-14 labels derived from a RadGraph-format annotation.

``chexpert_labels(annotation) -> {label: 1 | 0 | -1 | None}`` over
:data:`radlab.data.schema.CHEXPERT14`.  Conventions (following the CheXpert labeler's):

- Each *Observation* entity is mapped to at most one label, by its own tokens (``"effusion"`` →
  Pleural Effusion, ``"nodule"`` → Lung Lesion, ``"tube"`` → Support Devices, ...) or, for
  generic words (``"enlarged"``, ``"normal"``, ``"widened"``, ``"thickening"``, ...), by the anatomy
  it is ``located_at`` ("heart is enlarged" → Cardiomegaly; "mediastinum is widened" → Enlarged
  Cardiomediastinum; "pleural thickening" → Pleural Other).
- Mention value: ``Observation::definitely present`` → 1, ``definitely absent`` → 0,
  ``uncertain`` → -1.  A "normal"-type word about the heart / mediastinum ("heart size is
  normal") is a negative mention (0) of Cardiomegaly / Enlarged Cardiomediastinum.
- Several mentions of one label: positive beats uncertain beats negative (CheXpert's rule).
- ``None``: not mentioned.
- No Finding = 1 when none of the other 13 labels except Support Devices is 1 or -1, else None
  (CheXpert never writes 0 for No Finding).  An annotation with no entities at all (empty text)
  gives every label ``None``, including No Finding: nothing was reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Finding words (lower-case entity tokens, or their last word) → label.
_DIRECT: dict[str, str] = {}
for _label, _words in {
    "Atelectasis": "atelectasis atelectases atelectatic collapse collapsed",
    "Cardiomegaly": "cardiomegaly cardiomyopathy",
    "Consolidation": "consolidation consolidations consolidative consolidated",
    "Edema": "edema edematous congestion chf overload failure engorgement",
    "Fracture": "fracture fractures",
    "Lung Lesion": (
        "nodule nodules nodular mass masses lesion lesions tumor tumors neoplasm malignancy cancer carcinoma "
        "metastasis metastases metastatic"
    ),
    "Lung Opacity": (
        "opacity opacities opacification opacifications density densities infiltrate infiltrates haziness "
        "hazy reticular reticulonodular"
    ),
    "Pleural Effusion": "effusion effusions hydrothorax blunting",
    "Pneumonia": "pneumonia pna infection infectious bronchopneumonia",
    "Pneumothorax": "pneumothorax pneumothoraces hydropneumothorax",
    "Support Devices": (
        "tube tubes line lines catheter catheters picc pacemaker pacer defibrillator icd leads lead drain drains "
        "stent stents sheath port device devices wires"
    ),
}.items():
    for _w in _words.split():
        _DIRECT[_w] = _label

# Generic words whose label depends on the anatomy they are located at.
_ENLARGED = frozenset("enlarged enlargement prominent prominence widened widening large increased".split())
_NORMAL = frozenset("normal unremarkable".split())
_HEART = frozenset("heart cardiac".split())
_MEDIASTINUM = frozenset("mediastinal mediastinum cardiomediastinal".split())
_PLEURAL_OTHER = frozenset("thickening scarring plaque plaques calcification calcifications fibrothorax".split())

_VALUE = {
    "Observation::definitely present": 1,
    "Observation::definitely absent": 0,
    "Observation::uncertain": -1,
}
_PRIORITY = {1: 3, -1: 2, 0: 1}


def _words(tokens: str) -> list[str]:
    return tokens.lower().replace("-", " ").split()


def _mention(ent: dict[str, Any], ents: dict[str, Any]) -> tuple[str, int] | None:
    """(label, value) of one Observation entity, or None."""
    value = _VALUE.get(ent.get("label", ""))
    if value is None:
        return None
    words = _words(ent.get("tokens", ""))
    if not words:
        return None
    targets: set[str] = set()
    for rel, tgt in ent.get("relations", []):
        t = ents.get(tgt)
        if rel == "located_at" and t is not None:
            targets.update(_words(t.get("tokens", "")))
            # follow one modify step from the anatomy ("cardiac silhouette" → cardiac)
            for rel2, tgt2 in t.get("relations", []):
                t2 = ents.get(tgt2)
                if rel2 == "modify" and t2 is not None:
                    targets.update(_words(t2.get("tokens", "")))
    last = words[-1]
    if last in _ENLARGED or last in _NORMAL:
        flip = last in _NORMAL
        if targets & _MEDIASTINUM and not targets & _HEART:
            label = "Enlarged Cardiomediastinum"
        elif targets & _HEART:
            label = "Cardiomegaly"
        else:
            return None
        return label, (0 if flip and value == 1 else value)
    if last in _PLEURAL_OTHER and "pleural" in targets:
        return "Pleural Other", value
    for w in reversed(words):
        if w in _DIRECT:
            return _DIRECT[w], value
    return None


def chexpert_labels(annotation: dict[str, Any]) -> dict[str, int | None]:
    """CheXpert-14 labels (1 / 0 / -1 / None) from one RadGraph-format annotation (see module doc).

    ``annotation``: ``{"text": ..., "entities": {id: {"tokens", "label", "relations", ...}}}`` as
    returned by :func:`radlab.clinical.annotate` (or RadGraph itself).  Malformed input gives all
    ``None``.
    """
    # imported here: radlab.data.schema pulls in `datasets`, which annotate() alone does not need
    from radlab.data.schema import CHEXPERT14

    out: dict[str, int | None] = {name: None for name in CHEXPERT14}
    ents = annotation.get("entities") if isinstance(annotation, dict) else None
    if not isinstance(ents, dict) or not ents:
        return out
    for ent in ents.values():
        if not isinstance(ent, dict) or not str(ent.get("label", "")).startswith("Observation"):
            continue
        m = _mention(ent, ents)
        if m is None:
            continue
        label, value = m
        cur = out[label]
        if cur is None or _PRIORITY[value] > _PRIORITY[cur]:
            out[label] = value
    finding = any(out[k] in (1, -1) for k in CHEXPERT14 if k not in ("No Finding", "Support Devices"))
    out["No Finding"] = None if finding else 1
    return out


def chexpert_labels_from_text(texts: Iterable[Any]) -> list[dict[str, int | None]]:
    """``chexpert_labels(annotate([t])[0])`` for each text (cached annotation)."""
    from radlab.clinical.annotator import annotate

    return [chexpert_labels(a) for a in annotate(list(texts))]
