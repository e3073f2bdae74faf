"""Phantom cases, part 2: rendering a patient and study to a grey image with boxes and masks.

:func:`render` draws the anatomy (lungs, heart, mediastinum, diaphragm, ribs, soft tissue) and every
finding of a :class:`~radlab.data.phantom.sampling.Study` into an ``(S, S)`` uint8 image and returns
its finding boxes and the anatomy boxes (:func:`anatomy_boxes`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from radlab.data.phantom.sampling import ZONES, Finding, Patient, Study, _heart_geom, _side_geom

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
