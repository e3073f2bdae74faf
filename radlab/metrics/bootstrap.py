"""Summaries with seeded, vectorised percentile-bootstrap CIs, and paired tests of two models.

Resample weights are a ``(n_boot, n)`` count matrix, so a mean is one matrix product and the
corpus CheXpert F1s are recomputed from resampled counts.

Replicates (one model trained with several seeds): :func:`two_level_bootstrap` resamples the
replicates, then the items within each drawn replicate, so its CI covers training randomness as
well as the test items; :func:`pooled_paired_bootstrap` applies it to paired per-sample frames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from radlab.data.schema import CHEXPERT5, CHEXPERT14
from radlab.metrics.grounding import GROUNDING_METRICS
from radlab.metrics.report import CHEXPERT_PRED_PREFIX, CHEXPERT_REF_PREFIX, CORPUS_METRICS, REPORT_METRICS

# Per-sample metrics a summary knows (report then grounding; ``mean_chars`` once).
KNOWN_METRICS = tuple(dict.fromkeys(REPORT_METRICS + GROUNDING_METRICS))


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
        diffs, counts, n = _diff_statistics(a, b, metrics)
        rows = []
        for name, diff in diffs.items():
            point = float(diff(np.ones((1, n)))[0])
            boot = _run_bootstrap(diff, n, n_boot, seed)
            lo, hi = np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
            rows.append({"metric": name, "diff": point, "ci_low": float(lo), "ci_high": float(hi), "n": counts[name]})
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


def _diff_statistics(a: pd.DataFrame, b: pd.DataFrame, metrics: Sequence[str] | None
                     ) -> tuple[dict[str, Statistic], dict[str, int], int]:
    """``a - b`` statistics of two per-sample frames over the metrics they share, their ``n`` and the
    number of paired rows.  Frames that both have an ``id`` column are aligned on it (the id sets must
    match); otherwise rows pair by position."""
    if "id" in a.columns and "id" in b.columns:
        if a["id"].duplicated().any() or set(a["id"]) != set(b["id"]):
            raise ValueError("paired frames must hold the same unique ids")
        b = b.set_index("id").loc[a["id"]].reset_index()
    if len(a) != len(b):
        raise ValueError(f"paired frames differ in length: {len(a)} vs {len(b)}")
    sa, ca, n = _statistics(a.reset_index(drop=True), metrics)
    sb, cb, _ = _statistics(b.reset_index(drop=True), metrics)
    out: dict[str, Statistic] = {}
    for name in [m for m in sa if m in sb]:

        def diff(w: np.ndarray, fa: Statistic = sa[name], fb: Statistic = sb[name]) -> np.ndarray:
            return fa(w) - fb(w)

        out[name] = diff
    return out, {m: min(ca[m], cb[m]) for m in out}, n


def two_level_bootstrap(
    stats: Sequence[Statistic],
    sizes: Sequence[int],
    n_boot: int = 1000,
    seed: int = 0,
    *,
    ci: float = 0.95,
    resample_replicates: bool = True,
) -> dict[str, Any]:
    """Percentile bootstrap of the mean over ``R`` replicates of a per-replicate statistic.

    ``stats[r]`` maps item weights ``(m, sizes[r])`` to ``(m,)`` values of replicate ``r`` (e.g. its
    paired difference ``a_r - b_r``; see :data:`Statistic`); replicates may have different item counts.
    Each of the ``n_boot`` resamples draws ``R`` replicates with replacement (indices ``(n_boot, R)``),
    then for every drawn slot its own resample of that replicate's items, and averages the ``R`` slot
    values: the CI covers training randomness (which replicate) and the test items.  With
    ``resample_replicates=False`` the slots are the replicates themselves (items only), the interval a
    reader would get by treating the replicates as fixed.  One seeded generator draws everything.

    Returns ``{"value", "ci_low", "ci_high", "per_replicate", "boot"}``: ``value`` the mean over
    replicates of each one's point statistic (weights of ones), ``per_replicate`` those ``(R,)`` point
    values, ``boot`` the ``(n_boot,)`` resampled means.  NaN replicates are left out of a mean.
    """
    n_rep = len(stats)
    if n_rep == 0 or len(sizes) != n_rep:
        raise ValueError(f"two_level_bootstrap: {n_rep} statistics for {len(sizes)} sizes (need one each, >= 1)")
    per = np.array([float(st(np.ones((1, n)))[0]) if n else np.nan for st, n in zip(stats, sizes)])
    rng = np.random.default_rng(seed)
    slots = (rng.integers(0, n_rep, size=(n_boot, n_rep)) if resample_replicates
             else np.broadcast_to(np.arange(n_rep), (n_boot, n_rep)))
    values = np.full((n_boot, n_rep), np.nan)
    for r, (st, n) in enumerate(zip(stats, sizes)):
        where = np.nonzero(slots == r)
        child = int(rng.integers(2**63 - 1))  # drawn for every replicate, so seeds do not depend on the slots
        if where[0].size and n:
            values[where] = _run_bootstrap(st, n, where[0].size, child)
    ok = np.isfinite(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(ok.any(axis=1), np.where(ok, values, 0.0).sum(axis=1) / ok.sum(axis=1), np.nan)
    alpha = (1 - ci) / 2
    lo, hi = np.nanquantile(boot, [alpha, 1 - alpha]) if np.isfinite(boot).any() else (np.nan, np.nan)
    value = float(np.nanmean(per)) if np.isfinite(per).any() else float("nan")
    return {"value": value, "ci_low": float(lo), "ci_high": float(hi), "per_replicate": per, "boot": boot}


def agreeing(per_replicate: Sequence[float] | np.ndarray, mean: float) -> int:
    """How many replicates' own differences have the sign of the pooled ``mean`` (a zero mean: those
    that are exactly zero); NaN replicates never agree."""
    per = np.asarray(per_replicate, dtype=np.float64)
    return int(np.sum(np.isfinite(per) & (np.sign(per) == np.sign(mean)))) if np.isfinite(mean) else 0


POOLED_COLUMNS = ["metric", "diff", "ci_low", "ci_high", "n", "n_replicates", "n_agree", "replicate_diffs"]


def pooled_paired_bootstrap(
    pairs: Sequence[tuple[pd.DataFrame, pd.DataFrame]],
    n_boot: int = 1000,
    seed: int = 0,
    *,
    metrics: Sequence[str] | None = None,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Paired comparison ``a - b`` pooled over replicates: ``pairs[r]`` is replicate ``r``'s pair of
    per-sample frames (aligned as in :func:`paired_bootstrap`; replicates may hold different items).

    Returns ``DataFrame[metric, diff, ci_low, ci_high, n, n_replicates, n_agree, replicate_diffs]``:
    ``diff`` the mean over replicates of each replicate's difference, the CI from
    :func:`two_level_bootstrap` (replicates, then items), ``n`` the fewest paired items of a replicate,
    ``n_agree`` the replicates whose own difference has the sign of ``diff`` (:func:`agreeing`),
    ``replicate_diffs`` the ``R`` differences (a tuple).  One pair gives :func:`paired_bootstrap`'s
    numbers (items only: that CI says nothing about training randomness).
    """
    if not pairs:
        raise ValueError("pooled_paired_bootstrap: no replicate pairs")
    if len(pairs) == 1:
        one = paired_bootstrap(pairs[0][0], pairs[0][1], n_boot, seed, metrics=metrics, ci=ci)
        assert isinstance(one, pd.DataFrame)
        one["n_replicates"] = 1
        one["n_agree"] = [agreeing([d], d) for d in one["diff"]]
        one["replicate_diffs"] = [(float(d),) for d in one["diff"]]
        return one[POOLED_COLUMNS]
    per = [_diff_statistics(a, b, metrics) for a, b in pairs]
    names = [m for m in per[0][0] if all(m in p[0] for p in per)]
    rows = []
    for name in names:
        res = two_level_bootstrap([p[0][name] for p in per], [p[2] for p in per], n_boot, seed, ci=ci)
        rows.append({"metric": name, "diff": res["value"], "ci_low": res["ci_low"], "ci_high": res["ci_high"],
                     "n": min(p[1][name] for p in per), "n_replicates": len(pairs),
                     "n_agree": agreeing(res["per_replicate"], res["value"]),
                     "replicate_diffs": tuple(float(d) for d in res["per_replicate"])})
    return pd.DataFrame(rows, columns=POOLED_COLUMNS)
