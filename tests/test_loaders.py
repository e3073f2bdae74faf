"""Dataset loaders on tiny hand-written fixtures (tests/fixtures/<dataset>/) that copy each dataset's
real headers and quirks, plus the real TBX11K COCO file in ../shared when present.

Images are generated per test into a copy of the fixture folder (tmp_path) so that no pixels are
committed; every fixture also has rows that must be skipped (missing coordinates, out-of-range or
negative boxes, unknown classes, missing image files) and each test checks the skip reasons.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from radlab.data.loaders import LOADERS, LoaderError, LoadResult, hash_split, load
from radlab.data.loaders.mimic_cxr import extract_sections, normalize_section_name, report_fields
from radlab.data.loaders.vindr import weighted_boxes_fusion
from radlab.data.schema import CHEXPERT14, to_dataset, validate_record

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TBX11K = SHARED / "real_cxr" / "tbx11k"


def stage(tmp_path: Path, name: str, images: list[str], size: tuple[int, int] = (48, 40)) -> Path:
    """Copy fixture ``name`` to ``tmp_path`` and write a tiny grey image at each relative path."""
    root = tmp_path / name
    shutil.copytree(FIXTURES / name, root)
    for i, rel in enumerate(images):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, color=40 + 10 * i).save(p)
    return root


def reasons(res: LoadResult) -> str:
    return " | ".join(f"{s['row']}: {s['reason']}" for s in res.skipped)


def by_id(res: LoadResult) -> dict[str, dict]:
    return {r["id"]: r for r in res.records}


def check_all(res: LoadResult) -> None:
    for rec in res.records:
        validate_record(rec)
        json.loads(rec["meta"])
    for s in res.skipped:
        assert set(s) == {"file", "row", "reason"} and s["reason"]
    if res.records:
        to_dataset(res.records)  # the Arrow features accept every record


# ----------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_every_loader_and_rejects_bad_calls(tmp_path: Path) -> None:
    expected = {"coco", "tbx11k", "nih", "mimic_cxr", "ms_cxr", "vindr", "padchest_gr", "radvlm", "chexpert",
                "chexpert_plus", "rsna", "imagenome", "iu_xray"}
    assert expected <= set(LOADERS)
    with pytest.raises(KeyError, match="unknown dataset"):
        load("nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="root folder"):
        load("nih", tmp_path / "absent")
    with pytest.raises(TypeError, match="unknown option"):
        load("nih", tmp_path, colour=True)


@pytest.mark.parametrize("name", ["nih", "mimic_cxr", "ms_cxr", "vindr", "padchest_gr", "radvlm", "chexpert",
                                  "chexpert_plus", "rsna", "imagenome", "iu_xray", "coco", "tbx11k"])
def test_missing_required_file_names_path_and_layout(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        load(name, tmp_path)
    msg = str(exc.value)
    assert str(tmp_path) in msg and ("expected layout" in msg or "pass " in msg)


def test_hash_split_is_deterministic_patient_level_and_seeded() -> None:
    ids = [f"p{i}" for i in range(2000)]
    a = [hash_split(p, 0) for p in ids]
    assert a == [hash_split(p, 0) for p in ids]
    assert a != [hash_split(p, 1) for p in ids]
    frac = {s: a.count(s) / len(a) for s in ("train", "validate", "test")}
    assert 0.75 < frac["train"] < 0.85 and 0.07 < frac["validate"] < 0.13
    assert {hash_split(p, 0, (1.0, 0.0, 0.0)) for p in ids} == {"train"}
    with pytest.raises(ValueError):
        hash_split("x", 0, (0.5, 0.5, 0.5))


# ----------------------------------------------------------------------------------------------
# COCO / TBX11K


@pytest.mark.skipif(not TBX11K.is_dir(), reason="../shared/real_cxr/tbx11k absent (real TBX11K sample)")
def test_tbx11k_real_coco_file() -> None:
    res = load("tbx11k", TBX11K)
    check_all(res)
    assert res.skipped == []
    recs = by_id(res)
    assert set(recs) == {"tbx11k-tb0005", "tbx11k-tb0007", "tbx11k-h0001"}
    healthy = recs["tbx11k-h0001"]
    assert healthy["boxes"] == [] and healthy["findings"] == []
    tb5 = recs["tbx11k-tb0005"]
    assert tb5["image_width"] == tb5["image_height"] == 512 and tb5["split"] == "train"
    (b,) = tb5["boxes"]
    x, y, w, h = 381.8337097167969, 126.8733901977539, 40.236907958984375, 44.565773010253906
    assert b["box"] == pytest.approx([x / 512, y / 512, (x + w) / 512, (y + h) / 512])
    assert b["raw"] == pytest.approx([x, y, w, h]) and b["raw_format"] == "xywh_px@512x512"
    assert b["label"] == "ActiveTuberculosis"
    assert len(recs["tbx11k-tb0007"]["boxes"]) == 2
    assert Path(tb5["image_path"]).is_file()
    # The generic COCO loader finds the same file and images on its own.
    generic = load("coco", TBX11K, limit=2)
    assert [r["id"] for r in generic.records] == ["coco-tb0005", "coco-tb0007"]


def test_coco_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "coco", ["images/a.png", "images/b.png"], size=(200, 100))
    res = load("coco", root, label_map={"Effusion": "Pleural Effusion", "Nodule": "Lung Lesion"})
    check_all(res)
    recs = by_id(res)
    assert set(recs) == {"coco-a", "coco-b"}
    a = recs["coco-a"]
    assert a["split"] == "validate"  # from the file name boxes_val.json
    assert [b["box"] for b in a["boxes"]] == [pytest.approx([0.1, 0.1, 0.3, 0.4]), pytest.approx([0.6, 0.5, 0.9, 0.9])]
    assert a["chexpert"]["Pleural Effusion"] == 1 and a["chexpert"]["Lung Lesion"] == 1
    assert a["findings"][1]["laterality"] == "left"  # image-right half = patient left
    b = recs["coco-b"]  # width/height missing in JSON -> read from the PNG header
    assert b["image_width"] == 200 and len(b["boxes"]) == 1
    r = reasons(res)
    for needle in ("unknown category_id 7", "image_id 99 not in images", "missing box coordinate",
                   "degenerate or inverted", "outside the image", "missing image file"):
        assert needle in r, needle


def test_coco_unusable_file_raises(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"images": [}')
    with pytest.raises(LoaderError, match=r"x\.json: invalid JSON at line 1"):
        load("coco", tmp_path)


# ----------------------------------------------------------------------------------------------
# NIH


NIH_IMAGES = ["images/00000001_000.png", "images/00000002_000.png", "images/00000003_001.png",
              "images/00000004_000.png", "images/00000006_000.png"]


def test_nih_happy_path_and_quirks(tmp_path: Path) -> None:
    root = stage(tmp_path, "nih", NIH_IMAGES, size=(64, 64))
    res = load("nih", root)
    check_all(res)
    recs = by_id(res)
    assert set(recs) == {"nih-00000001_000", "nih-00000002_000", "nih-00000003_001"}
    r1 = recs["nih-00000001_000"]
    assert r1["patient_id"] == "00000001" and r1["view"] == "PA" and r1["image_width"] == 64
    (box,) = r1["boxes"]
    assert box["box"] == pytest.approx([300.5 / 1024, 400.25 / 1024, 720.5 / 1024, 751.0 / 1024])
    assert box["raw_format"] == "xywh_px@1024x1024"
    assert r1["chexpert"]["Cardiomegaly"] == 1 and r1["chexpert"]["Pleural Effusion"] == 0
    assert r1["chexpert"]["Support Devices"] is None  # NIH has no such label
    assert r1["findings"][0]["laterality"] == "none"  # heart: midline structure
    meta = json.loads(r1["meta"])
    assert meta["original_size"] == [2682.0, 2749.0] and meta["pixel_spacing"][0] == pytest.approx(0.143)
    r3 = recs["nih-00000003_001"]
    assert r3["split"] == "test"  # test_list.txt
    labels = {b["label"] for b in r3["boxes"]}
    assert labels == {"Infiltration", "Effusion"}  # "Infiltrate" renamed to the Data_Entry spelling
    eff = next(f for f in r3["findings"] if f["name"] == "Effusion")
    assert len(eff["box_ids"]) == 2 and eff["laterality"] == "bilateral"
    assert r3["chexpert"]["Lung Opacity"] == 1 and r3["chexpert"]["Pleural Effusion"] == 1
    assert recs["nih-00000002_000"]["chexpert"]["No Finding"] == 1
    assert {r["split"] for r in res.records if r["id"] != "nih-00000003_001"} <= {"train", "validate"}


def test_nih_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "nih", NIH_IMAGES)
    res = load("nih", root)
    r = reasons(res)
    assert "unknown finding label(s) ['Unicorn']" in r
    assert "missing image file" in r and "00000005_000.png" in r
    assert "missing box coordinate" in r
    assert "outside the image" in r
    assert "unknown finding label 'Kraken'" in r
    assert "'No Finding' combined" in r
    rows = {(Path(s["file"]).name, s["row"]) for s in res.skipped}
    assert ("BBox_List_2017.csv", 6) in rows  # line numbers count the header as line 1
    only = load("nih", root, boxes_only=True, limit=1)
    assert [x["id"] for x in only.records] == ["nih-00000001_000"]
    nocheck = load("nih", root, check_images=False)
    assert "nih-00000005_000" in by_id(nocheck) and by_id(nocheck)["nih-00000005_000"]["image_width"] == 1024


@pytest.mark.skipif(not (SHARED / "real_cxr" / "nih").is_dir(), reason="../shared/real_cxr/nih absent (real NIH PNGs)")
def test_nih_on_the_real_pngs(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    for f in (SHARED / "real_cxr" / "nih").glob("*.png"):
        shutil.copy(f, root / "images" / f.name)
    lines = (FIXTURES / "nih" / "Data_Entry_2017_v2020.csv").read_text().splitlines()[:2]
    lines.append("00027426_000.png,No Finding,0,27426,53,M,PA,2992,2991,0.143,0.143")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    res = load("nih", root)
    check_all(res)
    assert res.skipped == []
    recs = by_id(res)
    assert recs["nih-00000001_000"]["image_width"] == 512 and recs["nih-00000001_000"]["chexpert"]["Cardiomegaly"] == 1
    assert recs["nih-00027426_000"]["patient_id"] == "00027426" and recs["nih-00027426_000"]["chexpert"]["No Finding"] == 1


def test_nih_wrong_header_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "Data_Entry_2017.csv").write_text("Image,Labels\na.png,No Finding\n")
    with pytest.raises(LoaderError, match=r"Data_Entry_2017\.csv: row 1"):
        load("nih", tmp_path)


# ----------------------------------------------------------------------------------------------
# MIMIC-CXR


MIMIC_IMAGES = [
    "files/p10/p10000032/s50414267/a1a1a1a1-b1b1b1b1-c1c1c1c1-d1d1d1d1-e1e1e1e1.jpg",
    "files/p10/p10000032/s50414267/a2a2a2a2-b2b2b2b2-c2c2c2c2-d2d2d2d2-e2e2e2e2.jpg",
    "files/p10/p10000033/s50000001/a3a3a3a3-b3b3b3b3-c3c3c3c3-d3d3d3d3-e3e3e3e3.jpg",
    "files/p11/p11000044/s51000002/a4a4a4a4-b4b4b4b4-c4c4c4c4-d4d4d4d4-e4e4e4e4.jpg",
    "files/p11/p11000044/s51000002/a5a5a5a5-b5b5b5b5-c5c5c5c5-d5d5d5d5-e5e5e5e5.jpg",
]


def test_mimic_happy_path(tmp_path: Path) -> None:
    root = stage(tmp_path, "mimic_cxr", MIMIC_IMAGES)
    res = load("mimic_cxr", root)
    check_all(res)
    recs = by_id(res)
    a1 = recs["mimic_cxr-a1a1a1a1-b1b1b1b1-c1c1c1c1-d1d1d1d1-e1e1e1e1"]
    assert (a1["patient_id"], a1["study_id"], a1["split"], a1["view"]) == ("10000032", "50414267", "train", "PA")
    assert a1["findings_text"] == ("The heart is mildly enlarged. There is a small left pleural effusion. "
                                   "No pneumothorax.")
    assert a1["impression_text"] == "Mild cardiomegaly and small left effusion."
    assert a1["section_method"] == "findings"
    assert a1["chexpert"]["Cardiomegaly"] == 1 and a1["chexpert"]["Pleural Effusion"] == -1
    assert a1["chexpert"]["Edema"] == 0 and a1["chexpert"]["Atelectasis"] is None
    assert {f["name"]: f["certainty"] for f in a1["findings"]} == {"Cardiomegaly": "present",
                                                                   "Pleural Effusion": "uncertain"}
    a3 = recs["mimic_cxr-a3a3a3a3-b3b3b3b3-c3c3c3c3-d3d3d3d3-e3e3e3e3"]
    assert a3["split"] == "validate" and a3["view"] == "AP"
    assert a3["section_method"] == "impression" and a3["findings_text"] == ""
    assert a3["impression_text"] == "Lungs are clear. No effusion or pneumothorax."  # FINDINGS AND IMPRESSION
    a4 = recs["mimic_cxr-a4a4a4a4-b4b4b4b4-c4c4c4c4-d4d4d4d4-e4e4e4e4"]
    assert a4["section_method"] == "last_paragraph"
    assert a4["impression_text"].startswith("The endotracheal tube ends 4 cm above the carina.")
    assert a4["chexpert"] == {n: None for n in CHEXPERT14}  # its label row was malformed
    lateral = recs["mimic_cxr-a2a2a2a2-b2b2b2b2-c2c2c2c2-d2d2d2d2-e2e2e2e2"]
    assert lateral["view"] == "LATERAL" and lateral["findings_text"] == a1["findings_text"]
    frontal = load("mimic_cxr", root, only_frontal=True)
    assert all(r["view"] in ("PA", "AP") for r in frontal.records) and len(frontal.records) == 3


def test_mimic_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "mimic_cxr", MIMIC_IMAGES)
    res = load("mimic_cxr", root)
    r = reasons(res)
    assert "unknown split 'holdout'" in r
    assert "a6a6a6a6-b6b6b6b6-c6c6c6c6-d6d6d6d6-e6e6e6e6 not in mimic-cxr-2.0.0-metadata.csv" in r
    assert "missing image file" in r and "a7a7a7a7" in r
    assert "label value '2.0' is not 1/0/-1/blank" in r
    limited = load("mimic_cxr", root, limit=2)
    assert len(limited.records) == 2


def test_mimic_section_parser_rules() -> None:
    assert normalize_section_name("FINDINGS AND IMPRESSION") == "impression"
    assert normalize_section_name("CONCLUSION") == "impression"
    assert normalize_section_name("IMPRESSON") == "impression"
    assert normalize_section_name("CHEST, PA AND LATERAL") == "findings"
    assert normalize_section_name("REASON FOR EXAM") == "indication"
    assert normalize_section_name("FINAL IMPRESSION") == "impression"
    text = (" FINAL REPORT\n CHEST, PA AND LATERAL:\n \n INDICATION:  Fever.\n \n FINDINGS:  \n \n"
            " IMPRESSION:  First.\n \n IMPRESSION:  Second one.\n")
    sec = extract_sections(text)
    assert sec["findings"] == ""  # both findings sections are empty and dropped
    assert sec["impression"] == "Second one."  # the last occurrence wins
    assert report_fields("no headers at all")["section_method"] == ""
    assert report_fields(" FINAL REPORT\n Line one.\n \n Line two.\n")["impression_text"] == "Line two."


# ----------------------------------------------------------------------------------------------
# MS-CXR


MSCXR_IMAGES = MIMIC_IMAGES[:1] + MIMIC_IMAGES[2:3]


def test_ms_cxr_phrases_grouped(tmp_path: Path) -> None:
    root = stage(tmp_path, "ms_cxr", MSCXR_IMAGES)
    res = load("ms_cxr", root)
    check_all(res)
    recs = by_id(res)
    a1 = recs["ms_cxr-a1a1a1a1-b1b1b1b1-c1c1c1c1-d1d1d1d1-e1e1e1e1"]
    assert a1["patient_id"] == "10000032" and a1["study_id"] == "50414267"
    assert a1["split"] == hash_split("10000032", 0)  # no MIMIC split file beside it -> patient hash
    phrases = {g["phrase"]: g["box_ids"] for g in a1["grounding"]}
    assert phrases == {"Right lower lobe pneumonia": [0], "Small bilateral pleural effusions": [1, 2]}
    assert all(g["groundable"] for g in a1["grounding"])
    assert a1["boxes"][0]["box"] == pytest.approx([300 / 2544, 1800 / 3056, 1000 / 2544, 2400 / 3056])
    fs = {f["name"]: f for f in a1["findings"]}
    assert fs["Pneumonia"]["laterality"] == "right" and fs["Pleural Effusion"]["laterality"] == "bilateral"
    assert fs["Pleural Effusion"]["severity"] == "small"
    assert a1["chexpert"]["Pneumonia"] == 1 and a1["chexpert"]["Edema"] is None
    a3 = recs["ms_cxr-a3a3a3a3-b3b3b3b3-c3c3c3c3-d3d3d3d3-e3e3e3e3"]
    assert [f["certainty"] for f in a3["findings"]] == ["uncertain"]  # "Possible mild cardiomegaly"
    official = load("ms_cxr", root, split_source="official")
    assert by_id(official)[a3["id"]]["split"] == "validate"  # "val" in v1.1.0
    (root / "mimic-cxr-2.0.0-split.csv").write_text(
        "dicom_id,study_id,subject_id,split\nx,50414267,10000032,test\ny,50000001,10000033,validate\n")
    via_mimic = load("ms_cxr", root)
    assert by_id(via_mimic)[a1["id"]]["split"] == "test"


def test_ms_cxr_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "ms_cxr", MSCXR_IMAGES)
    res = load("ms_cxr", root)
    r = reasons(res)
    for needle in ("unknown category_name 'Unicorn'", "missing box coordinate", "degenerate or inverted",
                   "outside the image", "missing image file"):
        assert needle in r, needle
    assert len(res.skipped) == 5


# ----------------------------------------------------------------------------------------------
# VinDr-CXR


VINDR_IMAGES = ["train_jpg/9a5094b2563a1ef3ff50dc5c7ff71345.jpg", "train_jpg/50a418190bc3fb1ef1633bf9678929b3.jpg",
                "train_jpg/21a10246a5ec7af151081d0cd6d65dc9.jpg", "test_jpg/002a34c58c5b758217ed1f584ccbcfe9.jpg"]


def test_vindr_fusion_and_no_finding(tmp_path: Path) -> None:
    root = stage(tmp_path, "vindr", VINDR_IMAGES, size=(64, 64))
    res = load("vindr", root)
    check_all(res)
    recs = by_id(res)
    img1 = recs["vindr-9a5094b2563a1ef3ff50dc5c7ff71345"]
    cardio = [b for b in img1["boxes"] if b["label"] == "Cardiomegaly"]
    assert len(cardio) == 1  # two readers fused
    w, h = 2540, 2880  # image_resolutions_train.json is [Rows, Columns]
    expect = [(691 + 701) / 2 / w, (1375 + 1381) / 2 / h, (1653 + 1661) / 2 / w, (1831 + 1845) / 2 / h]
    assert cardio[0]["box"] == pytest.approx(expect, abs=6e-4)  # rounded to 3 decimals like RadVLM
    assert json.loads(img1["meta"])["box_readers"][str(cardio[0]["box_id"])] == ["R10", "R9"]
    eff = [b for b in img1["boxes"] if b["label"] == "Pleural effusion"]
    assert len(eff) == 2  # far apart: not fused
    eff_f = next(f for f in img1["findings"] if f["name"] == "Pleural effusion")
    assert eff_f["laterality"] == "bilateral"
    assert img1["chexpert"]["Cardiomegaly"] == 1 and img1["chexpert"]["No Finding"] == 0
    assert img1["image_width"] == 64  # the stored file; boxes are normalised, so they still fit it
    nf = recs["vindr-50a418190bc3fb1ef1633bf9678929b3"]
    assert nf["boxes"] == [] and nf["findings"] == [] and nf["chexpert"]["No Finding"] == 1
    test_rec = recs["vindr-002a34c58c5b758217ed1f584ccbcfe9"]  # test CSV spells rad_ID
    assert test_rec["split"] == "test" and test_rec["boxes"][0]["label"] == "Pneumothorax"
    raw = load("vindr", root, fuse="none")
    assert len([b for b in by_id(raw)[img1["id"]]["boxes"] if b["label"] == "Cardiomegaly"]) == 2


def test_vindr_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "vindr", VINDR_IMAGES)
    res = load("vindr", root)
    r = reasons(res)
    for needle in ("missing box coordinate", "outside the image", "unknown class_name 'Alien artefact'",
                   "missing image file"):
        assert needle in r, needle
    img3 = by_id(res)["vindr-21a10246a5ec7af151081d0cd6d65dc9"]
    assert [b["label"] for b in img3["boxes"]] == ["Nodule/Mass"]
    assert img3["chexpert"]["Pneumonia"] == 1  # global label, no box
    (root / "image_resolutions_train.json").unlink()
    with pytest.raises(FileNotFoundError, match="image_resolutions_train.json"):
        load("vindr", root)


def test_vindr_kaggle_train_csv_and_consensus_file_without_reader_ids(tmp_path: Path) -> None:
    root = tmp_path / "vbd"
    root.mkdir()
    (root / "train.csv").write_text(  # VinBigData (Kaggle) header: class_id between class_name and rad_id
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "9a5094b2563a1ef3ff50dc5c7ff71345,Cardiomegaly,3,R10,691.0,1375.0,1653.0,1831.0\n"
        "50a418190bc3fb1ef1633bf9678929b3,No finding,14,R11,,,,\n")
    (root / "image_resolutions_train.json").write_text(
        '{"9a5094b2563a1ef3ff50dc5c7ff71345": [2880, 2540], "50a418190bc3fb1ef1633bf9678929b3": [3072, 3072]}')
    res = load("vindr", root, splits=("train",), check_images=False)
    check_all(res)
    assert [len(r["boxes"]) for r in res.records] == [1, 0] and res.skipped == []
    assert res.records[0]["image_width"] == 2540  # no stored image checked: the DICOM size
    (root / "annotations_test.csv").write_text("image_id,class_name,x_min,y_min,x_max,y_max\n"
                                               "002a34c58c5b758217ed1f584ccbcfe9,Nodule/Mass,10,10,50,50\n")
    (root / "image_resolutions_test.json").write_text('{"002a34c58c5b758217ed1f584ccbcfe9": [100, 100]}')
    test = load("vindr", root, splits=("test",), check_images=False)
    assert json.loads(test.records[0]["meta"])["readers"] == ["consensus"]


def test_unusable_csv_is_a_clear_error(tmp_path: Path) -> None:
    root = stage(tmp_path, "mimic_cxr", [])
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id,subject_id\nx,1,2\n")
    with pytest.raises(LoaderError, match=r"mimic-cxr-2\.0\.0-split\.csv: row 1: missing column\(s\) \['split'\]"):
        load("mimic_cxr", root)
    (root / "mimic-cxr-2.0.0-split.csv").write_bytes(b"dicom_id,split\n\xff\xfe\x00bad\n")
    with pytest.raises(LoaderError, match="cannot parse as CSV"):
        load("mimic_cxr", root)


def test_weighted_boxes_fusion_matches_ensemble_boxes_semantics() -> None:
    boxes = [[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.7, 0.7, 0.9, 0.9], [0.11, 0.12, 0.31, 0.33]]
    fused = weighted_boxes_fusion(boxes, iou_thr=0.1)
    assert sorted(len(m) for _, m in fused) == [1, 3]
    big = next(f for f, m in fused if len(m) == 3)
    assert big == pytest.approx([0.11, 0.10666667, 0.31, 0.31])
    try:
        from ensemble_boxes import weighted_boxes_fusion as reference
    except ImportError:
        return
    ref_boxes, _, _ = reference([boxes], [[1.0] * 4], [[0] * 4], iou_thr=0.1, skip_box_thr=0.0)
    assert sorted(map(tuple, ref_boxes.round(5).tolist())) == sorted(tuple(round(v, 5) for v in f) for f, _ in fused)


# ----------------------------------------------------------------------------------------------
# PadChest-GR


def test_padchest_gr_sentences_boxes_and_splits(tmp_path: Path) -> None:
    root = stage(tmp_path, "padchest_gr", ["images_grounding/img_a_0001.png", "images_grounding/img_b_0002.png",
                                           "images_grounding/img_c_0003.png"])
    res = load("padchest_gr", root)
    check_all(res)
    recs = by_id(res)
    assert set(recs) == {"padchest_gr-img_a_0001", "padchest_gr-img_b_0002"}
    a = recs["padchest_gr-img_a_0001"]
    assert (a["patient_id"], a["split"]) == ("pat01", "train")
    assert a["findings_text"].startswith("Small right pleural effusion. Heart size within normal limits.")
    assert [b["box"] for b in a["boxes"]] == [pytest.approx([0.08, 0.62, 0.35, 0.81]),
                                               pytest.approx([0.1, 0.55, 0.3, 0.65])]
    g = {x["phrase"]: (x["box_ids"], x["groundable"]) for x in a["grounding"]}
    assert g["Small right pleural effusion."] == ([0, 1], True)
    assert g["Heart size within normal limits."] == ([], False)
    assert "Nodule in the left upper lobe." not in g  # both of its boxes were bad: text only
    assert json.loads(a["meta"])["unlocalised_sentences"] == ["Nodule in the left upper lobe."]
    fs = {f["name"]: f for f in a["findings"]}
    assert fs["pleural effusion"]["laterality"] == "right" and fs["pleural effusion"]["severity"] == "small"
    assert "nodule" not in fs
    assert a["chexpert"]["Pleural Effusion"] == 1 and a["chexpert"]["Lung Lesion"] == 1
    b = recs["padchest_gr-img_b_0002"]
    assert b["split"] == "test" and b["chexpert"]["No Finding"] == 1 and b["boxes"] == []


def test_padchest_gr_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "padchest_gr", ["images_grounding/img_a_0001.png", "images_grounding/img_b_0002.png"])
    res = load("padchest_gr", root)
    r = reasons(res)
    for needle in ("outside the image", "missing box coordinate", "ImageID not in master_table.csv",
                   "missing image file", "entry without ImageID"):
        assert needle in r, needle


# ----------------------------------------------------------------------------------------------
# RadVLM


RADVLM_IMAGES = [MIMIC_IMAGES[0], MIMIC_IMAGES[2], "train/patient00002/study2/view1_frontal.jpg"]


def test_radvlm_items(tmp_path: Path) -> None:
    root = stage(tmp_path, "radvlm", RADVLM_IMAGES)
    res = load("radvlm", root, split="train")
    check_all(res)
    recs = by_id(res)
    g = recs["radvlm-mscxr_0"]
    assert g["boxes"][0]["box"] == [0.12, 0.59, 0.39, 0.79] and g["boxes"][0]["raw_format"] == "xyxy_norm_text"
    assert g["grounding"][0]["phrase"] == "Please locate the following sentence: right lower lobe pneumonia"
    assert "<image>" not in g["meta"] and json.loads(g["meta"])["kind"] == "grounding"
    assert g["patient_id"] == "10000032" and g["study_id"] == "50414267"
    assert len(recs["radvlm-vindr_3"]["boxes"]) == 2
    rep = recs["radvlm-mimic_report_7"]
    assert rep["findings_text"] == "Lungs are clear. No effusion or pneumothorax." and rep["section_method"] == "radvlm"
    assert recs["radvlm-mimic_report_7#1"]["findings_text"] == "Heart size is normal."  # repeated id kept apart
    cls = recs["radvlm-chexpert_cls_1"]
    assert cls["patient_id"] == "patient00002" and cls["chexpert"]["Cardiomegaly"] == 1 and cls["chexpert"]["Edema"] == 1
    assert json.loads(recs["radvlm-conv_1"]["meta"])["kind"] == "conversation"
    assert len(recs["radvlm-degenerate_1"]["boxes"]) == 1


def test_radvlm_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "radvlm", RADVLM_IMAGES)
    res = load("radvlm", root)
    r = reasons(res)
    for needle in ("missing or empty 'conversations'", "missing image file", "degenerate box",
                   "conversation turn without from=human|gpt"):
        assert needle in r, needle
    with pytest.raises(ValueError, match="split"):
        load("radvlm", root, split="holdout")


# ----------------------------------------------------------------------------------------------
# CheXpert and CheXpert Plus


def test_chexpert_labels_views_and_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "chexpert", ["train/patient00001/study1/view1_frontal.jpg",
                                        "train/patient00002/study2/view1_frontal.jpg",
                                        "train/patient00002/study2/view2_lateral.jpg",
                                        "train/patient00003/study1/view1_frontal.jpg",
                                        "valid/patient64541/study1/view1_frontal.jpg"])
    res = load("chexpert", root)
    check_all(res)
    recs = by_id(res)
    p2 = recs["chexpert-patient00002_study2_view1_frontal"]
    assert p2["patient_id"] == "patient00002" and p2["view"] == "AP"
    assert p2["chexpert"]["Cardiomegaly"] == -1 and p2["chexpert"]["Lung Opacity"] == 1
    assert p2["chexpert"]["Fracture"] == 1 and p2["chexpert"]["Support Devices"] is None
    assert recs["chexpert-patient00002_study2_view2_lateral"]["view"] == "LATERAL"
    assert recs["chexpert-patient64541_study1_view1_frontal"]["split"] == "validate"
    assert Path(p2["image_path"]) == root / "train/patient00002/study2/view1_frontal.jpg"  # prefix stripped
    r = reasons(res)
    assert "label value '2.0'" in r and "missing image file" in r and "has no patientNNNNN/studyN" in r
    assert len(load("chexpert", root, only_frontal=True).records) == 3


def test_chexpert_plus_sections_and_jsonl_labels(tmp_path: Path) -> None:
    root = stage(tmp_path, "chexpert_plus", ["train/patient42142/study5/view1_frontal.jpg",
                                             "train/patient42142/study5/view2_lateral.png",
                                             "valid/patient64541/study1/view1_frontal.jpg"])
    res = load("chexpert_plus", root)
    check_all(res)
    recs = by_id(res)
    f = recs["chexpert_plus-patient42142_study5_view1_frontal"]
    assert f["findings_text"] == "Stable lines and tubes. Lungs are clear."  # multi-line cell collapsed
    assert f["impression_text"] == "1. NO ACUTE CHANGE." and f["section_method"] == "findings"
    assert f["chexpert"]["Support Devices"] == 1 and f["patient_id"] == "patient42142"
    lat = recs["chexpert_plus-patient42142_study5_view2_lateral"]
    assert lat["image_path"].endswith(".png") and lat["section_method"] == "impression"
    v = recs["chexpert_plus-patient64541_study1_view1_frontal"]
    assert v["split"] == "validate" and v["chexpert"]["Edema"] == -1 and v["chexpert"]["Pneumothorax"] == 0
    r = reasons(res)
    assert "unknown split 'unknown_split'" in r and "bad label line" in r and r.count("bad label line") == 2


# ----------------------------------------------------------------------------------------------
# RSNA


def test_rsna_boxes_targets_and_bad_rows(tmp_path: Path) -> None:
    root = stage(tmp_path, "rsna", [f"stage_2_train_images/{p}.png" for p in (
        "0004cfab-14fd-4e49-80ba-63a80b6bddd6", "00436515-870c-4b36-a041-de91049b9ab4",
        "00704310-78a8-4b38-8475-49f4573b2dbb", "00aecb01-a116-45a2-956c-08d2fa55433f")])
    res = load("rsna", root)
    check_all(res)
    recs = by_id(res)
    neg = recs["rsna-0004cfab-14fd-4e49-80ba-63a80b6bddd6"]
    assert neg["boxes"] == [] and neg["chexpert"]["Pneumonia"] == 0
    assert json.loads(neg["meta"])["class"] == "No Lung Opacity / Not Normal"
    pos = recs["rsna-00436515-870c-4b36-a041-de91049b9ab4"]
    assert [b["box"] for b in pos["boxes"]] == [pytest.approx([264 / 1024, 152 / 1024, 477 / 1024, 531 / 1024]),
                                                 pytest.approx([562 / 1024, 152 / 1024, 818 / 1024, 605 / 1024])]
    assert pos["findings"][0]["laterality"] == "bilateral" and pos["chexpert"]["Lung Opacity"] == 1
    assert len(recs["rsna-00704310-78a8-4b38-8475-49f4573b2dbb"]["boxes"]) == 1
    r = reasons(res)
    assert "missing box coordinate" in r and "not a single 0 or 1" in r and "missing image file" in r
    assert "7 fields but the header has 6" in r  # a row with an extra cell is skipped, not truncated


# ----------------------------------------------------------------------------------------------
# Chest ImaGenome


def test_imagenome_anatomy_boxes(tmp_path: Path) -> None:
    root = stage(tmp_path, "imagenome", [MIMIC_IMAGES[0], MIMIC_IMAGES[2]])
    res = load("imagenome", root)
    check_all(res)
    recs = by_id(res)
    a1 = recs["imagenome-a1a1a1a1-b1b1b1b1-c1c1c1c1-d1d1d1d1-e1e1e1e1"]
    assert [b["label"] for b in a1["boxes"]] == ["right lung", "left lung"]
    assert all(b["kind"] == "anatomy" for b in a1["boxes"])
    assert a1["boxes"][0]["box"] == pytest.approx([547 / 2544, 508 / 3056, 1287 / 2544, 2128 / 3056])
    fs = {(f["name"], f["region"]): f for f in a1["findings"]}
    eff = fs[("pleural effusion", "left lung")]
    assert eff["laterality"] == "left" and eff["box_ids"] == [1]
    assert fs[("enlarged cardiac silhouette", "cardiac silhouette")]["box_ids"] == []  # its box was bad
    assert a1["chexpert"]["Pleural Effusion"] == 1 and a1["chexpert"]["Pneumothorax"] == 0
    assert a1["chexpert"]["Cardiomegaly"] == 1 and a1["split"] == "train"
    a3 = recs["imagenome-a3a3a3a3-b3b3b3b3-c3c3c3c3-d3d3d3d3-e3e3e3e3"]
    assert a3["split"] == "validate" and a3["chexpert"]["Support Devices"] == 1 and a3["chexpert"]["Pneumonia"] == 0
    r = reasons(res)
    assert "missing scene graph" in r and "missing box coordinate" in r and "outside the image" in r


# ----------------------------------------------------------------------------------------------
# IU X-ray


def test_iu_xray_reports_and_bad_files(tmp_path: Path) -> None:
    root = stage(tmp_path, "iu_xray", ["images/CXR1_1_IM-0001-3001.png", "images/CXR1_1_IM-0001-4001.png"])
    res = load("iu_xray", root)
    check_all(res)
    recs = by_id(res)
    assert set(recs) == {"iu_xray-CXR1_1_IM-0001-3001", "iu_xray-CXR1_1_IM-0001-4001"}
    r1 = recs["iu_xray-CXR1_1_IM-0001-3001"]
    assert r1["findings_text"] == "Heart size is mildly enlarged. Small opacity at the left lung base. No pneumothorax."
    assert r1["impression_text"] == "Borderline cardiomegaly. Left basilar opacity."
    assert r1["patient_id"] == "CXR1" and r1["split"] == recs["iu_xray-CXR1_1_IM-0001-4001"]["split"]
    fs = {f["name"]: f for f in r1["findings"]}
    assert fs["Opacity"]["laterality"] == "left" and fs["Opacity"]["severity"] == "small"
    assert r1["chexpert"]["Cardiomegaly"] == 1 and r1["chexpert"]["Lung Opacity"] == 1
    r = reasons(res)
    assert "report has no parentImage" in r and "XML parse error" in r and "missing image file" in r


# ----------------------------------------------------------------------------------------------
# Loader options written in a ``sources`` item (typed by the loader's signature)

LIST_OPTIONS = {("vindr", "splits"), ("chexpert", "files"), ("imagenome", "splits"), ("siim", "image_dirs")}
MIX = {"report": 1.0, "abnormality": 1.0, "abnormality_all": 0.0, "anatomy": 0.0, "phrase": 0.0}
SIZES = {"train": 100, "validate": 100, "grpo": 0, "test": 100}


def _from_item(text: str) -> list[dict]:
    """Records of one ``sources`` item, parsed and loaded as the data stage does."""
    from radlab.data import sources

    (src,) = sources.parse_sources(text, sizes=SIZES, mix=MIX)
    return sources.load_source(src)[0]


def test_every_list_option_is_covered_and_parses_one_or_several_values() -> None:
    import typing

    from radlab.data import sources
    from radlab.data.loaders import option_types

    found = {(name, key) for name in LOADERS for key, tp in option_types(name).items()
             if typing.get_origin(tp) in (list, tuple)}
    assert found == LIST_OPTIONS  # a new list option needs a sources-item test below
    for name, key in sorted(found):
        for value, want in (("a", ("a",)), ("a+b.csv", ("a", "b.csv"))):
            assert sources.parse_sources(f"{name}:root=/x:{key}={value}", sizes=SIZES, mix=MIX)[0].options[key] == want


def test_vindr_splits_from_a_sources_item(tmp_path: Path) -> None:
    root = stage(tmp_path, "vindr", VINDR_IMAGES, size=(64, 64))
    train = _from_item(f"vindr:root={root}:splits=train")
    test = _from_item(f"vindr:root={root}:splits=test")
    assert train and {r["split"] for r in train} <= {"train", "validate"}
    assert test and {r["split"] for r in test} == {"test"}
    assert _from_item(f"vindr:root={root}:splits=train+test") == train + test


def test_chexpert_files_from_a_sources_item(tmp_path: Path) -> None:
    root = stage(tmp_path, "chexpert", ["train/patient00001/study1/view1_frontal.jpg",
                                        "valid/patient64541/study1/view1_frontal.jpg"])
    train_only = _from_item(f"chexpert:root={root}:files=train.csv")
    assert [r["patient_id"] for r in train_only] == ["patient00001"]
    both = _from_item(f"chexpert:root={root}:files=train.csv+valid.csv")
    assert {r["patient_id"] for r in both} == {"patient00001", "patient64541"}


def test_imagenome_splits_from_a_sources_item(tmp_path: Path) -> None:
    root = stage(tmp_path, "imagenome", [MIMIC_IMAGES[0], MIMIC_IMAGES[2]])
    everything = load("imagenome", root).records
    assert {r["split"] for r in everything} == {"train", "validate"}
    only = _from_item(f"imagenome:root={root}:splits=train")
    assert only and {r["split"] for r in only} == {"train"} and len(only) < len(everything)


def test_siim_image_dirs_from_a_sources_item(tmp_path: Path) -> None:
    from datagen import phantom_pixels, write_dicom

    root, images = tmp_path / "siim", tmp_path / "images"  # image folders outside root (root itself is searched too)
    write_dicom(images / "a" / "1.dcm", phantom_pixels(), patient_id="pa")
    write_dicom(images / "b" / "2.dcm", phantom_pixels(), patient_id="pb")
    root.mkdir()
    (root / "train-rle.csv").write_text("ImageId,EncodedPixels\n1,-1\n2,-1\n")
    assert [r["patient_id"] for r in _from_item(f"siim:root={root}:image_dirs={images / 'a'}+{images / 'b'}")] == ["pa", "pb"]
    assert [r["patient_id"] for r in _from_item(f"siim:root={root}:image_dirs={images / 'b'}")] == ["pb"]


@pytest.mark.parametrize(("item", "message"), [
    ("vindr:root=/x:splits=1", r"item 'vindr': option 'splits' of loader 'vindr' must be a list of str, values separated by '\+'"),
    ("vindr:root=/x:splits=train++test", r"option 'splits' .* got 'train\+\+test'"),
    ("vindr:root=/x:check_images=maybe", r"option 'check_images' of loader 'vindr' must be true or false, got 'maybe'"),
    ("vindr:root=/x:iou_thr=high", r"option 'iou_thr' of loader 'vindr' must be a number"),
    ("nih:root=/x:seed=0.5", r"option 'seed' of loader 'nih' must be an int, got 0.5"),
    ("rsna:root=/x:image_dir=2020", r"option 'image_dir' of loader 'rsna' must be text .*image_dir='2020'"),
    ("coco:root=/x:label_map=a", r"option 'label_map' of loader 'coco' is a mapping"),
])
def test_a_wrong_option_value_is_one_clear_error(tmp_path: Path, item: str, message: str) -> None:
    from radlab.config import validate
    from radlab.vocab import ParamError

    with pytest.raises(ParamError, match=message):
        validate("data", {"output_root": str(tmp_path), "sources": item}, check_inputs=False)


def test_python_callers_get_typed_options_too(tmp_path: Path) -> None:
    root = stage(tmp_path, "vindr", VINDR_IMAGES, size=(64, 64))
    with pytest.raises(TypeError, match=r"vindr: option 'splits' must be tuple, got str 'train'"):
        load("vindr", root, splits="train")
    with pytest.raises(TypeError, match="option 'check_images' must be bool"):
        load("vindr", root, check_images="no")
