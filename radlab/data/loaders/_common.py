"""Helpers shared by the dataset loaders: errors, skip log, CSV reading, splits, boxes, labels.

Every loader turns a dataset's own files into unified records (:mod:`radlab.data.schema`).
Conventions used by all of them:

* CSVs are read with the stdlib ``csv`` module, every cell a ``str``, so that ids such as
  ``"00000001"`` or ``"10000032"`` are never int-cast and blank cells stay ``""``.
* A skipped row is logged as ``{"file": str, "row": int | str, "reason": str}``; ``row`` is the
  1-based *line number* of a CSV row (the header is line 1, so the first data row is 2), or a
  JSON index / id for JSON sources.
* Splits use the schema's names (``train``/``validate``/``test``); a dataset without an official
  split gets a deterministic, patient-disjoint split from :func:`hash_split`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from radlab.data.schema import CHEXPERT14, empty_chexpert, validate_record


class LoaderError(ValueError):
    """A dataset file is unusable as a whole; the message names the file (and row/field)."""


@dataclass
class LoadResult:
    """What a loader returns.

    ``records``: unified schema records (each passes :func:`validate_record`).
    ``skipped``: ``[{"file": str, "row": int | str, "reason": str}]``, one per dropped row/record.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, file: str | Path, row: int | str, reason: str) -> None:
        """Log one dropped row (never drop silently)."""
        self.skipped.append({"file": str(file), "row": row, "reason": reason})

    def add(self, rec: dict[str, Any], file: str | Path, row: int | str) -> bool:
        """Validate and keep ``rec``; a schema violation becomes a skip naming the field."""
        try:
            validate_record(rec)
        except ValueError as exc:  # SchemaError is a ValueError
            self.skip(file, row, f"invalid record: {exc}")
            return False
        self.records.append(rec)
        return True

    def image_size(self, path: Path, file: str | Path, row: int | str, *, check: bool = True,
                   default: tuple[int, int] = (0, 0), hint: str = "") -> tuple[int, int] | None:
        """``(width, height)`` of the stored image, or ``None`` after logging it missing/unreadable.

        With ``check=False`` (the loaders' ``check_images=False``) nothing is opened and ``default``
        (the size the metadata states, or ``(0, 0)``) is returned.  ``hint`` is appended to the
        "unreadable" reason (e.g. how to export DICOMs).
        """
        if not check:
            return default
        if not path.is_file():
            self.skip(file, row, f"missing image file {path}")
            return None
        size = image_size(path)
        if size is None:
            self.skip(file, row, f"unreadable image file {path}" + (f" ({hint})" if hint else ""))
        return size

    def full(self, limit: int | None) -> bool:
        """True once ``limit`` records were collected (``None`` = no limit)."""
        return limit is not None and len(self.records) >= limit


# ----------------------------------------------------------------------------------------------
# Files


def require_file(path: Path, dataset: str, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise ``FileNotFoundError`` naming the expected layout."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: required file not found: {path}\nexpected layout: {layout}")
    return path


def find_first(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` (relative to ``root``) that exists, else ``None``.

    Real releases differ in compression (``.csv`` vs ``.csv.gz``) and folder (``annotations/`` or
    not); loaders list the variants they accept in order of preference.
    """
    for name in names:
        p = root / name
        if p.is_file():
            return p
    return None


@dataclass
class Table:
    """A CSV read as strings: ``columns`` (stripped header names) and ``rows`` as
    ``(line, {column: cell})`` where ``line`` is the 1-based line the row starts on (header = 1).

    Short rows are padded with ``""`` (trailing blank cells are how several releases write empty
    boxes); rows with *more* cells than the header are not in ``rows`` but in ``bad`` as
    ``(line, reason)`` so the loader can log them as skips.
    """

    path: Path
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    bad: list[tuple[int, str]] = field(default_factory=list)

    def log_bad(self, res: LoadResult) -> None:
        """Record every malformed row as a skip."""
        for line, reason in self.bad:
            res.skip(self.path, line, reason)


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """A text handle for ``.csv``, ``.csv.gz`` or a single-member ``.zip`` (BOM stripped)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as fh:
            yield fh
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/")]
            if len(members) != 1:
                raise LoaderError(f"{path}: expected one CSV inside the zip, found {members}")
            with io.TextIOWrapper(zf.open(members[0]), encoding="utf-8-sig", newline="") as fh:
                yield fh
    else:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            yield fh


def read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Every non-blank CSV row as ``(start line, cells)``, the header included (line 1).

    Uses the stdlib ``csv`` module: strings only (ids are never int-cast), quoted multi-line
    cells allowed, and an order of magnitude faster than pandas' Arrow strings row by row.
    Raises :class:`LoaderError` naming the file (and line) when it cannot be decoded or parsed.
    """
    out: list[tuple[int, list[str]]] = []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            start = 1
            for cells in reader:
                if cells and "".join(cells).strip():
                    out.append((start, cells))
                start = reader.line_num + 1
    except (UnicodeDecodeError, csv.Error, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise LoaderError(f"{path}: cannot parse as CSV (near line {len(out) + 1}): {exc}") from exc
    return out


def read_csv(path: Path, required: Sequence[str] = (), *, aliases: dict[str, str] | None = None) -> Table:
    """Read a CSV with a header into a :class:`Table` (every cell a ``str``, blanks ``""``).

    ``aliases`` renames header spellings (e.g. VinDr's ``rad_ID`` → ``rad_id``) before
    ``required`` columns are checked.  Raises :class:`LoaderError` naming the file when it is
    empty, unparsable or lacks a required column.
    """
    raw = read_csv_rows(path)
    if not raw:
        raise LoaderError(f"{path}: empty file (no header row)")
    columns = [c.strip() for c in raw[0][1]]
    if aliases:
        columns = [aliases.get(c, c) if aliases.get(c, c) not in columns else c for c in columns]
    missing = [c for c in required if c not in columns]
    if missing:
        raise LoaderError(f"{path}: row 1: missing column(s) {missing}; found {columns}")
    n = len(columns)
    table = Table(path, columns, [])
    for line, cells in raw[1:]:
        if len(cells) > n and any(c.strip() for c in cells[n:]):
            table.bad.append((line, f"{len(cells)} fields but the header has {n}"))
            continue
        cells = cells[:n] + [""] * (n - len(cells))
        table.rows.append((line, dict(zip(columns, cells))))
    return table


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error becomes :class:`LoaderError` naming the file and line."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise LoaderError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


class ImageFinder:
    """Find ``<name><ext>`` in a list of folders, listing each folder once (a ``stat`` per image
    and candidate made 10^5-image loads slow).  ``find`` returns ``None`` when absent."""

    def __init__(self, dirs: Sequence[Path], exts: Sequence[str] = ("",), *, recursive: bool = False) -> None:
        self.dirs = list(dirs)
        self.exts = list(exts)
        self.recursive = recursive
        self._listing: dict[Path, dict[str, Path]] = {}

    def _names(self, d: Path) -> dict[str, Path]:
        """File name -> path in ``d`` (with ``recursive``: in every sub-folder too, the first in
        sorted order winning, as SIIM's ``<study>/<series>/<SOPInstanceUID>.dcm`` tree needs)."""
        if d not in self._listing:
            found: dict[str, Path] = {}
            try:
                if self.recursive:
                    for dirpath, dirnames, filenames in os.walk(d):
                        dirnames.sort()
                        for f in sorted(filenames):
                            found.setdefault(f, Path(dirpath) / f)
                else:
                    found = {e.name: d / e.name for e in os.scandir(d) if e.is_file()}
            except OSError:
                found = {}
            self._listing[d] = found
        return self._listing[d]

    def find(self, name: str) -> Path | None:
        """The first existing ``dir / (name + ext)`` over dirs × exts (dirs outermost)."""
        for d in self.dirs:
            names = self._names(d)
            for ext in self.exts:
                if name + ext in names:
                    return names[name + ext]
        return None

    def default(self, name: str) -> Path:
        """Where the image is expected when it is absent (first folder, first extension)."""
        return self.dirs[0] / (name + self.exts[0])


def image_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` from the image header (no pixels read: PIL for PNG/JPEG, pydicom's
    header for DICOM), ``None`` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    from radlab.data.images import ImageLoadError, dicom_header, is_dicom

    if is_dicom(path):
        try:
            meta = dicom_header(path)
        except ImageLoadError:
            return None
        return int(meta["width"]), int(meta["height"])
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, UnidentifiedImageError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Values


def to_float(value: Any) -> float | None:
    """A finite float from a cell, or ``None`` for blank / non-numeric / NaN / inf."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


_CHEXPERT_CELLS: dict[str, int | None] = {"": None, "1.0": 1, "0.0": 0, "-1.0": -1, "1": 1, "0": 0, "-1": -1}


def chexpert_value(cell: Any) -> int | None:
    """CheXpert CSV cell → ``1 | 0 | -1 | None``: ``"1.0"``→1, ``"0.0"``→0, ``"-1.0"``→-1, blank→None.

    Raises ``ValueError`` on anything else so the caller can log the row.
    """
    if isinstance(cell, str) and cell in _CHEXPERT_CELLS:  # fast path: 14 cells x 10^5 rows
        return _CHEXPERT_CELLS[cell]
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or (isinstance(cell, str) and not cell.strip()):
        return None  # blank cell, JSON null or pandas NaN: "not mentioned"
    v = to_float(cell)
    if v not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {cell!r} is not 1/0/-1/blank")
    return int(v)


SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "validate",
    "validate": "validate",
    "validation": "validate",
    "val": "validate",
    "dev": "validate",
    "test": "test",
}


def norm_split(value: str) -> str | None:
    """Map a dataset's split spelling to the schema's (``valid`` → ``validate``); ``None`` if unknown."""
    return SPLIT_ALIASES.get(str(value).strip().lower())


def hash_split(patient_id: str, seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> str:
    """Deterministic patient-level split: sha256 of ``"{seed}:{patient_id}"`` → uniform in [0, 1).

    Every image of a patient lands in the same split (patient-disjoint), and the assignment does
    not depend on row order, Python's hash seed or which other patients are loaded.
    ``fractions`` are (train, validate, test) and must sum to 1.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validate"
    return "test"


# ----------------------------------------------------------------------------------------------
# Boxes, findings, grounding


def make_box(box_id: int, label: str, box: Sequence[float], raw: Sequence[float], raw_format: str,
             kind: str = "finding") -> dict[str, Any]:
    """One schema box: normalised xyxy ``box`` plus the source's own numbers for audit."""
    return {
        "box_id": int(box_id),
        "kind": kind,
        "label": label,
        "box": [float(v) for v in box],
        "raw": [float(v) for v in raw],
        "raw_format": raw_format,
    }


def box_problem(raw: Sequence[float | None], norm: Sequence[float] | None, *, tol: float = 0.02) -> str | None:
    """Why a converted box is unusable, or ``None`` if it is fine.

    ``raw`` holds the source numbers (``None`` = blank), ``norm`` the *unclipped* normalised xyxy.
    A box sticking out of the image by more than ``tol`` (2 % of the side) is rejected as
    out-of-range rather than silently clipped: that usually means the wrong reference size.
    Smaller overshoots are annotation jitter and are clipped by the caller.
    """
    if any(v is None for v in raw):
        return "missing box coordinate(s)"
    if norm is None:
        return "cannot convert box"
    x0, y0, x1, y1 = norm
    if x1 <= x0 or y1 <= y0:
        return f"degenerate or inverted box {list(raw)}"
    if min(x0, y0) < -tol or max(x1, y1) > 1 + tol:
        return f"box {list(raw)} outside the image (normalised {[round(v, 3) for v in norm]})"
    return None


def finding(name: str, laterality: str = "none", box_ids: Iterable[int] = (), *, region: str = "",
            severity: str = "", certainty: str = "present") -> dict[str, Any]:
    """One schema finding entry."""
    return {
        "name": name,
        "laterality": laterality,
        "region": region,
        "severity": severity,
        "certainty": certainty,
        "box_ids": [int(b) for b in box_ids],
    }


def grounding(phrase: str, box_ids: Iterable[int] = (), groundable: bool | None = None) -> dict[str, Any]:
    """One schema grounding entry; ``groundable`` defaults to "has at least one box"."""
    ids = [int(b) for b in box_ids]
    return {"phrase": phrase, "box_ids": ids, "groundable": bool(ids) if groundable is None else groundable}


_BILATERAL = re.compile(r"\b(bilateral(?:ly)?|both|bibasilar|bibasal|biapical)\b", re.I)
_LEFT = re.compile(r"\b(left|lt)\b", re.I)
_RIGHT = re.compile(r"\b(right|rt)\b", re.I)


def laterality_from_text(text: str) -> str:
    """Patient-frame laterality named in a phrase: ``bilateral`` / ``left`` / ``right`` / ``none``."""
    if _BILATERAL.search(text):
        return "bilateral"
    left, right = bool(_LEFT.search(text)), bool(_RIGHT.search(text))
    if left and right:
        return "bilateral"
    if left:
        return "left"
    if right:
        return "right"
    return "none"


# Structures that sit on the midline: their box side says nothing about laterality.
_MIDLINE = re.compile(r"cardio|cardiac|heart|aort|mediastin|trache|spine|hernia", re.I)


def laterality_from_boxes(name: str, boxes: Sequence[Sequence[float]], *, frontal: bool = True,
                          margin: float = 0.02) -> str:
    """Patient-frame laterality implied by image-frame boxes on a frontal film, else ``none``.

    On a PA/AP film the patient's right is on the image *left*.  A box counts for one side only
    when it lies entirely within that image half (``margin`` of slack at the midline); midline
    structures (heart, aorta, mediastinum, …) and non-frontal views always give ``none``.
    """
    if not frontal or not boxes or _MIDLINE.search(name):
        return "none"
    sides = set()
    for x0, _y0, x1, _y1 in boxes:
        if x1 <= 0.5 + margin:
            sides.add("right")
        elif x0 >= 0.5 - margin:
            sides.add("left")
        else:
            return "none"
    if sides == {"left", "right"}:
        return "bilateral"
    return sides.pop()


_SEVERITY = re.compile(r"\b(mild(?:ly)?|moderate(?:ly)?|severe(?:ly)?|small|large|trace|minimal|tiny|massive)\b", re.I)


def severity_from_text(text: str) -> str:
    """The first severity word of a phrase (``"small"``, ``"moderate"``, …), lower-case, or ``""``."""
    m = _SEVERITY.search(text)
    return m.group(1).lower() if m else ""


UNCERTAIN = re.compile(r"\b(possibl[ey]|probabl[ey]|may|might|could|suspect\w*|question\w*|likely|cannot be excluded|concern for)\b", re.I)


def certainty_from_text(text: str) -> str:
    """``uncertain`` when the phrase hedges (possible, may, likely, …), else ``present``."""
    return "uncertain" if UNCERTAIN.search(text) else "present"


def chexpert_from_names(names: Iterable[str], mapping: dict[str, str | None], *,
                        covered_negative: bool = False, value: int = 1) -> dict[str, int | None]:
    """CheXpert-14 labels from a dataset's label names.

    ``mapping`` maps the dataset's names (compared lower-case) to a CheXpert-14 name or ``None``
    (no sensible counterpart).  Mapped names get ``value`` (1).  With ``covered_negative``, every
    CheXpert class that *some* dataset label maps to, but that is absent here, becomes 0: use it
    only when the dataset's label list is exhaustive per image (NIH, VinDr), so absence means
    negative; elsewhere absence stays ``None`` (not mentioned).
    """
    low = {k.lower(): v for k, v in mapping.items()}
    out = empty_chexpert()
    if covered_negative:
        for target in set(low.values()):
            if target:
                out[target] = 0
    for n in names:
        target = low.get(n.strip().lower())
        if target:
            out[target] = value
    assert set(out) == set(CHEXPERT14)
    return out



def dumps_meta(meta: dict[str, Any]) -> str:
    """The record's ``meta`` JSON string (sorted keys so records are byte-stable)."""
    return json.dumps(meta, sort_keys=True, default=str)
