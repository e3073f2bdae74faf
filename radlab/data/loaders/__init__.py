"""Real-dataset loaders: each dataset's own files → unified records (:mod:`radlab.data.schema`).

Usage::

    from radlab.data.loaders import load
    res = load("nih", "/data/ChestX-ray14", limit=1000)
    res.records   # list of schema dicts, each passing validate_record
    res.skipped   # [{"file", "row", "reason"}] for every dropped row / record

``LOADERS`` maps a short name to ``fn(root: Path, *, limit: int | None = None, **options)
-> LoadResult``.  Options are loader specific (see each module's docstring) and typed by the
loader's signature (:func:`option_types`); an unknown option or a value of the wrong type raises
``TypeError`` naming the loader, the option and its accepted options or type.

Conventions (all loaders): ids are strings; boxes are normalised xyxy on the stored image with
``raw``/``raw_format`` keeping the source numbers; splits are ``train``/``validate``/``test``
(official where the dataset has one, else a deterministic patient-level hash, see
:func:`radlab.data.loaders._common.hash_split`); a missing *required* file raises
``FileNotFoundError`` naming the path and expected layout; a malformed row is skipped with a
reason; a wholly unusable file raises :class:`LoaderError` naming file and row/field.
``check_images=True`` (default where images are expected) drops records whose image file is
missing, with a skip entry.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from radlab.data.loaders import (
    chexpert,
    coco,
    imagenome,
    iu_xray,
    mimic_cxr,
    ms_cxr,
    nih,
    padchest_gr,
    radvlm,
    rsna,
    siim,
    vindr,
)
from radlab.data.loaders._common import LoaderError, LoadResult, hash_split

LOADERS: dict[str, Callable[..., LoadResult]] = {
    "coco": coco.load_coco,
    "tbx11k": coco.load_tbx11k,
    "nih": nih.load_nih,
    "mimic_cxr": mimic_cxr.load_mimic_cxr,
    "ms_cxr": ms_cxr.load_ms_cxr,
    "vindr": vindr.load_vindr,
    "padchest_gr": padchest_gr.load_padchest_gr,
    "radvlm": radvlm.load_radvlm,
    "chexpert": chexpert.load_chexpert,
    "chexpert_plus": chexpert.load_chexpert_plus,
    "rsna": rsna.load_rsna,
    "siim": siim.load_siim,
    "imagenome": imagenome.load_imagenome,
    "iu_xray": iu_xray.load_iu_xray,
}

__all__ = ["LOADERS", "LoadResult", "LoaderError", "hash_split", "load", "option_types"]


def option_types(name: str) -> dict[str, Any]:
    """``{option: annotation}`` of loader ``name``'s keyword options (``limit`` aside), in
    signature order, e.g. ``{"splits": tuple[str, ...], "fuse": str, "iou_thr": float, ...}``."""
    fn = LOADERS[name]
    hints = typing.get_type_hints(fn)
    return {p: hints.get(p, Any) for p, v in inspect.signature(fn).parameters.items()
            if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "limit"}


def load(name: str, root: str | Path, *, limit: int | None = None, **options: Any) -> LoadResult:
    """Load dataset ``name`` from folder ``root`` into unified records.

    ``limit`` caps the number of records (the first ``limit`` in the dataset's file order, so a
    limited load is a deterministic prefix).  ``options`` go to the loader; an unknown one raises
    ``TypeError`` listing the accepted names.
    """
    if name not in LOADERS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(LOADERS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: dataset root folder not found: {root}")
    from radlab.vocab import type_name, type_ok

    accepted = option_types(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; accepted: {list(accepted)}")
    for key, value in options.items():
        if not type_ok(value, accepted[key]):
            raise TypeError(f"{name}: option {key!r} must be {type_name(accepted[key])}, got {type(value).__name__} {value!r}")
    return LOADERS[name](root, limit=limit, **options)
