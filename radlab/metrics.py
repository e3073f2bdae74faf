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
    :func:`paired_bootstrap` gives the difference of two models on the same samples.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from radlab.data.schema import CHEXPERT5, CHEXPERT14
from radlab.formats import answer_text, parse_boxes

Box = list[float]
Annotation = dict[str, Any]

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
GROUNDING_METRICS = ("map50", "map50_95", "mean_iou", "acc50", "box_soft_f1", "mean_chars")
KNOWN_METRICS = tuple(dict.fromkeys(REPORT_METRICS + GROUNDING_METRICS))
CHEXPERT_PRED_PREFIX = "chexpert_pred/"
CHEXPERT_REF_PREFIX = "chexpert_ref/"


def _as_flags(value: bool | Sequence[bool] | None, n: int) -> list[bool]:
    """Broadcast a scalar flag (or None = False) to ``n`` rows; check a per-row sequence's length."""
    if value is None or isinstance(value, bool | np.bool_):
        return [bool(value)] * n
    flags = [bool(v) if v is not None else False for v in value]
    if len(flags) != n:
        raise ValueError(f"got {len(flags)} thinking flags for {n} rows")
    return flags


def answers_of(completions: Sequence[object], thinking: bool | Sequence[bool] | None = False) -> list[str | None]:
    """Scoreable answers of raw completions (str or conversational); ``None`` = no answer.

    ``None`` marks a thinking completion without ``</think>`` (or with nothing after it); every
    metric and reward scores such a row as malformed.
    """
    flags = _as_flags(thinking, len(completions))
    return [answer_text(c, t) for c, t in zip(completions, flags)]


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
# Annotators (RadGraph-format) and the RadGraph F1
# --------------------------------------------------------------------------------------------

ANNOTATOR_BACKENDS = ("rules", "radgraph-xl")
RADGRAPH_PYTHON_ENV = "RADLAB_RADGRAPH_PYTHON"
RADGRAPH_CACHE_ENV = "RADLAB_RADGRAPH_CACHE"


class BackendUnavailable(RuntimeError):
    """A scorer backend (annotator, BERTScore, CheXbert) is not usable in this environment.

    Rewards re-raise it instead of scoring 0: it is a configuration error, not model output.
    """


def check_backend(backend: str, need: Sequence[str] = ("annotate",)) -> None:
    """Raise :class:`BackendUnavailable` (cheaply, without loading models) if ``backend`` cannot run.

    ``need`` names the ``radlab.clinical`` functions the caller uses (``chexpert_labels`` is needed
    for the CheXpert metrics with any backend).
    """
    if backend == "rules" or "chexpert_labels" in need:
        try:
            import radlab.clinical as clinical
        except ImportError as exc:
            raise BackendUnavailable(f"radlab.clinical failed to import: {exc}") from exc
        missing = [f for f in need if not callable(getattr(clinical, f, None))]
        if missing:
            raise BackendUnavailable(f"radlab.clinical lacks {missing}")
        if backend == "rules":
            return
    if backend == "radgraph-xl":
        python = os.environ.get(RADGRAPH_PYTHON_ENV, "")
        if not python:
            raise BackendUnavailable(
                "annotator backend 'radgraph-xl' runs radgraph 0.1.18 out of process (its model loading breaks "
                f"under transformers 5): set {RADGRAPH_PYTHON_ENV} to a python with radgraph==0.1.18 and "
                "transformers<5, and put the radgraph-xl weights in its cache "
                f"(or {RADGRAPH_CACHE_ENV}/radgraph-xl). radlab never downloads them."
            )
        if not os.path.exists(python):
            raise BackendUnavailable(f"{RADGRAPH_PYTHON_ENV}={python!r} does not exist")
        return
    raise ValueError(f"unknown annotator backend {backend!r}; expected one of {ANNOTATOR_BACKENDS}")


# Runs inside RADLAB_RADGRAPH_PYTHON.  Protocol: one JSON list of texts per stdin line, one JSON
# object per stdout line ({"ready"}, {"annotations": [...]}, or {"error": str}).  Library prints
# are sent to stderr so they cannot corrupt the protocol; HF offline flags forbid downloads, and the
# weights directory is checked first because RadGraph() would otherwise download it.
_RADGRAPH_WORKER = r"""
import json, os, sys
proto = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
def reply(obj):
    proto.write(json.dumps(obj) + "\n")
    proto.flush()
try:
    import radgraph
    from radgraph.radgraph import CACHE_DIR
    cache = os.environ.get("RADLAB_RADGRAPH_CACHE") or CACHE_DIR
    model_dir = os.path.join(cache, "radgraph-xl")
    if not os.path.isdir(model_dir) or not os.listdir(model_dir):
        reply({"error": "radgraph-xl weights not found at " + model_dir + " (radlab never downloads them; "
               "unpack radgraph-xl.tar.gz there or set RADLAB_RADGRAPH_CACHE)"})
        sys.exit(0)
    model = radgraph.RadGraph(model_type="radgraph-xl", model_cache_dir=cache, cuda=-1)
except Exception as exc:
    reply({"error": "radgraph-xl failed to load: %s: %s" % (type(exc).__name__, exc)})
    sys.exit(0)
reply({"ready": True})
for line in sys.stdin:
    texts = json.loads(line)
    try:
        out = model(texts)
        reply({"annotations": [out.get(str(i), {"text": t, "entities": {}}) for i, t in enumerate(texts)]})
    except Exception as exc:
        reply({"error": "radgraph-xl inference failed: %s: %s" % (type(exc).__name__, exc)})
"""


class _RadGraphXLWorker:
    """One long-lived radgraph-xl subprocess (model loaded once) plus a per-text cache."""

    def __init__(self, python: str, cache_dir: str) -> None:
        self.python = python
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._cache: dict[str, Annotation] = {}
        self._lock = threading.Lock()

    def _fail(self, message: str) -> BackendUnavailable:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:]
        self.close()
        return BackendUnavailable(message + (f"\n--- radgraph-xl worker stderr (tail) ---\n{tail}" if tail else ""))

    def _request(self, payload: object) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        if payload is not None:
            self._proc.stdin.write(json.dumps(payload) + "\n")
            self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise self._fail("radgraph-xl worker exited unexpectedly")
        reply = json.loads(line)
        if "error" in reply:
            raise self._fail(reply["error"])
        return reply

    def _start(self) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if self.cache_dir:
            env[RADGRAPH_CACHE_ENV] = self.cache_dir
        self._proc = subprocess.Popen(
            [self.python, "-c", _RADGRAPH_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._request(None)  # wait for {"ready": true}

    def annotate(self, texts: Sequence[str]) -> list[Annotation]:
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t and t not in self._cache))
            if todo:
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                anns = self._request(todo)["annotations"]
                self._cache.update(zip(todo, anns))
            return [self._cache[t] if t else {"text": "", "entities": {}} for t in texts]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None


_WORKERS: dict[tuple[str, str], _RadGraphXLWorker] = {}


@atexit.register
def _close_workers() -> None:
    for worker in _WORKERS.values():
        worker.close()


def annotate(texts: Sequence[str], backend: str = "rules") -> list[Annotation]:
    """RadGraph-format annotations ``{"text", "entities": {id: {"tokens","label","relations"}}}``.

    ``rules`` is :func:`radlab.clinical.annotate` (offline, cached per text).  ``radgraph-xl`` runs
    radgraph 0.1.18 in the python named by ``RADLAB_RADGRAPH_PYTHON`` (weights from its cache or
    ``RADLAB_RADGRAPH_CACHE``; never downloaded).  ``[n] str -> [n] dict``.
    """
    texts = [t if isinstance(t, str) else "" for t in texts]
    check_backend(backend)
    if backend == "rules":
        from radlab import clinical

        return list(clinical.annotate(texts))
    key = (os.environ[RADGRAPH_PYTHON_ENV], os.environ.get(RADGRAPH_CACHE_ENV, ""))
    if key not in _WORKERS:
        _WORKERS[key] = _RadGraphXLWorker(*key)
    return _WORKERS[key].annotate(texts)


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


# --------------------------------------------------------------------------------------------
# Grounding
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------

# A statistic maps resample weights (B, n) -> (B,) values.  The point estimate is the statistic at
# weights of all ones, so point values and bootstrap values are computed by the same code.
Statistic = Callable[[np.ndarray], np.ndarray]


def _mean_stat(x: np.ndarray) -> Statistic:
    """Weighted mean of the finite entries (NaN = not applicable, e.g. a row of the other task)."""
    ok = np.isfinite(x)
    vals = np.where(ok, x, 0.0)
    okf = ok.astype(np.float64)

    def stat(w: np.ndarray) -> np.ndarray:
        cnt = w @ okf
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(cnt > 0, (w @ vals) / np.where(cnt > 0, cnt, 1), np.nan)

    return stat


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)


def _chexpert_stats(pred: np.ndarray, ref: np.ndarray) -> tuple[dict[str, Statistic], np.ndarray]:
    """Corpus CheXbert F1s from ``(n, 14)`` 0/1 matrices (rows with NaN = not applicable).

    micro = F1 of the summed TP/FP/FN over classes; macro = mean of per-class F1s, a class with no
    positives in either side scoring 0 (sklearn's ``zero_division`` default used by f1chexbert).
    """
    ok = np.isfinite(pred).all(axis=1) & np.isfinite(ref).all(axis=1)
    p = np.where(ok[:, None], pred, 0.0)
    r = np.where(ok[:, None], ref, 0.0)
    tp, fp, fn = p * r, p * (1 - r), (1 - p) * r
    idx5 = [CHEXPERT14.index(k) for k in CHEXPERT5]

    def make(cols: list[int], micro: bool) -> Statistic:
        def stat(w: np.ndarray) -> np.ndarray:
            t, f_p, f_n = w @ tp[:, cols], w @ fp[:, cols], w @ fn[:, cols]
            if micro:
                return _f1_from_counts(t.sum(1), f_p.sum(1), f_n.sum(1))
            return _f1_from_counts(t, f_p, f_n).mean(axis=1)

        return stat

    all14 = list(range(len(CHEXPERT14)))
    return {
        "chexpert_f1_micro14": make(all14, True),
        "chexpert_f1_macro14": make(all14, False),
        "chexpert_f1_micro5": make(idx5, True),
        "chexpert_f1_macro5": make(idx5, False),
    }, ok


def _statistics(
    data: pd.DataFrame | Mapping[str, Sequence[float]], metrics: Sequence[str] | None
) -> tuple[dict[str, Statistic], dict[str, int], int]:
    """Statistics and their ``n`` for every metric of a per-sample frame (or dict of arrays)."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame({k: np.asarray(v) for k, v in data.items()})
    n_rows = len(df)
    stats: dict[str, Statistic] = {}
    counts: dict[str, int] = {}
    pred_cols = [CHEXPERT_PRED_PREFIX + k for k in CHEXPERT14]
    ref_cols = [CHEXPERT_REF_PREFIX + k for k in CHEXPERT14]
    if metrics is None:
        names = [c for c in df.columns if c in KNOWN_METRICS]
        if not isinstance(data, pd.DataFrame):
            # a dict of arrays names its metrics explicitly: take every numeric one
            names = [c for c in df.columns if np.issubdtype(df[c].dtype, np.number) and "/" not in c]
        if all(c in df.columns for c in pred_cols + ref_cols):
            names += list(CORPUS_METRICS)
    else:
        names = list(metrics)
    corpus: dict[str, Statistic] = {}
    corpus_n = 0
    if any(m in CORPUS_METRICS for m in names):
        missing = [c for c in pred_cols + ref_cols if c not in df.columns]
        if missing:
            raise KeyError(f"corpus CheXpert metrics need the label columns, missing {missing[:2]}...")
        corpus, ok = _chexpert_stats(df[pred_cols].to_numpy(np.float64), df[ref_cols].to_numpy(np.float64))
        corpus_n = int(ok.sum())
    for name in names:
        if name in corpus:
            stats[name], counts[name] = corpus[name], corpus_n
        else:
            x = pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64)
            stats[name], counts[name] = _mean_stat(x), int(np.isfinite(x).sum())
    return stats, counts, n_rows


def _run_bootstrap(stat: Statistic, n: int, n_boot: int, seed: int, chunk: int = 20_000_000) -> np.ndarray:
    """``(n_boot,)`` bootstrap values of ``stat``.

    Resample counts are drawn block by block (at most ``chunk`` entries of the ``(n_boot, n)``
    matrix at a time) from one seeded generator, so memory stays bounded and the same seed gives
    the same resamples for every metric and both sides of a paired comparison.
    """
    rng = np.random.default_rng(seed)
    block = max(1, chunk // max(n, 1))
    out = []
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        w = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        out.append(stat(w.astype(np.float64)))
    return np.concatenate(out)


def summarise(
    data: pd.DataFrame | Mapping[str, Sequence[float]],
    n_boot: int = 1000,
    seed: int = 0,
    *,
    metrics: Sequence[str] | None = None,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Point value and percentile bootstrap CI per metric: ``DataFrame[metric, value, ci_low, ci_high, n]``.

    ``data`` is a per-sample frame from :func:`score_reports` / :func:`score_grounding` (or a dict of
    per-sample arrays).  By default every known metric column is summarised, plus the corpus
    CheXpert F1s when the label columns are present.  NaN entries are "not applicable" and are left
    out of that metric (its ``n``).  All metrics share one seeded ``(n_boot, n)`` resample matrix.
    """
    stats, counts, n_rows = _statistics(data, metrics)
    alpha = (1 - ci) / 2
    rows = []
    for name, stat in stats.items():
        value = float(stat(np.ones((1, n_rows)))[0]) if n_rows else float("nan")
        boot = _run_bootstrap(stat, n_rows, n_boot, seed) if n_rows else np.array([np.nan])
        lo, hi = (np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan))
        rows.append({"metric": name, "value": value, "ci_low": float(lo), "ci_high": float(hi), "n": counts[name]})
    return pd.DataFrame(rows, columns=["metric", "value", "ci_low", "ci_high", "n"])


def paired_bootstrap(
    a: pd.DataFrame | Sequence[float] | np.ndarray,
    b: pd.DataFrame | Sequence[float] | np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    *,
    metrics: Sequence[str] | None = None,
    ci: float = 0.95,
) -> dict[str, float] | pd.DataFrame:
    """Paired bootstrap of ``a - b`` over the same samples (rows aligned).

    Arrays -> ``{"diff", "ci_low", "ci_high", "n"}`` (pairs with a NaN on either side dropped).
    Per-sample frames -> ``DataFrame[metric, diff, ci_low, ci_high, n]`` over the metrics they share;
    corpus metrics are recomputed for both models on the same resample.  Frames that both have an
    ``id`` column are aligned on it (the id sets must match); otherwise rows pair by position.
    """
    alpha = (1 - ci) / 2
    if isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame):
        if "id" in a.columns and "id" in b.columns:
            if a["id"].duplicated().any() or set(a["id"]) != set(b["id"]):
                raise ValueError("paired frames must hold the same unique ids")
            b = b.set_index("id").loc[a["id"]].reset_index()
        if len(a) != len(b):
            raise ValueError(f"paired frames differ in length: {len(a)} vs {len(b)}")
        sa, ca, n = _statistics(a.reset_index(drop=True), metrics)
        sb, cb, _ = _statistics(b.reset_index(drop=True), metrics)
        rows = []
        for name in [m for m in sa if m in sb]:

            def diff(w: np.ndarray, fa: Statistic = sa[name], fb: Statistic = sb[name]) -> np.ndarray:
                return fa(w) - fb(w)

            point = float(diff(np.ones((1, n)))[0])
            boot = _run_bootstrap(diff, n, n_boot, seed)
            lo, hi = np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
            rows.append({"metric": name, "diff": point, "ci_low": float(lo), "ci_high": float(hi), "n": min(ca[name], cb[name])})
        return pd.DataFrame(rows, columns=["metric", "diff", "ci_low", "ci_high", "n"])
    xa = np.asarray(a, dtype=np.float64).ravel()
    xb = np.asarray(b, dtype=np.float64).ravel()
    if xa.shape != xb.shape:
        raise ValueError(f"paired arrays differ in length: {xa.shape} vs {xb.shape}")
    d = xa - xb
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    boot = _run_bootstrap(_mean_stat(d), d.size, n_boot, seed)
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return {"diff": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(d.size)}
