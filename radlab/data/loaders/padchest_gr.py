"""PadChest-GR grounded reports (``grounded_reports_*.json`` + ``master_table.csv``).

Layout (``root``)::

    grounded_reports_20240819.json   [{"StudyID", "ImageID", "findings": [{"sentence_en", "sentence_es",
                                       "abnormal", "boxes", "extra_boxes", "labels", "locations", "progression"}]}]
    master_table.csv                  StudyID, ImageID, PatientID, split (train/validation/test), label_group, ...
    images_grounding/<ImageID>        (also accepted: images/, PadChest_GR/, or root)

Boxes are already normalised ``[x_min, y_min, x_max, y_max]``.  Normal sentences
(``abnormal=false``) usually *omit* ``boxes``/``labels``/``locations``, so every field is read
defensively.  One record per image:

* ``findings_text``: the English sentences in order (``section_method="findings"``); the Spanish
  ones are in ``meta.sentences_es``.
* ``grounding``: one entry per sentence with its box ids; ``groundable`` = abnormal *and* boxed.
* ``findings``: one per abnormal sentence, named by its first label (else the sentence),
  laterality from ``locations`` (``loc right``/``loc left``/``loc bilateral``) else the sentence.
* CheXpert-14: mapped labels = 1 (see ``PADCHEST_TO_CHEXPERT``); ``normal`` only → No Finding = 1;
  the rest ``None``.
* ``boxes`` use the ``boxes`` field; ``extra_boxes`` are counted in ``meta`` only.  A sentence
  whose boxes were *all* rejected (logged as skips) keeps its text and labels but gets no
  grounding/finding entry (listed in ``meta.unlocalised_sentences``).

Split and patient come from ``master_table.csv`` (official, patient-safe); without that file the
StudyID stands in for the patient and the split is a hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    ImageFinder,
    LoaderError,
    LoadResult,
    box_problem,
    certainty_from_text,
    chexpert_from_names,
    dumps_meta,
    finding,
    grounding,
    hash_split,
    laterality_from_text,
    make_box,
    norm_split,
    read_csv,
    read_json,
    severity_from_text,
    to_float,
)
from radlab.data.schema import new_record
from radlab.formats import clip_box

LAYOUT = "<root>/grounded_reports_YYYYMMDD.json, <root>/master_table.csv, images <root>/images_grounding/<ImageID>"
PADCHEST_TO_CHEXPERT: dict[str, str | None] = {
    "cardiomegaly": "Cardiomegaly",
    "pleural effusion": "Pleural Effusion",
    "atelectasis": "Atelectasis", "laminar atelectasis": "Atelectasis", "lobar atelectasis": "Atelectasis",
    "segmental atelectasis": "Atelectasis", "round atelectasis": "Atelectasis",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "pneumothorax": "Pneumothorax",
    "nodule": "Lung Lesion", "multiple nodules": "Lung Lesion", "mass": "Lung Lesion", "pulmonary mass": "Lung Lesion",
    "cavitation": "Lung Lesion",
    "infiltrates": "Lung Opacity", "alveolar pattern": "Lung Opacity", "interstitial pattern": "Lung Opacity",
    "ground glass pattern": "Lung Opacity", "reticular interstitial pattern": "Lung Opacity",
    "pulmonary edema": "Edema",
    "fracture": "Fracture", "rib fracture": "Fracture", "clavicle fracture": "Fracture",
    "vertebral fracture": "Fracture", "humeral fracture": "Fracture",
    "pleural thickening": "Pleural Other", "apical pleural thickening": "Pleural Other",
    "calcified pleural thickening": "Pleural Other",
    "mediastinal enlargement": "Enlarged Cardiomediastinum", "superior mediastinal enlargement": "Enlarged Cardiomediastinum",
    "pacemaker": "Support Devices", "nsg tube": "Support Devices", "endotracheal tube": "Support Devices",
    "central venous catheter": "Support Devices", "central venous catheter via jugular vein": "Support Devices",
    "central venous catheter via subclavian vein": "Support Devices", "chest drain tube": "Support Devices",
    "tracheostomy tube": "Support Devices", "dual chamber device": "Support Devices",
    "single chamber device": "Support Devices", "electrical device": "Support Devices", "catheter": "Support Devices",
    "normal": "No Finding",
}


def _laterality(locations: list[str], sentence: str) -> str:
    locs = " ".join(str(x) for x in locations).lower()
    left, right = "left" in locs, "right" in locs
    if "bilateral" in locs or (left and right):
        return "bilateral"
    if left or right:
        return "left" if left else "right"
    return laterality_from_text(sentence)


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else []


def load_padchest_gr(
    root: Path,
    *,
    limit: int | None = None,
    json_file: str = "",
    image_dir: str = "",
    seed: int = 0,
    check_images: bool = True,
) -> LoadResult:
    """Load PadChest-GR (see module docstring)."""
    if json_file:
        jpath = root / json_file
    else:
        cands = sorted(root.glob("grounded_reports_*.json"))
        jpath = cands[-1] if cands else root / "grounded_reports_20240819.json"
    if not jpath.is_file():
        raise FileNotFoundError(f"padchest_gr: required file not found: {jpath}\nexpected layout: {LAYOUT}")
    data = read_json(jpath)
    if not isinstance(data, list):
        raise LoaderError(f"{jpath}: expected a JSON list of studies, got {type(data).__name__}")
    table: dict[str, dict[str, str]] = {}
    mpath = root / "master_table.csv"
    if mpath.is_file():
        mtable = read_csv(mpath, ["ImageID", "PatientID", "split"])
        for _, r in mtable.rows:  # one row per (study, label): the first row of an image is enough
            table.setdefault(str(r["ImageID"]).strip(), r)
    res = LoadResult()
    finder = ImageFinder([root / image_dir] if image_dir else
                         [root / "images_grounding", root / "images", root / "PadChest_GR", root])

    for i, item in enumerate(data):
        if res.full(limit):
            break
        row = f"[{i}]"
        if not isinstance(item, dict) or not item.get("ImageID"):
            res.skip(jpath, row, "entry without ImageID")
            continue
        image_id = str(item["ImageID"]).strip()
        row = f"[{i}] ImageID={image_id}"
        study = str(item.get("StudyID", "")).strip()
        sentences = _as_list(item.get("findings"))
        if table:
            t = table.get(image_id)
            if t is None:
                res.skip(jpath, row, f"ImageID not in {mpath.name}")
                continue
            patient, split = str(t["PatientID"]).strip(), norm_split(t["split"])
            if split is None or not patient:
                res.skip(mpath, f"ImageID={image_id}", f"bad split {t['split']!r} or empty PatientID")
                continue
        else:
            patient = study or image_id
            split = hash_split(patient, seed)
        path = (finder.find(image_id) if check_images else None) or finder.default(image_id)
        size = res.image_size(path, jpath, row, check=check_images)
        if size is None:
            continue
        width, height = size
        boxes, findings, ground, texts, texts_es, labels = [], [], [], [], [], []
        n_extra = 0
        unlocalised: list[str] = []
        for k, s in enumerate(sentences):
            if not isinstance(s, dict):
                res.skip(jpath, f"{row} findings[{k}]", "sentence is not an object")
                continue
            text = str(s.get("sentence_en") or "").strip()
            if not text:
                res.skip(jpath, f"{row} findings[{k}]", "empty sentence_en")
                continue
            texts.append(text)
            texts_es.append(str(s.get("sentence_es") or ""))
            abnormal = bool(s.get("abnormal", False))
            ids: list[int] = []
            for j, b in enumerate(_as_list(s.get("boxes"))):
                raw = [to_float(v) for v in b] if isinstance(b, list) and len(b) == 4 else [None] * 4
                problem = box_problem(raw, None if None in raw else raw)  # type: ignore[arg-type]
                if problem:
                    res.skip(jpath, f"{row} findings[{k}].boxes[{j}]", problem)
                    continue
                bid = len(boxes)
                sent_labels = [str(x) for x in _as_list(s.get("labels"))]
                boxes.append(make_box(bid, sent_labels[0] if sent_labels else text, clip_box(raw), raw, "xyxy_norm"))  # type: ignore[arg-type]
                ids.append(bid)
            n_extra += len(_as_list(s.get("extra_boxes")))
            sent_labels = [str(x) for x in _as_list(s.get("labels"))]
            labels += sent_labels
            if _as_list(s.get("boxes")) and not ids:
                # Boxed in the source but every box was rejected (each logged): a box-less grounding
                # entry would teach "nothing to point at", so the sentence stays text only.
                unlocalised.append(text)
                continue
            ground.append(grounding(text, ids, abnormal and bool(ids)))
            if abnormal:
                findings.append(finding(sent_labels[0] if sent_labels else text,
                                        _laterality(_as_list(s.get("locations")), text), ids,
                                        severity=severity_from_text(text), certainty=certainty_from_text(text)))
        if not texts:
            res.skip(jpath, row, "no usable sentences")
            continue
        if not findings:
            labels.append("normal")
        chex = chexpert_from_names([lab for lab in labels if lab != "normal" or not findings], PADCHEST_TO_CHEXPERT)
        rec = new_record(
            id=f"padchest_gr-{Path(image_id).stem}",
            patient_id=patient,
            study_id=study or image_id,
            split=split,
            source="padchest_gr",
            image_path=str(path),
            image_width=width,
            image_height=height,
            findings_text=" ".join(texts),
            section_method="findings",
            chexpert=chex,
            findings=findings,
            boxes=boxes,
            grounding=ground,
            meta=dumps_meta({"image_id": image_id, "sentences_es": texts_es, "n_extra_boxes": n_extra,
                             "labels": sorted(set(labels)), "unlocalised_sentences": unlocalised}),
        )
        res.add(rec, jpath, row)
    return res
