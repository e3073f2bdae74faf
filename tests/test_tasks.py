"""Task builders: prompts, answers that parse back to the reference boxes, formats and columns."""

from __future__ import annotations

import numpy as np
import pytest

from radlab import formats
from radlab.data import phantom, schema, tasks
from radlab.vocab import GROUNDING_KINDS

CFG = phantom.PhantomConfig(image_size=64, prevalence=0.5)
VOCAB = ["pleural effusion", "pneumothorax", "nodule", "mass", "cardiomegaly", "consolidation"]
ARCH_COLUMNS = ("prompt", "image", "task", "grounding_kind", "reference_report", "reference_boxes", "box_format",
                "thinking", "answer", "id", "record_id", "finding")


@pytest.fixture(scope="module")
def cases():
    return [phantom.generate_case(0, "train", i, CFG) for i in range(30)]


def _close(a, b, tol):
    return len(a) == len(b) and all(abs(x - y) <= tol for p, q in zip(a, b) for x, y in zip(p, q))


@pytest.mark.parametrize("fmt, tol", [("norm", 0.0051), ("qwen1000", 0.0006)])
def test_answers_parse_back_to_reference_boxes(cases, fmt, tol):
    rng = np.random.Generator(np.random.PCG64(0))
    n = 0
    for case in cases:
        for kind in GROUNDING_KINDS:
            item = tasks.grounding_item(case.record, kind, rng, box_format=fmt, vocabulary=VOCAB)
            if item is None:
                continue
            n += 1
            parsed = formats.parse_boxes(item.answer, fmt)
            assert _close(parsed, item.boxes, tol), (item.answer, item.boxes)
            for b in item.boxes:
                assert formats.is_valid_box(b)
            if fmt == "qwen1000" and item.boxes:
                assert "." not in item.answer.split("[", 1)[1].split("]")[0]
    assert n > 60


def test_abnormality_item_targets_and_negatives(cases):
    rng = np.random.Generator(np.random.PCG64(1))
    seen_neg = seen_pos = 0
    for case in cases:
        rec = case.record
        for _ in range(4):
            item = tasks.abnormality_item(rec, rng, negative_rate=0.5, vocabulary=VOCAB)
            if item is None:
                continue
            names = {f["name"] for f in rec["findings"]}
            assert item.finding in item.prompt
            if item.boxes:
                seen_pos += 1
                assert item.finding in names
                ids = [i for f in rec["findings"] if f["name"] == item.finding for i in f["box_ids"]]
                assert len(item.boxes) == len(ids)
            else:
                seen_neg += 1
                assert item.finding not in names
                assert formats.parse_boxes(item.answer) == []
                assert item.answer in [a.format(name=item.finding) for a in tasks.NO_FINDING_ANSWERS]
    assert seen_neg > 5 and seen_pos > 5


def test_left_effusion_box_is_on_image_right(cases):
    rng = np.random.Generator(np.random.PCG64(2))
    found = 0
    for case in cases:
        rec = case.record
        for f in rec["findings"]:
            if f["name"] == "pleural effusion" and f["laterality"] in ("left", "right"):
                item = tasks.abnormality_item({**rec, "findings": [f]}, rng, negative_rate=0.0)
                cx = (item.boxes[0][0] + item.boxes[0][2]) / 2
                assert (cx > 0.5) == (f["laterality"] == "left")
                found += 1
    assert found


def test_all_abnormalities_and_no_finding():
    rng = np.random.Generator(np.random.PCG64(3))
    normal = phantom.generate_case(0, "train", 0, phantom.PhantomConfig(image_size=32, prevalence=0.0)).record
    item = tasks.abnormality_all_item(normal, rng)
    assert item.boxes == [] and item.answer in tasks.NO_ABNORMALITY_ANSWERS
    rec = phantom.generate_case(0, "train", 1, phantom.PhantomConfig(image_size=32, prevalence=1.0)).record
    item = tasks.abnormality_all_item(rec, rng)
    n_boxes = sum(len(f["box_ids"]) for f in rec["findings"])
    assert len(item.boxes) == n_boxes == len(formats.parse_boxes(item.answer))
    for name in tasks.finding_names(rec):
        assert f"{name}: [" in item.answer


def test_anatomy_and_phrase_items(cases):
    rng = np.random.Generator(np.random.PCG64(4))
    rec = cases[0].record
    item = tasks.anatomy_item(rec, rng)
    region = next(b for b in rec["boxes"] if b["label"] == item.finding)
    assert region["kind"] == "anatomy" and item.finding in item.prompt and len(item.boxes) == 1
    phr = [tasks.phrase_item(c.record, rng) for c in cases]
    phr = [p for p in phr if p is not None]
    assert phr
    for p in phr:
        assert p.finding in p.prompt and p.boxes


def test_report_item_and_prompt_pools(cases):
    rng = np.random.Generator(np.random.PCG64(5))
    item = tasks.report_item(cases[0].record, rng)
    assert item.task == "report" and item.answer == schema.report_text(cases[0].record) == item.reference_report
    assert len(set(tasks.REPORT_PROMPTS)) >= 15
    for pool in (tasks.ABNORMALITY_PROMPTS, tasks.ABNORMALITY_ALL_PROMPTS, tasks.ANATOMY_PROMPTS, tasks.PHRASE_PROMPTS):
        assert len(set(pool)) >= 20


def test_rows_have_architecture_columns_and_formats(cases):
    rng = np.random.Generator(np.random.PCG64(6))
    rec = cases[3].record
    png = cases[3].png_bytes()
    items = tasks.items_for_record(rec, rng, mix={"report": 1, "abnormality": 1, "anatomy": 1}, vocabulary=VOCAB)
    assert {i.task for i in items} == {"report", "grounding"}
    rows = [tasks.grpo_row(it, png, box_format="norm", thinking=False, k=0) for it in items]
    ds = tasks.grpo_dataset(rows)
    assert tuple(ds.column_names) == ARCH_COLUMNS == tasks.GRPO_COLUMNS
    row = ds[0]
    assert row["prompt"][0]["role"] == "user"
    assert [p["type"] for p in row["prompt"][0]["content"]] == ["image", "text"]
    assert row["image"].size == (64, 64)
    rep = next(r for r in ds if r["task"] == "report")
    assert rep["grounding_kind"] == "" and rep["reference_boxes"] == [] and rep["reference_report"]
    gr = next(r for r in ds if r["task"] == "grounding")
    assert gr["reference_report"] == "" and gr["grounding_kind"] in GROUNDING_KINDS
    sft = tasks.sft_dataset([tasks.sft_row(it, png) for it in items])
    msg = sft[0]["messages"]
    assert [m["role"] for m in msg] == ["user", "assistant"]
    assert msg[1]["content"] == [{"type": "text", "text": items[0].answer}]
    assert len(sft[0]["images"]) == 1 and sft[0]["images"][0].size == (64, 64)


def test_thinking_switch(cases):
    rng = np.random.Generator(np.random.PCG64(7))
    item = tasks.report_item(cases[0].record, rng)
    png = cases[0].png_bytes()
    plain = tasks.grpo_row(item, png, box_format="norm", thinking=False)
    think = tasks.grpo_row(item, png, box_format="norm", thinking=True)
    text = think["prompt"][0]["content"][1]["text"]
    assert text == plain["prompt"][0]["content"][1]["text"] + tasks.THINK_TRIGGER
    assert "<think></think>" in tasks.THINK_TRIGGER and think["thinking"] is True
    assert think["answer"] == plain["answer"]  # the gold answer never contains a trace
    ds = tasks.grpo_dataset([plain])
    on = tasks.with_thinking(ds, True)
    assert on[0]["prompt"][0]["content"][1]["text"] == text and on[0]["thinking"] is True
    off = tasks.with_thinking(on, False)
    assert off[0]["prompt"] == ds[0]["prompt"] and off[0]["thinking"] is False


def test_unknown_kind_rejected(cases):
    with pytest.raises(ValueError, match="unknown grounding kind"):
        tasks.grounding_item(cases[0].record, "segmentation", np.random.Generator(np.random.PCG64(0)))
