"""Figures of the analysis stage (matplotlib/seaborn), each saved as PNG and PDF.

Every function returns ``(figure or None, note)``: ``None`` with a reason when its inputs are
missing (e.g. no GRPO run has a ``log_history.csv`` yet), so a partial experiment still renders.

* :func:`reward_curves` — GRPO reward per reward function over steps, one panel per run.
* :func:`length_curves` — mean completion length over GRPO steps, thinking vs no thinking.
* :func:`per_finding_f1` — per-CheXpert-label F1 of the reports, per model.
* :func:`iou_histogram` — per-sample matched IoU of the grounding answers, per model.
* :func:`qualitative_grid` — images with true and predicted boxes, and reference vs generated
  reports, with the per-sample scores.
* :func:`replicate_differences` — each replicate's own difference next to the pooled mean and its
  two-level CI, for every comparison of models trained with several seeds.

A model with replicates (``<label>@s<k>``) appears in the per-sample figures by its lowest seed only
(the tables pool every replicate).
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import runs
from radlab.analysis import LABELS, declared_rows, headline_metric, model_order, replicate_rows
from radlab.experiment import paper_question, split_replicate

FigureResult = tuple[Any, str]


def _plt() -> Any:
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log_history(run_dir: str | os.PathLike[str]) -> pd.DataFrame | None:
    """A run's ``log_history.csv`` as a tidy ``step, metric, value`` frame (``None`` if absent).

    Accepts the training stage's tidy layout (``step, epoch, metric, value``) and a wide one (a
    ``step`` column plus one column per logged key, as ``pd.DataFrame(log_history)`` gives).
    """
    path = Path(run_dir) / "log_history.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if {"step", "metric", "value"} <= set(df.columns):
        return df[["step", "metric", "value"]].dropna()
    if "step" not in df.columns:
        return None
    value_cols = [c for c in df.columns if c not in ("step", "epoch") and pd.api.types.is_numeric_dtype(df[c])]
    return df.melt(id_vars=["step"], value_vars=value_cols, var_name="metric", value_name="value").dropna()


def grpo_runs(exp_dir: str | os.PathLike[str]) -> list[Path]:
    """The GRPO run folders of an experiment (``stage: grpo`` in their ``params.yaml``), sorted."""
    from radlab.experiment import read_runs

    exp_dir = Path(exp_dir)
    return [exp_dir / run for run, params in read_runs(exp_dir).items() if params.get("stage") == "grpo"]


def _save(fig: Any, run_dir: str | os.PathLike[str] | None, name: str) -> None:
    """Save as PNG+PDF, then close: callers ``display(fig)`` explicitly, and an open figure would
    be shown a second time by the inline backend.  A finished run folder (``DONE``) is left as it is."""
    if run_dir is not None and not runs.is_complete(run_dir):
        runs.save_figure(fig, run_dir, name)
    _plt().close(fig)


def _replicate_panels(exp_dir: str | os.PathLike[str]) -> list[tuple[str, list[tuple[int, Path]]]]:
    """GRPO runs grouped with their replicates: ``[(run, [(seed, folder), ...]), ...]``, seed 0 first."""
    from radlab.experiment import read_runs, replicates

    folders = grpo_runs(exp_dir)
    reps = replicates(read_runs(Path(exp_dir)))
    panels: dict[str, list[tuple[int, Path]]] = {}
    for p in folders:
        base, seed = reps.get(p.name, (p.name, 0))
        panels.setdefault(base, []).append((seed, p))
    return [(base, sorted(members)) for base, members in panels.items()]


def reward_curves(exp_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
                  smooth: int = 5) -> FigureResult:
    """GRPO training reward per reward function (``rewards/<name>/mean``) over steps.

    One panel per GRPO run; thin lines are the logged values, thick ones a centred rolling
    mean over ``smooth`` logs, dashed ones the greedy held-out score (``heldout/<name>``) when the
    run logged it.  A run's replicates (``<run>_s<k>``) share its panel as dotted rolling means.
    Note that the sampled training reward rises more than held-out greedy scores (see the CPU
    calibration notes), so read it with the tables.
    """
    panels = []
    for base, members in _replicate_panels(exp_dir):
        logs = [(seed, p.name, read_log_history(p)) for seed, p in members]
        logs = [(seed, n, df) for seed, n, df in logs
                if df is not None and df["metric"].str.match(r"rewards/.+/mean$").any()]
        if logs:
            panels.append((base, logs))
    if not panels:
        return None, "reward curves skipped: no GRPO run with a log_history.csv with rewards/<name>/mean columns"
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (_, logs) in zip(axes[0], panels):
        first, others = logs[0], logs[1:]
        df = first[2]
        metrics = sorted(m for m in df["metric"].unique() if re.match(r"rewards/.+/mean$", m))
        for k, m in enumerate(metrics):
            sub = df[df["metric"] == m].sort_values("step")
            color = f"C{k}"
            ax.plot(sub["step"], sub["value"], color=color, alpha=0.3, lw=0.8)
            ax.plot(sub["step"], sub["value"].rolling(smooth, center=True, min_periods=1).mean(), color=color, lw=1.8,
                    label=m.split("/")[1])
            held = df[df["metric"] == f"heldout/{m.split('/')[1]}"].sort_values("step")
            if len(held):  # the training stage's periodic greedy held-out score of the same reward
                ax.plot(held["step"], held["value"], color=color, ls="--", marker="o", ms=3,
                        label=f"{m.split('/')[1]} (held-out, greedy)")
            for j, (_, _, other) in enumerate(others):
                rep = other[other["metric"] == m].sort_values("step")
                ax.plot(rep["step"], rep["value"].rolling(smooth, center=True, min_periods=1).mean(), color=color,
                        lw=1.0, ls=":", label=f"seeds {', '.join(str(s) for s, _, _ in others)}" if k == j == 0 else None)
        seeds = f" (seeds {', '.join(str(s) for s, _, _ in logs)})" if others else ""
        ax.set_title(f"{first[1]}{seeds}", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("reward (sampled; dashed: held-out)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, run_dir, "reward_curves")
    return fig, ""


def length_curves(exp_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str] | None = None,
                  thinking: Mapping[str, bool] | None = None, smooth: int = 5) -> FigureResult:
    """Mean completion length (tokens, ``completions/mean_length``) over GRPO steps per run.

    ``thinking`` maps run folder names to their mode for the legend (default: name contains
    ``think``); thinking runs are drawn dashed.
    """
    logs = [(p.name, read_log_history(p)) for p in grpo_runs(exp_dir)]
    logs = [(n, df[df["metric"] == "completions/mean_length"].sort_values("step")) for n, df in logs if df is not None]
    logs = [(n, df) for n, df in logs if len(df)]
    if not logs:
        return None, "completion-length curves skipped: no GRPO run with a log_history.csv with completions/mean_length"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for k, (name, df) in enumerate(logs):
        think = (thinking or {}).get(name, "think" in name)
        ax.plot(df["step"], df["value"].rolling(smooth, center=True, min_periods=1).mean(), color=f"C{k}",
                ls="--" if think else "-", label=f"{name} ({'thinking' if think else 'no thinking'})")
    ax.set_xlabel("step")
    ax.set_ylabel("mean completion length (tokens)")
    ax.set_title("GRPO completion length", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, run_dir, "completion_length")
    return fig, ""


def per_finding_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Per-label F1 of the reports from the ``chexpert_pred/<label>`` / ``chexpert_ref/<label>``
    columns: ``model, label, f1, support`` (support = reference positives), labels with support
    only."""
    pred_cols = sorted(c for c in per_sample.columns if c.startswith("chexpert_pred/"))
    rep = per_sample[per_sample["task"] == "report"]
    rows = []
    for model, sub in rep.groupby("model", sort=False):
        for pc in pred_cols:
            label = pc.split("/", 1)[1]
            rc = "chexpert_ref/" + label
            if rc not in sub:
                continue
            p = sub[pc].to_numpy(float)
            r = sub[rc].to_numpy(float)
            ok = np.isfinite(p) & np.isfinite(r)
            p, r = p[ok], r[ok]
            support = int(r.sum())
            if support == 0:
                continue
            tp, fp, fn = float((p * r).sum()), float((p * (1 - r)).sum()), float(((1 - p) * r).sum())
            rows.append({"model": model, "label": label, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
                         "support": support})
    return pd.DataFrame(rows, columns=["model", "label", "f1", "support"])


def per_finding_f1(per_sample: pd.DataFrame, run_dir: str | os.PathLike[str] | None = None,
                   models: Sequence[str] | None = None) -> FigureResult:
    """Grouped bars of per-CheXpert-label F1 (reports), one bar per model."""
    import seaborn as sns

    table = per_finding_table(per_sample)
    if table.empty:
        return None, "per-finding F1 skipped: no report rows with CheXpert label columns"
    order = model_order(models or table["model"].unique())
    table = table[table["model"].isin(order)]
    labels = (table.groupby("label")["support"].first().sort_values(ascending=False).index.tolist())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) + 2), 3.6))
    sns.barplot(data=table, x="label", y="f1", hue="model", order=labels, hue_order=order, ax=ax)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([f"{lb}\n(n={int(table[table['label'] == lb]['support'].iloc[0])})" for lb in labels],
                       rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1 (report labels)")
    ax.set_xlabel("")
    ax.set_title("Per-finding F1 of the generated reports", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, run_dir, "per_finding_f1")
    return fig, ""


def iou_histogram(per_sample: pd.DataFrame, run_dir: str | os.PathLike[str] | None = None,
                  models: Sequence[str] | None = None, metric: str = "mean_iou") -> FigureResult:
    """Histograms of per-sample matched IoU on grounding rows (one panel per model, shared bins)."""
    g = per_sample[(per_sample["task"] == "grounding")]
    if g.empty or metric not in g:
        return None, f"IoU histogram skipped: no grounding rows with {metric}"
    order = [m for m in model_order(models or g["model"].unique()) if m in set(g["model"])]
    plt = _plt()
    cols = min(4, len(order))
    nrows = math.ceil(len(order) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.5 * nrows), squeeze=False, sharex=True)
    bins = np.linspace(0, 1, 21)
    for ax, model in zip(axes.flat, order):
        vals = g.loc[g["model"] == model, metric].dropna().to_numpy(float)
        ax.hist(vals, bins=bins, color="C0")
        ax.axvline(0.5, color="k", ls=":", lw=0.8)
        ax.set_title(f"{model} (mean {vals.mean():.2f}, n={vals.size})" if vals.size else model, fontsize=8)
        ax.set_xlabel("IoU")
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    fig.suptitle("Per-sample IoU of the grounding answers (dotted: 0.5)", fontsize=10)
    fig.tight_layout()
    _save(fig, run_dir, "iou_histogram")
    return fig, ""


def _wrap(text: str, width: int = 60, max_lines: int = 6) -> str:
    """Model text made safe for matplotlib and wrapped: control characters (random models emit
    them; the font has no glyph) become ``·`` and ``$`` is escaped so it is not read as mathtext."""
    text = "".join(ch if ch.isprintable() else "·" for ch in str(text)).replace("$", r"\$")
    lines = textwrap.wrap(text, width) or [""]
    return "\n".join(lines[:max_lines]) + (" …" if len(lines) > max_lines else "")


def pick_examples(per_sample: pd.DataFrame, task: str, n: int, seed: int = 0) -> list[str]:
    """``n`` row ids of ``task`` present for every model, chosen with a seeded generator."""
    sub = per_sample[per_sample["task"] == task]
    if sub.empty or n <= 0:
        return []
    n_models = sub["model"].nunique()
    counts = sub.groupby("id")["model"].nunique()
    ids = sorted(counts[counts == n_models].index)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist()) if ids else []


def qualitative_grid(per_sample: pd.DataFrame, rows_by_key: Mapping[tuple[str, str], Mapping[str, Any]],
                     run_dir: str | os.PathLike[str] | None = None, models: Sequence[str] | None = None,
                     n: int = 4, seed: int = 0) -> FigureResult:
    """Examples side by side: grounding images with the true box (green, dashed) and each
    model's boxes, and report images next to the reference and each model's report, each with its
    per-sample score (soft-F1 for boxes, RGF1-partial for reports — the default GRPO rewards)."""
    from radlab.evaluation import reference_text
    from radlab.formats import parse_boxes

    order = [m for m in model_order(models or per_sample["model"].unique()) if m in set(per_sample["model"])
             and m != "text_only"]
    g_ids = pick_examples(per_sample[per_sample["model"].isin(order)], "grounding", n, seed)
    r_ids = pick_examples(per_sample[per_sample["model"].isin(order)], "report", n, seed)
    if not g_ids and not r_ids:
        return None, "qualitative grid skipped: no rows common to the models"
    plt = _plt()
    n_rows = len(g_ids) + len(r_ids)
    fig, axes = plt.subplots(n_rows, 2, figsize=(12, 3.1 * n_rows), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 2.6]})
    colors = {m: f"C{k}" for k, m in enumerate(order)}
    by = per_sample.set_index(["task", "id", "model"])
    for i, (task, rid) in enumerate([("grounding", x) for x in g_ids] + [("report", x) for x in r_ids]):
        row = rows_by_key[(task, rid)]
        ax_img, ax_txt = axes[i]
        img = np.asarray(row["image"].convert("L"))
        h, w = img.shape
        ax_img.imshow(img, cmap="gray")
        ax_img.set_axis_off()
        lines = []
        if task == "grounding":
            for b in row["reference_boxes"] or []:
                x0, y0, x1, y1 = b
                ax_img.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                               ec="lime", lw=2, ls="--"))
            prompt = next((p.get("text", "") for p in row["prompt"][0]["content"] if p.get("type") == "text"), "")
            lines.append(_wrap(f"[{row.get('grounding_kind', '')}] {prompt}", 110, 2))
            lines.append(f"reference: {reference_text(row) or '(no box: no finding)'}")
        else:
            lines.append("reference: " + _wrap(row["reference_report"], 110, 4))
        for m in order:
            if (task, rid, m) not in by.index:
                continue
            r = by.loc[(task, rid, m)]
            shown = "(no </think>: scored 0)" if r.get("missing_think", 0) else r["prediction"]
            if task == "grounding":
                for b in parse_boxes(r["prediction"], r["box_format"]):
                    x0, y0, x1, y1 = b
                    ax_img.add_patch(plt.Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                                   ec=colors[m], lw=1.5))
                score = r.get("box_soft_f1", float("nan"))
                lines.append(f"{m} (soft-F1 {score:.2f}): {_wrap(shown, 100, 2)}")
            else:
                score = r.get("f1radgraph_partial", float("nan"))
                lines.append(f"{m} (RGF1-P {score:.2f}): {_wrap(shown, 110, 3)}")
        ax_img.set_title(f"{task}: {rid}", fontsize=7)
        ax_txt.set_axis_off()
        ax_txt.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=6.5, family="monospace",
                    transform=ax_txt.transAxes)
    handles = [plt.Line2D([], [], color="lime", ls="--", label="reference")]
    handles += [plt.Line2D([], [], color=colors[m], label=m) for m in order]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 8), fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    _save(fig, run_dir, "qualitative")
    return fig, ""


def replicate_differences(comparisons: pd.DataFrame, results: pd.DataFrame,
                          run_dir: str | os.PathLike[str] | None = None, *, report_metric: str = "f1radgraph_partial",
                          grounding_metric: str = "map50") -> FigureResult:
    """Per-replicate differences of every replicated comparison, on each task's headline metric.

    One panel per task; per comparison (``a − b``) a dot per replicate pair (its own difference,
    labelled with its seed) and the pooled mean with its two-level bootstrap CI (replicates, then
    items) as a bar.  When the dots straddle 0 while each replicate's item CI looks decisive, the
    training draw, not the test set, decides the sign.  ``None`` when no comparison has two replicates.
    """
    declared = declared_rows(comparisons) if len(comparisons) else comparisons
    if declared.empty or "n_replicates" not in declared or not (declared["n_replicates"] > 1).any():
        return None, ("replicate differences skipped: no comparison has two or more replicates "
                      "(radlab run <experiment> --seeds 0,1,2 trains them)")
    tasks = [(t, m) for t, pref in (("report", report_metric), ("grounding", grounding_metric))
             if (m := headline_metric(results, t, pref)) is not None]
    panels = []
    for task, metric in tasks:
        sel = declared[(declared["task"] == task) & (declared["metric"] == metric) & (declared["n_replicates"] > 1)]
        if len(sel):
            panels.append((task, metric, sel))
    if not panels:
        return None, "replicate differences skipped: no replicated comparison on the headline metrics"
    plt = _plt()
    width = max(len(sel) for _, _, sel in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 1.6 * width + 1.5) * len(panels), 3.6), squeeze=False)
    for ax, (task, metric, sel) in zip(axes[0], panels):
        names = []
        for x, row in enumerate(sel.itertuples(index=False)):
            own = replicate_rows(comparisons, row.model_a, row.model_b, task, metric)
            ax.errorbar([x], [row.diff], yerr=[[row.diff - row.ci_low], [row.ci_high - row.diff]], fmt="s",
                        color="k", capsize=5, ms=6, label="mean over replicates (two-level CI)" if x == 0 else None)
            jitter = np.linspace(-0.18, 0.18, len(own)) if len(own) > 1 else np.zeros(len(own))
            ax.scatter(x + 0.25 + jitter, own["diff"], color="C0", s=22, zorder=3,
                       label="one replicate (same seed on both sides)" if x == 0 else None)
            for jx, r in zip(jitter, own.itertuples(index=False)):
                ax.annotate(f"s{int(r.replicate)}", (x + 0.25 + jx, r.diff), fontsize=6, xytext=(3, 0),
                            textcoords="offset points", va="center")
            names.append(f"{paper_question(row.model_a, row.model_b)}\n{row.model_a} − {row.model_b}\n"
                         f"{int(row.n_agree)} of {int(row.n_replicates)} agree")
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=6.5)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel(f"difference in {LABELS.get(metric, metric)}")
        ax.set_title(f"{task}: per-replicate differences", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    _save(fig, run_dir, "replicate_differences")
    return fig, ""


def one_per_label(per_sample: pd.DataFrame) -> pd.DataFrame:
    """The rows of one model per label: a model trained with several seeds by its lowest seed."""
    models = list(per_sample["model"].unique())
    lowest: dict[str, tuple[int, str]] = {}
    for m in models:
        label, seed = split_replicate(m)
        if label not in lowest or seed < lowest[label][0]:
            lowest[label] = (seed, m)
    keep = {m for _, m in lowest.values()}
    return per_sample[per_sample["model"].isin(keep)] if len(keep) < len(models) else per_sample


def make_figures(per_sample: pd.DataFrame, rows_by_key: Mapping[tuple[str, str], Mapping[str, Any]],
                 exp_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], *,
                 specs: Sequence[Any] = (), n_qualitative: int = 4, seed: int = 0,
                 comparisons: pd.DataFrame | None = None, results: pd.DataFrame | None = None,
                 report_metric: str = "f1radgraph_partial",
                 grounding_metric: str = "map50") -> tuple[dict[str, Any], list[str]]:
    """All figures of the analysis stage, saved under ``run_dir/figures``.

    ``specs``: the evaluated models (:class:`radlab.experiment.ModelSpec`); their runs' thinking
    setting labels the GRPO length curves.  With ``comparisons`` and ``results`` (the evaluation's
    tables) the per-replicate differences are drawn too.  Returns ``({name: figure}, notes)``; a
    figure whose inputs are missing is left out and its reason added to ``notes``.
    """
    thinking = {s.run_dir.name: s.thinking for s in specs if s.run_dir is not None}
    made: dict[str, Any] = {}
    notes: list[str] = []
    shown = one_per_label(per_sample)
    figures = {
        "reward_curves": reward_curves(exp_dir, run_dir),
        "completion_length": length_curves(exp_dir, run_dir, thinking),
        "per_finding_f1": per_finding_f1(shown, run_dir),
        "iou_histogram": iou_histogram(shown, run_dir),
        "qualitative": qualitative_grid(shown, rows_by_key, run_dir, n=n_qualitative, seed=seed),
    }
    if comparisons is not None and results is not None:
        figures["replicate_differences"] = replicate_differences(
            comparisons, results, run_dir, report_metric=report_metric, grounding_metric=grounding_metric)
    for name, (fig, note) in figures.items():
        if fig is None:
            notes.append(note)
        else:
            made[name] = fig
    return made, notes


__all__ = [
    "grpo_runs", "iou_histogram", "length_curves", "make_figures", "one_per_label", "per_finding_f1",
    "per_finding_table", "pick_examples", "qualitative_grid", "read_log_history", "replicate_differences",
    "reward_curves",
]
