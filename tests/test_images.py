"""Image loading, aspect-preserving preprocessing and box transforms (real NIH/TBX11K pixels when
../shared is present; generated images otherwise)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radlab.data.images import ImageLoadError, inverse_transform_boxes, load_image, preprocess, transform_boxes
from radlab.data.loaders import load

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NIH = SHARED / "real_cxr" / "nih"
TBX11K = SHARED / "real_cxr" / "tbx11k"
needs_nih = pytest.mark.skipif(not NIH.is_dir(), reason="../shared/real_cxr/nih absent (real NIH PNGs)")
needs_tbx = pytest.mark.skipif(not TBX11K.is_dir(), reason="../shared/real_cxr/tbx11k absent (real TBX11K sample)")


def bright_bbox(img: Image.Image, thr: int = 128) -> list[float]:
    """Normalised xyxy of pixels above ``thr`` (pixel-edge convention)."""
    a = np.asarray(img)
    ys, xs = np.nonzero(a > thr)
    h, w = a.shape
    return [xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]


@needs_nih
def test_real_nih_pngs_load_as_8bit_grey() -> None:
    for f in sorted(NIH.glob("*.png")):
        img = load_image(f)
        assert img.mode == "L" and img.size == (512, 512)
        a = np.asarray(img)
        assert a.dtype == np.uint8 and a.std() > 10  # a real radiograph, not a blank
        out, t = preprocess(img, 224)
        assert out.size == (224, 224) and t.pad_x == t.pad_y == 0 and t.scale == pytest.approx(224 / 512)


@needs_tbx
def test_real_tbx11k_rgb_pngs_and_boxes_follow_preprocessing() -> None:
    res = load("tbx11k", TBX11K)
    for rec in res.records:
        img = load_image(rec["image_path"])  # stored as RGB PNG
        assert img.mode == "L" and img.size == (rec["image_width"], rec["image_height"])
        out, t = preprocess(img, 300)
        boxes = [b["box"] for b in rec["boxes"]]
        moved = transform_boxes(boxes, t)
        assert moved == [pytest.approx(b, abs=1e-6) for b in boxes]  # square image: normalised boxes unchanged
        # Crop the box from both images: the same anatomy (mean intensity) is inside.
        for b in boxes:
            x0, y0, x1, y1 = b
            src = np.asarray(img)[int(y0 * 512):int(y1 * 512), int(x0 * 512):int(x1 * 512)].mean()
            dst = np.asarray(out)[int(y0 * 300):int(y1 * 300), int(x0 * 300):int(x1 * 300)].mean()
            assert abs(src - dst) < 6


def test_load_image_modes(tmp_path: Path) -> None:
    # 16-bit PNG holding 12-bit data: scaled by its stored range, not by 65535.
    arr16 = np.linspace(1000, 4000, 32 * 16).reshape(16, 32).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    img = load_image(tmp_path / "deep.png")
    a = np.asarray(img)
    assert img.mode == "L" and img.size == (32, 16) and a.min() == 0 and a.max() == 255
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = 100
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    assert np.asarray(load_image(tmp_path / "alpha.png")).max() == 100
    Image.new("L", (20, 10), 77).save(tmp_path / "x.jpg", quality=95)
    j = load_image(tmp_path / "x.jpg")
    assert j.mode == "L" and abs(int(np.asarray(j).mean()) - 77) <= 1
    Image.new("L", (8, 8), 50).convert("P").save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").mode == "L"
    const = np.full((4, 4), 3000, np.uint16)
    Image.fromarray(const).save(tmp_path / "flat.png")
    assert np.asarray(load_image(tmp_path / "flat.png")).max() == 0  # no division by zero


def test_load_image_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="not found: .*missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="junk.png"):
        load_image(tmp_path / "junk.png")


@pytest.mark.parametrize("mode", ["letterbox", "longest"])
def test_boxes_follow_the_affine_map(mode: str) -> None:
    w, h = 200, 120
    img = Image.new("L", (w, h), 0)
    a = np.zeros((h, w), np.uint8)
    a[30:90, 20:70] = 255  # a bright rectangle at a known box
    img = Image.fromarray(a)
    box = [20 / w, 30 / h, 70 / w, 90 / h]
    out, t = preprocess(img, 100, mode=mode)
    if mode == "letterbox":
        assert out.size == (100, 100) and t.pad_x == 0 and t.pad_y == 20
    else:
        assert out.size == (100, 60) and t.pad_x == t.pad_y == 0
    (moved,) = transform_boxes([box], t)
    ow, oh = out.size
    assert moved == pytest.approx(bright_bbox(out), abs=1.5 / min(ow, oh))
    (back,) = inverse_transform_boxes([moved], t)
    assert back == pytest.approx(box, abs=1e-9)


def test_preprocess_never_flips_and_validates_args() -> None:
    a = np.zeros((50, 80), np.uint8)
    a[:, :10] = 255  # bright band on the image left (patient right on a PA film)
    out, t = preprocess(Image.fromarray(a), 40)
    o = np.asarray(out)[int(t.pad_y) + 1 : int(t.pad_y) + 20]  # rows inside the letterbox
    assert o[:, :3].mean() > 200 and o[:, -3:].mean() < 5
    with pytest.raises(ValueError, match="resize mode"):
        preprocess(Image.fromarray(a), 40, mode="stretch")
    with pytest.raises(ValueError, match="positive"):
        preprocess(Image.fromarray(a), 0)
