"""Phantom cases, part 1: configuration, seeding, the patient's anatomy and the study's findings.

Everything is a pure function of a case key (:func:`case_key`), drawn from named streams
(:func:`rng_for`), so a change in one stream never moves another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

GENERATOR_VERSION = "phantom/1"
SOURCE = "phantom"
# Pools (independent patient ranges) and the schema split each maps to.  GRPO prompts come from
# fresh patients that SFT never saw; "test" alone uses the held-out paraphrase templates.
POOL_SPLIT = {"train": "train", "grpo": "train", "validate": "validate", "test": "test"}
TEST_POOLS = ("test",)

# Finding kinds drawn independently per study.  Nodule/mass are one "lesion" kind and
# consolidation/opacity one "airspace" kind (subtype drawn inside), so prevalence is per kind.
FINDING_KINDS = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "airspace",
    "lesion",
    "atelectasis",
    "edema",
    "devices",
)
# Canonical finding names (``record["findings"][i]["name"]``, grounding prompts, box labels).
FINDING_NAMES = (
    "cardiomegaly",
    "pleural effusion",
    "pneumothorax",
    "consolidation",
    "lung opacity",
    "nodule",
    "mass",
    "atelectasis",
    "pulmonary edema",
    "endotracheal tube",
    "enteric tube",
    "central venous catheter",
)
ANATOMY_REGIONS = (
    "right lung",
    "left lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "right apical zone",
    "left apical zone",
    "right costophrenic angle",
    "left costophrenic angle",
    "right hemidiaphragm",
    "left hemidiaphragm",
    "right hilar structures",
    "left hilar structures",
    "cardiac silhouette",
    "mediastinum",
    "upper mediastinum",
    "trachea",
    "aortic arch",
    "spine",
    "right clavicle",
    "left clavicle",
    "gastric bubble",
)
ZONES = ("upper", "mid", "lower")
# Nominal field of view used to turn normalised sizes into report measurements.
FIELD_OF_VIEW_MM = 350.0


# --------------------------------------------------------------------------------------------
# Configuration and seeding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomConfig:
    """Generator knobs (all plain values so the config can be logged and hashed).

    ``difficulty`` in [0, 1] scales lesion contrast down and noise/jitter up (0.3 is the demo's);
    ``prevalence`` is the per-kind probability of a finding (0.5 = balanced); ``p_mention_*``
    bound the per-report probability of negating an absent finding.
    """

    image_size: int = 128
    difficulty: float = 0.3
    prevalence: float = 0.25
    p_mention_min: float = 0.2
    p_mention_max: float = 0.6
    p_uncertain: float = 0.15
    studies_per_patient: int = 1

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 and >= 32, got {self.image_size}")
        if not 0.0 <= self.difficulty <= 1.0:
            raise ValueError(f"difficulty must be in [0, 1], got {self.difficulty}")
        if not 0.0 <= self.prevalence <= 1.0:
            raise ValueError(f"prevalence must be in [0, 1], got {self.prevalence}")
        if not 0.0 <= self.p_mention_min <= self.p_mention_max <= 1.0:
            raise ValueError(
                f"need 0 <= p_mention_min <= p_mention_max <= 1, got {self.p_mention_min}, {self.p_mention_max}"
            )
        if not 0.0 <= self.p_uncertain < 1.0:
            raise ValueError(f"p_uncertain must be in [0, 1), got {self.p_uncertain}")
        if self.studies_per_patient < 1:
            raise ValueError(f"studies_per_patient must be >= 1, got {self.studies_per_patient}")


def case_key(seed: int, pool: str, index: int) -> str:
    """``(0, "train", 17) -> "0:train:17"``: the string every stream of a case is hashed from."""
    if pool not in POOL_SPLIT:
        raise ValueError(f"unknown pool {pool!r}; expected one of {tuple(POOL_SPLIT)}")
    return f"{int(seed)}:{pool}:{int(index)}"


def rng_for(key: str, stream: str) -> np.random.Generator:
    """An independent ``Generator(PCG64)`` for ``stream`` of ``key`` (BLAKE2b, not ``hash()``,
    so it is stable across processes and Python versions)."""
    digest = hashlib.blake2b(f"{key}|{stream}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def _patient_key(seed: int, pool: str, index: int, cfg: PhantomConfig) -> str:
    """Studies ``index`` of the same patient share this key (patients never cross pools)."""
    return case_key(seed, pool, index // cfg.studies_per_patient)


# --------------------------------------------------------------------------------------------
# Patient anatomy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy in normalised coordinates (jittered around the §4.2 canonical frame)."""

    key: str
    dx: float  # midline shift
    lung_top: float  # apex y
    lung_bottom: float  # bottom of the lung ellipses (below the domes; the domes cut them)
    r_x0: float  # patient-right lung (image left) lateral edge
    r_x1: float  # its medial edge
    l_x0: float  # patient-left lung (image right) medial edge
    l_x1: float  # its lateral edge
    dome_r: float  # right hemidiaphragm apex y (higher = smaller y)
    dome_l: float  # left hemidiaphragm apex y
    cp_drop: float  # lateral costophrenic angle sits this much below the dome apex
    base_ctr: float  # cardiothoracic ratio when there is no cardiomegaly
    heart_hh: float  # heart half height
    med_w: float  # upper mediastinum half width
    carina_y: float
    clav_y: float
    rib_spacing: float
    rib_phase: float
    rib_curve: float
    bubble_rx: float
    bubble_ry: float
    body_rx: float
    tex_seed: int


def sample_patient(key: str, cfg: PhantomConfig) -> Patient:
    """Draw a patient's anatomy from the ``patient`` stream of ``key``."""
    rng = rng_for(key, "patient")
    j = 0.6 + 0.8 * cfg.difficulty  # jitter scale grows with difficulty

    def u(lo: float, hi: float) -> float:
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        return float(mid + half * j * rng.uniform(-1, 1))

    dx = u(-0.015, 0.015)
    dome_r = u(0.62, 0.66)
    return Patient(
        key=key,
        dx=dx,
        lung_top=u(0.10, 0.14),
        lung_bottom=u(0.84, 0.88),
        r_x0=u(0.11, 0.15) + dx,
        r_x1=u(0.46, 0.48) + dx,
        l_x0=u(0.52, 0.54) + dx,
        l_x1=u(0.85, 0.89) + dx,
        dome_r=dome_r,
        dome_l=dome_r + u(0.02, 0.035),
        cp_drop=u(0.07, 0.10),
        base_ctr=float(rng.uniform(0.39, 0.46)),
        heart_hh=u(0.13, 0.16),
        med_w=u(0.045, 0.06),
        carina_y=u(0.31, 0.35),
        clav_y=u(0.14, 0.18),
        rib_spacing=u(0.05, 0.06),
        rib_phase=float(rng.uniform(0, 1)),
        rib_curve=u(0.9, 1.3),
        bubble_rx=u(0.035, 0.05),
        bubble_ry=u(0.02, 0.03),
        body_rx=u(0.44, 0.47),
        tex_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _side_geom(p: Patient, side: str) -> dict[str, float]:
    """Ellipse and dome of one hemithorax. ``side`` is the patient's ("right" = image left)."""
    x0, x1 = (p.r_x0, p.r_x1) if side == "right" else (p.l_x0, p.l_x1)
    dome = p.dome_r if side == "right" else p.dome_l
    lateral = x0 if side == "right" else x1
    medial = x1 if side == "right" else x0
    return {
        "cx": (x0 + x1) / 2,
        "cy": (p.lung_top + p.lung_bottom) / 2,
        "ax": (x1 - x0) / 2,
        "ay": (p.lung_bottom - p.lung_top) / 2,
        "x0": x0,
        "x1": x1,
        "dome": dome,
        "lateral": lateral,
        "medial": medial,
        "cp_y": dome + p.cp_drop,
        "hilum_x": medial + (-0.07 if side == "right" else 0.07),
        "hilum_y": (p.carina_y + 0.07) if side == "right" else (p.carina_y + 0.05),
    }


def _heart_geom(p: Patient, ctr: float) -> dict[str, float]:
    """Heart ellipse for a cardiothoracic ratio ``ctr`` (width / inner thoracic width)."""
    thorax_w = p.l_x1 - p.r_x0
    w = ctr * thorax_w
    cx = 0.5 + p.dx + 0.12 * w  # centre right of midline in the image (NIH priors)
    base = (p.dome_r + p.dome_l) / 2 + 0.01
    cy = base - 0.95 * p.heart_hh
    return {"cx": cx, "cy": cy, "rx": w / 2, "ry": p.heart_hh, "base": base}


# --------------------------------------------------------------------------------------------
# Study (what is in the image)
# --------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One finding to render and report.

    ``kind`` is in :data:`FINDING_KINDS`; ``name`` in :data:`FINDING_NAMES`; ``side`` is the
    patient's (``"left"``, ``"right"``, ``"bilateral"`` or ``"none"``); ``certainty`` is
    ``"present"`` or ``"uncertain"`` (set from ``visibility`` against the kind's threshold);
    ``params`` holds the geometry in side-local units so a left/right swap is just ``side``.
    """

    kind: str
    name: str
    side: str = "none"
    zone: str = ""
    severity: str = ""
    certainty: str = "present"
    visibility: float = 1.0
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class Study:
    """A study: its findings, the heart's CTR and the acquisition (window/gamma/noise)."""

    findings: list[Finding]
    ctr: float
    acq: dict[str, float]


def _severity_band(rng: np.random.Generator, uncertain: bool, bands: Sequence[tuple[str, float, float]],
                   weak: tuple[float, float]) -> tuple[str, float]:
    if uncertain:
        return "", float(rng.uniform(*weak))
    name, lo, hi = bands[int(rng.integers(len(bands)))]
    return name, float(rng.uniform(lo, hi))


def _sample_finding(kind: str, rng: np.random.Generator, p: Patient, cfg: PhantomConfig) -> tuple[Finding, float | None]:
    """Draw one finding of ``kind``; returns it and, for cardiomegaly, the CTR."""
    unc = bool(rng.random() < cfg.p_uncertain)
    cert = "uncertain" if unc else "present"
    side = "right" if rng.random() < 0.5 else "left"
    zone = ZONES[int(rng.integers(3))]
    hard = cfg.difficulty
    if kind == "cardiomegaly":
        sev, ctr = _severity_band(
            rng, unc, [("mild", 0.55, 0.59), ("moderate", 0.59, 0.64), ("severe", 0.64, 0.70)], (0.50, 0.53)
        )
        return Finding(kind, "cardiomegaly", "none", "", sev or "mild", cert, ctr), ctr
    if kind == "effusion":
        if not unc and rng.random() < 0.2:
            side = "bilateral"
        sev, h = _severity_band(rng, unc, [("small", 0.10, 0.16), ("moderate", 0.20, 0.32), ("large", 0.38, 0.50)],
                                (0.05, 0.075))
        return Finding(kind, "pleural effusion", side, "lower", sev or "small", cert, h,
                       {"h": h, "curv": float(rng.uniform(0.04, 0.07))}), None
    if kind == "pneumothorax":
        sev, r = _severity_band(rng, unc, [("small", 0.16, 0.24), ("moderate", 0.26, 0.36), ("large", 0.40, 0.50)],
                                (0.09, 0.12))
        return Finding(kind, "pneumothorax", side, "upper", sev or "small", cert, r,
                       {"r": r, "extent": float(rng.uniform(0.45, 0.65))}), None
    if kind == "airspace":
        consol = bool(rng.random() < 0.5)
        name = "consolidation" if consol else "lung opacity"
        base = (0.55, 0.70) if consol else (0.30, 0.40)
        weak = (0.20, 0.26) if consol else (0.14, 0.18)
        d = float(rng.uniform(*(weak if unc else base))) * (1.0 - 0.35 * hard)
        return Finding(kind, name, side, zone, "", cert, d, {
            "d": d, "u": float(rng.uniform(0.35, 0.65)), "v": float(rng.uniform(0.3, 0.7)),
            "rad": float(rng.uniform(0.065, 0.10)), "seed": float(rng.integers(0, 2**31 - 1)),
        }), None
    if kind == "lesion":
        mass = bool(rng.random() < 0.4)
        diam = float(rng.uniform(0.09, 0.14)) if mass else float(rng.uniform(0.05, 0.075))
        c = float(rng.uniform(0.18, 0.24) if unc else rng.uniform(0.40, 0.60)) * (1.0 - 0.35 * hard)
        return Finding(kind, "mass" if mass else "nodule", side, zone, "", cert, c, {
            "diam": diam, "c": c, "u": float(rng.uniform(0.3, 0.7)), "v": float(rng.uniform(0.3, 0.7)),
            "lobes": float(rng.integers(0, 3)),
        }), None
    if kind == "atelectasis":
        if not unc and rng.random() < 0.35:
            side = "bilateral"
        d = float(rng.uniform(0.25, 0.32) if unc else rng.uniform(0.5, 0.7)) * (1.0 - 0.3 * hard)
        return Finding(kind, "atelectasis", side, "lower", "", cert, d, {
            "d": d, "len": float(rng.uniform(0.11, 0.17)), "thick": float(rng.uniform(0.02, 0.03)),
            "tilt": float(rng.uniform(-0.25, 0.25)), "u": float(rng.uniform(0.35, 0.6)),
        }), None
    if kind == "edema":
        sev, a = _severity_band(rng, unc, [("mild", 0.28, 0.36), ("moderate", 0.40, 0.52)], (0.14, 0.18))
        return Finding(kind, "pulmonary edema", "bilateral", "", sev or "mild", cert, a, {"a": a}), None
    raise ValueError(f"unknown finding kind {kind!r}")


def _sample_devices(rng: np.random.Generator) -> list[Finding]:
    """1-2 support devices (always reported as present: devices are never hedged)."""
    out = []
    names = ["endotracheal tube", "enteric tube", "central venous catheter"]
    k = int(rng.integers(1, 3))
    for name in sorted(rng.choice(names, size=k, replace=False).tolist(), key=names.index):
        params: dict[str, float] = {}
        if name == "endotracheal tube":
            params["above"] = float(rng.uniform(0.03, 0.07))
        elif name == "central venous catheter":
            params["side"] = 1.0 if rng.random() < 0.5 else -1.0
            params["tip"] = float(rng.uniform(0.30, 0.38))
        out.append(Finding("devices", name, "none", "", "", "present", 1.0, params))
    return out


def sample_study(key: str, patient: Patient, cfg: PhantomConfig) -> Study:
    """Draw the study of case ``key``: independent findings and the acquisition."""
    rng = rng_for(key, "study")
    findings: list[Finding] = []
    ctr = patient.base_ctr
    for kind in FINDING_KINDS:
        present = rng.random() < cfg.prevalence
        if not present:
            continue
        if kind == "devices":
            findings.extend(_sample_devices(rng))
            continue
        f, new_ctr = _sample_finding(kind, rng, patient, cfg)
        findings.append(f)
        if new_ctr is not None:
            ctr = new_ctr
    return Study(findings, ctr, sample_acquisition(key, cfg))


def sample_acquisition(key: str, cfg: PhantomConfig) -> dict[str, float]:
    """Per-image window, gamma, blur and noise (its own stream, so findings never change them)."""
    rng = rng_for(key, "acq")
    return {
        "k": float(rng.uniform(1.3, 1.8)),
        "lo": float(rng.uniform(0.0, 0.12)),
        "hi": float(rng.uniform(0.80, 1.0)),
        "gamma": float(rng.uniform(0.75, 1.35)),
        "blur": float(rng.uniform(0.5, 1.0)),
        "noise": float(rng.uniform(0.012, 0.03) * (0.6 + 1.2 * cfg.difficulty)),
        "vignette": float(rng.uniform(0.0, 0.15)),
        "marker_corner": float(rng.integers(0, 2)),
        "seed": float(rng.integers(0, 2**31 - 1)),
    }
