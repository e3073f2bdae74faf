"""The shortcut baselines (radlab.shortcuts) on phantom records and on a real-source data folder."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from radlab import evaluation as ev
from radlab import runs, shortcuts
from radlab.config import validate
from radlab.data import phantom, schema
from radlab.data.phantom import PhantomConfig
from radlab.formats import format_boxes


def test_text_only_priors():
    recs = [phantom.generate_case(0, "train", i, PhantomConfig(image_size=32, prevalence=0.1)).record for i in range(40)]
    prior = shortcuts.text_only_prior(recs)
    counts = [schema.report_text(r) for r in recs].count(prior)
    assert all([schema.report_text(r) for r in recs].count(schema.report_text(r)) <= counts for r in recs)
    marginal = shortcuts.label_marginal_report(recs)
    assert "pneumothorax" in marginal.lower() or "heart" in marginal.lower()
    boxes = shortcuts.grounding_prior(recs)
    assert "right lung" in boxes and boxes["right lung"][0] < 0.5
    with pytest.raises(ValueError):
        shortcuts.text_only_prior([])


def test_shuffled_images_is_a_derangement():
    import datasets

    imgs = [np.full((32, 32), i * 20, dtype=np.uint8) for i in range(7)]
    from PIL import Image

    ds = datasets.Dataset.from_dict({"id": [str(i) for i in range(7)], "image": [Image.fromarray(a) for a in imgs]},
                                    features=datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()}))
    sh = shortcuts.shuffled_images(ds, seed=1)
    assert sh.column_names == ds.column_names and sh["id"] == ds["id"]
    got = [int(np.asarray(im)[0, 0]) // 20 for im in sh["image"]]
    assert sorted(got) == list(range(7)) and all(g != i for i, g in enumerate(got))


def _real_records() -> list[dict]:
    """Hand-written records of a non-phantom source (VinDr-like ids, reports and boxes)."""
    common = "Heart size is normal. No pleural effusion."
    recs = []
    for i, (text, box) in enumerate([(common, [0.1, 0.2, 0.3, 0.4]), (common, [0.3, 0.2, 0.5, 0.6]),
                                     ("Small left pleural effusion.", [0.6, 0.6, 0.9, 0.9])]):
        recs.append(schema.new_record(
            id=f"vindr-{i}", patient_id=f"p{i}", study_id=f"s{i}", source="vindr", image_path=f"images/{i}.png",
            image_width=64, image_height=64, view="PA", findings_text=text, section_method="findings",
            boxes=[{"box_id": i, "kind": "finding", "label": "Nodule/Mass" if i < 2 else "Pleural effusion",
                    "box": box, "raw": box, "raw_format": "norm"}]))
    return recs


def _eval_rows() -> datasets.Dataset:
    rng = np.random.default_rng(0)
    img = [Image.fromarray((rng.random((32, 32)) * 255).astype("uint8")) for _ in range(3)]
    prompt = [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Report."}]}]
    rows = {"prompt": [prompt] * 3, "image": img, "task": ["report", "grounding", "grounding"],
            "grounding_kind": ["", "abnormality", "abnormality"], "reference_report": ["No effusion.", "", ""],
            "reference_boxes": [[], [[0.2, 0.2, 0.4, 0.5]], [[0.1, 0.1, 0.2, 0.2]]], "box_format": ["norm"] * 3,
            "thinking": [False] * 3, "answer": ["No effusion.", "[0.2, 0.2, 0.4, 0.5]", "[0.1, 0.1, 0.2, 0.2]"],
            "id": ["r0", "g0", "g1"], "record_id": ["vindr-9"] * 3, "finding": ["", "Nodule/Mass", "Rib fracture"]}
    return datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())


def test_text_only_predictions_on_real_records() -> None:
    ds = _eval_rows()
    preds, note = shortcuts.text_only_predictions([dict(r) for r in ds], _real_records())
    assert preds[0] == "Heart size is normal. No pleural effusion."  # the most frequent training report
    assert preds[1] == format_boxes([[0.2, 0.2, 0.4, 0.5]], "norm")  # the mean Nodule/Mass box
    assert preds[2] == "" and "1 of 2 grounding rows" in note  # no training box for a rib fracture


def test_shortcut_baselines_run_on_a_real_source(tmp_path: Path) -> None:
    """A data folder whose source is not the phantom still gets both baselines (no phantom-only skip)."""
    data_dir = tmp_path / "real" / "data"
    schema.to_dataset(_real_records()).save_to_disk(str(data_dir / "records" / "dataset"))
    runs.write_yaml(data_dir / "params.yaml", {"source": "vindr"})
    params = validate("analysis", {"experiment": "real", "output_root": str(tmp_path), "data_dir": str(data_dir)})
    evalset = ev.EvalSet.from_dataset(_eval_rows(), 0, seed=0)
    spec = ev.ModelSpec("sft", "radlab:tiny")
    frames, jobs, notes = ev.shortcut_frames(params, evalset, [spec])
    assert not any("phantom" in n for n in notes), notes
    (text_only,) = frames
    assert list(text_only["model"].unique()) == ["text_only"]
    assert text_only.loc[text_only["task"] == "report", "prediction"].iloc[0].startswith("Heart size is normal")
    (job,) = jobs
    assert job.label == "shuffled_image" and job.spec.name == "sft"
    # Every row keeps its id and references but reads another row's image.
    assert [r["id"] for r in job.rows] == [r["id"] for r in evalset.for_mode(False)[0]]
    orig = {r["id"]: np.asarray(r["image"]).tobytes() for r in evalset.rows}
    assert all(np.asarray(r["image"]).tobytes() != orig[r["id"]] for r in job.rows)

