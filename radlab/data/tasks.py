"""Task rows from unified records: report generation and four kinds of grounding.

Every builder takes one schema record (``radlab.data.schema``) and a seeded ``numpy``
Generator and returns :class:`TaskItem` s; :func:`sft_rows` / :func:`grpo_rows` turn items into the
two dataset layouts of ``docs/architecture.md``:

* SFT (TRL conversational): ``{"messages": [user(image, prompt), assistant(answer)],
  "images": [PIL], "task", "id"}``;
* GRPO / eval: ``prompt`` (one user message), ``image``, ``task``, ``grounding_kind``,
  ``reference_report``, ``reference_boxes``, ``box_format``, ``thinking``, ``answer``, ``id``,
  ``record_id``, ``finding`` (exactly these columns, :data:`GRPO_COLUMNS`).

Grounding kinds: ``abnormality`` ("Locate the pleural effusion." -> its boxes, or a "no finding"
answer when absent), ``abnormality_all`` (all finding boxes, named), ``anatomy`` (one region box),
``phrase`` (a groundable report phrase -> its boxes).  Answers write boxes with
``radlab.formats.format_boxes`` in ``box_format`` (``"norm"`` or ``"qwen1000"``); reference boxes
are always normalised.  ``thinking=True`` appends :data:`THINK_TRIGGER` to the prompt.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from PIL import Image

from radlab import formats
from radlab.data import schema
from radlab.vocab import GROUNDING_KINDS

# The one sentence that asks for a reasoning trace (thinking prompts = prompt + this); only
# thinking_text adds or removes it.
THINK_TRIGGER = " Think step by step inside <think></think> tags, then answer."

GRPO_COLUMNS = (
    "prompt", "image", "task", "grounding_kind", "reference_report", "reference_boxes", "box_format",
    "thinking", "answer", "id", "record_id", "finding",
)

REPORT_PROMPTS = (
    "Write the findings section of the radiology report for this chest X-ray.",
    "Describe the findings in this chest radiograph.",
    "Generate a radiology report for this chest X-ray.",
    "What are the findings on this frontal chest radiograph?",
    "Please write the findings for this chest X-ray.",
    "Report the findings of this chest radiograph.",
    "Provide a findings report for the chest X-ray shown.",
    "Act as a radiologist and describe this chest X-ray.",
    "Write a concise findings report for this image.",
    "Describe this PA chest radiograph as a radiologist would.",
    "What does this chest X-ray show? Write the findings.",
    "Give the radiology findings for this chest film.",
    "Summarise the findings visible on this chest X-ray.",
    "Produce the findings section for this chest radiograph.",
    "Interpret this chest X-ray and write the findings.",
)
ABNORMALITY_PROMPTS = (
    "Locate the {name}.",
    "Where is the {name}? Give its bounding box.",
    "Find the {name} on this chest X-ray.",
    "Draw a bounding box around the {name}.",
    "Give the bounding box of the {name} in this image.",
    "Is there a {name}? If so, where?",
    "Show the location of the {name}.",
    "Localise the {name} on this radiograph.",
    "Where is the {name} located on this chest X-ray?",
    "Mark the {name} with a bounding box.",
    "Detect the {name} and give its coordinates.",
    "Provide the box coordinates of the {name}.",
    "Point out the {name} in this image.",
    "Find any {name} and return its bounding box.",
    "Identify the region of the {name}.",
    "Where on this film is the {name}?",
    "Give the location of the {name} as a box.",
    "Locate any {name} on this chest radiograph.",
    "Output the bounding box for the {name}.",
    "Which area shows the {name}?",
)
ABNORMALITY_ALL_PROMPTS = (
    "Locate all abnormalities on this chest X-ray.",
    "Find every abnormal finding and give its bounding box.",
    "List the abnormalities in this image with their boxes.",
    "Detect all findings on this chest radiograph.",
    "Where are the abnormalities on this X-ray?",
    "Give bounding boxes for all abnormal findings.",
    "Identify and localise all pathologies in this image.",
    "Mark every abnormality on this radiograph.",
    "Which abnormalities are present and where?",
    "Detect and locate all findings in this chest X-ray.",
    "Return the name and box of each abnormality.",
    "Find all lesions, opacities, fluid, air and devices with their boxes.",
    "Localise all abnormal findings in this chest film.",
    "Show where each finding is on this chest X-ray.",
    "Provide boxes for all abnormalities you see.",
    "Annotate all abnormalities on this image.",
    "What is abnormal in this image and where is it?",
    "List each finding with its bounding box.",
    "Locate every finding on this chest radiograph.",
    "Give the location of all abnormalities.",
)
ANATOMY_PROMPTS = (
    "Locate the {name}.",
    "Where is the {name}?",
    "Give the bounding box of the {name}.",
    "Find the {name} on this chest X-ray.",
    "Draw a box around the {name}.",
    "Show the {name} in this image.",
    "Localise the {name}.",
    "Where is the {name} on this radiograph?",
    "Provide the box coordinates of the {name}.",
    "Mark the {name} with a bounding box.",
    "Output the bounding box for the {name}.",
    "Identify the {name} region.",
    "Point out the {name}.",
    "Give the location of the {name} as a box.",
    "Which area is the {name}?",
    "Segment the {name} with a bounding box.",
    "Where does the {name} appear on this film?",
    "Return the box of the {name}.",
    "Box the {name} on this chest X-ray.",
    "Find the anatomical region: {name}.",
)
PHRASE_PROMPTS = (
    "Locate: {name}",
    "Ground this phrase in the image: \"{name}\"",
    "Where is the following finding? {name}",
    "Give the bounding box for: {name}",
    "Find the region described by \"{name}\".",
    "Show where this is seen: {name}",
    "Localise the finding \"{name}\".",
    "Which region matches \"{name}\"?",
    "Draw a box for the phrase: {name}",
    "Ground the report sentence: {name}",
    "Point to the finding described: {name}",
    "Provide boxes for \"{name}\".",
    "Where does the report's \"{name}\" lie?",
    "Mark the area of: {name}",
    "Box the finding: {name}",
    "Find this in the X-ray: {name}",
    "Locate the region for \"{name}\".",
    "Give coordinates for: {name}",
    "Where is this described finding? \"{name}\"",
    "Identify the location of: {name}",
)
NO_FINDING_ANSWERS = (
    "No {name} is seen.",
    "There is no {name}.",
    "No {name}.",
    "No evidence of {name}.",
)
NO_ABNORMALITY_ANSWERS = (
    "No abnormalities.",
    "No abnormal findings.",
    "There are no abnormalities.",
    "No finding.",
)


@dataclass
class TaskItem:
    """One prompt/answer pair before it becomes a dataset row.

    ``boxes`` are normalised xyxy ``[[x0, y0, x1, y1], ...]`` (empty for reports and "no
    finding" answers); ``finding`` names the finding, region or phrase asked about.
    """

    task: str
    grounding_kind: str
    prompt: str
    answer: str
    boxes: list[list[float]]
    finding: str
    record_id: str
    reference_report: str = ""


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _ref_boxes(rec: Mapping[str, Any], ids: Iterable[int]) -> list[list[float]]:
    by_id = {b["box_id"]: b for b in rec["boxes"]}
    return [[round(float(v), 4) for v in by_id[i]["box"]] for i in ids]


def finding_names(rec: Mapping[str, Any]) -> list[str]:
    """Names of the findings with at least one box, in record order, unique."""
    out: list[str] = []
    for f in rec["findings"]:
        if f["box_ids"] and f["name"] not in out:
            out.append(f["name"])
    return out


def report_item(rec: Mapping[str, Any], rng: np.random.Generator) -> TaskItem | None:
    """Report generation; ``None`` when the record has no report text."""
    text = schema.report_text(rec)
    if not text:
        return None
    return TaskItem("report", "", _pick(rng, REPORT_PROMPTS), text, [], "", rec["id"], text)


def abnormality_item(rec: Mapping[str, Any], rng: np.random.Generator, *, box_format: str = "norm",
                     negative_rate: float = 0.2, vocabulary: Sequence[str] = ()) -> TaskItem | None:
    """One-class abnormality grounding: all boxes of one finding name, or (with probability
    ``negative_rate``, or when nothing is boxed) a finding from ``vocabulary`` that the
    record does not have, answered from :data:`NO_FINDING_ANSWERS`.

    Only findings a reader would call absent are asked negatively: a name counts as present
    whether certain or uncertain.
    """
    present = finding_names(rec)
    all_named = {f["name"] for f in rec["findings"]}
    absent = [n for n in vocabulary if n not in all_named]
    if present and (not absent or rng.random() >= negative_rate):
        name = present[int(rng.integers(len(present)))]
        ids = [i for f in rec["findings"] if f["name"] == name for i in f["box_ids"]]
        boxes = _ref_boxes(rec, ids)
        prompt = _pick(rng, ABNORMALITY_PROMPTS).format(name=name)
        return TaskItem("grounding", "abnormality", prompt, formats.format_boxes(boxes, box_format), boxes, name, rec["id"])
    if not absent:
        return None
    name = absent[int(rng.integers(len(absent)))]
    prompt = _pick(rng, ABNORMALITY_PROMPTS).format(name=name)
    return TaskItem("grounding", "abnormality", prompt, _pick(rng, NO_FINDING_ANSWERS).format(name=name), [], name, rec["id"])


def abnormality_all_item(rec: Mapping[str, Any], rng: np.random.Generator, *, box_format: str = "norm") -> TaskItem:
    """All boxed findings: ``"pleural effusion: [..] and [..]; nodule: [..]"``, or a "no
    abnormality" answer.  ``boxes`` lists every finding box in answer order."""
    parts: list[str] = []
    boxes: list[list[float]] = []
    for name in finding_names(rec):
        ids = [i for f in rec["findings"] if f["name"] == name for i in f["box_ids"]]
        b = _ref_boxes(rec, ids)
        boxes.extend(b)
        parts.append(f"{name}: {formats.format_boxes(b, box_format)}")
    answer = "; ".join(parts) if parts else _pick(rng, NO_ABNORMALITY_ANSWERS)
    return TaskItem("grounding", "abnormality_all", _pick(rng, ABNORMALITY_ALL_PROMPTS), answer, boxes, "all", rec["id"])


def anatomy_item(rec: Mapping[str, Any], rng: np.random.Generator, *, box_format: str = "norm") -> TaskItem | None:
    """One anatomical region box (kind ``"anatomy"``); ``None`` when the record has none."""
    regions = [b for b in rec["boxes"] if b["kind"] == "anatomy"]
    if not regions:
        return None
    b = regions[int(rng.integers(len(regions)))]
    boxes = _ref_boxes(rec, [b["box_id"]])
    prompt = _pick(rng, ANATOMY_PROMPTS).format(name=b["label"])
    return TaskItem("grounding", "anatomy", prompt, formats.format_boxes(boxes, box_format), boxes, b["label"], rec["id"])


def phrase_item(rec: Mapping[str, Any], rng: np.random.Generator, *, box_format: str = "norm") -> TaskItem | None:
    """A groundable report phrase and its boxes; ``None`` when the record has none."""
    phrases = [g for g in rec["grounding"] if g["groundable"] and g["box_ids"]]
    if not phrases:
        return None
    g = phrases[int(rng.integers(len(phrases)))]
    boxes = _ref_boxes(rec, g["box_ids"])
    phrase = g["phrase"]
    prompt = _pick(rng, PHRASE_PROMPTS).format(name=phrase)
    return TaskItem("grounding", "phrase", prompt, formats.format_boxes(boxes, box_format), boxes, phrase, rec["id"])


def grounding_item(rec: Mapping[str, Any], kind: str, rng: np.random.Generator, *, box_format: str = "norm",
                   negative_rate: float = 0.2, vocabulary: Sequence[str] = ()) -> TaskItem | None:
    """Dispatch to the builder of ``kind`` (one of :data:`GROUNDING_KINDS`)."""
    if kind == "abnormality":
        return abnormality_item(rec, rng, box_format=box_format, negative_rate=negative_rate, vocabulary=vocabulary)
    if kind == "abnormality_all":
        return abnormality_all_item(rec, rng, box_format=box_format)
    if kind == "anatomy":
        return anatomy_item(rec, rng, box_format=box_format)
    if kind == "phrase":
        return phrase_item(rec, rng, box_format=box_format)
    raise ValueError(f"unknown grounding kind {kind!r}; expected one of {GROUNDING_KINDS}")


def items_for_record(rec: Mapping[str, Any], rng: np.random.Generator, *, mix: Mapping[str, float],
                     box_format: str = "norm", negative_rate: float = 0.2,
                     vocabulary: Sequence[str] = ()) -> list[TaskItem]:
    """The items of one record under a task ``mix``.

    ``mix`` maps ``"report"`` and each grounding kind to an expected number of rows per record:
    the integer part is emitted for sure, the fraction with that probability.  A grounding kind
    the record cannot serve (e.g. no groundable phrase) falls back to ``abnormality`` so that the
    task balance stays close to the mix.
    """
    out: list[TaskItem] = []
    for name in ("report", *GROUNDING_KINDS):
        rate = float(mix.get(name, 0.0))
        n = int(rate) + int(rng.random() < rate - int(rate))
        for _ in range(n):
            if name == "report":
                item = report_item(rec, rng)
            else:
                item = grounding_item(rec, name, rng, box_format=box_format, negative_rate=negative_rate,
                                      vocabulary=vocabulary)
                if item is None and name != "abnormality":
                    item = grounding_item(rec, "abnormality", rng, box_format=box_format,
                                          negative_rate=negative_rate, vocabulary=vocabulary)
            if item is not None:
                out.append(item)
    return out


def thinking_text(text: str, thinking: bool) -> str:
    """``text`` in the thinking form (ending in :data:`THINK_TRIGGER`) or the plain one: the one
    rule every switch between the two uses.  ``thinking_text("Locate the mass.", True)`` ->
    ``"Locate the mass. Think step by step inside <think></think> tags, then answer."``."""
    return text.removesuffix(THINK_TRIGGER) + (THINK_TRIGGER if thinking else "")


def thinking_row(row: Mapping[str, Any], thinking: bool) -> dict[str, Any]:
    """A copy of a GRPO/eval row (``prompt``: ``[{"role", "content": [{"type", "text"}, ...]}]``)
    with every text part of its prompt in the thinking (or plain) form and ``thinking`` set."""
    msgs = []
    for msg in row["prompt"]:
        parts = msg["content"]
        if isinstance(parts, list):
            parts = [{**p, "text": thinking_text(p["text"], thinking)}
                     if p.get("type") == "text" and isinstance(p.get("text"), str) else p for p in parts]
        msgs.append({**msg, "content": parts})
    return {**row, "prompt": msgs, "thinking": bool(thinking)}


def prompt_text(item: TaskItem, thinking: bool) -> str:
    """The user text: the item's prompt, plus :data:`THINK_TRIGGER` when ``thinking``."""
    return thinking_text(item.prompt, thinking)


def user_message(text: str) -> dict[str, Any]:
    """``{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}``."""
    return {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    """PNG bytes of a PIL image or a 2-D uint8 array."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


_MESSAGE = datasets.List({
    "role": datasets.Value("string"),
    "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
})
SFT_FEATURES = datasets.Features({
    "messages": _MESSAGE,
    "images": datasets.List(datasets.Image()),
    "task": datasets.Value("string"),
    "grounding_kind": datasets.Value("string"),
    "id": datasets.Value("string"),
    "record_id": datasets.Value("string"),
})
GRPO_FEATURES = datasets.Features({
    "prompt": _MESSAGE,
    "image": datasets.Image(),
    "task": datasets.Value("string"),
    "grounding_kind": datasets.Value("string"),
    "reference_report": datasets.Value("string"),
    "reference_boxes": datasets.List(datasets.List(datasets.Value("float64"))),
    "box_format": datasets.Value("string"),
    "thinking": datasets.Value("bool"),
    "answer": datasets.Value("string"),
    "id": datasets.Value("string"),
    "record_id": datasets.Value("string"),
    "finding": datasets.Value("string"),
})
assert tuple(GRPO_FEATURES) == GRPO_COLUMNS


def _row_id(item: TaskItem, k: int) -> str:
    kind = item.grounding_kind or item.task
    return f"{item.record_id}:{kind}:{k}"


def sft_row(item: TaskItem, image_png: bytes, k: int = 0) -> dict[str, Any]:
    """One TRL conversational SFT row (images stored as PNG bytes inside Arrow)."""
    return {
        "messages": [
            user_message(prompt_text(item, False)),
            {"role": "assistant", "content": [{"type": "text", "text": item.answer}]},
        ],
        "images": [{"bytes": image_png, "path": None}],
        "task": item.task,
        "grounding_kind": item.grounding_kind,
        "id": _row_id(item, k),
        "record_id": item.record_id,
    }


def grpo_row(item: TaskItem, image_png: bytes, *, box_format: str, thinking: bool, k: int = 0) -> dict[str, Any]:
    """One GRPO / eval row with exactly :data:`GRPO_COLUMNS`."""
    return {
        "prompt": [user_message(prompt_text(item, thinking))],
        "image": {"bytes": image_png, "path": None},
        "task": item.task,
        "grounding_kind": item.grounding_kind,
        "reference_report": item.reference_report,
        "reference_boxes": [list(map(float, b)) for b in item.boxes],
        "box_format": box_format,
        "thinking": bool(thinking),
        "answer": item.answer,
        "id": _row_id(item, k),
        "record_id": item.record_id,
        "finding": item.finding,
    }


def rows_dataset(rows: list[dict[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """``Dataset.from_list`` that keeps every column when ``rows`` is empty (an empty split)."""
    if not rows:
        return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
    return datasets.Dataset.from_list(rows, features=features)


def sft_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows from :func:`sft_row` as an Arrow dataset with :data:`SFT_FEATURES`."""
    return rows_dataset(rows, SFT_FEATURES)


def grpo_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    """Rows from :func:`grpo_row` as an Arrow dataset with :data:`GRPO_FEATURES`."""
    return rows_dataset(rows, GRPO_FEATURES)


def with_thinking(ds: datasets.Dataset, thinking: bool = True) -> datasets.Dataset:
    """A GRPO/eval dataset with every prompt switched to (or from) the thinking form
    (:func:`thinking_row`); ``ds`` itself when every row is already in that form."""
    if "thinking" in ds.column_names and all(bool(t) == thinking for t in ds["thinking"]):
        return ds

    def fix(row: dict[str, Any]) -> dict[str, Any]:
        switched = thinking_row(row, thinking)
        return {"prompt": switched["prompt"], "thinking": switched["thinking"]}

    return ds.map(fix, features=ds.features)
