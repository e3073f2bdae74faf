"""Shortcut baselines: how far a model gets without reading the right image.

They run on any data source (phantom or real), from the data stage's training records and its
evaluation rows:

* ``text_only`` — image-blind answers: the most frequent training report for report rows
  (:func:`text_only_prior`), the mean training box of the named finding for grounding rows
  (:func:`grounding_prior`); :func:`text_only_predictions` writes them for evaluation rows.
* ``shuffled_image`` — a trained model reading a derangement of the evaluation images
  (:func:`shuffled_images`): what it keeps of its score does not need the right image.
* :func:`label_marginal_report` — the best constant report under the CheXpert label marginals.

The analysis scores them like models (:func:`radlab.evaluation.shortcut_frames`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radlab.data import schema
from radlab.formats import format_boxes

# The baselines' model names in the analysis tables.
SHORTCUT_MODELS = ("text_only", "shuffled_image")


def text_only_prior(train_records: Iterable[Mapping[str, Any]]) -> str:
    """The most frequent training report (``schema.report_text``); ties broken alphabetically."""
    counts = Counter(schema.report_text(r) for r in train_records)
    if not counts:
        raise ValueError("text_only_prior: no training records")
    best = max(counts.values())
    return min(t for t, c in counts.items() if c == best)


def label_marginal_report(train_records: Iterable[Mapping[str, Any]]) -> str:
    """The best constant report under the label marginals: for each CheXpert label, state its
    most frequent mention state (positive, negative; unmentioned states are left out).

    Built from one canonical sentence per label, so it scores what a prior-only model can.
    """
    recs = list(train_records)
    if not recs:
        raise ValueError("label_marginal_report: no training records")
    canon = {
        ("Cardiomegaly", 1): "The heart is enlarged.", ("Cardiomegaly", 0): "Heart size is normal.",
        ("Pleural Effusion", 1): "Small right pleural effusion.", ("Pleural Effusion", 0): "No pleural effusion.",
        ("Pneumothorax", 1): "Small right apical pneumothorax.", ("Pneumothorax", 0): "No pneumothorax.",
        ("Consolidation", 1): "Consolidation in the right lower lobe.", ("Consolidation", 0): "No focal consolidation.",
        ("Lung Opacity", 1): "Patchy opacity in the right lower lobe.", ("Lung Opacity", 0): "No focal opacity.",
        ("Lung Lesion", 1): "Nodule in the right upper lobe.", ("Lung Lesion", 0): "No pulmonary nodules.",
        ("Atelectasis", 1): "Bibasilar atelectasis.", ("Atelectasis", 0): "No atelectasis.",
        ("Edema", 1): "Mild pulmonary edema.", ("Edema", 0): "No pulmonary edema.",
    }
    out = []
    for label in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Lung Opacity", "Lung Lesion",
                  "Atelectasis", "Edema"):
        states = Counter(r["chexpert"].get(label) for r in recs)
        state, _ = max(states.items(), key=lambda kv: (kv[1], -1 if kv[0] is None else kv[0]))
        if state in (0, 1):
            out.append(canon[(label, state)])
    return " ".join(out) or "Heart size is normal."


def grounding_prior(train_records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Text-only grounding prior: label -> mean training box (finding, device and anatomy labels).

    ``{"pleural effusion": [x0, y0, x1, y1], ...}``, each the coordinate-wise mean.
    """
    acc: dict[str, list[np.ndarray]] = {}
    for r in train_records:
        for b in r["boxes"]:
            acc.setdefault(b["label"], []).append(np.asarray(b["box"], dtype=np.float64))
    return {k: [round(float(x), 4) for x in np.mean(np.stack(v), axis=0)] for k, v in sorted(acc.items())}


def shuffled_images(dataset: Any, seed: int = 0, image_column: str = "image") -> Any:
    """A copy of a ``datasets.Dataset`` whose ``image_column`` is a derangement of the original
    (no row keeps its own image when ``len >= 2``): the shuffled-image-pairing baseline."""
    import datasets as hfds

    n = len(dataset)
    rng = np.random.Generator(np.random.PCG64(seed))
    perm = rng.permutation(n)
    if n >= 2:
        fixed = np.flatnonzero(perm == np.arange(n))
        for i in fixed:  # swap fixed points with a neighbour: still a permutation, now fixed-point free
            j = (i + 1) % n
            perm[i], perm[j] = perm[j], perm[i]
    images = dataset.select_columns([image_column]).select(perm.tolist()).flatten_indices()
    rest = dataset.remove_columns([image_column])
    out = hfds.concatenate_datasets([rest, images], axis=1)
    return out.select_columns(list(dataset.column_names))


def train_records(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The unified training records of ``<data_dir>/records`` (split ``train``), images not decoded."""
    from radlab.data.build import open_saved

    path = Path(data_dir) / "records" / "dataset"  # the data stage's layout (records/ also holds images/)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    recs = open_saved(path)  # the filter below writes nothing into the data folder
    if hasattr(recs, "keys"):
        recs = recs["train"]
    else:
        recs = recs.filter(lambda s: s == "train", input_columns="split")
    cols = [c for c in recs.column_names if c in ("id", "split", "source", "findings_text", "impression_text",
                                                  "section_method", "chexpert", "boxes", "findings")]
    return [dict(r) for r in recs.select_columns(cols)]


def text_only_predictions(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]) -> tuple[list[str], str]:
    """Image-blind answers from the training prior.

    Report rows: the most frequent training report (:func:`text_only_prior`).  Grounding rows: the
    mean training box of the finding named in the row (:func:`grounding_prior`), in the row's box
    format; ``""`` when the prior has no box for that name.  Returns ``(predictions, note)``.
    """
    report = text_only_prior(records)
    boxes = {k.lower(): v for k, v in grounding_prior(records).items()}
    preds, unknown = [], 0
    for r in rows:
        if r["task"] == "report":
            preds.append(report)
            continue
        box = boxes.get(str(r.get("finding", "")).lower())
        if box is None:
            unknown += 1
            preds.append("")
        else:
            preds.append(format_boxes([box], r.get("box_format") or "norm"))
    n_ground = sum(r["task"] == "grounding" for r in rows)
    note = f"text_only: {unknown} of {n_ground} grounding rows name nothing with a training box; answered ''" if unknown else ""
    return preds, note


__all__ = ["SHORTCUT_MODELS", "grounding_prior", "label_marginal_report", "shuffled_images", "text_only_predictions",
           "text_only_prior", "train_records"]
