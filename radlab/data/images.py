"""Image loading and geometry-preserving preprocessing for chest X-rays.

* :func:`load_image` reads any PIL-readable CXR (8-bit or 16-bit PNG, JPEG, RGB/RGBA, palette)
  or a DICOM file (``.dcm``/``.dicom``, or any file with the ``DICM`` preamble; compressed
  transfer syntaxes through pydicom's codec plugins: pylibjpeg, pylibjpeg-libjpeg,
  pylibjpeg-openjpeg) into an 8-bit grayscale ``"L"`` image.  DICOM pixels go through the
  modality LUT (RescaleSlope/Intercept or a Modality LUT Sequence), then the VOI LUT (a VOI LUT
  Sequence, else WindowCenter/WindowWidth), are mapped to 8 bits over the VOI output range (or
  the stored range without a VOI), and MONOCHROME1 is inverted so that bone is always bright.
  The header fields a CXR pipeline needs (:data:`DICOM_META_TAGS`: PixelSpacing, ViewPosition,
  PatientID, ...) come back in ``image.info["dicom"]`` and from :func:`dicom_header`.
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
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from radlab.formats import clip_box

RESIZE_MODES = ("letterbox", "longest")
DICOM_SUFFIXES = (".dcm", ".dicom")
# DICOM keyword -> meta key.  PixelSpacing is the detector-plane spacing corrected for
# magnification when the modality knows it; CR/DX files often carry only ImagerPixelSpacing.
DICOM_META_TAGS = {
    "PixelSpacing": "pixel_spacing",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "ViewPosition": "view_position",
    "PatientID": "patient_id",
    "StudyInstanceUID": "study_uid",
    "SOPInstanceUID": "sop_uid",
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "PhotometricInterpretation": "photometric",
    "BitsStored": "bits_stored",
    "Rows": "rows",
    "Columns": "columns",
}


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


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm``/``.dicom`` name or a file with the DICOM preamble (``DICM`` at byte 128;
    SIIM/RSNA exports and PACS dumps often have no suffix at all)."""
    p = Path(path)
    if p.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _header_meta(ds: Any) -> dict[str, Any]:
    """The :data:`DICOM_META_TAGS` present in ``ds`` as JSON-able values (lists of floats for
    spacings, str/int otherwise); absent or empty tags are left out."""
    out: dict[str, Any] = {}
    for keyword, key in DICOM_META_TAGS.items():
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        if keyword.endswith("PixelSpacing"):
            try:
                out[key] = [float(v) for v in value]
            except (TypeError, ValueError):
                continue
        elif isinstance(value, int):
            out[key] = int(value)
        else:
            out[key] = str(value).strip()
    return out


def _read_dicom_dataset(path: Path, *, pixels: bool) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels, force=False)
    except InvalidDicomError as exc:
        raise ImageLoadError(f"cannot read DICOM {path}: not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on truncated or garbled files
        raise ImageLoadError(f"cannot read DICOM {path}: {type(exc).__name__}: {exc}") from exc


def dicom_header(path: str | Path) -> dict[str, Any]:
    """Header fields of a DICOM file (no pixel data is read): :data:`DICOM_META_TAGS` plus
    ``width``/``height`` (Columns/Rows).  Raises :class:`ImageLoadError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"image file not found: {p}")
    ds = _read_dicom_dataset(p, pixels=False)
    meta = _header_meta(ds)
    if "rows" not in meta or "columns" not in meta:
        raise ImageLoadError(f"cannot read DICOM {p}: no Rows/Columns (not an image object)")
    meta["width"], meta["height"] = meta["columns"], meta["rows"]
    return meta


def _dicom_to_uint8(ds: Any, arr: np.ndarray) -> np.ndarray:
    """Stored values -> display uint8: modality LUT, VOI LUT/window, 8-bit map, MONOCHROME1 flip."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        arr = apply_modality_lut(arr, ds)
        has_voi = bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)
        if has_voi:
            # Map the VOI *output range* (not the data's range) to 0..255, so that an image
            # that never reaches the window edges is not stretched.  pydicom knows that range
            # (window: BitsStored/sign/rescale; LUT: its entries): probe the same transform with
            # inputs far below and above any window or LUT domain.
            out = apply_voi_lut(arr, ds, index=0)
            probe = (np.array([-(2**62), 2**62], dtype=np.int64) if ds.get("VOILUTSequence")
                     else np.array([-1e300, 1e300], dtype=np.float64))
            bounds = apply_voi_lut(probe, ds, index=0)
            lo, hi = float(np.min(bounds)), float(np.max(bounds))
            if hi > lo:
                scaled = (np.asarray(out, dtype=np.float64) - lo) / (hi - lo) * 255.0
                u8 = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
            else:
                u8 = _to_uint8(out)
        else:
            u8 = _to_uint8(arr)
        return 255 - u8 if photometric == "MONOCHROME1" else u8
    # Colour DICOMs (secondary captures, exported screenshots): pydicom converts YBR to RGB.
    rgb = _to_uint8(arr) if arr.dtype != np.uint8 else arr
    return np.asarray(Image.fromarray(rgb[..., :3].astype(np.uint8), mode="RGB").convert("L"))


def load_dicom(path: str | Path) -> Image.Image:
    """Read a DICOM file as an 8-bit grayscale PIL image (see the module docstring for the
    intensity pipeline); the first frame of a multi-frame object.  ``image.info["dicom"]`` holds
    :func:`dicom_header`'s fields.  Raises :class:`ImageLoadError` naming the file, including
    when a compressed transfer syntax has no installed decoder."""
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"image file not found: {p}")
    ds = _read_dicom_dataset(p, pixels=True)
    if "PixelData" not in ds:
        raise ImageLoadError(f"cannot read DICOM {p}: no pixel data (a header-only or non-image object)")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # missing codec (NotImplementedError/RuntimeError), truncated data (ValueError), ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        raise ImageLoadError(f"cannot decode DICOM pixel data of {p} (transfer syntax {name}): {exc}") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if arr.ndim != (3 if samples > 1 else 2):
        raise ImageLoadError(f"cannot read DICOM {p}: unexpected pixel array shape {arr.shape}")
    img = Image.fromarray(_dicom_to_uint8(ds, arr), mode="L")
    meta = _header_meta(ds)
    meta["width"], meta["height"] = img.width, img.height
    img.info["dicom"] = meta
    return img


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` as an 8-bit grayscale PIL image (mode ``"L"``, pixels loaded, file closed).

    DICOM (:func:`is_dicom`) goes through :func:`load_dicom`.  Other files: handles ``L``; ``I;16``/``I``/``F`` (16-bit or float: min–max scaled to 0..255); ``RGB``;
    ``RGBA``/``LA`` (alpha dropped — CXR PNGs with alpha, as a few NIH files have, carry the
    image in the colour channels); ``P`` (palette); ``1``.  EXIF orientation is applied (JPEGs
    from some exporters are stored rotated).  Raises :class:`ImageLoadError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageLoadError(f"image file not found: {p}")
    if is_dicom(p):
        return load_dicom(p)
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
