"""DICOM reading (modality LUT, VOI LUT/window, MONOCHROME1, 12/16-bit, compressed transfer
syntaxes, corrupt files) and the loaders that read DICOM folders directly.  Every file is written
by pydicom in the test (tests/datagen.py); no binary is committed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datagen import phantom_pixels, vindr_dicom_folder, vindr_kaggle_folder, write_corrupt_dicom, write_dicom

from radlab.data.images import ImageLoadError, dicom_header, is_dicom, load_image
from radlab.data.loaders import load
from radlab.data.loaders._common import image_size

PX = phantom_pixels(96, 80, bits=12)  # lungs 0.2, body 0.55, spine 1.0 of 4095; corner 0


def _u8(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "L" and img.size == (96, 80)
    return np.asarray(img)


def _regions(a: np.ndarray) -> tuple[float, float, float, float]:
    """(corner, lung, body, spine) mean values."""
    return a[:8, :8].mean(), a[35:45, 25:32].mean(), a[5:10, 40:44].mean(), a[:, 46:50].mean()


def test_monochrome2_12bit_uses_the_stored_range(tmp_path: Path) -> None:
    corner, lung, body, spine = _regions(_u8(write_dicom(tmp_path / "a.dcm", PX)))
    assert corner == 0 and spine > 250  # stored range 0..max -> 0..255, not 0..65535 (would be black)
    assert lung < body < spine and body == pytest.approx(0.55 * 255, abs=6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    m2 = _u8(write_dicom(tmp_path / "m2.dcm", PX))
    m1 = _u8(write_dicom(tmp_path / "m1.dcm", PX.max() - PX, photometric="MONOCHROME1"))
    # Same anatomy stored with inverted values: after the MONOCHROME1 flip the images agree (bone bright).
    assert np.abs(m1.astype(int) - m2.astype(int)).max() <= 1
    corner, lung, body, spine = _regions(m1)
    assert spine > 250 and lung < body


def test_16bit_full_range(tmp_path: Path) -> None:
    px16 = (PX.astype(np.uint32) * 16).astype(np.uint16)  # 0..65520
    a = _u8(write_dicom(tmp_path / "a.dcm", px16, bits_stored=16))
    assert a.min() == 0 and a.max() == 255 and a.dtype == np.uint8


def test_window_maps_the_window_not_the_data_range(tmp_path: Path) -> None:
    # Window [1000, 3000] of a 12-bit image: lungs (819) below -> 0, spine (4095) above -> 255,
    # body (2252) in the window at (2252 - 1000) / 2000 of the range.
    a = _u8(write_dicom(tmp_path / "w.dcm", PX, window=(2000, 2000)))
    corner, lung, body, spine = _regions(a)
    assert lung == 0 and spine == 255
    assert body == pytest.approx((0.55 * 4095 - 1000) / 2000 * 255, abs=4)
    # A window wider than the data: the image is not stretched to 0..255 (the window's range is).
    wide = _u8(write_dicom(tmp_path / "wide.dcm", PX, window=(4096, 16384)))
    assert wide.max() < 200 and wide.min() > 50


def test_modality_lut_applies_before_the_window(tmp_path: Path) -> None:
    # Rescale 2x - 100: a window stated in rescaled units must give the same image as the raw window.
    raw = _u8(write_dicom(tmp_path / "raw.dcm", PX, window=(2000, 2000)))
    res = _u8(write_dicom(tmp_path / "res.dcm", PX, window=(2 * 2000 - 100, 2 * 2000), rescale=(2.0, -100.0)))
    assert np.abs(raw.astype(int) - res.astype(int)).max() <= 1


@pytest.mark.parametrize("codec", ["rle", "j2k"])
def test_compressed_transfer_syntaxes_decode_losslessly(tmp_path: Path, codec: str) -> None:
    plain = _u8(write_dicom(tmp_path / "plain.dcm", PX))
    packed = write_dicom(tmp_path / f"{codec}.dcm", PX, compress=codec)
    assert packed.stat().st_size < (tmp_path / "plain.dcm").stat().st_size
    assert np.array_equal(_u8(packed), plain)


def test_header_meta_and_detection(tmp_path: Path) -> None:
    p = write_dicom(tmp_path / "noext", PX, pixel_spacing=(0.2, 0.175), view="AP", patient_id="PX42")
    assert is_dicom(p) and not is_dicom(Path(__file__))
    img = load_image(p)  # no suffix: the DICM preamble decides
    meta = img.info["dicom"]
    assert meta["pixel_spacing"] == [0.2, 0.175] and meta["view_position"] == "AP" and meta["patient_id"] == "PX42"
    assert dicom_header(p)["width"] == 96 and dicom_header(p)["height"] == 80
    assert image_size(p) == (96, 80)  # the loaders' size check reads the DICOM header


def test_corrupt_and_non_dicom_files_name_the_file(tmp_path: Path) -> None:
    bad = write_corrupt_dicom(tmp_path / "truncated.dcm")
    with pytest.raises(ImageLoadError, match="truncated.dcm"):
        load_image(bad)
    junk = tmp_path / "junk.dicom"
    junk.write_bytes(b"not a dicom at all" * 20)
    with pytest.raises(ImageLoadError, match=r"junk\.dicom.*not a DICOM"):
        load_image(junk)
    assert image_size(junk) is None


def test_vindr_reads_a_dicom_folder_without_resolution_json(tmp_path: Path) -> None:
    root = vindr_dicom_folder(tmp_path / "vindr", n_train=8, n_test=4, corrupt=1)
    (root / "train" / f"{'tr000005'.ljust(32, 'a')}.dicom").write_bytes(b"garbage" * 50)
    res = load("vindr", root)
    ids = {r["id"] for r in res.records}
    assert len(ids) == 11  # 12 images, one garbage file skipped (the truncated one has a valid header)
    reasons = " | ".join(s["reason"] for s in res.skipped)
    assert "unreadable image file" in reasons and "tr000005" in reasons
    rec = next(r for r in res.records if r["boxes"])
    assert rec["image_path"].endswith(".dicom") and (rec["image_width"], rec["image_height"]) == (96, 80)
    assert json.loads(rec["meta"])["original_size"] == [96.0, 80.0]  # boxes normalised by the DICOM's own size
    box = rec["boxes"][0]
    assert 0 < box["box"][0] < box["box"][2] <= 1 and box["raw_format"].startswith("xyxy_px@96x80")
    assert {r["split"] for r in res.records} >= {"test"}


def test_vindr_kaggle_download_loads_as_it_is(tmp_path: Path) -> None:
    # Kaggle's VinBigData: train.csv (with class_id), DICOMs, no test annotations.
    root = vindr_kaggle_folder(tmp_path / "vbd", n_train=40)
    res = load("vindr", root)
    assert len(res.records) == 40 and res.skipped == []
    by_split: dict[str, int] = {}
    for r in res.records:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    assert set(by_split) == {"train", "validate", "test"} and by_split["train"] > 20
    # Patients from the DICOM header where it has one (pairs share it and their split), else the image id.
    pid = {r["id"]: r["patient_id"] for r in res.records}
    split = {r["id"]: r["split"] for r in res.records}
    rid = ["vindr-" + f"kg00{i:04d}".ljust(32, "b") for i in range(40)]
    assert pid[rid[0]] == pid[rid[1]] == "VBD0000" and split[rid[0]] == split[rid[1]]
    assert pid[rid[2]] == rid[2].removeprefix("vindr-")  # no PatientID in that header
    assert load("vindr", root, splits=("train",)).records == res.records  # the only file there
    with pytest.raises(FileNotFoundError, match="annotations_test.csv"):
        load("vindr", root, splits=("test",))
    with pytest.raises(TypeError, match="option 'splits' must be tuple, got str 'train'"):
        load("vindr", root, splits="train")  # not iterated letter by letter
    from radlab.data.loaders.vindr import load_vindr

    with pytest.raises(ValueError, match="list of split names"):
        load_vindr(root, splits="train")  # type: ignore[arg-type]
    # PhysioNet's layout is unchanged: official test, validate hashed from train only.
    physio = load("vindr", vindr_dicom_folder(tmp_path / "physio", n_train=8, n_test=4, corrupt=0))
    assert sum(r["split"] == "test" for r in physio.records) == 4
    assert {r["patient_id"] for r in physio.records} == {r["id"].removeprefix("vindr-") for r in physio.records}


def test_rsna_reads_dcm(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    (root / "stage_2_train_labels.csv").parent.mkdir(parents=True)
    (root / "stage_2_train_labels.csv").write_text("patientId,x,y,width,height,Target\n"
                                                   "pa,100,200,300,400,1\npb,,,,,0\n")
    write_dicom(root / "stage_2_train_images" / "pa.dcm", PX)
    write_dicom(root / "stage_2_train_images" / "pb.dcm", PX)
    res = load("rsna", root)
    assert [r["id"] for r in res.records] == ["rsna-pa", "rsna-pb"] and res.skipped == []
    assert res.records[0]["image_path"].endswith(".dcm") and res.records[0]["image_width"] == 96


def _siim_rle(mask: np.ndarray) -> str:
    """SIIM's relative column-major RLE of a boolean [y, x] mask (written independently of the loader)."""
    flat = mask.T.reshape(-1)  # column by column
    out, prev_end, i = [], 0, 0
    while i < flat.size:
        if flat[i]:
            j = i
            while j < flat.size and flat[j]:
                j += 1
            out += [i - prev_end, j - i]
            prev_end, i = j, j
        else:
            i += 1
    return " ".join(map(str, out))


def test_siim_nested_dicoms_and_rle_masks(tmp_path: Path) -> None:
    root = tmp_path / "siim"
    uid = "1.2.276.0.7230010.3.1.4.8323329.{}.1517875166.8504".format
    for k, iid in enumerate((uid(1), uid(2), uid(3))):
        write_dicom(root / "dicom-images-train" / f"1.2.3.{k}" / f"1.2.3.{k}.1" / f"{iid}.dcm", PX, patient_id=f"pat{k}")
    a = np.zeros((80, 96), dtype=bool)
    a[20:30, 10:20] = True  # y 20..29, x 10..19: patient right on a frontal film
    b = np.zeros((80, 96), dtype=bool)
    b[5:10, 60:65] = True
    (root / "train-rle.csv").write_text(
        "ImageId, EncodedPixels\n"  # the release's header has the space
        f"{uid(1)},-1\n{uid(2)},{_siim_rle(a)}\n{uid(2)},{_siim_rle(b)}\n{uid(3)},5 10 7\n{uid(4)},-1\n")
    res = load("siim", root)
    recs = {r["id"]: r for r in res.records}
    assert set(recs) == {f"siim-{uid(1)}", f"siim-{uid(2)}"}
    neg, pos = recs[f"siim-{uid(1)}"], recs[f"siim-{uid(2)}"]
    assert neg["boxes"] == [] and neg["chexpert"]["Pneumothorax"] == 0 and neg["patient_id"] == "pat0"
    assert [b["box"] for b in pos["boxes"]] == [pytest.approx([10 / 96, 20 / 80, 20 / 96, 30 / 80]),
                                                 pytest.approx([60 / 96, 5 / 80, 65 / 96, 10 / 80])]
    assert pos["findings"][0]["laterality"] == "bilateral" and pos["chexpert"]["Pneumothorax"] == 1
    reasons = " | ".join(s["reason"] for s in res.skipped)
    assert "start/length pairs" in reasons and "missing image file" in reasons
