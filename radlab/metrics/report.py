"""Report metrics per sample: ROUGE-L, BLEU-4, F1-RadGraph, CheXpert F1, RadCliQ-lite, length.

See :mod:`radlab.metrics` for the definitions; annotations come from
:mod:`radlab.clinical.backends`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from radlab.clinical.backends import Annotation, annotate, check_backend
from radlab.data.schema import CHEXPERT14
from radlab.metrics.answers import answers_of

LEVELS = ("simple", "partial", "complete")
REPORT_METRICS = (
    "f1radgraph_simple",
    "f1radgraph_partial",
    "f1radgraph_complete",
    "chexpert_f1",
    "radcliq_lite",
    "rouge_l",
    "bleu4",
    "mean_chars",
)
CORPUS_METRICS = ("chexpert_f1_micro14", "chexpert_f1_macro14", "chexpert_f1_micro5", "chexpert_f1_macro5")
CHEXPERT_PRED_PREFIX = "chexpert_pred/"
CHEXPERT_REF_PREFIX = "chexpert_ref/"

# --------------------------------------------------------------------------------------------
# Text metrics: ROUGE-L and BLEU
# --------------------------------------------------------------------------------------------

_ROUGE: Any = None
_BLEU: Any = None


def _rouge() -> Any:
    # The scorer builds a stemmer and tokenizer; one per process is enough.
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _ROUGE


def _bleu() -> Any:
    global _BLEU
    if _BLEU is None:
        from sacrebleu.metrics import BLEU

        # effective_order: short sentences are not zeroed by a missing 4-gram (sacrebleu's sentence default).
        _BLEU = BLEU(effective_order=True)
    return _BLEU


def rouge_l_scores(preds: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """ROUGE-L F (stemmed) per pair. ``[n] str, [n] str -> (n,) float in [0, 1]``."""
    scorer = _rouge()
    out = np.zeros(len(preds))
    for i, (p, r) in enumerate(zip(preds, refs)):
        if p and r:
            out[i] = scorer.score(r, p)["rougeL"].fmeasure
    return out


def bleu4_scores(preds: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """sacrebleu sentence BLEU-4 / 100 per pair. ``(n,) float in [0, 1]``."""
    bleu = _bleu()
    out = np.zeros(len(preds))
    for i, (p, r) in enumerate(zip(preds, refs)):
        if p and r:
            out[i] = bleu.sentence_score(p, [r]).score / 100.0
    return np.clip(out, 0.0, 1.0)  # sacrebleu can return 100.00000000000004


# --------------------------------------------------------------------------------------------
# The RadGraph F1
# --------------------------------------------------------------------------------------------

_COMPUTE_REWARD: Callable[..., Any] | None = None


def _radgraph_compute_reward() -> Callable[..., Any]:
    """``radgraph.rewards.compute_reward``, loaded without running ``radgraph/__init__``.

    The package ``__init__`` imports torch, transformers and allennlp (~4 s, ~2,600 modules) only
    to expose the model classes; ``rewards.py`` itself is dependency-free, so it is loaded from its
    file.  Falls back to the normal import if the file cannot be found.
    """
    global _COMPUTE_REWARD
    if _COMPUTE_REWARD is None:
        import importlib.util

        spec = importlib.util.find_spec("radgraph")
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = os.path.join(locations[0], "rewards.py") if locations else ""
        if path and os.path.exists(path):
            sub = importlib.util.spec_from_file_location("radlab._radgraph_rewards", path)
            assert sub is not None and sub.loader is not None
            module = importlib.util.module_from_spec(sub)
            sub.loader.exec_module(module)
            _COMPUTE_REWARD = module.compute_reward
        else:  # pragma: no cover - unusual installs
            from radgraph.rewards import compute_reward

            _COMPUTE_REWARD = compute_reward
    return _COMPUTE_REWARD


def _entities(ann: Mapping[str, Any]) -> dict[str, Any]:
    ents = ann.get("entities") if isinstance(ann, Mapping) else None
    return ents if isinstance(ents, dict) else {}


def f1radgraph_from_annotations(hyp: Annotation, ref: Annotation) -> tuple[float, float, float]:
    """(simple, partial, complete) F1-RadGraph of one pair via ``radgraph.rewards.compute_reward``.

    radgraph's levels: *simple* matches (tokens, label); *partial* also whether the entity has a
    relation; *complete* matches every (entity, relation, target) triple.  0 when either side has no
    entity (radgraph's rule).
    """
    if not _entities(hyp) or not _entities(ref):
        return (0.0, 0.0, 0.0)
    simple, partial, complete = _radgraph_compute_reward()(hyp, ref, "all")
    return (float(simple), float(partial), float(complete))


def _set_f1(gold: set[Any], pred: set[Any]) -> float:
    tp = len(gold & pred)
    if tp == 0:
        return 0.0
    p, r = tp / len(pred), tp / len(gold)
    return 2 * p * r / (p + r)


def radcliq_radgraph_component(hyp: Annotation, ref: Annotation) -> float:
    """RadCliQ-v1's RadGraph feature: (entity F1 + relation F1) / 2, as RadEval defines it.

    Entities are sets of (tokens, label); relations are sets of ((src tokens, label), (tgt tokens,
    label), relation type); F1 is set-based and 0 when a set is empty.  This differs from
    ``compute_reward`` (which flattens relations into entity tuples), so it is written here.
    """

    def sets(ann: Annotation) -> tuple[set[Any], set[Any]]:
        ents = _entities(ann)
        e: set[Any] = set()
        r: set[Any] = set()
        for ent in ents.values():
            src = (str(ent.get("tokens", "")), str(ent.get("label", "")))
            e.add(src)
            for rel in ent.get("relations", []) or []:
                if len(rel) == 2 and str(rel[1]) in ents:
                    tgt = ents[str(rel[1])]
                    r.add((src, (str(tgt.get("tokens", "")), str(tgt.get("label", ""))), str(rel[0])))
        return e, r

    he, hr = sets(hyp)
    re_, rr = sets(ref)
    return (_set_f1(re_, he) + _set_f1(rr, hr)) / 2.0


# --------------------------------------------------------------------------------------------
# CheXpert labels
# --------------------------------------------------------------------------------------------


def chexpert_binary(labels: Mapping[str, int | None], names: Sequence[str] = CHEXPERT14) -> np.ndarray:
    """f1chexbert ``rrg`` binarisation: 1 for positive or uncertain (-1), else 0. ``-> (len(names),) int8``."""
    return np.array([1 if labels.get(k) in (1, -1) else 0 for k in names], dtype=np.int8)


def chexpert_matrix(annotations: Sequence[Annotation]) -> np.ndarray:
    """Binary CheXpert-14 label matrix of annotations via ``radlab.clinical.chexpert_labels``. ``(n, 14) int8``."""
    from radlab import clinical

    out = np.zeros((len(annotations), len(CHEXPERT14)), dtype=np.int8)
    for i, ann in enumerate(annotations):
        if _entities(ann):
            out[i] = chexpert_binary(clinical.chexpert_labels(ann))
    return out


def label_f1(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Row-wise F1 of binary label vectors; 1.0 where both rows are all zero. ``(n,k),(n,k) -> (n,)``."""
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    tp = (pred * ref).sum(axis=1)
    denom = pred.sum(axis=1) + ref.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 1.0)
    return f1


# --------------------------------------------------------------------------------------------
# RadCliQ-v1
# --------------------------------------------------------------------------------------------

RADCLIQ_COMPONENTS = ("radgraph", "bertscore", "semb_score", "bleu_score")
# StandardScaler and linear model of RadCliQ-v1 (RadEval / CXR-Report-Metric), in the order above.
RADCLIQ_V1_MEAN = np.array([0.53792312, 0.61757256, 0.76479421, 0.44738335])
RADCLIQ_V1_SCALE = np.array([0.30282584, 0.22430938, 0.25394391, 0.29892717])
RADCLIQ_V1_COEF = np.array([-0.377083683, -0.370300100, -0.252616218, 4.31504841e-12])
RADCLIQ_V1_BIAS = 2.46655256e-10
# Attainable range of each feature; the worst row (all at their floor) is what malformed text gets.
RADCLIQ_BOUNDS = {"radgraph": (0.0, 1.0), "bertscore": (-1.0, 1.0), "semb_score": (-1.0, 1.0), "bleu_score": (0.0, 1.0)}

PairScorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


def radcliq_v1(features: np.ndarray) -> np.ndarray:
    """RadCliQ-v1 of feature rows ``(n, 4)`` in :data:`RADCLIQ_COMPONENTS` order -> ``(n,)``; lower is better."""
    z = (np.asarray(features, dtype=np.float64) - RADCLIQ_V1_MEAN) / RADCLIQ_V1_SCALE
    return z @ RADCLIQ_V1_COEF + RADCLIQ_V1_BIAS


def radcliq_range(available: Iterable[str]) -> tuple[float, float]:
    """(best, worst) RadCliQ over the bounds of the available features; others sit at their mean."""
    avail = set(available)
    lo = RADCLIQ_V1_MEAN.copy()
    hi = RADCLIQ_V1_MEAN.copy()
    for k, name in enumerate(RADCLIQ_COMPONENTS):
        if name in avail:
            lo[k], hi[k] = RADCLIQ_BOUNDS[name]
    # The model is linear: each term is extreme at a bound, high features for negative coefficients.
    best = float(radcliq_v1(np.where(RADCLIQ_V1_COEF < 0, hi, lo)[None])[0])
    worst = float(radcliq_v1(np.where(RADCLIQ_V1_COEF < 0, lo, hi)[None])[0])
    return best, worst


def radcliq_features(
    preds: Sequence[str],
    refs: Sequence[str],
    *,
    backend: str = "rules",
    bertscore_fn: PairScorer | None = None,
    semb_fn: PairScorer | None = None,
    annotations: tuple[Sequence[Annotation], Sequence[Annotation]] | None = None,
) -> np.ndarray:
    """RadCliQ-v1 features ``(n, 4)``.

    ``radgraph`` from the annotator backend; ``bleu_score`` from sacrebleu sentence BLEU-4 (RadEval
    uses pycocoevalcap's BLEU-4; its coefficient is 4e-12, so the choice does not matter).
    ``bertscore`` (BERTScore F1, distilroberta-base, baseline-rescaled) and ``semb_score`` (cosine
    of CheXbert embeddings) need models that are not available offline: without ``bertscore_fn`` /
    ``semb_fn`` they are set to their RadCliQ training mean, so their z-term is exactly 0
    ("RadCliQ-lite").  Supply ``fn(preds, refs) -> (n,)`` callables to get the full RadCliQ-v1.
    """
    n = len(preds)
    hyp_ann, ref_ann = annotations if annotations is not None else (annotate(preds, backend), annotate(refs, backend))
    feats = np.tile(RADCLIQ_V1_MEAN, (n, 1))
    feats[:, 0] = [radcliq_radgraph_component(h, r) for h, r in zip(hyp_ann, ref_ann)]
    feats[:, 3] = bleu4_scores(preds, refs)
    for col, fn in ((1, bertscore_fn), (2, semb_fn)):
        if fn is not None:
            vals = np.asarray(fn(list(preds), list(refs)), dtype=np.float64)
            if vals.shape != (n,):
                raise ValueError(f"{RADCLIQ_COMPONENTS[col]} scorer returned shape {vals.shape}, expected ({n},)")
            feats[:, col] = vals
    return feats


# --------------------------------------------------------------------------------------------
# Report scoring
# --------------------------------------------------------------------------------------------


def _clean_answers(answers: Sequence[str | None], max_chars: int | None) -> tuple[list[str], np.ndarray]:
    texts = [a[:max_chars] if max_chars else a for a in (x if isinstance(x, str) else "" for x in answers)]
    answered = np.array([bool(t.strip()) for t in texts])
    return [t if ok else "" for t, ok in zip(texts, answered)], answered


def report_scores(
    answers: Sequence[str | None],
    refs: Sequence[str],
    *,
    backend: str = "rules",
    metrics: Iterable[str] = REPORT_METRICS,
    max_chars: int | None = None,
    bertscore_fn: PairScorer | None = None,
    semb_fn: PairScorer | None = None,
) -> dict[str, np.ndarray]:
    """The requested report metrics of extracted answers (``None`` = no answer). Each ``(n,)``.

    Unanswered rows score 0 on every metric (``radcliq_lite``: the worst attainable value), and a
    ``chexpert_pred/...`` 0/1 matrix is returned under ``"_chexpert_pred"``/``"_chexpert_ref"``
    ``(n, 14)`` when ``chexpert_f1`` is requested.  The annotator runs once over the unique texts.
    """
    wanted = set(metrics)
    texts, answered = _clean_answers(answers, max_chars)
    refs = [r[:max_chars] if (max_chars and isinstance(r, str)) else (r if isinstance(r, str) else "") for r in refs]
    out: dict[str, np.ndarray] = {}
    if "rouge_l" in wanted:
        out["rouge_l"] = rouge_l_scores(texts, refs)
    if "bleu4" in wanted:
        out["bleu4"] = bleu4_scores(texts, refs)
    if "mean_chars" in wanted:
        out["mean_chars"] = np.array([len(t) for t in texts], dtype=np.float64)
    need_ann = wanted & {"f1radgraph_simple", "f1radgraph_partial", "f1radgraph_complete", "chexpert_f1", "radcliq_lite"}
    if need_ann:
        if "chexpert_f1" in wanted:
            check_backend(backend, ("annotate", "chexpert_labels"))
        anns = annotate(list(texts) + list(refs), backend)
        hyp_ann, ref_ann = anns[: len(texts)], anns[len(texts):]
        if wanted & {f"f1radgraph_{lv}" for lv in LEVELS}:
            rg = np.array([f1radgraph_from_annotations(h, r) for h, r in zip(hyp_ann, ref_ann)]).reshape(-1, 3)
            for k, lv in enumerate(LEVELS):
                if f"f1radgraph_{lv}" in wanted:
                    out[f"f1radgraph_{lv}"] = rg[:, k]
        if "chexpert_f1" in wanted:
            pred_m, ref_m = chexpert_matrix(hyp_ann), chexpert_matrix(ref_ann)
            out["chexpert_f1"] = label_f1(pred_m, ref_m)
            out["_chexpert_pred"], out["_chexpert_ref"] = pred_m, ref_m
        if "radcliq_lite" in wanted:
            feats = radcliq_features(
                texts, refs, bertscore_fn=bertscore_fn, semb_fn=semb_fn, annotations=(hyp_ann, ref_ann)
            )
            out["radcliq_lite"] = radcliq_v1(feats)
    for name, vals in out.items():
        if name.startswith("_") or name == "mean_chars":
            continue
        if name == "radcliq_lite":
            avail = ["radgraph", "bleu_score"] + [k for k, fn in (("bertscore", bertscore_fn), ("semb_score", semb_fn)) if fn]
            vals[~answered] = radcliq_range(avail)[1]
        else:
            vals[~answered] = 0.0
    return out


def score_reports(
    preds: Sequence[object],
    refs: Sequence[str],
    *,
    thinking: bool | Sequence[bool] = False,
    backend: str = "rules",
    ids: Sequence[str] | None = None,
    bertscore_fn: PairScorer | None = None,
    semb_fn: PairScorer | None = None,
) -> pd.DataFrame:
    """One row per sample, one column per report metric.

    ``preds`` are raw completions (str or conversational); thinking rows are scored on the text
    after the last ``</think>`` and score 0 without one.  Columns: :data:`REPORT_METRICS`,
    ``answered`` (bool), ``chexpert_pred/<label>`` and ``chexpert_ref/<label>`` (int8, the inputs of
    the corpus CheXpert F1s), and ``id`` when ``ids`` is given.  ``bertscore_fn`` / ``semb_fn``
    turn ``radcliq_lite`` into the full RadCliQ-v1 (see :func:`radcliq_features`).
    """
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    answers = answers_of(preds, thinking)
    scores = report_scores(answers, refs, backend=backend, bertscore_fn=bertscore_fn, semb_fn=semb_fn)
    df = pd.DataFrame({k: v for k, v in scores.items() if not k.startswith("_")})
    df = df[list(REPORT_METRICS)]
    df["answered"] = [bool(a and a.strip()) for a in answers]
    for k, name in enumerate(CHEXPERT14):
        df[CHEXPERT_PRED_PREFIX + name] = scores["_chexpert_pred"][:, k]
    for k, name in enumerate(CHEXPERT14):
        df[CHEXPERT_REF_PREFIX + name] = scores["_chexpert_ref"][:, k]
    if ids is not None:
        df.insert(0, "id", list(ids))
    return df
