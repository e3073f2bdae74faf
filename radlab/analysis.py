"""Paper-style tables, key tests and a findings paragraph generated from the numbers.

Inputs are the evaluation contracts (``results.csv``: ``model, task, metric, value, ci_low,
ci_high, n``; ``comparisons.csv``: ``model_a, model_b, task, metric, diff, ci_low, ci_high, n``)
and the :class:`radlab.evaluation.ModelSpec` list, so every function here also works on tables
read back from disk or written by hand (the tests do that).

* :func:`pool_results` — one row per model label: a model trained with several seeds (replicates
  ``<label>@s<k>``, :mod:`radlab.experiment`) gets the mean over its replicates and their spread.
  Tables 1-3, the key tests and the findings read these pooled values.
* :func:`table1` — report metrics per model (Table 1), best per column in bold, with CIs (replicated
  models: mean ± sd over seeds).
* :func:`table2` — grounding mAP@0.5 per grounding kind (Table 2).
* :func:`table3` — the reward ablation (Table 3): GRPO runs from the same start and thinking
  setting with different rewards, each run's other differing settings listed, with the mean
  answer length.
* :func:`key_tests` — the paired tests the paper's claims rest on, with a verdict per row.
* :func:`findings` — sentences written from those numbers (never hand-edited), also saved to
  ``findings.md`` by :func:`write_findings`.

Figures live in :mod:`radlab.plots_analysis`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import runs
from radlab.experiment import (
    MODEL_ORDER,
    PAPER_LABELS,
    init_run,
    paper_question,
    read_params,
    reward_ablations,
    reward_names,
    split_replicate,
)
from radlab.metrics.report import CHEXPERT_PRED_PREFIX as CHEXPERT_PRED
from radlab.metrics.report import CHEXPERT_REF_PREFIX as CHEXPERT_REF
from radlab.vocab import split_list

# Display order of metrics (models: radlab.experiment.MODEL_ORDER).
REPORT_METRICS = (
    "rouge_l", "bleu4", "chexpert_f1_micro14", "chexpert_f1_macro14", "chexpert_f1_micro5", "chexpert_f1_macro5",
    "chexpert_f1", "f1radgraph_simple", "f1radgraph_partial", "f1radgraph_complete", "radcliq_lite", "mean_chars",
)
GROUNDING_METRICS = ("map50", "map50_95", "acc50", "mean_iou", "box_soft_f1")
LOWER_IS_BETTER = frozenset({"radcliq_lite"})
# Not ranked (no "best"): lengths and counts describe, they are not scores.
UNRANKED = frozenset({"mean_chars", "n_tokens", "n_pred", "truncated", "missing_think", "answered"})
# Shown as is (not ×100).
UNSCALED = frozenset({"mean_chars", "n_tokens", "n_pred", "radcliq_lite"})
LABELS = {
    "rouge_l": "R-L", "bleu4": "BLEU-4", "chexpert_f1_micro14": "CXb-micro14", "chexpert_f1_macro14": "CXb-macro14",
    "chexpert_f1_micro5": "CXb-micro5", "chexpert_f1_macro5": "CXb-macro5", "chexpert_f1": "CXb-F1/sample",
    "f1radgraph_simple": "RGF1-S", "f1radgraph_partial": "RGF1-P", "f1radgraph_complete": "RGF1-C",
    "radcliq_lite": "RCQ-lite", "mean_chars": "chars", "map50": "mAP@0.5", "map50_95": "mAP@.5:.95",
    "acc50": "Acc@0.5", "mean_iou": "IoU", "box_soft_f1": "soft-F1",
}
GROUNDING_KIND_LABELS = {"anatomy": "Anatomy", "abnormality": "Abnorm.", "abnormality_all": "Abnorm. (all)",
                         "phrase": "Phrase"}
# A GRPO model whose answers shrink by more than this fraction vs its start is flagged.
LENGTH_COLLAPSE = 0.30
# Truncation / missing-think rates worth a sentence.
FORMAT_ALERT = 0.05


def model_order(models: Iterable[str]) -> list[str]:
    """Canonical models first (paper order), then the rest alphabetically."""
    models = list(dict.fromkeys(models))
    known = [m for m in MODEL_ORDER if m in models]
    return known + sorted(m for m in models if m not in MODEL_ORDER)


@dataclass
class Table:
    """A model × column table: ``values`` (numbers), ``text`` (``"value [lo, hi]"`` strings, best
    in ``**bold**``), ``best`` (bool mask) and a ``caption``."""

    values: pd.DataFrame
    text: pd.DataFrame
    best: pd.DataFrame
    caption: str
    # Descriptive text columns shown before the metrics (Table 3: rewards, other settings); same index.
    info: pd.DataFrame | None = None

    def shown(self) -> pd.DataFrame:
        """``info`` then ``text``: every column a reader sees, model as the index."""
        return self.text if self.info is None else pd.concat([self.info, self.text], axis=1)

    def markdown(self) -> str:
        """GitHub markdown with the caption as a first line."""
        df = self.shown().copy()
        df.insert(0, "model", df.index)
        header = "| " + " | ".join(map(str, df.columns)) + " |"
        sep = "|" + "---|" * len(df.columns)
        body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
        return "\n".join([f"**{self.caption}**", "", header, sep, *body])

    def styler(self) -> Any:
        """A pandas ``Styler`` of ``text`` (bold markers removed; best cells bold via CSS)."""
        plain = self.shown().replace(r"\*\*", "", regex=True)
        best = self.best

        def bold(col: pd.Series) -> list[str]:
            if col.name not in best.columns:
                return [""] * len(col)
            return ["font-weight: bold" if best.loc[i, col.name] else "" for i in col.index]

        return plain.style.apply(bold, axis=0).set_caption(self.caption)

    def _repr_markdown_(self) -> str:  # notebooks render it without extra calls
        return self.markdown()


def _fmt(metric: str, value: float, lo: float | None = None, hi: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    scale = 1.0 if metric in UNSCALED else 100.0
    digits = 0 if metric in ("mean_chars", "n_tokens") else 2 if metric in UNSCALED else 1
    text = f"{value * scale:.{digits}f}"
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


POOLED_RESULTS_COLUMNS = ["model", "task", "metric", "value", "ci_low", "ci_high", "n", "n_replicates", "sd", "min",
                          "max"]


def pool_results(results: pd.DataFrame) -> pd.DataFrame:
    """``results.csv`` with one row per model label, task and metric (:data:`POOLED_RESULTS_COLUMNS`).

    Replicates ``<label>@s<k>`` (:func:`radlab.experiment.split_replicate`) become one ``<label>`` row:
    ``value`` the mean over replicates, ``sd`` (ddof 1) / ``min`` / ``max`` their spread,
    ``n_replicates`` how many, ``n`` the fewest rows of one, and no CI (a bootstrap CI covers one
    replicate's test items; see the comparisons for intervals over replicates).  A model without
    replicates keeps its row and CI (``n_replicates`` 1).  Pooled input is returned as it is.
    """
    if "n_replicates" in results.columns:
        return results
    rows = []
    frame = results.assign(_label=[split_replicate(m)[0] for m in results["model"]])
    for (label, task, metric), sub in frame.groupby(["_label", "task", "metric"], sort=False):
        vals = sub["value"].to_numpy(float)
        if len(sub) == 1:
            r = sub.iloc[0]
            rows.append({"model": label, "task": task, "metric": metric, "value": r["value"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"], "n": r["n"], "n_replicates": 1, "sd": math.nan,
                         "min": r["value"], "max": r["value"]})
            continue
        ok = vals[pd.notna(vals)]
        rows.append({"model": label, "task": task, "metric": metric,
                     "value": float(ok.mean()) if ok.size else math.nan, "ci_low": math.nan, "ci_high": math.nan,
                     "n": int(sub["n"].min()), "n_replicates": len(sub),
                     "sd": float(ok.std(ddof=1)) if ok.size > 1 else math.nan,
                     "min": float(ok.min()) if ok.size else math.nan, "max": float(ok.max()) if ok.size else math.nan})
    return pd.DataFrame(rows, columns=POOLED_RESULTS_COLUMNS)


def _fmt_spread(metric: str, value: float, sd: float, n_replicates: int) -> str:
    """``"45.3 ± 2.1 (3 seeds)"``: a replicated model's mean and the sd over its replicates."""
    scale = 1.0 if metric in UNSCALED else 100.0
    digits = 0 if metric in ("mean_chars", "n_tokens") else 2 if metric in UNSCALED else 1
    spread = f" ± {sd * scale:.{digits}f}" if not math.isnan(sd) else ""
    return f"{_fmt(metric, value)}{spread} ({n_replicates} seeds)"


def metric_table(results: pd.DataFrame, columns: Sequence[tuple[str, str, str]], models: Sequence[str] | None,
                 caption: str) -> Table:
    """Build a :class:`Table` from long results (pooled first: :func:`pool_results`).

    ``columns`` are ``(label, task, metric)``; ``models`` the rows (default: every model with a
    value in any column, canonical order).  Bold = best value of a ranked metric (ties all bold).
    A model with replicates shows ``mean ± sd (n seeds)`` instead of a CI, and the caption says so.
    """
    results = pool_results(results)
    if (results["n_replicates"] > 1).any():
        caption += "; a model trained with several seeds: mean ± sd over its seeds"
    index = {(r.model, r.task, r.metric): r for r in results.itertuples(index=False)}
    if models is None:
        models = model_order(m for (m, t, me) in index if any((t, me) == (c[1], c[2]) for c in columns))
    values = pd.DataFrame(index=list(models), columns=[c[0] for c in columns], dtype=float)
    text = pd.DataFrame(index=list(models), columns=[c[0] for c in columns], dtype=object)
    best = pd.DataFrame(False, index=list(models), columns=[c[0] for c in columns])
    for label, task, metric in columns:
        for m in models:
            r = index.get((m, task, metric))
            values.loc[m, label] = r.value if r is not None else math.nan
            if r is None:
                text.loc[m, label] = "–"
            elif r.n_replicates > 1:
                text.loc[m, label] = _fmt_spread(metric, r.value, r.sd, int(r.n_replicates))
            else:
                text.loc[m, label] = _fmt(metric, r.value, r.ci_low, r.ci_high)
        col = values[label]
        # Bold needs a ranking: at least two values and not all equal (a tie of everyone is no "best").
        if metric not in UNRANKED and col.notna().sum() >= 2 and col.nunique() > 1:
            target = col.min() if metric in LOWER_IS_BETTER else col.max()
            for m in models:
                if col[m] == target:
                    best.loc[m, label] = True
                    text.loc[m, label] = f"**{text.loc[m, label]}**"
    return Table(values, text, best, caption)


def table1(results: pd.DataFrame, models: Sequence[str] | None = None, ci: float = 0.95) -> Table | None:
    """Table 1: report metrics per model (×100 except chars and RadCliQ-lite), CIs in brackets."""
    present = set(results.loc[results["task"] == "report", "metric"])
    cols = [(LABELS.get(m, m), "report", m) for m in REPORT_METRICS if m in present]
    if not cols:
        return None
    return metric_table(results, cols, models,
                        f"Table 1. Report generation (×100; {ci:.0%} bootstrap CI; best in bold; "
                        "RCQ-lite: lower is better)")


def table2(results: pd.DataFrame, models: Sequence[str] | None = None, metric: str = "map50",
           ci: float = 0.95) -> Table | None:
    """Table 2: grounding ``metric`` (default mAP@0.5) per grounding kind, plus all kinds pooled."""
    tasks = sorted(t for t in results["task"].unique() if t.startswith("grounding:"))
    cols = [(GROUNDING_KIND_LABELS.get(t.split(":", 1)[1], t.split(":", 1)[1]), t, metric) for t in tasks]
    if (results["task"] == "grounding").any():
        cols.append(("All", "grounding", metric))
    if not cols or not (results["metric"] == metric).any():
        return None
    return metric_table(results, cols, models,
                        f"Table 2. Grounding {LABELS.get(metric, metric)} (×100) per task ({ci:.0%} bootstrap CI)")


TABLE3_COLUMNS = ["group", "start", "thinking", "model", "run", "reference", "rewards", "other_settings",
                  "task", "metric", "value", "ci_low", "ci_high", "n", "n_replicates", "sd"]


def label_specs(specs: Sequence[Any]) -> list[Any]:
    """One spec per model label (the replicate with the lowest seed), named by its label: what the
    pooled tables show (:func:`pool_results`)."""
    out: dict[str, Any] = {}
    for s in sorted(specs, key=lambda s: s.replicate):
        out.setdefault(s.group, dataclasses.replace(s, name=s.group) if s.name != s.group else s)
    return [out[g] for g in dict.fromkeys(s.group for s in specs)]


def table3(results: pd.DataFrame, specs: Sequence[Any], run_dir: str | os.PathLike[str] | None = None
           ) -> tuple[Table | None, str]:
    """Table 3: the reward ablation, over GRPO runs from the same start with the same thinking setting.

    Groups come from :func:`radlab.experiment.reward_ablations` over the evaluated models: GRPO
    runs with the same start and ``thinking`` that use two or more reward settings.  Rows: each
    group's runs, reference first, labelled by the model (``sft+grpo``, ``sft+grpo[bleu]``);
    leading columns: ``rewards`` (the run's reward items) and ``other settings`` (the params
    besides rewards in which it differs from the group's reference run, e.g. ``top_k=5``; empty
    when the comparison is rewards-only); then the report metrics, the grounding metrics and the
    mean output length (report characters, report and grounding tokens).  Best values are bold
    within a group.  With ``run_dir`` the long form (:data:`TABLE3_COLUMNS`, ``other_settings``
    joined by ``"; "``) is written to ``table3.csv``.  Without such a group returns ``(None, reason)``.
    """
    results = pool_results(results)
    specs = label_specs(specs)
    evaluated = set(results["model"])
    groups = reward_ablations([s for s in specs if s.name in evaluated])
    if not groups:
        found = ", ".join(f"{s.name}: {'+'.join(reward_names(s.run_params))}" for s in specs
                          if s.run_params.get("stage") == "grpo") or "none"
        return None, ("Table 3 (reward ablation) skipped: it needs two or more evaluated GRPO runs with the same "
                      f"start and thinking setting but different rewards (GRPO runs: {found}); add a params file "
                      "with stage: grpo and other reward_names")
    have = {(t, m) for t, m in zip(results["task"], results["metric"])}
    cols = [(LABELS.get(m, m), "report", m) for m in REPORT_METRICS if m != "mean_chars" and ("report", m) in have]
    cols += [(LABELS.get(m, m), "grounding", m) for m in GROUNDING_METRICS if ("grounding", m) in have]
    cols += [(label, task, m) for label, task, m in (("chars", "report", "mean_chars"),
                                                      ("tokens (report)", "report", "n_tokens"),
                                                      ("tokens (grounding)", "grounding", "n_tokens"))
             if (task, m) in have]
    caption = ("Table 3. Reward ablation: GRPO runs from the same start and thinking setting with different "
               "rewards; 'other settings' lists where a run differs from its group's reference beyond rewards "
               "(×100 except RCQ-lite and lengths; chars = mean report length in characters, tokens = mean "
               "output tokens; best in bold within a group)")
    parts = [metric_table(results, cols, [s.name for s in g.runs], caption) for g in groups]
    info = pd.DataFrame(
        [{"start": g.start or "–", "thinking": g.thinking, "rewards": ",".join(reward_names(s.run_params)),
          "other settings": "reference" if s.run == g.reference else ("; ".join(g.differences[s.run]) or "–")}
         for g in groups for s in g.runs],
        index=[s.name for g in groups for s in g.runs])
    if len(groups) == 1:
        info = info.drop(columns=["start", "thinking"])  # one group: its start and mode are in every label
    table = Table(pd.concat([p.values for p in parts]), pd.concat([p.text for p in parts]),
                  pd.concat([p.best for p in parts]), caption, info)
    if run_dir is not None:
        index = {(r.model, r.task, r.metric): r for r in results.itertuples(index=False)}
        rows = []
        for g_i, g in enumerate(groups):
            for s in g.runs:
                for _, task, metric in cols:
                    r = index.get((s.name, task, metric))
                    if r is not None:
                        rows.append({"group": g_i, "start": g.start, "thinking": g.thinking, "model": s.name,
                                     "run": s.run, "reference": g.reference,
                                     "rewards": ",".join(reward_names(s.run_params)),
                                     "other_settings": "; ".join(g.differences[s.run]), "task": task,
                                     "metric": metric, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high,
                                     "n": r.n, "n_replicates": r.n_replicates, "sd": r.sd})
        if not runs.is_complete(run_dir):  # a reused (finished) analysis keeps its table
            runs.write_table(pd.DataFrame(rows, columns=TABLE3_COLUMNS), Path(run_dir) / "table3.csv")
    return table, ""


# ----------------------------------------------------------------------------------------------
# Key tests and the findings paragraph
# ----------------------------------------------------------------------------------------------

def headline_metric(results: pd.DataFrame, task: str, preferred: str) -> str | None:
    """``preferred`` if ``results`` has it for ``task``, else the first available fallback."""
    have = set(results.loc[results["task"] == task, "metric"])
    fallbacks = (preferred,) + (("f1radgraph_partial", "f1radgraph_complete", "chexpert_f1", "rouge_l")
                                if task == "report" else ("map50", "box_soft_f1", "mean_iou"))
    return next((m for m in fallbacks if m in have), None)


def verdict(diff: float, lo: float, hi: float, lower_is_better: bool = False) -> str:
    """``"better"`` / ``"worse"`` when the CI excludes 0, else ``"no detectable difference"``."""
    if any(math.isnan(x) for x in (diff, lo, hi)):
        return "undetermined"
    if lo > 0:
        return "worse" if lower_is_better else "better"
    if hi < 0:
        return "better" if lower_is_better else "worse"
    return "no detectable difference"


def key_tests(comparisons: pd.DataFrame, results: pd.DataFrame, report_metric: str = "f1radgraph_partial",
              grounding_metric: str = "map50") -> pd.DataFrame:
    """The declared comparisons (the pairs of ``comparisons``, in order) on each task's headline metric.

    Columns: ``question, model_a, model_b, task, metric, a, b, diff, ci_low, ci_high, n, n_replicates,
    n_agree, verdict`` (``a``/``b`` the two models' values from ``results``, means over replicates;
    ``question`` the paper's wording for its pairs, else ``"a vs b"``; ``n_replicates`` the replicate
    pairs the difference pools, ``n_agree`` those whose own difference has its sign).  Each replicate's
    own row of ``comparisons`` (``replicate`` set) is not a key test.
    """
    rows = []
    comparisons = declared_rows(comparisons)
    results = pool_results(results)
    pairs = list(dict.fromkeys(zip(comparisons["model_a"], comparisons["model_b"]))) if len(comparisons) else []
    for a, b in pairs:
        question = paper_question(a, b)
        for task, pref in (("report", report_metric), ("grounding", grounding_metric)):
            metric = headline_metric(results, task, pref)
            c = _comparison(comparisons, a, b, task, metric)
            if c is None:
                continue
            rows.append({"question": question, "model_a": a, "model_b": b, "task": task, "metric": metric,
                         "a": _value(results, a, task, metric), "b": _value(results, b, task, metric),
                         "diff": c["diff"], "ci_low": c["ci_low"], "ci_high": c["ci_high"], "n": c["n"],
                         "n_replicates": int(c.get("n_replicates", 1)), "n_agree": c.get("n_agree", math.nan),
                         "verdict": verdict(c["diff"], c["ci_low"], c["ci_high"], metric in LOWER_IS_BETTER)})
    return pd.DataFrame(rows, columns=["question", "model_a", "model_b", "task", "metric", "a", "b", "diff",
                                       "ci_low", "ci_high", "n", "n_replicates", "n_agree", "verdict"])


def declared_rows(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The declared pairs' rows of ``comparisons.csv`` (each replicate's own row, ``replicate`` set, left out)."""
    if "replicate" not in comparisons.columns:
        return comparisons
    return comparisons[comparisons["replicate"].isna()]


def replicate_rows(comparisons: pd.DataFrame, a: str, b: str, task: str, metric: str) -> pd.DataFrame:
    """Each replicate's own row of the declared pair ``a - b`` (``replicate`` set; models ``a@s<k>`` /
    ``b@s<k>``, or a fixed model such as ``text_only``), by seed."""
    if "replicate" not in comparisons.columns or comparisons.empty:
        return comparisons.iloc[0:0]
    sel = comparisons[comparisons["replicate"].notna() & (comparisons["task"] == task)
                      & (comparisons["metric"] == metric)]
    mine = [split_replicate(x)[0] == a and split_replicate(y)[0] == b for x, y in zip(sel["model_a"], sel["model_b"])]
    return sel[mine].sort_values("replicate")


def _comparison(comparisons: pd.DataFrame, a: str, b: str, task: str, metric: str | None) -> dict[str, Any] | None:
    if metric is None or comparisons.empty:
        return None
    comparisons = declared_rows(comparisons)
    sel = comparisons[(comparisons["model_a"] == a) & (comparisons["model_b"] == b) & (comparisons["task"] == task)
                      & (comparisons["metric"] == metric)]
    return None if sel.empty else sel.iloc[0].to_dict()


def _value(results: pd.DataFrame, model: str, task: str, metric: str | None) -> float:
    if metric is None:
        return math.nan
    sel = results[(results["model"] == model) & (results["task"] == task) & (results["metric"] == metric)]
    return float(sel["value"].iloc[0]) if len(sel) else math.nan


def _ci(c: Mapping[str, Any]) -> str:
    reps = int(c.get("n_replicates", 1) or 1)
    if reps > 1:
        return (f"{c['diff']:+.3f} (mean over {reps} seed-paired replicates; 95% CI over replicates and items "
                f"{c['ci_low']:+.3f} to {c['ci_high']:+.3f}, n={int(c['n'])} items each)")
    return f"{c['diff']:+.3f} (95% CI {c['ci_low']:+.3f} to {c['ci_high']:+.3f}, n={int(c['n'])})"


def _tally(comparisons: pd.DataFrame, a: str, b: str, task: str) -> str:
    """``"11 report metrics: 3 better, 1 worse, 7 no detectable difference"`` for one pair and task
    (ranked metrics only), or ``""`` when there is at most one."""
    if comparisons.empty:
        return ""
    comparisons = declared_rows(comparisons)
    sel = comparisons[(comparisons["model_a"] == a) & (comparisons["model_b"] == b) & (comparisons["task"] == task)
                      & ~comparisons["metric"].isin(UNRANKED)]
    if len(sel) < 2:
        return ""
    verdicts = [verdict(r.diff, r.ci_low, r.ci_high, r.metric in LOWER_IS_BETTER) for r in sel.itertuples(index=False)]
    counts = {k: verdicts.count(k) for k in ("better", "worse", "no detectable difference")}
    return f"{len(sel)} {task} metrics: " + ", ".join(f"{n} {k}" for k, n in counts.items())


def _targeted_tasks(spec: Any) -> set[str]:
    """Tasks a GRPO run optimised: its ``tasks`` param, else inferred from its reward names."""
    tasks = spec.run_params.get("tasks") if spec.run_params else None
    if split_list(tasks):
        return set(split_list(tasks))
    names = reward_names(spec.run_params or {})
    try:
        from radlab.rewards import GROUNDING_REWARDS, REPORT_REWARDS
    except ImportError:  # rewards not importable: fall back to the names' wording
        REPORT_REWARDS, GROUNDING_REWARDS = (), ()
    out = set()
    for n in names:
        if n == "think_format":  # shapes the format of both tasks, targets neither
            continue
        if n in GROUNDING_REWARDS or ("box" in n and n not in REPORT_REWARDS):
            out.add("grounding")
        else:
            out.add("report")
    return out


def grpo_starts(specs: Sequence[Any]) -> dict[str, str]:
    """GRPO model -> the model it started from (both labels; runs started outside the experiment are left out)."""
    return {s.group: s.start for s in specs if s.run_params.get("stage") == "grpo" and s.start}


def paper_labels(specs: Sequence[Any] = ()) -> dict[str, str]:
    """The paper's run names -> the labels of their models here (from ``specs``; else the defaults)."""
    return {**PAPER_LABELS, **{s.run: s.group for s in specs if s.run in PAPER_LABELS}}


def findings(results: pd.DataFrame, comparisons: pd.DataFrame, specs: Sequence[Any] = (),
             notes: Sequence[str] = (), *, report_metric: str = "f1radgraph_partial",
             grounding_metric: str = "map50") -> str:
    """A short paragraph per question, written from the tables (no hand-written numbers).

    Answers: does RL beat SFT on each task (CI excludes 0?), does it beat the compute-matched
    SFT control, does thinking help, is a reward hacked (report length drops by more than
    :data:`LENGTH_COLLAPSE` vs the GRPO start), what GRPO does to a task it did not target, format
    failures (truncation / missing ``</think>``), and whether SFT beats the shortcut baselines.
    ``notes`` only contribute the names of skipped models; :func:`write_findings` lists them in full.
    Replicated models (several seeds) are compared by their mean difference over seed-paired
    replicates, with how many replicates agree in sign; a comparison of models trained once says that
    its CI covers the test items, not training randomness.
    """
    out: list[str] = []
    results = pool_results(results)
    one_draw: list[str] = []  # compared pairs that rest on one training run per model
    metric_of = {"report": headline_metric(results, "report", report_metric),
                 "grounding": headline_metric(results, "grounding", grounding_metric)}
    models = set(results["model"])
    lab = paper_labels(specs)  # the labels of the paper's runs in this experiment
    m_sft, m_more, m_rl, m_cold_rl = lab["sft"], lab["sft_more"], lab["grpo"], lab["grpo_think"]

    def name(m: str | None) -> str:
        return LABELS.get(m or "", m or "?")

    def sentence(a: str, b: str, task: str, what: str) -> str | None:
        metric = metric_of[task]
        c = _comparison(comparisons, a, b, task, metric)
        if c is None:
            return None
        v = verdict(c["diff"], c["ci_low"], c["ci_high"], metric in LOWER_IS_BETTER)
        va, vb = _value(results, a, task, metric), _value(results, b, task, metric)
        judged = {"better": f"{a} is better (the CI excludes 0)", "worse": f"{a} is worse (the CI excludes 0)",
                  "no detectable difference": "no detectable difference (the CI includes 0)",
                  "undetermined": "undetermined (no CI)"}[v]
        tally = _tally(comparisons, a, b, task)
        reps = int(c.get("n_replicates", 1) or 1)
        agree = ""
        if reps > 1:
            own = replicate_rows(comparisons, a, b, task, metric)
            agree = (f"; {int(c['n_agree'])} of {reps} replicates agree in sign ("
                     + ", ".join(f"seed {int(r.replicate)} {r.diff:+.3f}" for r in own.itertuples(index=False)) + ")")
        elif f"{a} − {b}" not in one_draw:
            one_draw.append(f"{a} − {b}")
        means = f" (means over {reps} seeds)" if reps > 1 else ""
        return (f"{what}, {task} ({name(metric)}): {a} {va:.3f} vs {b} {vb:.3f}{means}, difference {_ci(c)}: "
                f"{judged}{agree}" + (f"; over all {tally}" if tally else "") + ".")

    # 1. RL vs SFT, per task.
    rl = [s for t in ("report", "grounding") if (s := sentence(m_rl, m_sft, t, "RL vs SFT"))]
    if rl:
        out += rl
    else:
        out.append("RL vs SFT: not tested (" + ", ".join(m for m in (m_rl, m_sft) if m not in models)
                   + " not evaluated).")
    # 2. Compute-matched control.
    cm = [s for t in ("report", "grounding") if (s := sentence(m_rl, m_more, t, f"RL vs SFT for the same budget ({m_more})"))]
    if cm:
        out += cm
    elif m_rl in models:
        out.append(f"The compute-matched control ({m_more}: SFT continued for the GRPO budget) is missing, so a "
                   "gain of RL over SFT cannot be separated from simply training longer.")
    # 3. Thinking.
    th = [s for t in ("report", "grounding") if (s := sentence(m_cold_rl, m_rl, t, "Thinking vs no thinking after RL"))]
    if th:
        out += th
    elif m_cold_rl not in models:
        out.append(f"Thinking vs no thinking: not tested ({m_cold_rl} not evaluated).")
    # 4. Reward hacking through length, and 5. the non-targeted task.
    spec_by = {s.name: s for s in label_specs(specs)}
    starts = grpo_starts(specs) or {m: m_sft for m in models if m == m_rl}
    for model, start in starts.items():
        if model not in models or start not in models:
            continue
        a, b = _value(results, model, "report", "mean_chars"), _value(results, start, "report", "mean_chars")
        if not (math.isnan(a) or math.isnan(b)) and b > 0:
            change = a / b - 1.0
            if change < -LENGTH_COLLAPSE:
                out.append(f"Possible reward hacking: {model}'s reports are {-change:.0%} shorter than {start}'s "
                           f"({a:.0f} vs {b:.0f} characters), a drop beyond {LENGTH_COLLAPSE:.0%}.")
            else:
                out.append(f"No length collapse for {model}: mean report length {a:.0f} vs {b:.0f} characters "
                           f"for {start} ({change:+.0%}).")
        spec = spec_by.get(model)
        if spec is not None and spec.run_params:
            targeted = _targeted_tasks(spec)
            if targeted >= {"report", "grounding"}:
                out.append(f"{model}'s GRPO optimised both tasks, so no task was left untargeted.")
            for task in ("report", "grounding"):
                if task in targeted:
                    continue
                s = sentence(model, start, task, f"Effect of {model}'s GRPO (trained on {', '.join(sorted(targeted))}"
                                                 ") on the task it did not target")
                if s:
                    out.append(s)
    # 6. Format failures.
    for diag, what in (("truncated", "hit the token budget without stopping"),
                       ("missing_think", "have no </think> (scored 0)")):
        sel = results[(results["metric"] == diag) & (results["task"].isin(["report", "grounding"]))
                      & (results["value"] > FORMAT_ALERT)]
        if len(sel):
            parts = [f"{r.model} {r.task} {r.value:.0%}" for r in sel.itertuples(index=False)]
            out.append(f"Answers that {what} (over {FORMAT_ALERT:.0%}): " + ", ".join(parts) + ".")
    # 7. Shortcuts.
    for base in ("text_only", "shuffled_image"):
        for task in ("report", "grounding"):
            s = sentence(m_sft, base, task, {"text_only": "SFT vs the text-only prior",
                                              "shuffled_image": "SFT vs SFT on shuffled images"}[base])
            if s:
                out.append(s)
    if one_draw:
        out.append(f"One training run per model in {', '.join(one_draw)}: each CI covers the test items, not "
                   "training randomness, and a rerun with another seed can move a model by more than the CI; "
                   "`radlab run <experiment> --seeds 0,1,2` trains replicates and the analysis pools them.")
    skipped = sorted({n.split(":", 1)[0] for n in notes if ": skipped" in n.split("—")[0]})
    if skipped:
        out.append(f"Not evaluated: {', '.join(skipped)} (see the notes).")
    return " ".join(out)


COMPUTE_COLUMNS = ["train_steps", "train_flops", "train_seconds", "total_flops", "total_seconds"]


def run_compute(run_dir: str | os.PathLike[str] | None) -> dict[str, float]:
    """Training compute of one run and of the chain of runs it started from.

    ``train_steps``, ``train_flops`` (:mod:`radlab.training.compute`) and ``train_seconds`` (wall
    time, this machine) come from the run's ``DONE``; ``total_*`` add the runs whose ``model/``
    its ``init_model`` points at, recursively (``sft+grpo`` = SFT's compute + GRPO's), with an SFT
    run's vision warm start (``vision_warmup_flops`` in its ``DONE``) included.  NaN where a
    run recorded none (the data stage, an embedded or hub model).
    """
    nan = float("nan")
    out = dict.fromkeys(COMPUTE_COLUMNS, nan)
    seen: set[Path] = set()
    current = Path(run_dir) if run_dir is not None else None
    totals = [0.0, 0.0]
    first = True
    while current is not None and current not in seen and (current / runs.DONE_MARKER).exists():
        seen.add(current)
        done = runs.read_summary(current)
        flops, seconds = done.get("train_flops"), done.get("train_seconds")
        if first:
            out.update(train_steps=float(done.get("global_step", nan)), train_flops=float(flops if flops is not None else nan),
                       train_seconds=float(seconds if seconds is not None else nan))
            first = False
        totals[0] += float(flops or 0.0) + float(done.get("vision_warmup_flops") or 0.0)
        totals[1] += float(seconds or 0.0)
        init = str(read_params(current).get("init_model") or "")
        current = Path(init).parent if init and Path(init).name == "model" else None
    if not first:
        out.update(total_flops=totals[0], total_seconds=totals[1])
    return out


def models_frame(specs: Sequence[Any]) -> pd.DataFrame:
    """The models to evaluate: ``model, run, label, seed, stage, start, rewards, thinking, path, note``
    (``label`` shared by a model's replicates, ``seed`` the replicate's) and their training compute
    beside its wall time (:func:`run_compute`: ``train_steps, train_flops, train_seconds, total_flops,
    total_seconds``)."""
    return pd.DataFrame([{"model": s.name, "run": s.run, "label": s.group, "seed": s.replicate,
                          "stage": s.run_params.get("stage", ""), "start": s.start,
                          "rewards": ", ".join(reward_names(s.run_params)) if s.run_params.get("stage") == "grpo" else "",
                          "thinking": s.thinking, "path": s.path, "note": s.note, **run_compute(s.run_dir)}
                         for s in specs],
                        columns=["model", "run", "label", "seed", "stage", "start", "rewards", "thinking", "path", "note",
                                 *COMPUTE_COLUMNS])


def shortcut_table(results: pd.DataFrame, report_metric: str = "f1radgraph_partial",
                   grounding_metric: str = "map50") -> Table | pd.DataFrame:
    """Headline metrics of ``sft`` next to the ``text_only`` and ``shuffled_image`` baselines
    (an empty frame when no baseline was scored)."""
    results = pool_results(results)
    models = [m for m in (PAPER_LABELS["sft"], "text_only", "shuffled_image") if m in set(results["model"])]
    if not {"text_only", "shuffled_image"} & set(models):
        return pd.DataFrame()
    cols = [(f"{task}: {LABELS.get(m, m)}", task, m) for task, m in
            (("report", headline_metric(results, "report", report_metric)),
             ("grounding", headline_metric(results, "grounding", grounding_metric))) if m is not None]
    return metric_table(results, cols, models, "Shortcut baselines (×100, bootstrap CI)")


def summary(evaluation: Any, findings_text: str = "") -> dict[str, Any]:
    """What the ``DONE`` marker records: models, rows, seconds, headline tests and the findings."""
    tests = key_tests(evaluation.comparisons, evaluation.results)
    return {
        "models": sorted(set(evaluation.per_sample["model"])),
        "rows": int(len(evaluation.per_sample)),
        "generation_seconds": float(evaluation.timings["seconds"].fillna(0).sum()),
        "key_tests": tests[["question", "task", "metric", "diff", "ci_low", "ci_high", "n_replicates", "n_agree",
                            "verdict"]].to_dict("records"),
        "notes": list(evaluation.notes),
        "findings": findings_text,
    }


def notes_markdown(notes: Sequence[str], title: str = "Notes") -> str:
    """A markdown bullet list of notes (``""`` when there are none)."""
    notes = [n for n in notes if n]
    return f"**{title}**\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def write_findings(run_dir: str | os.PathLike[str], text: str, tables: Sequence[Table | None] = (),
                   notes: Sequence[str] = ()) -> Path:
    """Write ``findings.md``: the generated paragraph, the notes, then the tables in markdown.

    A finished run folder (``DONE``: a reused analysis) is left as it is."""
    if runs.is_complete(run_dir):
        return Path(run_dir) / "findings.md"
    parts = ["# Findings (generated from results.csv and comparisons.csv)", "", text, ""]
    if notes:
        parts += [notes_markdown(notes), ""]
    for t in tables:
        if t is not None:
            parts += [t.markdown(), ""]
    return runs.write_text(Path(run_dir) / "findings.md", "\n".join(parts))


# ----------------------------------------------------------------------------------------------
# Integrity checks: the environments behind each comparison, and reward hacking
# ----------------------------------------------------------------------------------------------

# env.json fields compared between runs (radlab.runs.environment_info), besides packages/<name>.
ENV_FIELDS = ("git_commit", "python", "platform", "cpu_model", "torch_build", "torch_cuda", "torch_device",
              "cuda_device_name", "torch_threads")
ENV_COLUMNS = ["model_a", "model_b", "field", "a", "b"]


def run_chain(run_dir: str | os.PathLike[str] | None) -> list[Path]:
    """``[run_dir, the run its model started from, ...]``: each step is
    :func:`radlab.experiment.init_run` over the run folders beside it (``[]`` for ``None``)."""
    chain: list[Path] = []
    current = Path(run_dir) if run_dir is not None else None
    while current is not None and current not in chain:
        chain.append(current)
        names = {p.name for p in current.parent.iterdir() if (p / "params.yaml").exists()} \
            if current.parent.is_dir() else set()
        start = init_run(current.name, read_params(current), names)
        current = current.parent / start if start else None
    return chain


def environment_of(run_dir: str | os.PathLike[str]) -> dict[str, str]:
    """A run's ``env.json`` flattened to ``{field: value}`` (:data:`ENV_FIELDS` and
    ``packages/<name>``, values as text); ``{}`` when the run has none."""
    env = runs.read_json(Path(run_dir) / "env.json")
    if not env:
        return {}
    flat = {f: str(env.get(f)) for f in ENV_FIELDS}
    flat.update({f"packages/{k}": str(v) for k, v in (env.get("packages") or {}).items()})
    return flat


def _chain_values(chain: Sequence[Path], envs: Mapping[Path, dict[str, str]], field: str) -> tuple[frozenset[str], str]:
    """The distinct values of ``field`` along a model's run chain, and their text (``"x"`` when all
    runs agree, else ``"x (grpo); y (sft)"``)."""
    per_run = [(p.name, envs[p].get(field, "–") if envs[p] else "no env.json") for p in chain]
    values = frozenset(v for _, v in per_run)
    text = per_run[0][1] if len(values) == 1 else "; ".join(f"{v} ({run})" for run, v in per_run)
    return values, text


def environment_differences(specs: Sequence[Any], comparisons: pd.DataFrame,
                            run_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Every environment difference between the two models of each compared pair.

    A model's environment is the ``env.json`` of its run and of each run its model started from
    (:func:`run_chain`: ``sft+grpo`` = the GRPO run and the SFT run).  For each pair of
    ``comparisons`` (``model_a, model_b``; pairs with a shortcut baseline or a model without a
    run folder are left out) and each field (:data:`ENV_FIELDS`: git commit, python, platform,
    CPU model, torch build and CUDA, device, torch threads; and every package version), a row
    when the set of values along the two chains differs.  Columns :data:`ENV_COLUMNS` (``a``/``b``:
    the value, or ``"value (run); value (run)"`` when a chain's runs differ among themselves).
    With ``run_dir`` (not finished) it is written to ``environment_differences.csv``.
    """
    by_name = {s.name: s for s in specs}
    pairs = list(dict.fromkeys(zip(comparisons["model_a"], comparisons["model_b"]))) if len(comparisons) else []
    rows = []
    for a, b in pairs:
        sa, sb = by_name.get(a), by_name.get(b)
        if sa is None or sb is None or sa.run_dir is None or sb.run_dir is None:
            continue
        chains = run_chain(sa.run_dir), run_chain(sb.run_dir)
        envs = {p: environment_of(p) for chain in chains for p in chain}
        fields = list(ENV_FIELDS) + sorted({f for e in envs.values() for f in e if f.startswith("packages/")})
        for f in fields:
            (va, ta), (vb, tb) = _chain_values(chains[0], envs, f), _chain_values(chains[1], envs, f)
            if va != vb or len(va) > 1:
                rows.append({"model_a": a, "model_b": b, "field": f, "a": ta, "b": tb})
    out = pd.DataFrame(rows, columns=ENV_COLUMNS)
    if run_dir is not None and not runs.is_complete(run_dir):
        runs.write_table(out, Path(run_dir) / "environment_differences.csv")
    return out


def environment_sentences(differences: pd.DataFrame, specs: Sequence[Any], comparisons: pd.DataFrame) -> list[str]:
    """One sentence per compared pair of runs: the environment differences between them (all of
    them, from :func:`environment_differences`), or that they share the environment."""
    by_name = {s.name: s for s in specs}
    pairs = list(dict.fromkeys(zip(comparisons["model_a"], comparisons["model_b"]))) if len(comparisons) else []
    out = []
    for a, b in pairs:
        if a not in by_name or b not in by_name or by_name[a].run_dir is None or by_name[b].run_dir is None:
            continue
        sel = differences[(differences["model_a"] == a) & (differences["model_b"] == b)]
        if sel.empty:
            out.append(f"Environment, {a} vs {b}: every run behind both models shares the environment (git commit, "
                       "package versions, torch build, CPU model, threads).")
        else:
            items = "; ".join(f"{r.field.removeprefix('packages/')} {r.a} vs {r.b}" for r in sel.itertuples(index=False))
            out.append(f"Environment, {a} vs {b}: the runs differ beyond their parameters ({items}), so part of "
                       "the difference between them may come from the environment.")
    return out


# A GRPO model is flagged when its reward's metric is higher (better) than its start model's on the
# same evaluation rows while a CheXpert finding's F1 falls by more than HACK_F1_DROP (absolute) with
# its paired bootstrap CI excluding 0.
HACK_F1_DROP = 0.10
# Sentences a model writes in at least this share of its reports (and in at least HACK_MIN_REPORTS
# reports) that its start model and the references never write are listed with the check.
HACK_SENTENCE_SHARE = 0.05
HACK_MIN_REPORTS = 2
# Report rewards -> the evaluation metric that measures what they reward (lower-is-better ones in
# LOWER_IS_BETTER); rewards not here (length_guard, think_format, box rewards) are not checked.
REWARD_METRICS = {"f1radgraph": "f1radgraph_{level}", "chexpert_f1": "chexpert_f1", "bleu": "bleu4",
                  "rouge_l": "rouge_l", "radcliq_lite": "radcliq_lite"}
HACK_COLUMNS = ["model", "start", "reward", "metric", "start_value", "value", "diff", "ci_low", "ci_high",
                "fallen", "new_sentences", "n", "alarm"]
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def report_sentences(text: str) -> set[str]:
    """The normalised sentences of a report: lower case, whitespace collapsed, end punctuation
    dropped (``"The heart  size."`` -> ``{"the heart size"}``)."""
    out = set()
    for s in _SENTENCE_SPLIT.split(text if isinstance(text, str) else ""):
        s = " ".join(s.lower().split()).strip(" .!?;:,")
        if s:
            out.add(s)
    return out


def new_sentences(reports: Sequence[str], others: Iterable[str], share: float = HACK_SENTENCE_SHARE,
                  min_reports: int = HACK_MIN_REPORTS) -> dict[str, float]:
    """``{sentence: share of reports}`` of the sentences in at least ``share`` of ``reports`` (and
    ``min_reports`` of them) that none of ``others`` (start model's reports, references) contains;
    most frequent first."""
    seen = set().union(*(report_sentences(t) for t in others))
    counts: dict[str, int] = {}
    for t in reports:
        for s in report_sentences(t):
            counts[s] = counts.get(s, 0) + 1
    n = max(len(reports), 1)
    hits = {s: c / n for s, c in counts.items() if s not in seen and c >= min_reports and c / n >= share}
    return dict(sorted(hits.items(), key=lambda kv: (-kv[1], kv[0])))


def _reward_metric(item: str) -> str | None:
    name, _, opts = item.partition(":")
    template = REWARD_METRICS.get(name.strip())
    if template is None:
        return None
    options = dict(o.split("=", 1) for o in opts.split(":") if "=" in o)
    return template.format(level=options.get("level", "partial"))


def _paired_label_f1(pa: np.ndarray, pb: np.ndarray, ref: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-label F1 of ``a`` minus ``b`` under resample weights ``w`` ``(B, n)``: ``(B, k)``
    (NaN where neither model nor reference has the label in a resample)."""
    def f1(p: np.ndarray) -> np.ndarray:
        tp, fp, fn = w @ (p * ref), w @ (p * (1 - ref)), w @ ((1 - p) * ref)
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
    return f1(pa) - f1(pb)


def reward_hacking(per_sample: pd.DataFrame, specs: Sequence[Any], *, n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0, f1_drop: float = HACK_F1_DROP, run_dir: str | os.PathLike[str] | None = None
                   ) -> pd.DataFrame:
    """Reward-hacking check of every evaluated GRPO model against its start model (report rows).

    On the report rows both models answered (matched on ``id``), per report reward of the run
    (:data:`REWARD_METRICS`): the metric's mean for start and model, ``diff`` (model − start,
    sign-flipped for lower-is-better metrics so that > 0 means the reward's metric improved) with
    its paired bootstrap CI; ``fallen``: CheXpert findings whose F1 (``chexpert_pred/<label>`` vs
    ``chexpert_ref/<label>``, labels with reference support) falls by more than ``f1_drop``
    (absolute) with the paired bootstrap CI of the fall excluding 0, as ``"Cardiomegaly 0.81->0.19
    (-0.62 [-0.80, -0.45])"`` joined by ``"; "``; ``new_sentences``: :func:`new_sentences` of the
    model's reports against the start's reports and the references, as ``"the heart size (22%)"``;
    ``alarm``: ``diff > 0`` and ``fallen`` non-empty.  One row per (model, report reward); columns
    :data:`HACK_COLUMNS`.  With ``run_dir`` (not finished) written to ``reward_hacking.csv``.
    """
    rows = []
    rep = per_sample[per_sample["task"] == "report"] if len(per_sample) else per_sample
    labels = [c.removeprefix(CHEXPERT_PRED) for c in per_sample.columns if c.startswith(CHEXPERT_PRED)
              and CHEXPERT_REF + c.removeprefix(CHEXPERT_PRED) in per_sample.columns]
    models = set(rep["model"]) if len(rep) else set()
    for model, start in grpo_starts(specs).items():
        if model not in models or start not in models:
            continue
        spec = next(s for s in specs if s.name == model)
        items = [(item, m) for item in reward_names(spec.run_params) if (m := _reward_metric(item))]
        a = rep[rep["model"] == model].drop_duplicates("id")
        b = rep[rep["model"] == start].drop_duplicates("id")
        pair = a.merge(b, on="id", suffixes=("", "_start"))
        n = len(pair)
        if not items or n == 0:
            continue
        rng = np.random.default_rng(seed)
        w = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]).astype(float)
        lo_q, hi_q = 100 * (1 - ci) / 2, 100 * (1 + ci) / 2
        fallen = []
        if labels:
            pa = pair[[CHEXPERT_PRED + k for k in labels]].to_numpy(float)
            pb = pair[[CHEXPERT_PRED + k + "_start" for k in labels]].to_numpy(float)
            ref = pair[[CHEXPERT_REF + k for k in labels]].to_numpy(float)
            point = _paired_label_f1(pa, pb, ref, np.ones((1, n)))[0]
            boot = _paired_label_f1(pa, pb, ref, w)
            for k, label in enumerate(labels):
                if ref[:, k].sum() == 0 or not np.isfinite(point[k]):
                    continue
                lo, hi = np.nanpercentile(boot[:, k], [lo_q, hi_q])
                if point[k] < -f1_drop and hi < 0:
                    f_b = _paired_label_f1(pb, np.zeros_like(pb), ref, np.ones((1, n)))[0][k]
                    fallen.append(f"{label} {f_b:.2f}->{f_b + point[k]:.2f} ({point[k]:+.2f} [{lo:+.2f}, {hi:+.2f}])")
        others = list(pair["prediction_start"].fillna("")) + list(pair["reference"].fillna(""))
        hits = new_sentences(list(pair["prediction"].fillna("")), others)
        sentences = "; ".join(f"{s} ({v:.0%})" for s, v in hits.items())
        for item, metric in items:
            if metric not in pair or pair[metric].isna().all():
                continue
            x, y = pair[metric].to_numpy(float), pair[metric + "_start"].to_numpy(float)
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            d = sign * (x - y)
            boot_d = (w @ d) / n
            lo, hi = np.percentile(boot_d, [lo_q, hi_q])
            diff = float(d.mean())
            rows.append({"model": model, "start": start, "reward": item, "metric": metric,
                         "start_value": float(y.mean()), "value": float(x.mean()), "diff": diff,
                         "ci_low": float(lo), "ci_high": float(hi), "fallen": "; ".join(fallen),
                         "new_sentences": sentences, "n": n, "alarm": bool(diff > 0 and fallen)})
    out = pd.DataFrame(rows, columns=HACK_COLUMNS)
    if run_dir is not None and not runs.is_complete(run_dir):
        runs.write_table(out, Path(run_dir) / "reward_hacking.csv")
    return out


def reward_hacking_sentences(table: pd.DataFrame) -> list[str]:
    """One sentence per checked GRPO model from :func:`reward_hacking`'s table: the alarm with its
    evidence (rewards whose metric rose, findings whose F1 fell, new frequent sentences), or why not."""
    out = []
    for model, sub in table.groupby("model", sort=False):
        start = sub["start"].iloc[0]
        rose = [f"{LABELS.get(r.metric, r.metric)} {r.start_value:.3f}->{r.value:.3f} "
                f"(improvement {r.diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}])"
                for r in sub.itertuples(index=False) if r.diff > 0]
        fallen, sentences = sub["fallen"].iloc[0], sub["new_sentences"].iloc[0]
        written = (f" Sentences {model} writes in at least {HACK_SENTENCE_SHARE:.0%} of its reports that {start} and "
                   f"the references never write: {sentences}.") if sentences else ""
        if sub["alarm"].any():
            out.append(f"Reward hacking alarm for {model}: its reward's metric rose over {start} ({'; '.join(rose)}) "
                       f"while CheXpert F1 fell by more than {HACK_F1_DROP:.2f} with a CI excluding 0 for: {fallen}."
                       + written)
        else:
            why = ("no reward metric rose" if not rose else
                   f"no CheXpert finding's F1 fell by more than {HACK_F1_DROP:.2f} with a CI excluding 0")
            out.append(f"No reward hacking alarm for {model} vs {start}: {why}." + written)
    return out


__all__ = [
    "GROUNDING_METRICS", "LENGTH_COLLAPSE", "POOLED_RESULTS_COLUMNS", "REPORT_METRICS", "TABLE3_COLUMNS", "Table",
    "declared_rows", "findings", "grpo_starts", "headline_metric", "key_tests", "label_specs", "metric_table",
    "model_order", "models_frame", "notes_markdown", "paper_labels", "pool_results", "replicate_rows",
    "shortcut_table", "summary", "table1", "table2", "table3", "verdict", "write_findings",
    "ENV_FIELDS", "HACK_F1_DROP", "environment_differences", "environment_of", "environment_sentences", "new_sentences",
    "report_sentences", "reward_hacking", "reward_hacking_sentences", "run_chain",
]
