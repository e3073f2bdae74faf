"""Evaluation metrics, per sample, with bootstrap confidence intervals.

This module is the scoring layer under both evaluation and training: every reward in
:mod:`radlab.rewards` wraps a function defined here, so a model is trained and evaluated on the
same definition.  Nothing here raises on model output; malformed text scores 0.

Report metrics (per sample unless noted)
    ``rouge_l``
        ROUGE-L F-measure, ``rouge_score`` with Porter stemming (the paper's R-L).
    ``bleu4``
        sacrebleu *sentence* BLEU-4 (exponential smoothing, effective order) divided by 100.  The
        paper's table uses corpus BLEU; a sentence score is what can be bootstrapped per sample.
    ``f1radgraph_simple`` / ``_partial`` / ``_complete``
        ``radgraph.rewards.compute_reward`` on annotations from an annotator backend
        (:func:`annotate`): ``"rules"`` (radlab.clinical, default) or ``"radgraph-xl"``.
    ``chexpert_f1``
        per-sample F1 of the 14 binary CheXpert labels of prediction vs reference.
    ``chexpert_f1_micro14`` / ``_macro14`` / ``_micro5`` / ``_macro5``
        *corpus* F1s as CheXbert (f1chexbert) defines them.  They are stored per sample as the 0/1
        label columns ``chexpert_pred/<label>`` and ``chexpert_ref/<label>`` and recomputed from
        summed TP/FP/FN on every bootstrap resample.
    ``radcliq_lite``
        RadCliQ-v1 (lower is better) with only the offline components, see :func:`radcliq_v1`.
    ``mean_chars``
        characters in the scored answer.

    CheXpert label convention (f1chexbert's ``mode="rrg"``): positive (1) *and uncertain (-1)*
    count as 1; negative (0) and not mentioned (None) count as 0.

Grounding metrics (per sample)
    ``map50``, ``map50_95``, ``mean_iou``, ``acc50``, ``box_soft_f1``: see :func:`box_metrics`.
    Every one of them gives 1.0 when the reference has no box and the model answered without a
    box (a correct "no finding"); the paper's code gives 0 there.

Summaries
    :func:`summarise` gives ``metric, value, ci_low, ci_high, n`` with seeded, vectorised percentile
    bootstrap CIs (resample weights as a ``(n_boot, n)`` count matrix, so a mean is one matrix
    product and the corpus CheXpert F1s are recomputed from resampled counts).
    :func:`paired_bootstrap` gives the difference of two models on the same samples;
    :func:`pooled_paired_bootstrap` pools that difference over replicates (models trained with several
    seeds) with :func:`two_level_bootstrap`'s CI (replicates, then items).

Layout: :mod:`radlab.metrics.report` (report metrics), :mod:`radlab.metrics.grounding` (box
metrics), :mod:`radlab.metrics.bootstrap` (summaries and paired tests), :mod:`radlab.metrics.answers`
(the answer rule shared by both tasks); the annotator backends live in :mod:`radlab.clinical.backends`.
Every public name is importable from ``radlab.metrics``.
"""

from __future__ import annotations

from radlab.clinical.backends import ANNOTATOR_BACKENDS, Annotation, BackendUnavailable, annotate, check_backend
from radlab.metrics.answers import answers_of
from radlab.metrics.bootstrap import (
    KNOWN_METRICS,
    POOLED_COLUMNS,
    Statistic,
    agreeing,
    paired_bootstrap,
    pooled_paired_bootstrap,
    summarise,
    two_level_bootstrap,
)
from radlab.metrics.grounding import (
    GROUNDING_METRICS,
    Box,
    acc_at,
    ap_coco,
    ap_voc,
    box_metrics,
    clean_gt,
    iou_matrix,
    matched_iou,
    score_grounding,
    soft_f1,
)
from radlab.metrics.report import (
    CHEXPERT_PRED_PREFIX,
    CHEXPERT_REF_PREFIX,
    CORPUS_METRICS,
    LEVELS,
    RADCLIQ_BOUNDS,
    RADCLIQ_COMPONENTS,
    RADCLIQ_V1_BIAS,
    RADCLIQ_V1_COEF,
    RADCLIQ_V1_MEAN,
    RADCLIQ_V1_SCALE,
    REPORT_METRICS,
    PairScorer,
    bleu4_scores,
    chexpert_binary,
    chexpert_matrix,
    f1radgraph_from_annotations,
    label_f1,
    radcliq_features,
    radcliq_radgraph_component,
    radcliq_range,
    radcliq_v1,
    report_scores,
    rouge_l_scores,
    score_reports,
)

__all__ = [
    "ANNOTATOR_BACKENDS", "Annotation", "BackendUnavailable", "Box", "CHEXPERT_PRED_PREFIX", "CHEXPERT_REF_PREFIX",
    "CORPUS_METRICS", "GROUNDING_METRICS", "KNOWN_METRICS", "LEVELS", "PairScorer", "RADCLIQ_BOUNDS",
    "RADCLIQ_COMPONENTS", "RADCLIQ_V1_BIAS", "RADCLIQ_V1_COEF", "RADCLIQ_V1_MEAN", "RADCLIQ_V1_SCALE",
    "POOLED_COLUMNS", "REPORT_METRICS", "Statistic", "acc_at", "agreeing", "annotate", "answers_of", "ap_coco", "ap_voc", "bleu4_scores",
    "box_metrics", "check_backend", "chexpert_binary", "chexpert_matrix", "clean_gt", "f1radgraph_from_annotations",
    "iou_matrix", "label_f1", "matched_iou", "paired_bootstrap", "pooled_paired_bootstrap", "radcliq_features", "radcliq_radgraph_component",
    "radcliq_range", "radcliq_v1", "report_scores", "rouge_l_scores", "score_grounding", "score_reports", "soft_f1",
    "summarise", "two_level_bootstrap",
]
