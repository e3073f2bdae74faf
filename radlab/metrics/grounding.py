"""Grounding metrics per sample: mAP@0.5, mAP@.5:.95, matched IoU, Acc@0.5, box soft-F1.

See :mod:`radlab.metrics` for the definitions and :func:`box_metrics` for the empty cases.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from radlab.formats import parse_boxes
from radlab.metrics.answers import answers_of

Box = list[float]
GROUNDING_METRICS = ("map50", "map50_95", "mean_iou", "acc50", "box_soft_f1", "mean_chars")


def iou_matrix(pred: Sequence[Sequence[float]], gt: Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise IoU ``(P, 4), (G, 4) -> (P, G)``; the formula of :func:`radlab.formats.box_iou`, vectorised."""
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0])
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = np.clip(p[:, 2] - p[:, 0], 0, None) * np.clip(p[:, 3] - p[:, 1], 0, None)
    area_g = np.clip(g[:, 2] - g[:, 0], 0, None) * np.clip(g[:, 3] - g[:, 1], 0, None)
    union = area_p[:, None] + area_g[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _empty_case(n_pred: int, n_gt: int, answered: bool) -> float | None:
    """Score when either side has no box; ``None`` when both have boxes (score normally).

    Both empty and an answer was given -> 1.0 (a correct "no finding"; the paper's code gives 0).
    """
    if n_pred and n_gt:
        return None
    return 1.0 if (n_pred == 0 and n_gt == 0 and answered) else 0.0


def soft_f1(pred: Sequence[Box], gt: Sequence[Box], answered: bool = True) -> float:
    """The official grounding reward: Hungarian soft-F1 (min_iou 0), plus "no finding" credit.

    Hungarian matching (``scipy.optimize.linear_sum_assignment``, maximising IoU) pairs
    min(n_pred, n_gt) boxes; pairs with IoU > 0 are valid.  TP_mass = sum of valid IoUs,
    FP = n_pred - #valid, R = TP_mass / n_gt, P = TP_mass / (TP_mass + FP), F1 = 2PR / (P + R).

    This is the *code's* definition.  The paper's Figure 1 disagrees: for pred
    [0.35, 0.51, 0.75, 0.64] vs GT [0.38, 0.47, 0.76, 0.62] (IoU 0.596) the figure shows 0.6 (= the
    IoU, as if P = TP_mass / n_pred) while the code gives P = 1, R = 0.596, F1 = 0.747.  The code's
    epsilons (1e-8) are dropped; zero denominators give 0.
    """
    special = _empty_case(len(pred), len(gt), answered)
    if special is not None:
        return special
    m = iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(m, maximize=True)
    ious = m[rows, cols]
    valid = ious > 0
    tp = float(ious[valid].sum())
    if tp <= 0:
        return 0.0
    fp = len(pred) - int(valid.sum())
    recall = tp / len(gt)
    precision = tp / (tp + fp)
    return 2 * precision * recall / (precision + recall)


def matched_iou(pred: Sequence[Box], gt: Sequence[Box], answered: bool = True) -> float:
    """Mean over GT boxes of the IoU of its partner in the best one-to-one (Hungarian) matching.

    Unmatched GT boxes count 0; extra predictions are not penalised (``soft_f1`` does that).
    """
    special = _empty_case(len(pred), len(gt), answered)
    if special is not None:
        return special
    m = iou_matrix(pred, gt)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / len(gt))


def acc_at(pred: Sequence[Box], gt: Sequence[Box], threshold: float = 0.5, answered: bool = True) -> float:
    """Fraction of GT boxes a one-to-one matching can cover with IoU >= ``threshold`` (``acc50``).

    The matching maximises the number of covered GT boxes (Hungarian on the 0/1 hit matrix).  With
    one GT box this is "some predicted box has IoU >= 0.5".  Extra predictions are not penalised.
    """
    special = _empty_case(len(pred), len(gt), answered)
    if special is not None:
        return special
    hits = (iou_matrix(pred, gt) >= threshold).astype(np.float64)
    rows, cols = linear_sum_assignment(hits, maximize=True)
    return float(hits[rows, cols].sum() / len(gt))


def ap_voc(
    pred: Sequence[Box], gt: Sequence[Box], threshold: float = 0.5, answered: bool = True, *, unmatched_only: bool = False
) -> float:
    """The paper's per-sample AP (``evaluate_boxes``; mAP@0.5 is its mean over samples).

    Predictions are taken in output order (there are no confidences).  Each is matched to its
    best-IoU GT box (over *all* GT boxes, as VOC and the paper's code do); it is a TP if that IoU >=
    ``threshold`` and the GT box is not matched yet, else an FP.  ``unmatched_only=True`` instead
    matches each prediction to the best-IoU GT box *not yet matched* (a duplicate can then still
    find a second GT box).  AP is the VOC all-point area under the monotone precision envelope.  Either side empty -> 0 (the paper), both empty and answered ->
    1 (radlab's fix).
    """
    special = _empty_case(len(pred), len(gt), answered)
    if special is not None:
        return special
    m = iou_matrix(pred, gt)
    taken = np.zeros(len(gt), dtype=bool)
    tp = np.zeros(len(pred))
    for i in range(len(pred)):
        j = int(np.argmax(np.where(taken, -1.0, m[i]) if unmatched_only else m[i]))
        if m[i, j] >= threshold and not taken[j]:
            taken[j] = True
            tp[i] = 1.0
    ctp = np.cumsum(tp)
    recall = ctp / len(gt)
    precision = ctp / np.arange(1, len(pred) + 1)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


_COCO_SCALE = 1000.0  # boxes go to COCO in pixels of a 1000x1000 image (only area buckets care)


def ap_coco(pred: Sequence[Box], gt: Sequence[Box], answered: bool = True) -> float:
    """Per-sample COCO AP@[.5:.95] (``map50_95``) with faster-coco-eval.

    Predictions carry no confidences, so output order is the ranking: the k-th box gets score
    1 / (k + 1) (COCO keeps the first 100).  One image per call, so the value is a per-sample AP
    (COCO's 101-point interpolation), averaged over samples like ``map50``.
    """
    special = _empty_case(len(pred), len(gt), answered)
    if special is not None:
        return special
    from faster_coco_eval import COCO, COCOeval_faster

    def xywh(b: Sequence[float]) -> list[float]:
        return [b[0] * _COCO_SCALE, b[1] * _COCO_SCALE, (b[2] - b[0]) * _COCO_SCALE, (b[3] - b[1]) * _COCO_SCALE]

    anns = []
    for i, b in enumerate(gt):
        box = xywh(b)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    coco_gt = COCO(
        {
            "images": [{"id": 1, "width": int(_COCO_SCALE), "height": int(_COCO_SCALE)}],
            "categories": [{"id": 1, "name": "finding"}],
            "annotations": anns,
        }
    )
    dets = [{"image_id": 1, "category_id": 1, "bbox": xywh(b), "score": 1.0 / (k + 1)} for k, b in enumerate(pred[:100])]
    coco_dt = coco_gt.loadRes(dets)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    value = float(ev.stats[0])
    return max(0.0, value)  # -1 means "no GT" in COCO; cannot happen here, clamp anyway


def box_metrics(pred: Sequence[Box], gt: Sequence[Box], answered: bool = True) -> dict[str, float]:
    """All grounding metrics of one sample: ``map50, map50_95, mean_iou, acc50, box_soft_f1``."""
    return {
        "map50": ap_voc(pred, gt, 0.5, answered),
        "map50_95": ap_coco(pred, gt, answered),
        "mean_iou": matched_iou(pred, gt, answered),
        "acc50": acc_at(pred, gt, 0.5, answered),
        "box_soft_f1": soft_f1(pred, gt, answered),
    }


def _as_formats(box_format: str | Sequence[str], n: int) -> list[str]:
    if isinstance(box_format, str):
        return [box_format] * n
    fmts = [f if isinstance(f, str) and f else "norm" for f in box_format]
    if len(fmts) != n:
        raise ValueError(f"got {len(fmts)} box formats for {n} rows")
    return fmts


def clean_gt(boxes: object) -> list[Box]:
    """Reference boxes as a list of 4-float lists (accepts lists, tuples, numpy arrays; drops junk)."""
    if boxes is None:
        return []
    if isinstance(boxes, np.ndarray):
        boxes = boxes.tolist()
    if isinstance(boxes, Sequence) and len(boxes) == 4 and all(isinstance(v, int | float) for v in boxes):
        boxes = [boxes]  # one bare box instead of a list of boxes
    if not isinstance(boxes, Iterable) or isinstance(boxes, str | bytes | Mapping):
        return []
    out: list[Box] = []
    for b in boxes:
        try:
            vals = [float(v) for v in b]
        except (TypeError, ValueError):
            continue
        if len(vals) == 4 and all(math.isfinite(v) for v in vals):
            out.append(vals)
    return out


def score_grounding(
    preds_text: Sequence[object],
    ref_boxes: Sequence[Sequence[Sequence[float]]],
    box_format: str | Sequence[str] = "norm",
    *,
    thinking: bool | Sequence[bool] = False,
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per sample: :data:`GROUNDING_METRICS` plus ``n_pred``, ``n_gt``, ``answered``.

    ``preds_text`` are raw completions; boxes are parsed with ``radlab.formats.parse_boxes`` in the
    row's ``box_format``; ``ref_boxes`` are normalised xyxy lists (``[]`` = no finding).
    """
    n = len(preds_text)
    if len(ref_boxes) != n:
        raise ValueError(f"{n} predictions for {len(ref_boxes)} reference box lists")
    answers = answers_of(preds_text, thinking)
    fmts = _as_formats(box_format, n)
    rows = []
    for ans, gt_raw, fmt in zip(answers, ref_boxes, fmts):
        text = ans or ""
        pred = parse_boxes(text, fmt=fmt)
        gt = clean_gt(gt_raw)
        answered = bool(text.strip())
        row = box_metrics(pred, gt, answered)
        row.update(mean_chars=float(len(text)), n_pred=len(pred), n_gt=len(gt), answered=answered)
        rows.append(row)
    df = pd.DataFrame(rows, columns=[*GROUNDING_METRICS, "n_pred", "n_gt", "answered"])
    if ids is not None:
        df.insert(0, "id", list(ids))
    return df
