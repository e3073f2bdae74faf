"""RadVLM instruction JSON (LLaVA style) → records.

Input: a JSON list of ``{"image": <path>, "conversations": [{"from": "human"|"gpt", "value": str}, ...],
"id": "<prefix>_<n>"[, "labels", "pathologies"]}``.  The ``<image>`` token (first human turn) is
stripped.  Boxes live in the gpt text as normalised ``[x1, y1, x2, y2]`` (2 decimals), parsed with
:func:`radlab.formats.parse_boxes`.  RadVLM ships no images: ``image`` points into the user's
MIMIC-CXR-JPG / CheXpert / VinDr / PadChest-GR copies (relative paths are joined to ``image_root``).

One record per item (an image can appear in several items; ids get ``#k`` when the JSON repeats
an id, as its up-sampled ``all_train.json`` does).  ``meta.kind`` says what the item is:

* ``grounding``: the first gpt answer has boxes → ``boxes`` (label = the question, cut to 200
  characters), one ``grounding`` entry (phrase = the question, ``groundable=True``), no
  ``findings`` (the target is only named inside free text);
* ``classification``: the item has ``labels``/``pathologies`` → CheXpert-14 names among them = 1;
* ``conversation``: several Q/A pairs without boxes;
* ``report``: one Q/A pair → ``findings_text`` = the answer (``section_method="radvlm"``).

The full conversation is kept in ``meta.conversations``.  Patient ids come from the image path
(MIMIC ``pXXXXXXXX``, CheXpert ``patientNNNNN``), else the image stem.  All items get ``split``
(RadVLM files are per split).
"""

from __future__ import annotations

import re
from pathlib import Path

from radlab.data.loaders._common import (
    LoaderError,
    LoadResult,
    dumps_meta,
    grounding,
    make_box,
    norm_split,
    read_json,
)
from radlab.data.schema import CHEXPERT14, empty_chexpert, new_record
from radlab.formats import is_valid_box, parse_boxes

LAYOUT = "<root>/<instructions>.json (a LLaVA-style list), images at <image_root>/<image> when relative"
_MIMIC = re.compile(r"p(\d{8})/s(\d{8})")
_CHEXPERT = re.compile(r"(patient\d+)/(study\d+)")


def _ids(image: str) -> tuple[str, str]:
    m = _MIMIC.search(image)
    if m:
        return m.group(1), m.group(2)
    m = _CHEXPERT.search(image)
    if m:
        return m.group(1), f"{m.group(1)}_{m.group(2)}"
    stem = Path(image).stem
    return stem, stem


def _strip_image_token(text: str) -> str:
    return text.replace("<image>", "").strip()


def load_radvlm(
    root: Path,
    *,
    limit: int | None = None,
    json_file: str = "",
    image_root: str = "",
    split: str = "train",
    check_images: bool = True,
) -> LoadResult:
    """Load one RadVLM instruction JSON (see module docstring)."""
    if json_file:
        jpath = Path(json_file) if Path(json_file).is_absolute() else root / json_file
    else:
        cands = sorted(root.glob("*.json"))
        if len(cands) != 1:
            raise FileNotFoundError(f"radvlm: expected exactly one instruction JSON in {root} (found "
                                    f"{[c.name for c in cands]}); pass json_file=\nexpected layout: {LAYOUT}")
        jpath = cands[0]
    if not jpath.is_file():
        raise FileNotFoundError(f"radvlm: required file not found: {jpath}\nexpected layout: {LAYOUT}")
    out_split = norm_split(split)
    if out_split is None:
        raise ValueError(f"radvlm: split {split!r} is not train/validate/test")
    data = read_json(jpath)
    if not isinstance(data, list):
        raise LoaderError(f"{jpath}: expected a JSON list of instruction items, got {type(data).__name__}")
    img_root = Path(image_root) if image_root else root
    res = LoadResult()
    seen: dict[str, int] = {}
    for i, item in enumerate(data):
        if res.full(limit):
            break
        row = f"[{i}]"
        if not isinstance(item, dict):
            res.skip(jpath, row, "item is not an object")
            continue
        row = f"[{i}] id={item.get('id')}"
        image, conv = item.get("image"), item.get("conversations")
        if not isinstance(image, str) or not image:
            res.skip(jpath, row, "missing 'image'")
            continue
        if not isinstance(conv, list) or not conv:
            res.skip(jpath, row, "missing or empty 'conversations'")
            continue
        turns = []
        for t in conv:
            if not isinstance(t, dict) or t.get("from") not in ("human", "gpt") or not isinstance(t.get("value"), str):
                turns = None
                break
            turns.append({"from": t["from"], "value": _strip_image_token(t["value"])})
        if not turns:
            res.skip(jpath, row, "conversation turn without from=human|gpt and a string value")
            continue
        questions = [t["value"] for t in turns if t["from"] == "human"]
        answers = [t["value"] for t in turns if t["from"] == "gpt"]
        if not questions or not answers:
            res.skip(jpath, row, "conversation lacks a human question or a gpt answer")
            continue
        path = Path(image) if Path(image).is_absolute() else img_root / image
        size = res.image_size(path, jpath, row, check=check_images)
        if size is None:
            continue
        width, height = size
        patient, study = _ids(image)
        base = str(item.get("id") or f"item{i}")
        seen[base] = seen.get(base, 0) + 1
        rid = f"radvlm-{base}" + (f"#{seen[base] - 1}" if seen[base] > 1 else "")

        question, answer = questions[0], answers[0]
        parsed = parse_boxes(answer, "norm")
        boxes, ground = [], []
        for b in parsed:
            if not is_valid_box(b):
                res.skip(jpath, row, f"degenerate box {b} in the answer")
                continue
            boxes.append(make_box(len(boxes), question[:200], b, b, "xyxy_norm_text"))
        chex = empty_chexpert()
        text_fields: dict[str, str] = {}
        names = [str(x) for x in (item.get("labels") or item.get("pathologies") or []) if isinstance(x, str)]
        if boxes:
            kind = "grounding"
            ids = [b["box_id"] for b in boxes]
            # No finding entry: the item names its target only inside free-form question text.
            ground.append(grounding(question, ids, True))
        elif "labels" in item or "pathologies" in item:
            kind = "classification"
            for n in names:
                if n in CHEXPERT14:
                    chex[n] = 1
        elif len(answers) > 1:
            kind = "conversation"
        else:
            kind = "report"
            text_fields = {"findings_text": answer, "section_method": "radvlm"}
        rec = new_record(
            id=rid,
            patient_id=patient,
            study_id=study,
            split=out_split,
            source="radvlm",
            image_path=str(path),
            image_width=width,
            image_height=height,
            chexpert=chex,
            boxes=boxes,
            grounding=ground,
            meta=dumps_meta({"kind": kind, "radvlm_id": item.get("id"), "image": image, "conversations": turns,
                             "labels": names}),
            **text_fields,
        )
        res.add(rec, jpath, row)
    return res
