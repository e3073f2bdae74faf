"""The data stage: params, patient-disjoint pools, byte-identical rebuilds, outputs, notebook smoke."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from radlab import config
from radlab.data import build, tasks
from radlab.params import DataParams
from radlab.vocab import ParamError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_train=16, n_validation=4, n_grpo=6, n_eval=6, image_size=64, workers=1, n_gallery=2)


def _tree_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every Arrow/JSON/CSV/PNG file under ``folder`` (relative path -> digest), except
    ``env.json`` (when and where the run began, written by ``StageRun.begin``)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if (p.is_file() and p.suffix in (".arrow", ".json", ".csv", ".png") and "figures" not in p.parts
                and p.name != "env.json"):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    params = DataParams(output_root=str(root / "a"), experiment="t", **SMALL)
    return params, build.build_datasets(params, figures=True)


def test_outputs_and_counts(built):
    params, res = built
    d = params.run_dir
    for rel in ("records/dataset", "sft", "grpo", "eval", "counts.csv", "skipped.csv",
                "figures/gallery.png", "figures/gallery.pdf", "figures/class_balance.png", "figures/box_sizes.png"):
        assert (d / rel).exists(), rel
    assert res.skipped.empty
    assert {k: len(v) for k, v in res.records.items()} == {"train": 16, "validate": 4, "grpo": 6, "test": 6}
    # GRPO and eval: exactly one report and one grounding row per case.
    for name, split, n in (("grpo", "train", 6), ("eval", "test", 6)):
        ds = res.datasets[name][split]
        assert ds["task"].count("report") == n and ds["task"].count("grounding") == n
        assert tuple(ds.column_names) == tasks.GRPO_COLUMNS
    c = res.counts
    assert c[(c.dataset == "sft") & (c.split == "train") & (c.task == "report")]["n"].item() == 16
    summary = res.summary()
    assert summary["records"]["train"] == 16 and summary["skipped"] == 0


def test_pools_are_patient_disjoint(built):
    _, res = built
    owners: dict[str, str] = {}
    for pool, recs in res.records.items():
        for rec in recs:
            assert owners.setdefault(rec["patient_id"], pool) == pool, rec["patient_id"]
    assert {r["split"] for r in res.records["grpo"]} == {"train"}
    assert {r["split"] for r in res.records["test"]} == {"test"}
    # Rows point back at records of their own pool.
    test_ids = {r["id"] for r in res.records["test"]}
    assert set(res.datasets["eval"]["test"]["record_id"]) <= test_ids


def test_reload_for_later_stages(built):
    params, _ = built
    loaded = build.load_stage_datasets(params.run_dir)
    assert set(loaded) == {"records", "sft", "grpo", "eval"}
    row = loaded["sft"]["train"][0]
    assert set(row) >= {"messages", "images", "task", "id"}
    assert row["messages"][0]["content"][0]["type"] == "image"
    rec = loaded["records"]["train"][0]
    assert (params.run_dir / rec["image_path"]).is_file()
    assert build.record_image(params.run_dir, rec).size == (64, 64)
    with pytest.raises(ParamError, match="00_data"):
        build.load_stage_datasets(params.run_dir / "nope")


def test_same_seed_gives_byte_identical_datasets(built, tmp_path):
    params, _ = built
    again = DataParams(output_root=str(tmp_path / "b"), experiment="t", **SMALL)
    build.build_datasets(again, figures=False)
    a, b = _tree_hashes(params.run_dir), _tree_hashes(again.run_dir)
    assert a and a == b
    other = DataParams(output_root=str(tmp_path / "c"), experiment="t", **{**SMALL, "seed": 1})
    build.build_datasets(other, figures=False)
    assert _tree_hashes(other.run_dir) != a


def test_parallel_build_matches_serial(tmp_path):
    kw = {**SMALL, "n_train": 70, "n_validation": 0, "n_grpo": 0, "n_eval": 2}
    serial = DataParams(output_root=str(tmp_path / "s"), experiment="t", **kw)
    par = DataParams(output_root=str(tmp_path / "p"), experiment="t", **{**kw, "workers": 2})
    rs, _ = build.build_records(serial, serial.run_dir)
    rp, _ = build.build_records(par, par.run_dir)
    assert rs == rp


def test_qwen1000_and_thinking_switches(tmp_path):
    params = DataParams(output_root=str(tmp_path), experiment="t", box_format="qwen1000", thinking_eval=True,
                              **{**SMALL, "n_train": 4, "n_validation": 0, "n_grpo": 2, "n_eval": 4})
    res = build.build_datasets(params, figures=False)
    ev = res.datasets["eval"]["test"]
    assert set(ev["box_format"]) == {"qwen1000"} and set(ev["thinking"]) == {True}
    assert all(r["prompt"][0]["content"][1]["text"].endswith(tasks.THINK_TRIGGER) for r in ev)
    assert set(res.datasets["grpo"]["train"]["thinking"]) == {False}
    grounded = [r for r in ev if r["reference_boxes"]]
    assert grounded and all("." not in r["answer"].split("[", 1)[1].split("]")[0] for r in grounded)


def test_param_errors(tmp_path):
    with pytest.raises(ParamError, match="image_size"):
        config.validate("data", {"image_size": 100})
    with pytest.raises(ParamError, match="box_format"):
        config.validate("data", {"box_format": "xywh"})
    with pytest.raises(ParamError, match="source_root"):
        config.validate("data", {"source": "mimic_cxr"})
    with pytest.raises(ParamError, match="source_root"):
        config.validate("data", {"source": "nih", "source_root": str(tmp_path / "missing")})
    with pytest.raises(ParamError, match="unknown parameter"):
        config.validate("data", {"n_test": 3})
    with pytest.raises(ParamError, match="p_mention_min"):
        config.validate("data", {"p_mention_min": 0.9, "p_mention_max": 0.1})


def test_unknown_real_source_is_a_param_error(tmp_path):
    with pytest.raises(ParamError, match="no_such_dataset"):  # at validation, before any work
        config.validate("data", {"output_root": str(tmp_path), "experiment": "t", "source": "no_such_dataset",
                                 "source_root": str(tmp_path), **SMALL})


def test_smoke_params_are_small():
    # params/demo/data.yaml equals the defaults: tests/test_config.py checks every stage's demo file.
    smoke = config.validate("data", config.load_yaml(ROOT / "params" / "smoke" / "data.yaml"))
    assert smoke.n_train <= 32 and smoke.image_size <= 64


@pytest.mark.slow
def test_notebook_smoke(tmp_path, papermill):
    """papermill 00_data on params/smoke/data.yaml into a temporary output_root."""
    proc = papermill("00_data.ipynb", tmp_path / "out.ipynb", params="params/smoke/data.yaml",
                     output_root=tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "smoke" / "data"
    for rel in ("DONE", "params.yaml", "env.json", "counts.csv", "skipped.csv", "figures/gallery.png", "eval", "sft", "grpo"):
        assert (run_dir / rel).exists(), rel
    loaded = build.load_stage_datasets(run_dir)
    assert len(loaded["eval"]["test"]) == 16


def test_real_source_through_the_loader_registry(tmp_path):
    """NIH fixture CSVs plus stand-in PNGs: records are loaded, resized, split and turned into rows."""
    import shutil

    import numpy as np
    from PIL import Image

    root = tmp_path / "nih"
    shutil.copytree(ROOT / "tests" / "fixtures" / "nih", root)
    (root / "images").mkdir()
    names = [line.split(",")[0] for line in (root / "Data_Entry_2017_v2020.csv").read_text().splitlines()[1:] if line]
    for i, name in enumerate(names):
        Image.fromarray(np.full((96, 128), 40 + 20 * i, dtype=np.uint8)).save(root / "images" / name)
    params = DataParams(output_root=str(tmp_path / "runs"), experiment="t", source="nih", source_root=str(root),
                              **{**SMALL, "n_grpo": 0})
    res = build.build_datasets(params, figures=False)
    n = sum(len(v) for v in res.records.values()) + len(res.skipped)
    assert n >= 1 and res.records["train"] and res.records["test"]
    rec = res.records["train"][0]
    assert rec["source"] == "nih" and max(rec["image_width"], rec["image_height"]) == 64
    assert (params.run_dir / rec["image_path"]).is_file()
    # NIH has no report text: only grounding rows, one per test record.
    ev = res.datasets["eval"]["test"]
    assert set(ev["task"]) == {"grounding"} and len(ev) == len(res.records["test"])


def test_minimal_pair_dataset():
    params = DataParams(image_size=64)
    ds = build.minimal_pair_dataset(params, 4)
    assert tuple(ds.column_names) == tasks.GRPO_COLUMNS
    ids = ds["id"]
    assert any("-a:report" in i for i in ids) and any("-b:report" in i for i in ids)
    ground = [r for r in ds if r["task"] == "grounding"]
    by_pair: dict[str, list] = {}
    for r in ground:
        by_pair.setdefault(r["id"].split(":")[0][:-2], []).append(r)
    for rows in by_pair.values():
        assert len({r["finding"] for r in rows}) == 1


@pytest.mark.slow
def test_readers_write_nothing_into_the_finished_data_folder(smoke_root):
    # A later stage maps and filters the data stage's datasets (radlab's own calls, and TRL's on
    # what it is given); datasets would cache each result as cache-*.arrow beside the source.
    from radlab import shortcuts
    from radlab.data.build import load_data_split
    from radlab.evaluation import load_eval_dataset
    from radlab.training.common import filter_tasks

    data = smoke_root / "smoke" / "data"
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    sft = load_data_split(data, "sft")["train"]
    sft.map(lambda row: {"n": len(row["task"])}).filter(lambda row: row["n"] > 0)
    filter_tasks(sft, ["report"]).map(lambda row: {"m": 1})
    load_eval_dataset(data).map(lambda row: {"k": 1}, batched=False)
    assert shortcuts.train_records(data)
    after = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    assert after == before, sorted(str(p.relative_to(data)) for p in set(after) ^ set(before))
