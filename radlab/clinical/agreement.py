"""Agreement between two sets of RadGraph-format annotations (e.g. ours vs RadGraph-XL).

Used by ``bench/bench_annotator.py`` and the dev-data test.  Definitions (micro-averaged over
reports)::

    entity (span)    (start_ix, end_ix, label)             over the same tokenisation
    entity (tokens)  (lower-cased tokens, label), a set per report
    entity (partial) (tokens, label, has-a-relation): the unit of F1-RadGraph "partial"
    relation         (source span, source label, target span, target label, relation type)

``f1radgraph_pearson`` samples random report pairs (i, j): x = F1-RadGraph between the reference
annotations of i and j, y = the same with the hypothesis annotations, and returns Pearson(x, y);
F1-RadGraph is ``radgraph.rewards.compute_reward`` (imported lazily; radgraph is a dependency).
``f1radgraph_pearson_all`` uses every pair instead (n(n-1)/2 of them; 44,850 for 300 reports, about
2.5 s per annotation set) and adds a 95% CI from a bootstrap over reports: a 2,000-pair sample
moves the estimate by about ±0.01, and the CI says how far the figure may move on other reports.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

Ann = dict[str, Any]


def _spans(ann: Ann) -> set[tuple[int, int, str]]:
    return {(e["start_ix"], e["end_ix"], e["label"]) for e in ann.get("entities", {}).values()}


def _tokens(ann: Ann) -> set[tuple[str, str]]:
    return {(e["tokens"].lower(), e["label"]) for e in ann.get("entities", {}).values()}


def _partial(ann: Ann) -> set[tuple[str, str, bool]]:
    # the unit F1-RadGraph "partial" compares: (tokens, label, has a relation)
    return {(e["tokens"], e["label"], bool(e["relations"])) for e in ann.get("entities", {}).values()}


def _rels(ann: Ann) -> set[tuple[Any, ...]]:
    ents = ann.get("entities", {})
    out = set()
    for e in ents.values():
        for rel, tgt in e["relations"]:
            t = ents.get(tgt)
            if t is None:
                continue
            out.add((e["start_ix"], e["end_ix"], e["label"], t["start_ix"], t["end_ix"], t["label"], rel))
    return out


def _prf(tp: int, n_hyp: int, n_ref: int) -> dict[str, float]:
    p = tp / n_hyp if n_hyp else 0.0
    r = tp / n_ref if n_ref else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def agreement(hyps: Sequence[Ann], refs: Sequence[Ann]) -> dict[str, dict[str, float]]:
    """Micro P/R/F1 of entities (span and token-string) and relations.

    Returns ``{"entity": {"precision", "recall", "f1"}, "entity_tokens": {...}, "entity_partial": {...},
    "relation": {...}}``.
    """
    acc = {k: [0, 0, 0] for k in ("entity", "entity_tokens", "entity_partial", "relation")}
    for h, r in zip(hyps, refs, strict=True):
        for key, fn in (
            ("entity", _spans),
            ("entity_tokens", _tokens),
            ("entity_partial", _partial),
            ("relation", _rels),
        ):
            hs, rs = fn(h), fn(r)
            acc[key][0] += len(hs & rs)
            acc[key][1] += len(hs)
            acc[key][2] += len(rs)
    return {k: _prf(*v) for k, v in acc.items()}


def f1radgraph_pearson(
    hyps: Sequence[Ann], refs: Sequence[Ann], *, n_pairs: int = 2000, level: str = "partial", seed: int = 0
) -> float:
    """Pearson correlation of F1-RadGraph(``level``) on random report pairs (see module doc)."""
    from radgraph.rewards import compute_reward

    n = len(refs)
    if n < 2:
        return float("nan")
    rng = random.Random(seed)
    xs: list[float] = []
    ys: list[float] = []
    for _ in range(n_pairs):
        i, j = rng.sample(range(n), 2)
        xs.append(float(compute_reward(refs[i], refs[j], level)))
        ys.append(float(compute_reward(hyps[i], hyps[j], level)))
    return _pearson(np.asarray(xs), np.asarray(ys))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two equal-length vectors; NaN when either is constant."""
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")


def f1radgraph_matrix(anns: Sequence[Ann], *, level: str = "partial") -> np.ndarray:
    """(n, n) symmetric matrix of F1-RadGraph(``level``) between every two annotations (diagonal 0).

    F1 is symmetric in its two arguments, so each pair is scored once.
    """
    from radgraph.rewards import compute_reward

    n = len(anns)
    m = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i] = float(compute_reward(anns[i], anns[j], level))
    return m


def f1radgraph_pearson_all(
    hyps: Sequence[Ann],
    refs: Sequence[Ann],
    *,
    level: str = "partial",
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Pearson of F1-RadGraph over all report pairs, with a 95% bootstrap CI over reports.

    Returns ``(pearson, ci_low, ci_high)``.  Each bootstrap draws n reports with replacement and
    correlates the pairs of distinct draws (a report drawn twice is not paired with itself).
    """
    if len(hyps) != len(refs):
        raise ValueError(f"f1radgraph_pearson_all: {len(hyps)} hypotheses but {len(refs)} references")
    n = len(refs)
    if n < 3:
        return float("nan"), float("nan"), float("nan")
    x, y = f1radgraph_matrix(refs, level=level), f1radgraph_matrix(hyps, level=level)
    iu = np.triu_indices(n, 1)
    point = _pearson(x[iu], y[iu])
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        keep = idx[iu[0]] != idx[iu[1]]
        a, b = idx[iu[0]][keep], idx[iu[1]][keep]
        boots.append(_pearson(x[a, b], y[a, b]))
    boots = [r for r in boots if not np.isnan(r)]  # a resample with a constant side has no r
    lo, hi = np.quantile(boots, [0.025, 0.975]) if boots else (float("nan"), float("nan"))
    return point, float(lo), float(hi)
