"""Procedural phantom chest X-rays with reports, CheXpert labels, boxes and grounding phrases.

The only route to a good score on phantom data is reading the pixels (design:
``shared/notes/data_formats.md`` §4.2, sized for a CPU demo):

* **Deterministic.** Every case is a pure function of ``(seed, pool, index)``: independent numpy
  ``Generator(PCG64)`` streams for the patient's anatomy, the study's findings, the acquisition
  (window/gamma/noise) and the report wording are seeded from a BLAKE2 hash of that key plus a
  stream name, so changing e.g. a report template never moves a pixel.
* **Frame.** Normalised image coordinates ``x`` to the image right, ``y`` down; a PA frontal view,
  so the *patient's right is the image left*.  The gastric bubble sits under the patient's left
  hemidiaphragm (image right), which is also the lower dome.
* **Independence.** Findings are drawn independently (``prevalence`` each), laterality and zone
  uniformly; per-image random window, gamma, blur and noise keep global intensity free of labels.
* **Evidence-driven hedging.** Each finding draws a visibility (size or contrast); only a draw in
  a band just above the detection threshold is rendered faintly *and* reported with a hedge
  ("possible ...", "... cannot be excluded", "may represent ...") and labelled ``-1``.
* **Mentions.** An absent finding is negated with probability ``p_mention`` (a per-report
  "radiologist style" drawn from ``[p_mention_min, p_mention_max]``), otherwise not mentioned
  (label ``None``), so negation tuples do not dominate the report reward.
* **Text layout.** Sentence groups (devices, lungs, pleura, heart) follow one of several plausible
  orders; every sentence comes from a paraphrase pool in which some templates are *held out*:
  they appear only in the ``test`` pool (``TEST_POOLS``).

Findings rendered (kind -> names): cardiomegaly (CTR 0.55-0.70; 0.50-0.53 hedged), pleural
effusion (per side or bilateral; fluid layer on the hemidiaphragm erasing the CP angle),
pneumothorax (per side; avascular dark rim with a visceral pleural line), airspace
(consolidation with air bronchograms | hazy lung opacity, by lobe), lesion (nodule 0.05-0.075 |
mass 0.09-0.14 of the width, by lobe), atelectasis (basal plate-like bands, per side or
bibasilar), pulmonary edema (perihilar haze + Kerley lines) and support devices (endotracheal
tube, enteric tube, central venous catheter).  CheXpert labels come from what the report says;
Enlarged Cardiomediastinum, Fracture, Pleural Other and Pneumonia are never mentioned (None).

Public API (shapes in the docstrings): :class:`PhantomConfig`, :func:`case_key`, :func:`generate_case`,
:func:`generate`, :func:`render_case`, :func:`minimal_pairs`, :func:`text_only_prior`,
:func:`label_marginal_report`, :func:`grounding_prior`, :func:`shuffled_images`, :data:`FINDING_KINDS`,
:data:`ANATOMY_REGIONS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from radlab.data import schema

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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: ``x`` ``(1, S)``, ``y`` ``(S, 1)`` and full ``X``, ``Y`` ``(S, S)``,
    all float32 in (0, 1).  Separable factors use the 1-D ones (a large saving at 256 px)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    X, Y = np.meshgrid(c, c)
    return c[None, :], c[:, None], X, Y


def _ramp(z: np.ndarray | float) -> np.ndarray:
    """Anti-aliased step: 0 below -0.5, 1 above 0.5, linear between (``z`` in edge widths).

    Cheaper than a logistic (no transcendental) and, after the detector blur, looks the same.
    """
    return np.clip(np.asarray(z, dtype=np.float32) + 0.5, 0.0, 1.0)


def _ellipse(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float) -> np.ndarray:
    """Soft ellipse mask in [0, 1] with a soft edge ``edge`` wide (normalised units).

    Uses ``(1 - rho^2) / 2 ~= 1 - rho`` near the boundary, so no square root is needed, and
    only evaluates the ellipse's bounding window (the rest is 0).
    """
    out = np.zeros(X.shape, dtype=np.float32)
    win = _window(X.shape[0], cx - rx - 2 * edge, cy - ry - 2 * edge, cx + rx + 2 * edge, cy + ry + 2 * edge)
    if win is None:
        return out
    xs, ys = X[0:1, win[1]], Y[win[0], 0:1]
    rho2 = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    out[win] = _ramp((1.0 - rho2) * (0.5 * min(rx, ry) / edge))
    return out


def _window(size: int, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
    """Row/column slices of the pixels whose centres may fall in ``[x0, x1] x [y0, y1]``."""
    c0, c1 = max(0, int(np.floor(x0 * size))), min(size, int(np.ceil(x1 * size)) + 1)
    r0, r1 = max(0, int(np.floor(y0 * size))), min(size, int(np.ceil(y1 * size)) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    return slice(r0, r1), slice(c0, c1)


def _polyline(X: np.ndarray, Y: np.ndarray, pts: Sequence[tuple[float, float]], width: float, edge: float) -> np.ndarray:
    """Soft mask of a polyline of ``width`` (distance field to its segments, in its bbox only)."""
    out = np.zeros(X.shape, dtype=np.float32)
    m = width + 2 * edge
    xs_, ys_ = [q[0] for q in pts], [q[1] for q in pts]
    win = _window(X.shape[0], min(xs_) - m, min(ys_) - m, max(xs_) + m, max(ys_) + m)
    if win is None:
        return out
    Xw, Yw = X[win], Y[win]
    d = np.full(Xw.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
        vx, vy = bx - ax, by - ay
        L2 = vx * vx + vy * vy or 1e-12
        t = np.clip(((Xw - ax) * vx + (Yw - ay) * vy) / L2, 0.0, 1.0)
        d = np.minimum(d, np.hypot(Xw - (ax + t * vx), Yw - (ay + t * vy)))
    out[win] = _ramp((width / 2 - d) / edge)
    return out


def _mask_box(mask: np.ndarray, thr: float = 0.5) -> list[float] | None:
    """Normalised xyxy bbox of ``mask > thr`` (``None`` when empty). ``(S, S) -> [4]``."""
    m = mask > thr
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    s = mask.shape[0]
    return [cols[0] / s, rows[0] / s, (cols[-1] + 1) / s, (rows[-1] + 1) / s]


@lru_cache(maxsize=16)
def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation indices and weights for resizing an axis from ``n_in`` to ``n_out``."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 1)
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    w = np.clip(pos - i0, 0, 1).astype(np.float32)
    return i0, i1, w


def _resize(a: np.ndarray, n: int) -> np.ndarray:
    """Bilinear resize of a square ``(m, m)`` array to ``(n, n)`` by two gathers per axis.

    Deliberately not a matmul: BLAS threads would oversubscribe the multiprocessing builds.
    """
    i0, i1, w = _interp_weights(n, a.shape[0])
    rows = a[i0] * (1 - w)[:, None] + a[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None, :] + rows[:, i1] * w[None, :]


_STATIC_CACHE: dict[tuple[str, int], dict[str, np.ndarray]] = {}
_STATIC_CACHE_MAX = 64


def _static_layers(p: Patient, size: int) -> dict[str, np.ndarray]:
    """Heart-independent layers of a patient: body, bones, lung vessel texture, trachea.

    Cached per ``(patient, size)`` (several studies and minimal pairs share a patient).  Each
    value is ``(size, size)`` float32.
    """
    ck = (p.key + repr(dataclasses.astuple(p)), size)
    hit = _STATIC_CACHE.get(ck)
    if hit is not None:
        return hit
    if size > 128:
        # Anatomy is smooth at this scale: render at 128 px and upsample (bilinear, by two
        # matmuls); the detector blur applied later hides the difference.  4x less work at 256.
        lo = _static_layers(p, 128)
        out = {k: _resize(v, size).astype(np.float32) for k, v in lo.items()}
        _cache_put(ck, out)
        return out
    x, y, X, Y = _grid(size)
    edge = 1.0 / size
    mx = 0.5 + p.dx
    rng = np.random.Generator(np.random.PCG64(p.tex_seed))
    # Body: a superellipse, narrower at the neck (x and y terms are 1-D, broadcast once).
    body = _ramp((1.0 - (((x - mx) / p.body_rx) ** 4 + ((y - 0.58) / 0.62) ** 4)) * 0.25 / 0.02)
    body = body * _ramp((y - 0.09) / 0.02)
    neck = _ramp((0.10 - np.abs(x - mx)) / 0.01) * _ramp((0.12 - y) / 0.01)
    body = np.maximum(body, neck)
    # Posterior ribs: periodic bands along a warped coordinate that arches laterally and descends.
    u = np.abs(x - mx)
    v = y - (p.rib_curve * 0.9 * (u - 0.06) ** 2 + 0.35 * u)
    s = np.sin((2 * np.pi / p.rib_spacing) * v + 2 * np.pi * p.rib_phase)
    rib_zone = (_ramp((u - 0.05) / 0.01) * _ramp((0.41 - u) / 0.02)) * (_ramp((y - 0.08) / 0.01) * _ramp((0.74 - y) / 0.04))
    cortex = np.clip(1.0 - ((s - 0.2) / 0.2) ** 2, 0, 1)
    ribs = (np.clip((s - 0.15) / 0.35, 0, 1) * 0.09 + cortex * cortex * 0.06) * rib_zone
    # Faint anterior ribs sloping down medially.
    s2 = np.sin((2 * np.pi / (p.rib_spacing * 1.6)) * (y + 0.55 * u) + 4.4 * p.rib_phase)
    ribs += np.clip((s2 - 0.6) / 0.4, 0, 1) * (0.035 * rib_zone)
    # Clavicles: S-shaped bands from the sternal heads outwards (centre line is 1-D in x).
    cu = np.clip(u, 0.02, 0.32)
    cy = p.clav_y + 0.25 * (cu - 0.08) ** 2 - 0.02 * np.sin(cu * 18)
    clav = _ramp((0.013 - np.abs(y - cy)) / edge) * (_ramp((u - 0.03) / 0.01) * _ramp((0.32 - u) / 0.01))
    # Spine with darker disc spaces.
    spine = _ramp((0.035 - np.abs(x - mx)) / edge) * (0.20 + 0.06 * (np.sin(2 * np.pi * y / 0.045) > -0.6))
    bones = ribs + 0.30 * clav + spine
    # Lung markings: radial vessels from each hilum (tapering) plus low-frequency texture,
    # evaluated at half resolution and upsampled (they are soft; the detector blur follows).
    half = max(32, size // 2)
    _, _, Xs, Ys = _grid(half)
    small = np.zeros((half, half), dtype=np.float32)
    for side in ("right", "left"):
        g = _side_geom(p, side)
        dxh, dyh = Xs - g["hilum_x"], Ys - g["hilum_y"]
        r = np.sqrt(dxh * dxh + dyh * dyh) + 1e-3
        th = np.arctan2(dyh, dxh)
        streak = (0.5 + 0.5 * np.cos(th * 22 + rng.uniform(0, 2 * np.pi) + 2.5 * r)) ** 6
        small += streak * np.exp(-r / 0.16)
    coarse = rng.standard_normal((12, 12)).astype(np.float32)
    vessels = _resize(np.clip(small * 1.3 + 0.25 * _resize(coarse, half) + 0.3, 0, None), size)
    trachea = _ramp((0.016 - np.abs(x - mx)) / edge) * (_ramp((p.carina_y - y) / 0.01) * _ramp((y - 0.02) / 0.01))
    for sgn, ang in ((-1, 0.45), (1, 0.75)):  # right main bronchus steeper (about 25 vs 45 degrees)
        ex = mx + sgn * 0.07 * math.sin(ang) * 1.4
        ey = p.carina_y + 0.07 * math.cos(ang)
        trachea = np.maximum(trachea, _polyline(X, Y, [(mx, p.carina_y - 0.005), (ex, ey)], 0.018, edge))
    base = 0.95 * body + bones * body - 0.30 * trachea
    out = {"base": base.astype(np.float32), "vessels": vessels.astype(np.float32)}
    _cache_put(ck, out)
    return out


def _cache_put(key: tuple[str, int], value: dict[str, np.ndarray]) -> None:
    """Insert into the bounded per-patient layer cache (oldest entry evicted first)."""
    if len(_STATIC_CACHE) >= _STATIC_CACHE_MAX:
        _STATIC_CACHE.pop(next(iter(_STATIC_CACHE)))
    _STATIC_CACHE[key] = value


@lru_cache(maxsize=8)
def _radius2(size: int) -> np.ndarray:
    """``2 * ((x - 0.5)^2 + (y - 0.5)^2)``, ``(S, S)`` float32 (the vignette profile)."""
    x, y, _, _ = _grid(size)
    return (2 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)).astype(np.float32)


@lru_cache(maxsize=64)
def _gamma_lut(gamma: float) -> np.ndarray:
    """uint8 lookup ``round(255 * (i / 4095) ** gamma)`` for ``i`` in 0..4095."""
    return (255.0 * (np.arange(4096) / 4095.0) ** gamma + 0.5).astype(np.uint8)


def _box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    b = [min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1)]
    return [round(v, 4) for v in b]


def _zone_bounds(p: Patient, g: Mapping[str, float], zone: str) -> tuple[float, float]:
    """Zones are thirds of the lung height from the apex to the dome apex."""
    top, bot = p.lung_top, g["dome"]
    i = ZONES.index(zone)
    h = (bot - top) / 3
    return top + i * h, top + (i + 1) * h


def anatomy_boxes(p: Patient, ctr: float, lung_masks: Mapping[str, np.ndarray] | None = None) -> dict[str, list[float]]:
    """Region name -> normalised xyxy box for every name in :data:`ANATOMY_REGIONS`."""
    out: dict[str, list[float]] = {}
    h = _heart_geom(p, ctr)
    mx = 0.5 + p.dx
    for side in ("right", "left"):
        g = _side_geom(p, side)
        lb = _mask_box(lung_masks[side]) if lung_masks is not None else None
        if lb is None:
            lb = [g["x0"], p.lung_top, g["x1"], g["cp_y"]]
        out[f"{side} lung"] = _box(*lb)
        for zone in ZONES:
            y0, y1 = _zone_bounds(p, g, zone)
            y1 = g["cp_y"] if zone == "lower" else y1
            out[f"{side} {zone} lung zone"] = _box(lb[0], max(y0, lb[1]), lb[2], min(y1, lb[3]))
        out[f"{side} apical zone"] = _box(lb[0] + 0.02, lb[1], lb[2] - 0.02, lb[1] + 0.08)
        lat = g["lateral"]
        cpx = (lat, lat + 0.07) if side == "right" else (lat - 0.07, lat)
        out[f"{side} costophrenic angle"] = _box(cpx[0], g["cp_y"] - 0.06, cpx[1], g["cp_y"] + 0.015)
        out[f"{side} hemidiaphragm"] = _box(g["x0"], g["dome"] - 0.015, g["x1"], g["cp_y"] + 0.015)
        out[f"{side} hilar structures"] = _box(g["hilum_x"] - 0.05, g["hilum_y"] - 0.06, g["hilum_x"] + 0.05, g["hilum_y"] + 0.06)
    out["cardiac silhouette"] = _box(h["cx"] - h["rx"], h["cy"] - h["ry"], h["cx"] + h["rx"], h["base"])
    out["mediastinum"] = _box(mx - p.med_w - 0.01, 0.10, mx + p.med_w + 0.04, h["cy"])
    out["upper mediastinum"] = _box(mx - p.med_w, 0.10, mx + p.med_w + 0.03, p.carina_y)
    out["trachea"] = _box(mx - 0.02, 0.03, mx + 0.02, p.carina_y)
    out["aortic arch"] = _box(mx + 0.025, 0.23, mx + 0.095, 0.30)
    out["spine"] = _box(mx - 0.04, 0.05, mx + 0.04, 0.98)
    for side, sgn in (("right", -1), ("left", 1)):
        xa, xb = sorted((mx + sgn * 0.03, mx + sgn * 0.32))
        out[f"{side} clavicle"] = _box(xa, p.clav_y - 0.035, xb, p.clav_y + 0.06)
    bx = (p.l_x0 + p.l_x1) / 2 + 0.02
    by = p.dome_l + 0.065
    out["gastric bubble"] = _box(bx - p.bubble_rx, by - p.bubble_ry, bx + p.bubble_rx, by + p.bubble_ry)
    return out


@dataclass
class Rendered:
    """A rendered case: ``image`` ``(S, S)`` uint8; ``finding_boxes[i]`` the boxes of
    ``study.findings[i]`` (normalised xyxy lists); ``anatomy`` region -> box."""

    image: np.ndarray
    finding_boxes: list[list[list[float]]]
    anatomy: dict[str, list[float]]


def render(p: Patient, study: Study, size: int) -> Rendered:
    """Render the study on the patient's anatomy at ``size``×``size``.

    Density (attenuation) layers are summed, mapped through ``1 - exp(-k D)``, blurred, noised
    and windowed with the study's random acquisition.  Finding boxes are the bboxes of the
    rendered finding masks (restricted to the lung where the finding lives in the lung).
    """
    x, y, X, Y = _grid(size)
    edge = 1.0 / size
    st = _static_layers(p, size)
    mx = 0.5 + p.dx
    hg = _heart_geom(p, study.ctr)
    heart = _ellipse(X, Y, hg["cx"], hg["cy"], hg["rx"], hg["ry"], edge)
    med = _ramp((p.med_w - np.abs(x - mx - 0.005)) / edge) * _ramp((hg["cy"] - y) / 0.01)
    knob = _ellipse(X, Y, mx + 0.06, 0.265, 0.032, 0.03, edge)
    cut = 1.0 - np.maximum(np.maximum(heart, med), knob)
    lung: dict[str, np.ndarray] = {}
    ell: dict[str, np.ndarray] = {}
    geo: dict[str, dict[str, float]] = {}
    for side in ("right", "left"):
        g = _side_geom(p, side)
        geo[side] = g
        e = _ellipse(X, Y, g["cx"], g["cy"], g["ax"], g["ay"], edge) * cut
        dome_y = g["dome"] + p.cp_drop * ((x - g["cx"]) / g["ax"]) ** 2
        ell[side] = e
        lung[side] = e * _ramp((dome_y - y) / edge)
    lungs = lung["right"] + lung["left"]
    vessel_gain = np.ones_like(X)
    extra = np.zeros_like(X)  # finding densities
    boxes: list[list[list[float]]] = []
    for f in study.findings:
        fb, dens, gain = _render_finding(f, p, geo, lung, ell, X, Y, edge, hg)
        boxes.append(fb)
        if dens is not None:
            extra += dens
        if gain is not None:
            vessel_gain *= gain
    bx = (p.l_x0 + p.l_x1) / 2 + 0.02
    bubble = _ellipse(X, Y, bx, p.dome_l + 0.065, p.bubble_rx, p.bubble_ry, edge)
    D = st["base"] + lungs * (0.10 * st["vessels"] * vessel_gain - 0.62) + 0.10 * heart + 0.06 * knob - 0.45 * bubble + extra
    a = study.acq
    img = 1.0 - np.exp(-a["k"] * np.clip(D, 0, None))
    img = ndimage.gaussian_filter(img, a["blur"] * size / 256.0 + 0.3, truncate=2.5)
    noise_rng = np.random.Generator(np.random.PCG64(int(a["seed"]) + size))
    img += noise_rng.standard_normal(img.shape, dtype=np.float32) * np.float32(a["noise"])
    img *= 1.0 - a["vignette"] * _radius2(size)
    # Window then gamma through a 4096-entry lookup table (a float pow per pixel is slow).
    scale = 4095.0 / (a["hi"] - a["lo"])
    idx = np.clip((img - a["lo"]) * scale, 0, 4095).astype(np.int32)
    out = _gamma_lut(round(a["gamma"], 3))[idx]
    # Burned-in side marker (a bright square with a notch) at the patient's right (image left).
    m0 = int(size * 0.04)
    ms = max(3, size // 32)
    r0 = m0 if a["marker_corner"] < 0.5 else size - m0 - ms
    out[r0:r0 + ms, m0:m0 + ms] = 242
    out[r0 + ms // 3:r0 + ms, m0 + ms // 3:m0 + 2 * ms // 3 + 1] = 153
    return Rendered(out, boxes, anatomy_boxes(p, study.ctr, lung))


def _lung_point(lung: np.ndarray, y: float, frac: float) -> tuple[float, float]:
    """A point inside the lung mask at height ~``y``: ``frac`` of the way across the lung's
    pixels on that row (moving up row by row if the row holds no lung).  Returns ``(x, y)``."""
    s = lung.shape[0]
    row = min(s - 1, max(0, int(y * s)))
    for r in range(row, -1, -1):
        cols = np.flatnonzero(lung[r] > 0.5)
        if cols.size:
            return float((cols[0] + (cols[-1] - cols[0]) * frac + 0.5) / s), float((r + 0.5) / s)
    return 0.5, y


def _side_list(side: str) -> list[str]:
    return ["right", "left"] if side == "bilateral" else [side]


def _render_finding(f: Finding, p: Patient, geo: Mapping[str, Mapping[str, float]], lung: Mapping[str, np.ndarray],
                    ell: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray, edge: float,
                    hg: Mapping[str, float]) -> tuple[list[list[float]], np.ndarray | None, np.ndarray | None]:
    """Render one finding: ``(boxes, added density or None, vessel gain or None)``."""
    q = f.params
    boxes: list[list[float]] = []
    if f.kind == "cardiomegaly":
        return [_box(hg["cx"] - hg["rx"], hg["cy"] - hg["ry"], hg["cx"] + hg["rx"], hg["base"])], None, None
    if f.kind == "effusion":
        dens = np.zeros_like(X)
        gain = np.ones_like(X)
        for side in _side_list(f.side):
            g = geo[side]
            lung_h = g["cp_y"] - p.lung_top
            # Meniscus: a fluid layer on the hemidiaphragm, thickest at the lateral wall.
            med_frac = np.clip((X - g["lateral"]) / (g["medial"] - g["lateral"]), 0, 1)
            dome_y = g["dome"] + p.cp_drop * ((X - g["cx"]) / g["ax"]) ** 2
            y_men = dome_y - q["h"] * lung_h * (1.0 - 0.55 * med_frac) - q["curv"] * (1.0 - med_frac) ** 2 * q["h"] * 3
            # Fluid fills the lung below the meniscus: restoring soft-tissue density there erases
            # the costophrenic angle and the hemidiaphragm edge (the radiographic sign).
            fluid = _ramp((Y - y_men) / edge) * lung[side]
            b = _mask_box(fluid)
            if b is not None:
                boxes.append(_box(*b))
            dens += 0.62 * fluid
            gain *= 1.0 - fluid
        return boxes, dens, gain
    if f.kind == "pneumothorax":
        g = geo[f.side]
        rho = np.sqrt(((X - g["cx"]) / g["ax"]) ** 2 + ((Y - g["cy"]) / g["ay"]) ** 2)
        y_cut = p.lung_top + q["extent"] * (g["dome"] - p.lung_top)
        # The collapsed lung's edge is a scaled copy of the chest wall, shrunk towards the hilum.
        inner = 1.0 - q["r"]
        upper = _ramp((y_cut - Y) / 0.02)
        lat_side = (X - g["medial"]) * (1 if f.side == "left" else -1) > -0.01
        dist = (rho - inner) * g["ax"]  # ~ normalised distance outside the visceral pleural line
        region = _ramp(dist / edge) * lung[f.side] * upper * lat_side
        line = np.clip(1.0 - np.abs(dist) / (1.2 * edge + 0.003), 0, 1) * lung[f.side] * upper * lat_side
        b = _mask_box(region)
        if b is not None:
            boxes.append(_box(*b))
        # Beyond the line: no lung markings and darker (pleural air); uncertain ones are subtle.
        amp = 1.0 if f.certainty == "present" else 0.45
        return boxes, amp * (-0.16 * region + 0.12 * line * (1 - region)), 1.0 - amp * region
    if f.kind == "airspace":
        g = geo[f.side]
        z0, z1 = _zone_bounds(p, g, f.zone)
        cy = z0 + (z1 - z0) * q["v"]
        cx, cy = _lung_point(lung[f.side], cy, 0.25 + 0.5 * q["u"])
        rng = np.random.Generator(np.random.PCG64(int(q["seed"])))
        field_ = np.zeros_like(X)
        for _ in range(3):
            ox, oy = rng.normal(0, q["rad"] * 0.45, 2)
            s = q["rad"] * rng.uniform(0.55, 0.9)
            field_ += np.exp(-(((X - cx - ox) ** 2 + (Y - cy - oy) ** 2) / (2 * s * s)))
        blob = _ramp((field_ - 0.5) / 0.08) * lung[f.side]
        b = _mask_box(blob)
        if b is not None:
            boxes.append(_box(*b))
        dens = q["d"] * blob
        if f.name == "consolidation":
            # Air bronchograms: dark branching tubes radiating from the hilum inside the blob.
            th = np.arctan2(Y - g["hilum_y"], X - g["hilum_x"])
            bronch = (np.cos(th * 40 + q["seed"] % 7) > 0.93).astype(np.float32)
            dens -= 0.35 * q["d"] * bronch * blob
        return boxes, dens, 1.0 - 0.7 * blob
    if f.kind == "lesion":
        g = geo[f.side]
        z0, z1 = _zone_bounds(p, g, f.zone)
        r = q["diam"] / 2
        lat_in = g["lateral"] + (r if f.side == "right" else -r)
        cx = lat_in + (g["medial"] - g["lateral"]) * (0.15 + 0.45 * q["u"])
        cy = z0 + r * 0.5 + max(z1 - z0 - r, 0.0) * q["v"]
        th = np.arctan2(Y - cy, X - cx)
        rr = r * (1.0 + 0.12 * q["lobes"] / 2 * np.cos(3 * th + q["u"] * 6))  # lobulated margin
        disc = _ramp((rr - np.sqrt((X - cx) ** 2 + (Y - cy) ** 2)) / edge)
        boxes.append(_box(cx - r * 1.06, cy - r * 1.06, cx + r * 1.06, cy + r * 1.06))
        return boxes, q["c"] * disc, None
    if f.kind == "atelectasis":
        dens = np.zeros_like(X)
        for side in _side_list(f.side):
            g = geo[side]
            # Placed along the visible lung just above the dome (the heart may cover the
            # medial base, most of all on the left with cardiomegaly).
            cx, cy = _lung_point(lung[side], g["dome"] - 0.05, 0.3 + 0.4 * q["u"])
            c, s = math.cos(q["tilt"]), math.sin(q["tilt"])
            xr = (X - cx) * c + (Y - cy) * s
            yr = -(X - cx) * s + (Y - cy) * c
            band = _ramp((1.0 - np.sqrt((xr / (q["len"] / 2)) ** 2 + (yr / (q["thick"] / 2)) ** 2)) * q["thick"] / 2 / edge)
            band = band * lung[side]
            b = _mask_box(band)
            if b is not None:
                boxes.append(_box(*b))
            dens += q["d"] * band
        return boxes, dens, None
    if f.kind == "edema":
        dens = np.zeros_like(X)
        for side in ("right", "left"):
            g = geo[side]
            r2 = ((X - g["hilum_x"]) / 0.16) ** 2 + ((Y - g["hilum_y"]) / 0.20) ** 2
            haze = np.exp(-r2) * lung[side]
            # Kerley B lines: short horizontal lines at the lateral bases.
            kb = (np.sin(2 * np.pi * Y / 0.022) > 0.75) * _ramp((0.06 - np.abs(X - g["lateral"] - (0.03 if side == "right" else -0.03))) / 0.005)
            kb = kb * _ramp((Y - g["dome"] + 0.12) / 0.01) * lung[side]
            dens += q["a"] * (haze + 0.5 * kb)
            b = _mask_box(haze, 0.3)
            if b is not None:
                boxes.append(_box(*b))
        return boxes, dens, 1.0 - 0.5 * dens / max(q["a"], 1e-6)
    if f.kind == "devices":
        mx = 0.5 + p.dx
        if f.name == "endotracheal tube":
            tip = p.carina_y - q["above"]
            pts = [(mx, 0.0), (mx, tip)]
        elif f.name == "enteric tube":
            by = p.dome_l + 0.065
            bx = (p.l_x0 + p.l_x1) / 2 + 0.02
            pts = [(mx - 0.012, 0.0), (mx - 0.012, 0.45), (mx + 0.01, p.dome_l), (bx - 0.01, by)]
        else:
            sgn = q["side"]
            x_neck = mx + sgn * 0.12
            pts = [(x_neck, 0.02), (x_neck - sgn * 0.02, 0.14), (mx - 0.035, 0.2), (mx - 0.04, q["tip"])]
        tube = _polyline(X, Y, pts, 0.012, edge)
        xs = [pt[0] for pt in pts]
        ys = [pt[1] for pt in pts]
        boxes.append(_box(min(xs) - 0.01, min(ys), max(xs) + 0.01, max(ys) + 0.01))
        return boxes, 0.75 * tube, None
    raise ValueError(f"unknown finding kind {f.kind!r}")


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


# --------------------------------------------------------------------------------------------
# Cases -> records
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    """A generated case: the schema ``record`` and its ``image`` ``(S, S)`` uint8."""

    record: dict[str, Any]
    image: np.ndarray

    def png_bytes(self) -> bytes:
        """The image as PNG bytes (deterministic for a given Pillow version)."""
        buf = io.BytesIO()
        # Level 1: noisy X-rays barely compress further, and level 6 costs 5x the time.
        Image.fromarray(self.image).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def finding_region(f: Finding) -> str:
    """The anatomical region a finding is reported in (ImaGenome-style names where possible)."""
    sides = ["right", "left"] if f.side == "bilateral" else [f.side]
    if f.kind == "effusion":
        return " and ".join(f"{s} costophrenic angle" for s in sides)
    if f.kind == "pneumothorax":
        return f"{f.side} apical zone"
    if f.kind in ("airspace", "lesion"):
        return _lobe(f.side, f.zone)
    if f.kind == "atelectasis":
        return " and ".join(f"{s} lower lung zone" for s in sides)
    if f.kind == "cardiomegaly":
        return "cardiac silhouette"
    if f.kind == "edema":
        return "right hilar structures and left hilar structures"
    return {"endotracheal tube": "trachea", "enteric tube": "abdomen", "central venous catheter": "mediastinum"}.get(f.name, "")


def _record_id(pool: str, index: int) -> str:
    return f"phantom-{pool}-{index:06d}"


def render_case(key: str, patient: Patient, study: Study, *, pool: str, index: int, cfg: PhantomConfig,
                image_path: str = "") -> Case:
    """Render ``study`` and write its report: the schema record plus the image."""
    r = render(patient, study, cfg.image_size)
    findings_text, impression, chex, stmts = compose_report(key, study, test=pool in TEST_POOLS, cfg=cfg)
    boxes: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    for f, fboxes in zip(study.findings, r.finding_boxes):
        ids = []
        for b in fboxes:
            if not (b[0] < b[2] and b[1] < b[3]):
                continue  # a mask clipped away entirely (cannot happen with the default geometry)
            ids.append(len(boxes))
            boxes.append({"box_id": len(boxes), "kind": "device" if f.kind == "devices" else "finding",
                          "label": f.name, "box": b, "raw": list(b), "raw_format": "xyxy_norm"})
        findings.append({"name": f.name, "laterality": f.side, "region": finding_region(f),
                         "severity": f.severity, "certainty": f.certainty, "box_ids": ids})
    for region, b in r.anatomy.items():
        boxes.append({"box_id": len(boxes), "kind": "anatomy", "label": region, "box": b, "raw": list(b), "raw_format": "xyxy_norm"})
    grounding = []
    for s in stmts:
        phrase = s.text.rstrip(".")
        if s.finding is not None:
            grounding.append({"phrase": phrase, "box_ids": findings[s.finding]["box_ids"], "groundable": True})
        else:
            grounding.append({"phrase": phrase, "box_ids": [], "groundable": False})
    meta = {
        "generator": GENERATOR_VERSION, "key": key, "patient_key": patient.key, "pool": pool,
        "ctr": round(study.ctr, 4), "visibility": [round(f.visibility, 4) for f in study.findings],
        "config": dataclasses.asdict(cfg),
    }
    pid = patient.key.split(":")
    rec = schema.new_record(
        id=_record_id(pool, index),
        patient_id=f"phantom-{pid[1]}-p{int(pid[2]):06d}",
        study_id=f"phantom-{pool}-s{index:06d}",
        split=POOL_SPLIT[pool],
        source=SOURCE,
        image_path=image_path,
        image_width=cfg.image_size,
        image_height=cfg.image_size,
        view="PA",
        findings_text=findings_text,
        impression_text=impression,
        section_method="template",
        chexpert=chex,
        findings=findings,
        boxes=boxes,
        grounding=grounding,
        meta=json.dumps(meta, sort_keys=True),
    )
    return Case(rec, r.image)


def generate_case(seed: int, pool: str, index: int, cfg: PhantomConfig | None = None, *, image_path: str = "") -> Case:
    """Case ``index`` of ``pool`` for ``seed``: deterministic, independent of any other case."""
    cfg = cfg or PhantomConfig()
    key = case_key(seed, pool, index)
    patient = sample_patient(_patient_key(seed, pool, index, cfg), cfg)
    study = sample_study(key, patient, cfg)
    return render_case(key, patient, study, pool=pool, index=index, cfg=cfg, image_path=image_path)


def generate(seed: int, pool: str, n: int, cfg: PhantomConfig | None = None, start: int = 0) -> list[Case]:
    """Cases ``start .. start+n-1`` of ``pool`` (single process; see ``radlab.data.build`` for pools)."""
    return [generate_case(seed, pool, i, cfg) for i in range(start, start + n)]


# --------------------------------------------------------------------------------------------
# Minimal pairs and shortcut probes
# --------------------------------------------------------------------------------------------


@dataclass
class MinimalPair:
    """Two cases on the same patient and acquisition that differ in one controlled way.

    ``kind`` is ``"presence"`` (``a`` without, ``b`` with ``finding``) or ``"laterality"``
    (``a`` and ``b`` have ``finding`` on opposite sides).  A model that ignores the image
    answers both members identically.
    """

    kind: str
    finding: str
    a: Case
    b: Case


_PAIR_KINDS = ("cardiomegaly", "effusion", "pneumothorax", "airspace", "lesion", "atelectasis", "edema")
_LATERAL_KINDS = ("effusion", "pneumothorax", "airspace", "lesion", "atelectasis")


def minimal_pairs(seed: int, n: int, cfg: PhantomConfig | None = None, *, pool: str = "test") -> list[MinimalPair]:
    """``n`` minimal pairs from ``pool`` (alternating presence and laterality pairs).

    Each pair starts from case ``i``'s patient with its other findings removed, adds one
    confidently visible finding (presence) or mirrors it to the other side (laterality).
    """
    cfg = cfg or PhantomConfig()
    out: list[MinimalPair] = []
    for i in range(n):
        key = case_key(seed, pool, i)
        patient = sample_patient(_patient_key(seed, pool, i, cfg), cfg)
        rng = rng_for(key, "pair")
        lateral = i % 2 == 1
        kind = (_LATERAL_KINDS if lateral else _PAIR_KINDS)[int(rng.integers(len(_LATERAL_KINDS if lateral else _PAIR_KINDS)))]
        conf = dataclasses.replace(cfg, p_uncertain=0.0)
        f, ctr = _sample_finding(kind, rng, patient, conf)
        if lateral and f.side == "bilateral":
            f.side = "right"
        acq = sample_acquisition(key, cfg)
        with_f = Study([f], ctr if ctr is not None else patient.base_ctr, acq)
        if lateral:
            g = dataclasses.replace(f, side="left" if f.side == "right" else "right", params=dict(f.params))
            other = Study([g], with_f.ctr, acq)
            a = render_case(key, patient, with_f, pool=pool, index=i, cfg=cfg)
            b = render_case(key, patient, other, pool=pool, index=i, cfg=cfg)
        else:
            a = render_case(key, patient, Study([], patient.base_ctr, acq), pool=pool, index=i, cfg=cfg)
            b = render_case(key, patient, with_f, pool=pool, index=i, cfg=cfg)
        for tag, c in (("a", a), ("b", b)):
            c.record["id"] = f"phantom-pair-{i:06d}-{tag}"
        out.append(MinimalPair("laterality" if lateral else "presence", f.name, a, b))
    return out


def text_only_prior(train_records: Iterable[Mapping[str, Any]]) -> str:
    """The most frequent training report (``schema.report_text``); ties broken alphabetically."""
    counts = Counter(schema.report_text(r) for r in train_records)
    if not counts:
        raise ValueError("text_only_prior: no training records")
    best = max(counts.values())
    return min(t for t, c in counts.items() if c == best)


def label_marginal_report(train_records: Iterable[Mapping[str, Any]]) -> str:
    """The best constant report under the label marginals: for each CheXpert label, state its
    most frequent mention state (positive, negative; unmentioned states are left out).

    Built from one canonical sentence per label, so it scores what a prior-only model can.
    """
    recs = list(train_records)
    if not recs:
        raise ValueError("label_marginal_report: no training records")
    canon = {
        ("Cardiomegaly", 1): "The heart is enlarged.", ("Cardiomegaly", 0): "Heart size is normal.",
        ("Pleural Effusion", 1): "Small right pleural effusion.", ("Pleural Effusion", 0): "No pleural effusion.",
        ("Pneumothorax", 1): "Small right apical pneumothorax.", ("Pneumothorax", 0): "No pneumothorax.",
        ("Consolidation", 1): "Consolidation in the right lower lobe.", ("Consolidation", 0): "No focal consolidation.",
        ("Lung Opacity", 1): "Patchy opacity in the right lower lobe.", ("Lung Opacity", 0): "No focal opacity.",
        ("Lung Lesion", 1): "Nodule in the right upper lobe.", ("Lung Lesion", 0): "No pulmonary nodules.",
        ("Atelectasis", 1): "Bibasilar atelectasis.", ("Atelectasis", 0): "No atelectasis.",
        ("Edema", 1): "Mild pulmonary edema.", ("Edema", 0): "No pulmonary edema.",
    }
    out = []
    for label in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Lung Opacity", "Lung Lesion",
                  "Atelectasis", "Edema"):
        states = Counter(r["chexpert"].get(label) for r in recs)
        state, _ = max(states.items(), key=lambda kv: (kv[1], -1 if kv[0] is None else kv[0]))
        if state in (0, 1):
            out.append(canon[(label, state)])
    return " ".join(out) or "Heart size is normal."


def grounding_prior(train_records: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Text-only grounding prior: label -> mean training box (finding, device and anatomy labels).

    ``{"pleural effusion": [x0, y0, x1, y1], ...}``, each the coordinate-wise mean.
    """
    acc: dict[str, list[np.ndarray]] = {}
    for r in train_records:
        for b in r["boxes"]:
            acc.setdefault(b["label"], []).append(np.asarray(b["box"], dtype=np.float64))
    return {k: [round(float(x), 4) for x in np.mean(np.stack(v), axis=0)] for k, v in sorted(acc.items())}


def shuffled_images(dataset: Any, seed: int = 0, image_column: str = "image") -> Any:
    """A copy of a ``datasets.Dataset`` whose ``image_column`` is a derangement of the original
    (no row keeps its own image when ``len >= 2``): the shuffled-image-pairing baseline."""
    import datasets as hfds

    n = len(dataset)
    rng = np.random.Generator(np.random.PCG64(seed))
    perm = rng.permutation(n)
    if n >= 2:
        fixed = np.flatnonzero(perm == np.arange(n))
        for i in fixed:  # swap fixed points with a neighbour: still a permutation, now fixed-point free
            j = (i + 1) % n
            perm[i], perm[j] = perm[j], perm[i]
    images = dataset.select_columns([image_column]).select(perm.tolist()).flatten_indices()
    rest = dataset.remove_columns([image_column])
    out = hfds.concatenate_datasets([rest, images], axis=1)
    return out.select_columns(list(dataset.column_names))
