"""Multi-source real data: the ``sources`` parameter, patient-disjoint pools across datasets,
per-source task mixes and sizes, DICOM folders with a corrupt file, letterboxed images, resumed
image writes, the vLLM one-size check, and 00_data under papermill on params alone."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import yaml
from datagen import chexpert_plus_folder, nih_folder, vindr_dicom_folder, vindr_kaggle_folder

from radlab import config
from radlab.data import build, sources
from radlab.params import DataParams
from radlab.training.grpo import check_vllm_image_sizes, image_sizes
from radlab.vocab import TASKS, ParamError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=16, n_validation=4, n_grpo=4, n_eval=6, image_size=64, workers=1, n_gallery=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return {
        "nih": nih_folder(base / "nih", n_patients=80, images_per_patient=1),
        "chexpert_plus": chexpert_plus_folder(base / "chexpert_plus", n_patients=24),
        "vindr": vindr_dicom_folder(base / "vindr", n_train=12, n_test=4, corrupt=1),
    }


def mixture(folders) -> str:
    return (f"nih:root={folders['nih']}:abnormality=2:n_train=10:n_grpo=3:n_eval=4,"
            f"chexpert_plus:root={folders['chexpert_plus']}:report=1:n_train=12:n_grpo=0:n_eval=0")


@pytest.fixture(scope="module")
def mixed(folders, tmp_path_factory):
    params = DataParams(output_root=str(tmp_path_factory.mktemp("runs")), experiment="mix",
                              sources=mixture(folders), **SMALL)
    return params, build.build_datasets(params, figures=True)


def test_two_source_mix_feeds_each_task_from_its_source(mixed):
    params, res = mixed
    c = res.counts
    rec = c[c.dataset == "records"]
    by = rec.groupby(["source", "split"])["n"].sum().to_dict()
    # Per-source caps: NIH 10 train / 3 grpo / 4 test; CheXpert Plus 12 train, no GRPO, no test.
    assert by[("nih", "train")] == 10 and by[("nih", "grpo")] == 3 and by[("nih", "test")] == 4
    assert by[("chexpert_plus", "train")] == 12 and ("chexpert_plus", "grpo") not in by and ("chexpert_plus", "test") not in by
    sft = c[(c.dataset == "sft") & (c.split == "train")]
    # Reports only from CheXpert Plus (one per record), grounding only from NIH (abnormality x2 per record).
    assert sft[sft.task == "report"].set_index("source")["n"].to_dict() == {"chexpert_plus": 12}
    ground = sft[sft.task == "grounding"]
    assert set(ground["source"]) == {"nih"} and set(ground["grounding_kind"]) == {"abnormality"}
    assert ground["n"].sum() == 20
    # GRPO/eval: one grounding row per NIH case, no report rows (NIH has no text).
    ev = res.datasets["eval"]["test"]
    assert len(ev) == 4 and set(ev["task"]) == {"grounding"}
    # Negative questions ask about NIH's own classes, not the phantom's vocabulary.
    findings = set(ev["finding"]) | set(res.datasets["grpo"]["train"]["finding"])
    assert findings and findings <= {"Cardiomegaly", "Effusion"}
    saved = pd.read_csv(params.run_dir / "counts.csv", keep_default_na=False)
    assert list(saved.columns) == list(c.columns) and saved["n"].sum() == c["n"].sum()


def test_mix_pools_are_patient_disjoint_and_follow_splits(mixed):
    _, res = mixed
    owner: dict[str, str] = {}
    for pool, recs in res.records.items():
        for rec in recs:
            key = f"{rec['source']}:{rec['patient_id']}"
            assert owner.setdefault(key, pool) == pool, key
            assert rec["split"] == ("train" if pool == "grpo" else pool)
    # CheXpert Plus 'valid' rows are its validation pool (its official split).
    assert {r["source"] for r in res.records["validate"]} >= {"chexpert_plus"}


def test_single_source_is_a_sources_list_of_one(folders, tmp_path):
    one = DataParams(output_root=str(tmp_path / "a"), experiment="t", source="nih", source_root=str(folders["nih"]), **SMALL)
    many = DataParams(output_root=str(tmp_path / "b"), experiment="t", sources=f"nih:root={folders['nih']}", **SMALL)
    assert sources.source_list(one)[0] == sources.source_list(many)[0]
    ra, _ = build.build_records(one)
    rb, _ = build.build_records(many)
    assert {p: [r["id"] for r in v] for p, v in ra.items()} == {p: [r["id"] for r in v] for p, v in rb.items()}


def test_sources_param_errors(folders, tmp_path):
    def make(text, **kw):  # validated as a notebook's parameters are: the names are checked then
        return config.validate("data", {"output_root": str(tmp_path), "sources": text, **SMALL, **kw})

    with pytest.raises(ParamError, match="unknown loader 'nope'"):
        make("nope:root=/x")
    with pytest.raises(ParamError, match="needs root"):
        make("nih:report=1")
    with pytest.raises(ParamError, match=r"unknown key\(s\) \['fuse'\].*boxes_only"):
        make("nih:root=/x:fuse=wbf")
    with pytest.raises(ParamError, match="task weight abnormality"):
        make("nih:root=/x:abnormality=-1")
    with pytest.raises(ParamError, match="given twice"):
        make("nih:root=/x,nih:root=/y")
    with pytest.raises(ParamError, match="either source"):
        make("nih:root=/x", source="nih", source_root="/x")
    with pytest.raises(ParamError, match="resize_mode"):
        make("", resize_mode="stretch")
    params = make(f"nih:root={tmp_path / 'missing'}")
    with pytest.raises(ParamError, match="is not a folder"):
        build.build_datasets(params, figures=False)


def test_mimic_family_follows_the_mimic_split():
    mimic = sources.Source("mimic_cxr", "mimic_cxr", "/m", sizes={"train": 9, "validate": 9, "grpo": 0, "test": 9})
    mscxr = sources.Source("ms_cxr", "ms_cxr", "/s", sizes={"train": 9, "validate": 9, "grpo": 0, "test": 9})

    def rec(src, pid, split, i):
        return {"id": f"{src}-{pid}-{i}", "patient_id": pid, "split": split, "image_path": f"{pid}.png"}

    loaded = [(mimic, [rec("mimic", "10000001", "test", 0), rec("mimic", "10000002", "train", 0)]),
              (mscxr, [rec("ms", "10000001", "train", 0), rec("ms", "10000002", "test", 1)])]
    pools, skipped = sources.assign_pools(loaded, seed=0)
    where = {r["id"]: pool for pool, items in pools.items() for _, r in items}
    assert where == {"mimic-10000001-0": "test", "ms-10000001-0": "test",
                     "mimic-10000002-0": "train", "ms-10000002-1": "train"}
    assert skipped == []


def test_vindr_dicom_folder_with_a_corrupt_file(folders, tmp_path):
    params = DataParams(output_root=str(tmp_path), experiment="v", source="vindr", source_root=str(folders["vindr"]),
                              resize_mode="letterbox", mix_abnormality=1.0, mix_abnormality_all=0.0, mix_anatomy=0.0,
                              mix_phrase=0.0, **{**SMALL, "n_grpo": 0})
    res = build.build_datasets(params, figures=False)
    # The truncated DICOM parses as a header but its pixels do not: a counted skip naming the file.
    bad = res.skipped[res.skipped.reason.str.contains("image unreadable")]
    assert len(bad) == 1 and bad.file.iloc[0].endswith(".dicom") and "tr000000" in bad.file.iloc[0]
    assert pd.read_csv(params.run_dir / "skipped.csv").shape[0] == len(res.skipped)
    recs = [r for pool in res.records.values() for r in pool]
    assert len(recs) == 15 and {(r["image_width"], r["image_height"]) for r in recs} == {(64, 64)}  # letterboxed
    meta = json.loads(recs[0]["meta"])
    assert meta["dicom"]["pixel_spacing"] == [0.139, 0.139] and meta["source_size"] == [96, 80] and meta["resize"] == "letterbox"
    boxed = next(r for r in recs if r["boxes"])
    src_box = json.loads(boxed["meta"])
    # 96x80 onto 64x64: scale 2/3, 5.33 px padding top and bottom; x unchanged, y squeezed.
    raw = boxed["boxes"][0]["raw"]
    x0 = raw[0] / 96
    assert boxed["boxes"][0]["box"][0] == pytest.approx(x0, abs=0.02) and src_box["original_size"] == [96.0, 80.0]
    y0 = (raw[1] * 64 / 96 + (64 - 80 * 64 / 96) / 2) / 64
    assert boxed["boxes"][0]["box"][1] == pytest.approx(y0, abs=0.02)
    grpo_like = res.datasets["eval"]["test"]
    check_vllm_image_sizes(grpo_like, use_vllm=True)  # one size: passes


def test_interrupted_build_resumes_without_rereading_images(folders, tmp_path):
    params = DataParams(output_root=str(tmp_path), experiment="r", sources=f"nih:root={folders['nih']}", **SMALL)
    recs, _ = build.build_records(params)
    pngs = sorted((params.run_dir / "records" / "images").rglob("*.png"))
    assert len(pngs) == sum(len(v) for v in recs.values())
    stamp = {p: p.stat().st_mtime_ns for p in pngs}
    pngs[0].unlink()  # an interrupted run: one image missing, one half-written temp file left
    (pngs[1].parent / f".{pngs[1].name}.123.tmp").write_bytes(b"partial")
    recs2, _ = build.build_records(params)
    assert recs2 == recs
    assert pngs[0].is_file() and all(p.stat().st_mtime_ns == stamp[p] for p in pngs[1:])
    assert not list((params.run_dir / "records" / "images").rglob("*.tmp"))
    # A different image size is a different build: every PNG is rewritten.
    bigger = DataParams(**{**params.__dict__, "image_size": 96})
    recs3, _ = build.build_records(bigger)
    assert max(recs3["train"][0]["image_width"], recs3["train"][0]["image_height"]) == 96


def test_vllm_check_names_the_cause_and_the_fix(tmp_path):
    from PIL import Image

    def row(w, h):
        img = Image.new("L", (w, h), 50)
        return {"image": img, "task": "report"}

    mixed = datasets.Dataset.from_list([row(64, 48), row(64, 64), row(64, 48)],
                                       features=datasets.Features({"image": datasets.Image(), "task": datasets.Value("string")}))
    assert image_sizes(mixed) == {(64, 48): 2, (64, 64): 1}
    with pytest.raises(ParamError, match=r"one size.*get_rope_index.*6401.*resize_mode: letterbox"):
        check_vllm_image_sizes(mixed, use_vllm=True)
    check_vllm_image_sizes(mixed, use_vllm=False)  # HF generation handles mixed sizes


@pytest.mark.slow
@pytest.mark.parametrize("case", ["vindr_dicom", "nih_chexpert_plus"])
def test_real_data_builds_through_the_notebook_on_params_alone(folders, tmp_path, case, papermill):
    values = {**yaml.safe_load((ROOT / "params" / "smoke" / "data.yaml").read_text()),
              "experiment": case, "output_root": str(tmp_path / "runs"), "image_size": 64}
    if case == "vindr_dicom":
        values.update(source="vindr", source_root=str(folders["vindr"]), n_grpo=0, resize_mode="letterbox")
    else:
        values.update(sources=mixture(folders))
    params_file = tmp_path / "data.yaml"
    params_file.write_text(yaml.safe_dump(values))
    proc = papermill("00_data.ipynb", tmp_path / "out.ipynb", params=params_file, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / case / "data"
    for rel in ("DONE", "counts.csv", "skipped.csv", "figures/gallery.png", "sft", "grpo", "eval"):
        assert (run_dir / rel).exists(), rel
    loaded = build.load_stage_datasets(run_dir)
    counts = pd.read_csv(run_dir / "counts.csv")
    if case == "vindr_dicom":
        assert pd.read_csv(run_dir / "skipped.csv").reason.str.contains("image unreadable").sum() == 1
        assert set(np.unique([im.size for im in loaded["eval"]["test"]["image"]], axis=0).ravel()) == {64}
    else:
        assert set(counts[counts.task == "report"]["source"]) == {"chexpert_plus"}
        assert set(loaded["sft"]["train"]["task"]) == set(TASKS)


@pytest.mark.slow
def test_vindr_kaggle_download_builds_through_the_notebook(tmp_path, papermill):
    # The VinBigData download as shipped (train.csv with class_id, DICOMs, no test labels), named
    # by a sources item alone: train only, validate and test hashed from it.
    root = vindr_kaggle_folder(tmp_path / "vbd", n_train=40)
    values = {**yaml.safe_load((ROOT / "params" / "smoke" / "data.yaml").read_text()),
              "experiment": "kaggle", "output_root": str(tmp_path / "runs"), "n_grpo": 0,
              "sources": f"vindr:root={root}:abnormality=1"}
    params_file = tmp_path / "data.yaml"
    params_file.write_text(yaml.safe_dump(values))
    proc = papermill("00_data.ipynb", tmp_path / "out.ipynb", params=params_file, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "kaggle" / "data"
    records = build.load_stage_datasets(run_dir)["records"]
    assert {pool: len(records[pool]) > 0 for pool in ("train", "validate", "test")} == {
        "train": True, "validate": True, "test": True}
    assert set(records["test"]["split"]) == {"test"} and set(records["validate"]["split"]) == {"validate"}
    pools = {pool: set(records[pool]["patient_id"]) for pool in ("train", "validate", "test")}
    assert not (pools["train"] & pools["test"]) and not (pools["train"] & pools["validate"])


def test_skips_are_grouped_by_source_and_reason_with_a_warning_past_half():
    rows = ([{"source": "nih", "file": "/d/Data_Entry_2017_v2020.csv", "row": i + 2,
              "reason": f"missing image file /d/images/{i:08d}_000.png"} for i in range(70)]
            + [{"source": "nih", "file": "/d/BBox_List_2017.csv", "row": 9, "reason": "unknown finding label 'Foo'"}]
            + [{"source": "iu_xray", "file": f"/iu/reports/{i}.xml", "row": f"CXR{i}",
                "reason": "report has no parentImage"} for i in range(4)]
            + [{"source": "iu_xray", "file": "/iu/x.png", "row": 3, "reason": "patient 'iu_xray:CXR7' of pool 'train' already in pool 'test'"},
               {"source": "iu_xray", "file": "/iu/y.png", "row": 5, "reason": "patient 'iu_xray:CXR9' of pool 'train' already in pool 'test'"}])
    groups = sources.skip_groups(rows, {"nih": 100, "iu_xray": 50})
    assert [(g["source"], g["reason"], g["rows"]) for g in groups] == [
        ("nih", "missing image file <file>", 70), ("iu_xray", "report has no parentImage", 4),
        ("iu_xray", "patient '…' of pool 'train' already in pool 'test'", 2), ("nih", "unknown finding label 'Foo'", 1)]
    # Examples: the path the reason names (the missing image), else the table file and row.
    assert groups[0]["examples"] == ["/d/images/00000000_000.png", "/d/images/00000001_000.png", "/d/images/00000002_000.png"]
    assert groups[1]["examples"] == ["/iu/reports/0.xml row CXR0", "/iu/reports/1.xml row CXR1", "/iu/reports/2.xml row CXR2"]
    assert groups[0]["share"] == 0.7
    notes = sources.skip_notes(groups, {"nih": 100, "iu_xray": 50})
    assert notes[0] == "WARNING: source 'nih' lost 71 of 100 rows (71%): check its root and layout (every row in skipped.csv)"
    assert not any("'iu_xray' lost" in n for n in notes)  # 6 of 50: no warning
    assert notes[1].startswith("nih: 70 rows: missing image file <file> (e.g. /d/images/00000000_000.png, ")
    assert sources.skip_notes(groups, {"nih": 100, "iu_xray": 50}, max_lines=2)[-1] == "... 2 more reason(s), 3 rows: see skipped.csv"
    assert sources.skip_groups([], {"nih": 10}) == [] and sources.skip_notes([], {"nih": 10}) == []
    # A source lost exactly half: no warning (more than half warns).
    assert not sources.skip_notes(sources.skip_groups(rows[:50], {"nih": 100}), {"nih": 100})[0].startswith("WARNING")


@pytest.mark.slow
def test_data_notebook_of_a_partial_nih_folder_shows_skips_by_reason(tmp_path, papermill):
    import nbformat

    root = nih_folder(tmp_path / "nih", n_patients=60, images_per_patient=1)
    images = sorted((root / "images").glob("*.png"))
    for path in images[20:]:  # a download holding a third of the images
        path.unlink()
    values = {**yaml.safe_load((ROOT / "params" / "smoke" / "data.yaml").read_text()),
              "experiment": "partial", "output_root": str(tmp_path / "runs"), "n_train": 8, "n_validation": 2,
              "n_grpo": 0, "n_eval": 3, "sources": f"nih:root={root}:abnormality=1"}
    params_file = tmp_path / "data.yaml"
    params_file.write_text(yaml.safe_dump(values))
    proc = papermill("00_data.ipynb", tmp_path / "out.ipynb", params=params_file, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "partial" / "data"
    assert len(pd.read_csv(run_dir / "skipped.csv")) >= 40  # every row, as before
    nb = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and "skip_report" in c.source]
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    assert "WARNING: source 'nih' lost 40 of 60 rows (67%)" in text
    table = "".join(o["data"].get("text/html", "") for o in cell.outputs if o.output_type == "execute_result")
    assert "missing image file &lt;file&gt;" in table and ">40<" in table and images[20].name in table
    notes = json.loads((run_dir / "DONE").read_text())["skip_notes"]
    assert notes[0].startswith("WARNING: source 'nih' lost 40 of 60 rows") and notes[1].startswith("nih: 40 rows: missing image file")
