"""Image loading and geometry-preserving preprocessing for chest X-rays.

* :func:`load_image` reads any PIL-readable CXR (8-bit or 16-bit PNG, JPEG, RGB/RGBA, palette)
  into an 8-bit grayscale ``"L"`` image.
* :func:`preprocess` resizes to a target size **keeping the aspect ratio** and returns the affine
  :class:`Transform` it applied, so that boxes can follow (:func:`transform_boxes`) and model
  predictions can be mapped back (:func:`inverse_transform_boxes`).
* There is deliberately no flip: on a frontal film the patient's right is on the image left and
  reports say "right"/"left" in the patient frame, so a horizontal flip would silently make every
  lateralised sentence and the heart position wrong (data_formats.md §1.12).

Box convention: normalised ``[x0, y0, x1, y1]`` on the image they refer to (x right, y down).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radlab.formats import clip_box

RESIZE_MODES = ("letterbox", "longest")


class ImageLoadError(OSError):
    """An image file is missing or unreadable; the message names the file."""


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Min–max scale a >8-bit or float array to uint8 (the stored range, not the dtype range:
    12-bit data in a 16-bit container would otherwise come out nearly black)."""
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, dtype=np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (np.where(finite, arr, lo) - lo) / (hi - lo) * 255.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` as an 8-bit grayscale PIL image (mode ``"L"``, pixels loaded, file closed).

    Handles ``L``; ``I;16``/``I``/``F`` (16-bit or float: min–max scaled to 0..255); ``RGB``;
    ``RGBA``/``LA`` (alpha dropped — CXR PNGs with alpha, as a few NIH files have, carry the
    image in the colour channels); ``P`` (palette); ``1``.  EXIF orientation is applied (JPEGs
    from some exporters are stored rotated).  Raises :class:`ImageLoadError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            mode = im.mode
            if mode == "L":
                return im.copy()
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return Image.fromarray(_to_uint8(np.asarray(im)), mode="L")
            if mode in ("RGBA", "LA", "PA"):
                im = im.convert("RGB" if mode != "LA" else "L")
            return im.convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageLoadError(f"cannot read image {p}: {exc}") from exc


@dataclass(frozen=True)
class Transform:
    """Affine map from input pixels to output pixels: ``x' = x * scale + pad_x`` (same for y).

    ``in_size``/``out_size`` are ``(width, height)``.  One ``scale`` for both axes (aspect kept).
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    scale: float
    pad_x: float
    pad_y: float
    mode: str


def _resized_size(w: int, h: int, size: int) -> tuple[int, int, float]:
    scale = size / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale)), scale


def preprocess(img: Image.Image, size: int, mode: str = "letterbox", fill: int = 0) -> tuple[Image.Image, Transform]:
    """Resize ``img`` so that its longer side is ``size``, keeping the aspect ratio.

    ``mode="letterbox"``: paste the resized image centred on a ``size × size`` canvas of value
    ``fill`` (black: the CXR background); output is square, boxes shift by the padding.
    ``mode="longest"``: no padding; output is ``size`` on the long side and proportional on the
    short side.  Returns ``(image, transform)``; the image keeps ``img``'s mode.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    w, h = img.size
    nw, nh, _ = _resized_size(w, h, size)
    resized = img.resize((nw, nh), Image.Resampling.BICUBIC) if (nw, nh) != (w, h) else img.copy()
    # The exact per-axis scale differs from size/max(w,h) by rounding; use the realised one for
    # the long side and keep one scale so the map stays aspect-preserving.
    scale = nw / w if w >= h else nh / h
    if mode == "longest":
        return resized, Transform((w, h), (nw, nh), scale, 0.0, 0.0, mode)
    canvas = Image.new(img.mode, (size, size), fill)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas.paste(resized, (px, py))
    return canvas, Transform((w, h), (size, size), scale, float(px), float(py), mode)


def transform_boxes(boxes: Sequence[Sequence[float]], t: Transform) -> list[list[float]]:
    """Map normalised xyxy boxes on the input image to normalised xyxy on the output image."""
    (iw, ih), (ow, oh) = t.in_size, t.out_size
    out = []
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b)
        out.append(clip_box([
            (x0 * iw * t.scale + t.pad_x) / ow,
            (y0 * ih * t.scale + t.pad_y) / oh,
            (x1 * iw * t.scale + t.pad_x) / ow,
            (y1 * ih * t.scale + t.pad_y) / oh,
        ]))
    return out


def inverse_transform_boxes(boxes: Sequence[Sequence[float]], t: Transform) -> list[list[float]]:
    """Map normalised boxes on the output image back to the input image (e.g. model predictions)."""
    (iw, ih), (ow, oh) = t.in_size, t.out_size
    out = []
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b)
        out.append(clip_box([
            (x0 * ow - t.pad_x) / t.scale / iw,
            (y0 * oh - t.pad_y) / t.scale / ih,
            (x1 * ow - t.pad_x) / t.scale / iw,
            (y1 * oh - t.pad_y) / t.scale / ih,
        ]))
    return out
