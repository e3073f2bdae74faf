"""Figures of the data stage: a gallery with boxes and reports, class balance, box sizes.

Each function returns a matplotlib Figure; :func:`save_all` also saves them as
``<run_dir>/figures/<name>.png|pdf`` via ``radlab.runs.save_figure``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from radlab import runs
from radlab.data import schema

_COLORS = plt.get_cmap("tab20").colors


def gallery(records: Sequence[Mapping[str, Any]], run_dir: str | Path, n: int = 8, cols: int = 4) -> plt.Figure:
    """``n`` records: image with finding/device boxes (labelled), findings text underneath.

    ``run_dir`` resolves the records' relative ``image_path``.
    """
    recs = list(records)[:n]
    rows = max(1, -(-len(recs) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 4.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, rec in zip(axes.flat, recs):
        path = Path(rec["image_path"])
        path = path if path.is_absolute() else Path(run_dir) / path
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
        h, w = arr.shape
        ax.imshow(arr, cmap="gray", vmin=0, vmax=255)
        labels = []
        for b in rec["boxes"]:
            if b["kind"] == "anatomy":
                continue
            if b["label"] not in labels:
                labels.append(b["label"])
            c = _COLORS[labels.index(b["label"]) % len(_COLORS)]
            x0, y0, x1, y1 = b["box"]
            ax.add_patch(Rectangle((x0 * w, y0 * h), (x1 - x0) * w, (y1 - y0) * h, fill=False, lw=1.2, ec=c))
            ax.text(x0 * w, y0 * h - 1, b["label"], color=c, fontsize=6, va="bottom")
        text = textwrap.fill(schema.report_text(rec), 52)
        ax.set_title(rec["id"], fontsize=7)
        ax.text(0, -0.02, text, transform=ax.transAxes, fontsize=5.5, va="top", family="monospace")
    fig.tight_layout()
    return fig


def class_balance(records: Mapping[str, Sequence[Mapping[str, Any]]]) -> plt.Figure:
    """Heatmap: share of records per CheXpert label (rows) in each pool x state (columns).

    States: positive (1), uncertain (-1), negative (0), not mentioned (None).
    """
    states = ((1, "pos"), (-1, "unc"), (0, "neg"), (None, "n/m"))
    pools = [p for p in records if records[p]]
    mat = np.zeros((len(schema.CHEXPERT14), len(pools) * len(states)))
    for j, pool in enumerate(pools):
        recs = records[pool]
        for i, lab in enumerate(schema.CHEXPERT14):
            vals = [r["chexpert"].get(lab) for r in recs]
            for k, (v, _) in enumerate(states):
                mat[i, j * len(states) + k] = sum(x == v if v is not None else x is None for x in vals) / len(vals)
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * mat.shape[1], 5.2))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(schema.CHEXPERT14)), schema.CHEXPERT14, fontsize=7)
    ax.set_xticks(range(mat.shape[1]), [f"{p}:{s}" for p in pools for _, s in states], rotation=90, fontsize=7)
    for j in range(1, len(pools)):
        ax.axvline(j * len(states) - 0.5, color="w", lw=1)
    fig.colorbar(im, ax=ax, fraction=0.04, label="share of records")
    ax.set_title("CheXpert-14 label states per pool", fontsize=9)
    fig.tight_layout()
    return fig


def box_sizes(records: Sequence[Mapping[str, Any]]) -> plt.Figure:
    """Finding/device box width vs height, and box centre x per label (image left = patient right)."""
    rows = []
    for rec in records:
        for b in rec["boxes"]:
            if b["kind"] == "anatomy":
                continue
            x0, y0, x1, y1 = b["box"]
            rows.append({"label": b["label"], "w": x1 - x0, "h": y1 - y0, "cx": (x0 + x1) / 2})
    df = pd.DataFrame(rows, columns=["label", "w", "h", "cx"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (lab, sub) in enumerate(df.groupby("label")):
        a1.scatter(sub["w"], sub["h"], s=5, alpha=0.5, color=_COLORS[i % len(_COLORS)], label=lab)
    a1.set_xlabel("box width (fraction of image)")
    a1.set_ylabel("box height")
    a1.legend(fontsize=6, markerscale=2)
    if not df.empty:
        labels = sorted(df["label"].unique())
        a2.boxplot([df.loc[df["label"] == lab, "cx"] for lab in labels], vert=False)
        a2.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    a2.axvline(0.5, color="k", lw=0.5)
    a2.set_xlabel("box centre x (image left = patient right)")
    fig.tight_layout()
    return fig


def make_all(result: Any, n_gallery: int = 8) -> dict[str, plt.Figure]:
    """The three figures of a ``BuildResult``: ``{name: Figure}`` (closed, for ``display``)."""
    figs = {
        "gallery": gallery(result.records.get("test") or result.records["train"], result.run_dir, n=n_gallery),
        "class_balance": class_balance(result.records),
        "box_sizes": box_sizes(result.records["train"]),
    }
    for fig in figs.values():
        plt.close(fig)  # keep memory flat; the notebook displays the returned objects
    return figs


def save_all(result: Any, n_gallery: int = 8) -> dict[str, plt.Figure]:
    """Make and save the three figures of a ``BuildResult``; returns ``{name: Figure}``."""
    figs = make_all(result, n_gallery=n_gallery)
    for name, fig in figs.items():
        runs.save_figure(fig, result.run_dir, name)
    return figs
