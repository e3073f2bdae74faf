"""Phantom cases, part 3: the report text.

:func:`compose_report` writes the findings and impression of a study from paraphrase pools
(:data:`POS`, :data:`NEG`, :data:`UNC`; some templates are held out to the ``test`` pool) and
derives the CheXpert labels from what the text says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from radlab.data import schema
from radlab.data.phantom.sampling import FIELD_OF_VIEW_MM, Finding, PhantomConfig, Study, rng_for

# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

# Paraphrase pools: (template, held_out).  Held-out templates appear only in the test pool.
# Vocabulary is standard CXR phrasing the lexicon-based annotator (radlab.clinical) recognises.
T = tuple[str, bool]
POS: dict[str, list[T]] = {
    "cardiomegaly": [("{Sev} cardiomegaly.", False), ("The heart is enlarged.", False),
                     ("There is {sev} cardiomegaly.", False), ("The cardiac silhouette is enlarged.", False),
                     ("The heart is {sevly} enlarged.", True)],
    "pleural effusion": [("{Size} {side} pleural effusion.", False), ("There is a {size} {side} pleural effusion.", False),
                         ("{Size} {side} pleural effusion is present.", False), ("A {size} {side} pleural effusion is seen.", True)],
    "pleural effusion/bilateral": [("{Size} bilateral pleural effusions.", False), ("There are {size} bilateral pleural effusions.", False),
                                   ("{Size} pleural effusions are present bilaterally.", True)],
    "pneumothorax": [("{Size} {side} apical pneumothorax.", False), ("There is a {size} {side} pneumothorax.", False),
                     ("{Size} {side} pneumothorax is present.", False), ("A {size} {side} apical pneumothorax is seen.", True)],
    "consolidation": [("Consolidation in the {lobe}.", False), ("{Lobe} consolidation.", False),
                      ("There is consolidation in the {lobe}.", False), ("Focal consolidation is seen in the {lobe}.", True)],
    "lung opacity": [("Patchy opacity in the {lobe}.", False), ("There is a patchy opacity in the {lobe}.", False),
                     ("Hazy opacity in the {lobe}.", False), ("An ill-defined opacity is seen in the {lobe}.", True)],
    "nodule": [("Nodule in the {lobe}.", False), ("{mm} mm nodule in the {lobe}.", False),
               ("There is a {mm} mm nodule in the {lobe}.", False), ("A pulmonary nodule is seen in the {lobe}.", True)],
    "mass": [("Mass in the {lobe}.", False), ("{cm} cm mass in the {lobe}.", False),
             ("There is a {cm} cm mass in the {lobe}.", False), ("A large mass is seen in the {lobe}.", True)],
    "atelectasis": [("{Side} basilar atelectasis.", False), ("Plate-like atelectasis at the {side} base.", False),
                    ("There is {side} basilar atelectasis.", False), ("Linear atelectasis at the {side} lung base.", True)],
    "atelectasis/bilateral": [("Bibasilar atelectasis.", False), ("Bibasilar plate-like atelectasis.", False),
                              ("There is bibasilar atelectasis.", False), ("Atelectasis at both lung bases.", True)],
    "pulmonary edema": [("{Sev} pulmonary edema.", False), ("There is {sev} pulmonary edema.", False),
                        ("Findings are consistent with {sev} pulmonary edema.", False), ("{Sev} interstitial pulmonary edema.", True)],
    "endotracheal tube": [("Endotracheal tube tip is {cm} cm above the carina.", False), ("An endotracheal tube is in place.", False),
                          ("The endotracheal tube terminates {cm} cm above the carina.", True)],
    "enteric tube": [("Enteric tube courses below the diaphragm with the tip in the stomach.", False),
                     ("A nasogastric tube is in place with the tip in the stomach.", False),
                     ("The enteric tube tip projects over the stomach.", True)],
    "central venous catheter": [("{Side} internal jugular central venous catheter tip in the SVC.", False),
                                ("{Side} internal jugular catheter terminates in the SVC.", False),
                                ("A {side} internal jugular line ends in the SVC.", True)],
}
UNC: dict[str, list[T]] = {
    "cardiomegaly": [("Possible mild cardiomegaly.", False), ("Mild cardiomegaly cannot be excluded.", False),
                     ("Findings may represent mild cardiomegaly.", True)],
    "pleural effusion": [("Possible small {side} pleural effusion.", False),
                         ("A small {side} pleural effusion cannot be excluded.", False),
                         ("Findings may represent a small {side} pleural effusion.", True)],
    "pneumothorax": [("Possible tiny {side} apical pneumothorax.", False), ("A small {side} pneumothorax cannot be excluded.", False),
                     ("Possible small {side} apical pneumothorax.", True)],
    "consolidation": [("Possible consolidation in the {lobe}.", False), ("Consolidation in the {lobe} cannot be excluded.", False),
                      ("Findings in the {lobe} may represent consolidation.", True)],
    "lung opacity": [("Possible faint opacity in the {lobe}.", False), ("A faint opacity in the {lobe} cannot be excluded.", False),
                     ("Possible subtle opacity in the {lobe}.", True)],
    "nodule": [("Possible nodule in the {lobe}.", False), ("A nodule in the {lobe} cannot be excluded.", False),
               ("Possible faint nodule in the {lobe}.", True)],
    "mass": [("Possible mass in the {lobe}.", False), ("A mass in the {lobe} cannot be excluded.", False),
             ("Possible ill-defined mass in the {lobe}.", True)],
    "atelectasis": [("Possible {side} basilar atelectasis.", False), ("Minimal {side} basilar atelectasis cannot be excluded.", False),
                    ("Possible subtle {side} basilar atelectasis.", True)],
    "pulmonary edema": [("Possible mild pulmonary edema.", False), ("Mild pulmonary edema cannot be excluded.", False),
                        ("Findings may represent mild pulmonary edema.", True)],
}
NEG: dict[str, list[T]] = {
    "cardiomegaly": [("Heart size is normal.", False), ("The heart is normal in size.", False), ("Normal heart size.", False),
                     ("No cardiomegaly.", True)],
    "pleural effusion": [("No pleural effusion.", False), ("There is no pleural effusion.", False), ("No pleural effusions.", False),
                         ("No evidence of pleural effusion.", True)],
    "pneumothorax": [("No pneumothorax.", False), ("There is no pneumothorax.", False), ("No evidence of pneumothorax.", True)],
    "pleura": [("No pleural effusion or pneumothorax.", False), ("There is no pleural effusion or pneumothorax.", False),
               ("No pneumothorax or pleural effusion.", True)],
    "consolidation": [("No focal consolidation.", False), ("There is no consolidation.", False), ("No consolidation.", True)],
    "lung opacity": [("No focal opacity.", False), ("There is no focal opacity.", True)],
    "lesion": [("No pulmonary nodules.", False), ("No nodule or mass.", False), ("There is no pulmonary nodule or mass.", True)],
    "atelectasis": [("No atelectasis.", False), ("There is no atelectasis.", True)],
    "pulmonary edema": [("No pulmonary edema.", False), ("There is no pulmonary edema.", False),
                        ("No evidence of pulmonary edema.", True)],
    # Sets no CheXpert label (as in the CheXpert labeler); only said when the lungs hold no finding.
    "lungs clear": [("The lungs are clear.", False), ("Lungs are clear.", False), ("The lungs are well expanded and clear.", True)],
}
NORMAL_IMPRESSION: list[T] = [("No acute cardiopulmonary process.", False), ("No acute cardiopulmonary abnormality.", False),
                              ("No acute intrathoracic process.", True)]
# Clinically plausible section orders (devices usually first; heart first or last).
GROUP_ORDERS = (
    ("devices", "lungs", "pleura", "heart"),
    ("devices", "heart", "lungs", "pleura"),
    ("heart", "lungs", "pleura", "devices"),
    ("devices", "lungs", "heart", "pleura"),
    ("lungs", "pleura", "heart", "devices"),
)
GROUP_OF = {
    "cardiomegaly": "heart", "effusion": "pleura", "pneumothorax": "pleura", "airspace": "lungs", "lesion": "lungs",
    "atelectasis": "lungs", "edema": "lungs", "devices": "devices",
}
CHEXPERT_OF = {
    "cardiomegaly": "Cardiomegaly", "pleural effusion": "Pleural Effusion", "pneumothorax": "Pneumothorax",
    "consolidation": "Consolidation", "lung opacity": "Lung Opacity", "nodule": "Lung Lesion", "mass": "Lung Lesion",
    "atelectasis": "Atelectasis", "pulmonary edema": "Edema", "endotracheal tube": "Support Devices",
    "enteric tube": "Support Devices", "central venous catheter": "Support Devices",
}
# Which negation pool covers which absent kind, and the labels that negation sets to 0.
NEG_LABELS = {
    "cardiomegaly": ["Cardiomegaly"], "pleural effusion": ["Pleural Effusion"], "pneumothorax": ["Pneumothorax"],
    "pleura": ["Pleural Effusion", "Pneumothorax"], "consolidation": ["Consolidation"], "lung opacity": ["Lung Opacity"],
    "lesion": ["Lung Lesion"], "atelectasis": ["Atelectasis"], "pulmonary edema": ["Edema"], "lungs clear": [],
}
PRIORITY = ("pneumothorax", "pleural effusion", "consolidation", "mass", "nodule", "lung opacity", "pulmonary edema",
            "cardiomegaly", "atelectasis", "endotracheal tube", "enteric tube", "central venous catheter")


def _lobe(side: str, zone: str) -> str:
    """Zone to a lobe phrase: right mid -> "right middle lobe", left mid -> "lingula"."""
    if zone == "mid":
        return "right middle lobe" if side == "right" else "lingula"
    return f"{side} {zone} lobe"


def _pick(rng: np.random.Generator, pool: Sequence[T], test: bool) -> str:
    allowed = [t for t, held in pool if test or not held]
    return allowed[int(rng.integers(len(allowed)))]


def _fill(template: str, f: Finding) -> str:
    sev = f.severity or "mild"
    side = f.side if f.side in ("left", "right") else ""
    if f.name == "central venous catheter":
        side = "right" if f.params.get("side", 1.0) < 0 else "left"
    lobe = _lobe(f.side, f.zone) if f.zone and side else ""
    size_mm = f.params.get("diam", 0.0) * FIELD_OF_VIEW_MM
    vals = {
        "sev": sev, "Sev": sev.capitalize(), "sevly": {"mild": "mildly", "moderate": "moderately", "severe": "severely"}.get(sev, "mildly"),
        "size": f.severity or "small", "Size": (f.severity or "small").capitalize(),
        "side": side, "Side": side.capitalize(), "lobe": lobe, "Lobe": "Lingular" if lobe == "lingula" else lobe[:1].upper() + lobe[1:],
        "mm": f"{max(5, int(round(size_mm)))}", "cm": f"{size_mm / 10:.1f}",
    }
    if f.name == "endotracheal tube":
        vals["cm"] = f"{f.params['above'] * FIELD_OF_VIEW_MM / 10:.1f}"
    return template.format(**vals)


@dataclass
class Statement:
    """One report sentence: its text, the CheXpert labels it sets, and the finding it grounds."""

    text: str
    group: str
    labels: dict[str, int]
    finding: int | None = None  # index into study.findings; None for negations


def compose_report(key: str, study: Study, *, test: bool, cfg: PhantomConfig) -> tuple[str, str, dict[str, int | None], list[Statement]]:
    """Write FINDINGS and IMPRESSION for ``study``.

    Returns ``(findings_text, impression_text, chexpert, statements)``.  Labels aggregate the
    statements (positive > uncertain > negative; unmentioned = None); "No Finding" is 1 iff
    nothing but support devices is positive or uncertain (CheXpert's rule), else None.
    """
    rng = rng_for(key, "text")
    p_mention = float(rng.uniform(cfg.p_mention_min, cfg.p_mention_max))
    stmts: list[Statement] = []
    for i, f in enumerate(study.findings):
        pool_key = f.name
        if f.side == "bilateral" and f"{f.name}/bilateral" in POS:
            pool_key = f"{f.name}/bilateral"
        pool = UNC[f.name] if f.certainty == "uncertain" else POS[pool_key]
        text = _fill(_pick(rng, pool, test), f)
        stmts.append(Statement(text, GROUP_OF[f.kind], {CHEXPERT_OF[f.name]: -1 if f.certainty == "uncertain" else 1}, i))
    present = {f.name for f in study.findings}
    kinds = {f.kind for f in study.findings}
    # Negations of absent findings, each mentioned with probability p_mention.
    neg_keys: list[tuple[str, str]] = []
    if "cardiomegaly" not in present:
        neg_keys.append(("cardiomegaly", "heart"))
    eff, ptx = "pleural effusion" not in present, "pneumothorax" not in present
    if eff and ptx and rng.random() < 0.5:
        neg_keys.append(("pleura", "pleura"))
    else:
        if eff:
            neg_keys.append(("pleural effusion", "pleura"))
        if ptx:
            neg_keys.append(("pneumothorax", "pleura"))
    if "airspace" not in kinds:
        neg_keys.append(("consolidation" if rng.random() < 0.7 else "lung opacity", "lungs"))
    if "lesion" not in kinds:
        neg_keys.append(("lesion", "lungs"))
    if "edema" not in kinds:
        neg_keys.append(("pulmonary edema", "lungs"))
    if "atelectasis" not in kinds and rng.random() < 0.3:
        neg_keys.append(("atelectasis", "lungs"))
    if not kinds & {"airspace", "lesion", "edema", "atelectasis"}:
        neg_keys.append(("lungs clear", "lungs"))
    for nk, group in neg_keys:
        p = p_mention if nk != "pleura" else p_mention ** 0.5
        if rng.random() < p:
            stmts.append(Statement(_pick(rng, NEG[nk], test), group, {lab: 0 for lab in NEG_LABELS[nk]}))
    if not stmts:  # never emit an empty report
        stmts.append(Statement(_pick(rng, NEG["cardiomegaly"], test), "heart", {"Cardiomegaly": 0}))
    order = GROUP_ORDERS[int(rng.integers(len(GROUP_ORDERS)))]
    by_group: dict[str, list[Statement]] = {g: [] for g in order}
    for s in stmts:
        by_group[s.group].append(s)
    ordered: list[Statement] = []
    for g in order:
        items = by_group[g]
        # Within a group, positives first (as radiologists do), each part shuffled.
        pos = [s for s in items if s.finding is not None]
        neg = [s for s in items if s.finding is None]
        for part in (pos, neg):
            idx = rng.permutation(len(part))
            ordered.extend(part[int(k)] for k in idx)
    findings_text = " ".join(s.text for s in ordered)
    # IMPRESSION: positives by clinical priority, restating the findings sentences.
    pos_stmts = [s for s in ordered if s.finding is not None]
    pos_stmts.sort(key=lambda s: PRIORITY.index(study.findings[s.finding].name))  # type: ignore[index]
    clinical = [s for s in pos_stmts if study.findings[s.finding].kind != "devices"]  # type: ignore[index]
    if clinical:
        impression = " ".join(s.text for s in clinical)
    else:
        impression = _pick(rng, NORMAL_IMPRESSION, test)
    chex: dict[str, int | None] = schema.empty_chexpert()
    for s in stmts:
        for lab, v in s.labels.items():
            cur = chex[lab]
            chex[lab] = v if cur is None else _merge(cur, v)
    abnormal = any(v in (1, -1) for k, v in chex.items() if k not in ("Support Devices", "No Finding"))
    chex["No Finding"] = None if abnormal else 1
    return findings_text, impression, chex, ordered


def _merge(a: int, b: int) -> int:
    """CheXpert aggregation: positive beats uncertain beats negative."""
    rank = {1: 2, -1: 1, 0: 0}
    return a if rank[a] >= rank[b] else b
