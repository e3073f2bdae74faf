"""MIMIC-CXR-JPG images + MIMIC-CXR reports, sectioned like the official MIT-LCP parser.

Layout (``root``; ``.csv`` or ``.csv.gz``)::

    mimic-cxr-2.0.0-split.csv      dicom_id, study_id, subject_id, split      (required)
    mimic-cxr-2.0.0-metadata.csv   dicom_id, subject_id, study_id, ..., ViewPosition, Rows, Columns, ... (required)
    mimic-cxr-2.0.0-chexpert.csv   subject_id, study_id, <14 CheXpert labels> (optional)
    files/p10/p10000032/s50414267/<dicom_id>.jpg                            (images; MIMIC-CXR-JPG)
    files/p10/p10000032/s50414267/<dicom_id>.dcm                            (or the DICOM release)
    files/p10/p10000032/s50414267.txt                                       (reports; may live in reports_dir)

One record per image; study-level report text and labels are repeated on each image of the study.
Ids stay strings (``"10000032"``, ``"50414267"``).  The official split is used (``validate``).

Report sectioning follows MIT-LCP ``mimic-cxr/txt/section_parser.py`` + ``create_section_files.py``
(re-implemented): a header is ``\\n <UPPER ()/,- text>:<whitespace>``; text before the first header is
``preamble``; header names are lower-cased and normalised (synonyms/typos, e.g. "findings and
impression" → impression, "conclusion" → impression; names containing impression/findings/history/
comparison/addendum map to it; study descriptions such as "chest, pa and lateral" → findings); empty
findings/impression sections are dropped; when neither exists, the text after the first blank line
(``"\\n \\n"``) of the last section becomes ``last_paragraph``; the *last* occurrence of a section wins.
Not reproduced: MIT-LCP's per-study hand overrides and typo fixes (a few hundred studies).

Record text: ``findings_text`` = FINDINGS, ``impression_text`` = IMPRESSION, or, when a report has
neither, the last paragraph (``section_method="last_paragraph"``).  ``section_method`` names what
:func:`radlab.data.schema.report_text` returns: ``findings`` / ``impression`` / ``last_paragraph`` /
``""`` (no usable text or no report file).  Whitespace is collapsed to single spaces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from radlab.data.loaders._common import (
    LoadResult,
    chexpert_value,
    dumps_meta,
    find_first,
    finding,
    norm_split,
    read_csv,
    to_float,
)
from radlab.data.schema import CHEXPERT14, empty_chexpert, new_record

LAYOUT = ("<root>/mimic-cxr-2.0.0-split.csv(.gz), <root>/mimic-cxr-2.0.0-metadata.csv(.gz), optional "
          "<root>/mimic-cxr-2.0.0-chexpert.csv(.gz), images <root>/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg, "
          "reports <reports_dir>/files/pXX/pXXXXXXXX/sXXXXXXXX.txt")

# ----------------------------------------------------------------------------------------------
# Section parser (behaviour of MIT-LCP section_parser.py)

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)

# Exact-name normalisation: synonyms and the misspellings seen in MIMIC-CXR.
_SECTION_SYNONYMS = {
    "comparisons": "comparison", "comparison exam": "comparison", "comparison film": "comparison",
    "reference exam": "comparison", "comparision": "comparison", "comparsion": "comparison",
    "comparrison": "comparison", "comparisions": "comparison",
    "clinical history": "history", "clinical information": "history", "patient history": "history", "pfi": "history",
    "reason for examination": "indication", "reason for exam": "indication", "clinical indication": "indication",
    "idication": "indication",
    "exam": "examination", "type of examination": "examination",
    "conclusion": "impression", "findings and impression": "impression", "findings/impression": "impression",
    "findings/ impression": "impression", "ndication": "impression",
    "impresson": "impression", "imprression": "impression", "imoression": "impression", "impressoin": "impression",
    "imprssion": "impression", "impresion": "impression", "imperssion": "impression", "mpression": "impression",
    "impession": "impression",
    "finding": "findings", "findins": "findings", "findindgs": "findings", "findgings": "findings",
    "findngs": "findings", "findnings": "findings", "finidngs": "findings", "reference findings": "findings",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations", "recommendation": "recommendations", "wetread": "wet read",
    "concusion": "conclusion", "coinclusion": "conclusion",
}
_KEEP = {"preamble", "impression", "comparison", "indication", "findings", "examination", "technique", "history",
         "notification", "recommendations", "addendum", "date", "comment", "wet read", "full report"}
_MAIN = ("impression", "findings", "history", "comparison", "addendum")
# Headers that describe the study itself ("CHEST, PA AND LATERAL:") introduce the findings.
_STUDY_DESCRIPTION = re.compile(
    r"(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|"
    r"frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|"
    r"ribs|pa and lat)"
)


def normalize_section_name(name: str) -> str:
    """Normalise one raw header, e.g. ``"FINDINGS AND IMPRESSION"`` → ``"impression"``."""
    s = name.lower().strip()
    if s in _SECTION_SYNONYMS:
        return _SECTION_SYNONYMS[s]
    if s in _KEEP:
        return s
    for m in _MAIN:
        if m in s:
            return m
    if _STUDY_DESCRIPTION.search(s):
        return "findings"
    return s


def section_text(text: str) -> tuple[list[str], list[str], list[int]]:
    """Split a MIMIC report into ``(sections, names, start offsets)`` (see module docstring)."""
    sections: list[str] = []
    names: list[str] = []
    starts: list[int] = []
    m = _HEADER.search(text, 0)
    if m is None:
        sections, names, starts = [text], ["full report"], [0]
    else:
        sections.append(text[: m.start(1)])
        names.append("preamble")
        starts.append(0)
        while m is not None:
            name = m.group(1)
            start = m.end()
            # The next header is searched from the end of this header's line, which avoids
            # splitting on a colon-terminated capitalised phrase on the same line.
            skip = text[start:].find("\n")
            m = _HEADER.search(text, start + max(skip, 0))
            end = len(text) if m is None else m.start()
            sections.append(text[start:end])
            names.append(name)
            starts.append(start)
    names = [normalize_section_name(n) for n in names]
    for i in reversed(range(len(names))):
        if names[i] in ("impression", "findings") and not sections[i].strip():
            del sections[i], names[i], starts[i]
    if "impression" not in names and "findings" not in names and "\n \n" in sections[-1]:
        head, *rest = sections[-1].split("\n \n")
        sections.append("\n \n".join(rest))
        sections[-2] = head
        names.append("last_paragraph")
        starts.append(starts[-1] + len(head))
    return sections, names, starts


def _clean(text: str) -> str:
    return " ".join(text.split())


def extract_sections(text: str) -> dict[str, str]:
    """``{"findings", "impression", "last_paragraph", "comparison"}`` (last occurrence, whitespace-collapsed)."""
    sections, names, _ = section_text(text)
    out = {}
    for key in ("findings", "impression", "last_paragraph", "comparison"):
        idx = [i for i, n in enumerate(names) if n == key]
        out[key] = _clean(sections[idx[-1]]) if idx else ""
    return out


def report_fields(text: str) -> dict[str, str]:
    """Schema text fields of one report: ``findings_text``, ``impression_text``, ``section_method``."""
    sec = extract_sections(text)
    findings, impression = sec["findings"], sec["impression"]
    if findings:
        method = "findings"
    elif impression:
        method = "impression"
    elif sec["last_paragraph"]:
        impression, method = sec["last_paragraph"], "last_paragraph"
    else:
        method = ""
    return {"findings_text": findings, "impression_text": impression, "section_method": method}


# ----------------------------------------------------------------------------------------------
# Loader


def _csv(root: Path, stem: str) -> Path | None:
    return find_first(root, [f"{stem}.csv", f"{stem}.csv.gz"])


def image_relpath(subject_id: str, study_id: str, dicom_id: str) -> str:
    """``files/p10/p10000032/s50414267/<dicom>.jpg`` (the MIMIC-CXR-JPG path rule)."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}/{dicom_id}.jpg"


def report_relpath(subject_id: str, study_id: str) -> str:
    """``files/p10/p10000032/s50414267.txt``."""
    return f"files/p{subject_id[:2]}/p{subject_id}/s{study_id}.txt"


def _read_labels(path: Path, res: LoadResult) -> dict[str, dict[str, int | None]]:
    table = read_csv(path, ["subject_id", "study_id", *CHEXPERT14])
    table.log_bad(res)
    out: dict[str, dict[str, int | None]] = {}
    for line, r in table.rows:
        try:
            labels = {name: chexpert_value(r[name]) for name in CHEXPERT14}
        except ValueError as exc:
            res.skip(path, line, f"{exc}; labels of study {r['study_id']!r} left unknown")
            continue
        out[str(r["study_id"]).strip()] = labels
    return out


def load_mimic_cxr(
    root: Path,
    *,
    limit: int | None = None,
    only_frontal: bool = False,
    reports_dir: str = "",
    require_report: bool = False,
    check_images: bool = True,
) -> LoadResult:
    """Load MIMIC-CXR-JPG (+ reports).

    ``only_frontal``: keep PA/AP images.  ``reports_dir``: folder holding the report ``files/``
    tree (default ``root``, then ``root/mimic-cxr-reports``).  ``require_report``: skip images
    whose study has no report file (default: keep them with empty text).
    """
    split_path = _csv(root, "mimic-cxr-2.0.0-split")
    meta_path = _csv(root, "mimic-cxr-2.0.0-metadata")
    for p, stem in ((split_path, "split"), (meta_path, "metadata")):
        if p is None:
            raise FileNotFoundError(f"mimic_cxr: required file not found: {root / f'mimic-cxr-2.0.0-{stem}.csv'} "
                                    f"(or .csv.gz)\nexpected layout: {LAYOUT}")
    assert split_path is not None and meta_path is not None
    res = LoadResult()
    split_table = read_csv(split_path, ["dicom_id", "study_id", "subject_id", "split"])
    split_table.log_bad(res)
    meta_table = read_csv(meta_path, ["dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"])
    meta_table.log_bad(res)
    meta = {r["dicom_id"].strip(): r for _, r in meta_table.rows}
    chex_path = _csv(root, "mimic-cxr-2.0.0-chexpert")
    labels = _read_labels(chex_path, res) if chex_path else {}
    rep_root = Path(reports_dir) if reports_dir else root
    if not reports_dir and not (root / "files").is_dir() and (root / "mimic-cxr-reports").is_dir():
        rep_root = root / "mimic-cxr-reports"
    report_cache: dict[str, dict[str, str] | None] = {}

    for line, r in split_table.rows:
        if res.full(limit):
            break
        dicom, study, subject = (str(r[k]).strip() for k in ("dicom_id", "study_id", "subject_id"))
        if not (dicom and study.isdigit() and subject.isdigit()):
            res.skip(split_path, line, f"malformed ids dicom_id={dicom!r} study_id={study!r} subject_id={subject!r}")
            continue
        split = norm_split(r["split"])
        if split is None:
            res.skip(split_path, line, f"unknown split {r['split']!r}")
            continue
        m = meta.get(dicom)
        if m is None:
            res.skip(split_path, line, f"dicom_id {dicom} not in {meta_path.name}")
            continue
        view = str(m["ViewPosition"]).strip().upper()
        if only_frontal and view not in ("PA", "AP"):
            continue  # a filter the caller asked for, not a data problem
        path = root / image_relpath(subject, study, dicom)
        if not path.is_file() and path.with_suffix(".dcm").is_file():
            path = path.with_suffix(".dcm")  # MIMIC-CXR (DICOM) instead of MIMIC-CXR-JPG
        cols, rows = to_float(m["Columns"]), to_float(m["Rows"])
        size = res.image_size(path, split_path, line, check=check_images, default=(int(cols or 0), int(rows or 0)))
        if size is None:
            continue
        width, height = size
        if study not in report_cache:
            rp = rep_root / report_relpath(subject, study)
            report_cache[study] = report_fields(rp.read_text(errors="replace")) if rp.is_file() else None
        text = report_cache[study]
        if text is None and require_report:
            res.skip(split_path, line, f"missing report file {rep_root / report_relpath(subject, study)}")
            continue
        chex = labels.get(study, empty_chexpert())
        findings = [
            finding(name, certainty="present" if v == 1 else "uncertain")
            for name, v in chex.items()
            if v in (1, -1) and name != "No Finding"
        ]
        meta_out: dict[str, Any] = {
            "dicom_id": dicom, "rows": rows, "columns": cols,
            "view_code": m.get("ViewCodeSequence_CodeMeaning", ""),
            "orientation": m.get("PatientOrientationCodeSequence_CodeMeaning", ""),
            "study_date": m.get("StudyDate", ""), "has_report": text is not None,
            "has_labels": study in labels,
        }
        rec = new_record(
            id=f"mimic_cxr-{dicom}",
            patient_id=subject,
            study_id=study,
            split=split,
            source="mimic_cxr",
            image_path=str(path),
            image_width=width,
            image_height=height,
            view=view if view in ("PA", "AP") else ("LATERAL" if view in ("LATERAL", "LL") else ""),
            chexpert=dict(chex),
            findings=findings,
            meta=dumps_meta(meta_out),
            **(text or {}),
        )
        res.add(rec, split_path, line)
    return res
