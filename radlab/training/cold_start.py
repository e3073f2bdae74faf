"""The cold-start stage (notebook ``02_cold_start``): verified ``<think>`` traces, then a short SFT.

Steps, one call each in the notebook::

    info = setup_runtime(params)
    traces = build_traces(params, run_dir)             # candidate rows with a trace each
    kept, table = verify_traces(params, run_dir, traces)
    model, processor, path = load_cold_start_model(params, run_dir)
    result = train_cold_start(params, run_dir, model, processor, kept)
    gens = sample_generations(params, run_dir, result.model, processor, thinking_heldout(params))

Trace sources (``trace_source``):

* ``phantom``: a systematic reading written from the record's ground truth (technique, devices,
  lungs, pleura, heart and mediastinum, bones; for grounding rows also the target), with seeded
  phrasing variation, then the gold answer.
* ``teacher_api``: an OpenAI-compatible chat server (e.g. vLLM serving a large Qwen3-VL); the key
  is read from the environment variable named by ``teacher_api_key_env``, never from files.
* ``teacher_local``: a local Hugging Face model through ``radlab.models.load_model_and_processor``.

Teachers get :data:`READING_GUIDE` (our own systematic-reading guide), the question and the
reference answer, and must end with the answer after ``</think>``.

**Verification** (the official code has none): a trace is kept only if its final answer (the text
after the last ``</think>``) matches the ground truth: F1-RadGraph (partial) >= threshold for
reports, box soft-F1 >= threshold for grounding (``radlab.rewards``' scorers).  Kept and dropped
counts go to ``verification.csv``; every trace with its score to ``traces.parquet``.

Rows are in the data stage's SFT message format with the thinking trigger
(``radlab.data.tasks.THINK_TRIGGER``) appended to the user text, so GRPO with ``thinking=True``
asks exactly what cold start taught.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radlab import runs
from radlab.data.build import load_data_split
from radlab.formats import THINK_CLOSE, THINK_OPEN, parse_boxes
from radlab.generation import generate
from radlab.params import ColdStartParams
from radlab.training.common import (
    TrainResult,
    begin_run,
    filter_tasks,
    is_main_process,
    message_text,
    prepare_model,
    subsample,
)
from radlab.training.sft import train_sft_rows
from radlab.vocab import ParamError, split_list

READING_GUIDE = """\
How to read a frontal chest radiograph, step by step (radlab's guide).

1. Technique. Name the projection (PA, AP, portable) and judge the study: is the patient rotated
   (spinous processes midway between the clavicle heads), is inspiration adequate (about nine to ten
   posterior ribs above the diaphragm), is the exposure adequate (spine just visible behind the heart)?
   A poor study limits what can be excluded; say so.
2. Support devices. Find every line and tube and where its tip lies: an endotracheal tube tip 3-6 cm
   above the carina, an enteric tube passing below the diaphragm into the stomach, a central venous
   catheter tip in the lower superior vena cava or at the cavoatrial junction, pacemaker leads, chest
   drains. A malpositioned device is a finding in itself.
3. Lungs. Compare the two sides zone by zone (upper, mid, lower). Look for airspace opacity
   (consolidation, air bronchograms), volume loss (atelectasis: displaced fissures, raised
   hemidiaphragm), interstitial or perihilar haze and vascular congestion (edema), and round lesions
   (a nodule is under 3 cm, a mass 3 cm or more). Say on which side and in which zone.
4. Pleura. Trace the pleural margins: a meniscus or blunted costophrenic angle means effusion (small,
   moderate, large by how high it climbs); a visible visceral pleural line with no lung markings beyond
   it means pneumothorax, most often apical on an upright film.
5. Heart and mediastinum. Estimate the cardiothoracic ratio (above about 0.5 on a PA film is
   enlarged), check the mediastinal width and contour, the trachea position and the hila.
6. Bones and soft tissues. Ribs, clavicles, spine and shoulders for fractures or lytic lesions;
   the soft tissues and the area under the diaphragm for free air.
Then answer the question. Hedge ("possible", "cannot be excluded") only when the image is truly
equivocal. For localisation, give boxes as [x0, y0, x1, y1] in the requested format, where x runs to
the image right (the patient's left) and y runs down.
"""

TEACHER_INSTRUCTIONS = """\
You are an expert chest radiologist teaching a student model to read chest X-rays systematically.
Use the guide below. Look at the image and the question. You are also given the reference answer;
write the reasoning that a careful radiologist would follow to reach it from the image, without
mentioning that a reference was provided. Write the reasoning inside <think> and </think>, following
the guide's steps in order, concisely (one or two sentences per step). After </think>, write only the
final answer, in the same style and box format as the reference answer.

{guide}
Question: {question}
Reference answer: {answer}
"""

DEVICES = ("endotracheal tube", "enteric tube", "central venous catheter")
LUNG_FINDINGS = ("consolidation", "lung opacity", "nodule", "mass", "atelectasis", "pulmonary edema")
PLEURAL_FINDINGS = ("pleural effusion", "pneumothorax")
HEART_FINDINGS = ("cardiomegaly",)

# Phrasing variants per step (chosen by a seeded generator per row).  Section labels stay fixed so
# the reading always has the same systematic order.
_TECHNIQUE = ("{view} view, adequate inspiration and exposure.", "{view} projection; the study is adequate.",
              "{view} film, no significant rotation.")
_NO_DEVICES = ("none.", "no lines or tubes.", "no support devices seen.")
_CLEAR_LUNGS = ("clear, no focal opacity.", "both lungs are clear.", "no consolidation, nodule or edema.")
_NO_PLEURAL = ("no effusion or pneumothorax.", "costophrenic angles sharp, no pneumothorax.",
               "no pleural abnormality.")
_NORMAL_HEART = ("heart size normal, mediastinum not widened.", "normal cardiomediastinal silhouette.",
                 "cardiothoracic ratio normal.")
_BONES = ("intact.", "no acute osseous abnormality.", "unremarkable.")
_HEDGE = ("possible ", "probable ", "questionable ")
_TARGET = ("Target: {what}.", "Asked about: {what}.", "Looking for: {what}.")


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _describe(f: Mapping[str, Any], rng: np.random.Generator) -> str:
    """``"small possible right pneumothorax (right upper lobe)"``-style phrase of one finding."""
    hedge = _pick(rng, _HEDGE) if f.get("certainty") == "uncertain" else ""
    side = f.get("laterality") or ""
    side = "" if side == "none" else side
    region = (f.get("region") or "").strip()
    if region in ("upper", "mid", "lower"):  # a bare zone: name it as one
        region = f"{region} zone" + ("s" if side == "bilateral" else "")
    if region and side and region.startswith(side):
        side = ""  # "left lower lobe" already says the side
    sev = f.get("severity") or ""
    where = f"in the {region}" if region else ""
    return " ".join(w for w in (hedge.strip(), sev, side, f["name"], where) if w)


def _section(findings: list[Mapping[str, Any]], names: Sequence[str], normal: str, rng: np.random.Generator) -> str:
    hits = [_describe(f, rng) for f in findings if f["name"] in names]
    return "; ".join(hits) + "." if hits else normal


def _target(record: Mapping[str, Any], prompt: str) -> str | None:
    """What a grounding prompt asks about, matched against the record's names and phrases."""
    text = prompt.lower()
    candidates = [f["name"] for f in record.get("findings", [])]
    candidates += [b["label"] for b in record.get("boxes", [])]
    candidates += [g["phrase"] for g in record.get("grounding", [])]
    hits = [c for c in candidates if c and c.lower() in text]
    if not hits:
        return None
    name = max(hits, key=len)
    for f in record.get("findings", []):
        if f["name"] == name:
            return _describe(f, np.random.default_rng(0)) or name
    return name


FINDING_NAMES = DEVICES + LUNG_FINDINGS + PLEURAL_FINDINGS + HEART_FINDINGS
# Reading section of a grounding target, by the first keyword it contains (finding names first).
_SECTION_KEYWORDS: tuple[tuple[str, str], ...] = (
    *((name, "Devices") for name in DEVICES + ("tube", "catheter", "line")),
    *((name, "Pleura") for name in PLEURAL_FINDINGS + ("effusion", "costophrenic", "hemidiaphragm")),
    *((name, "Heart and mediastinum") for name in HEART_FINDINGS + ("heart", "cardiac", "mediastin", "aortic", "trachea")),
    *((name, "Lungs") for name in LUNG_FINDINGS + ("opacit", "edema", "lung", "lobe", "lingula", "zone", "hilar", "apical")),
    *((name, "Bones") for name in ("spine", "clavicle", "rib")),
)


def _section_of(text: str) -> str | None:
    """``"small right pneumothorax in the right upper lobe" -> "Pleura"``; ``None`` if nothing matches.

    Keywords match at a word start ("rib" in "ribs", not in "describe")."""
    return next((section for word, section in _SECTION_KEYWORDS if _mentions(text, word)), None)


def _mentions(text: str, word: str) -> bool:
    """``word`` occurs in ``text`` at a word start, case-insensitively."""
    return re.search(r"\b" + re.escape(word), text, re.IGNORECASE) is not None


GROUNDING_TRACES = ("focused", "brief")
# The brief grounding trace names nothing: the box after it is conditioned on the prompt as without
# thinking, instead of on a target the model has to copy into its trace first.
BRIEF_GROUNDING = "Locating the region the question asks about on the image."


def phantom_reading(record: Mapping[str, Any], prompt: str, task: str, rng: np.random.Generator,
                    grounding: str = "focused") -> str:
    """A reading of ``record`` written from its ground truth (no answer).

    Report rows get the systematic reading, ``Technique / Devices / Lungs / Pleura / Heart and
    mediastinum / Bones`` in that order, one line each::

        Technique: PA view, adequate inspiration and exposure.
        Devices: endotracheal tube.
        Lungs: moderate bilateral pulmonary edema.
        Pleura: small possible right pneumothorax in the right upper lobe.
        Heart and mediastinum: heart size normal, mediastinum not widened.
        Bones: intact.

    Grounding rows get a focused reading: the target first, then the section that holds it (the
    lungs, pleura and heart lines when no section does)::

        Target: left costophrenic angle.
        Pleura: costophrenic angles sharp, no pneumothorax.

    The target comes first because a small model copies it from the adjacent prompt but not across a
    full reading; with the target last, the demo's 2-layer cold start named some other finding there
    and answered about it (anatomy mAP@0.5 0.04, 30% of answers past the token budget).

    ``grounding="brief"`` writes one fixed line for grounding rows instead (:data:`BRIEF_GROUNDING`).
    """
    if task == "grounding" and grounding == "brief":
        return BRIEF_GROUNDING
    findings = list(record.get("findings", []))
    view = record.get("view") or "Frontal"
    devices = [f["name"] for f in findings if f["name"] in DEVICES]
    sections = {
        "Technique": _pick(rng, _TECHNIQUE).format(view=view),
        "Devices": "; ".join(devices) + "." if devices else _pick(rng, _NO_DEVICES),
        "Lungs": _section(findings, LUNG_FINDINGS, _pick(rng, _CLEAR_LUNGS), rng),
        "Pleura": _section(findings, PLEURAL_FINDINGS, _pick(rng, _NO_PLEURAL), rng),
        "Heart and mediastinum": _section(findings, HEART_FINDINGS, _pick(rng, _NORMAL_HEART), rng),
        "Bones": _pick(rng, _BONES),
    }
    if task != "grounding":
        return "\n".join(f"{k}: {v}" for k, v in sections.items())
    # An absent finding the prompt asks about ("Find any lung opacity") is still the target.
    what = _target(record, prompt) or next((n for n in FINDING_NAMES if _mentions(prompt, n)), None)
    where = _section_of(what or prompt)
    keys = [where] if where else ["Lungs", "Pleura", "Heart and mediastinum"]
    lines = [_pick(rng, _TARGET).format(what=what)] if what else []
    return "\n".join(lines + [f"{k}: {sections[k]}" for k in keys])


def format_trace(reading: str, answer: str) -> str:
    """``<think>\\n{reading}\\n</think>\\n{answer}`` (the answer after the last ``</think>``)."""
    return f"{THINK_OPEN}\n{reading.strip()}\n{THINK_CLOSE}\n{answer.strip()}"


# --------------------------------------------------------------------------------------------
# candidates
# --------------------------------------------------------------------------------------------


def _records_by_id(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    dd = load_data_split(data_dir, "records")
    out: dict[str, dict[str, Any]] = {}
    for split in dd.values():
        for rec in split:
            out[rec["id"]] = rec
    return out


def _box_format(data_dir: str | os.PathLike[str]) -> str:
    """The data build's box convention (read from its eval rows; ``norm`` if none)."""
    ev = load_data_split(data_dir, "eval")["test"]
    return ev[0]["box_format"] if len(ev) and "box_format" in ev.column_names else "norm"


def candidates(params: ColdStartParams) -> pd.DataFrame:
    """SFT training rows to trace: ``id, record_id, task, prompt, answer, image`` (one per row)."""
    sft = filter_tasks(load_data_split(params.data_dir, "sft")["train"], split_list(params.tasks))
    sft = subsample(sft, params.max_traces, params.seed)
    rows = []
    for r in sft:
        user = next(m for m in r["messages"] if m["role"] == "user")
        answer = message_text(next(m for m in reversed(r["messages"]) if m["role"] == "assistant"))
        rows.append({"id": r["id"], "record_id": r.get("record_id", ""), "task": r["task"],
                     "grounding_kind": r.get("grounding_kind", ""), "prompt": message_text(user),
                     "answer": answer, "image": r["images"][0]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# teachers
# --------------------------------------------------------------------------------------------


def teacher_prompt(question: str, answer: str) -> str:
    """The teacher's user text: instructions + :data:`READING_GUIDE` + question + reference."""
    return TEACHER_INSTRUCTIONS.format(guide=READING_GUIDE, question=question, answer=answer)


def _data_url(image: Any) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def api_trace(params: ColdStartParams, question: str, answer: str, image: Any) -> str:
    """One trace from an OpenAI-compatible ``/chat/completions`` endpoint (raises on HTTP errors)."""
    key = os.environ.get(params.teacher_api_key_env, "")
    body = {
        "model": params.teacher_model,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": _data_url(image)}},
            {"type": "text", "text": teacher_prompt(question, answer)},
        ]}],
        "max_tokens": params.teacher_max_tokens,
        "temperature": params.teacher_temperature,
    }
    req = urllib.request.Request(
        params.teacher_base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
    )
    with urllib.request.urlopen(req, timeout=params.teacher_timeout) as resp:
        payload = json.loads(resp.read().decode("utf-8"))
    return str(payload["choices"][0]["message"]["content"] or "")


def teacher_traces_api(params: ColdStartParams, cands: pd.DataFrame) -> list[str]:
    """Traces for every candidate from the server, ``teacher_concurrency`` requests at a time.

    A failed request yields ``""`` (dropped by verification) and is counted in ``error``.
    """
    def one(i: int) -> str:
        row = cands.iloc[i]
        for attempt in range(3):
            try:
                return api_trace(params, row["prompt"], row["answer"], row["image"])
            except (urllib.error.URLError, TimeoutError, KeyError, ValueError) as exc:
                if attempt == 2:
                    print(f"teacher request for {row['id']} failed: {exc}")
                    return ""
                time.sleep(1.0 * 2**attempt)
        return ""

    with cf.ThreadPoolExecutor(max_workers=params.teacher_concurrency) as pool:
        return list(pool.map(one, range(len(cands))))


def teacher_traces_local(params: ColdStartParams, cands: pd.DataFrame) -> list[str]:
    """Traces from a local HF teacher (sampled at ``teacher_temperature``)."""
    from radlab.models import load_model_and_processor

    model, processor = load_model_and_processor(params.teacher_model, dtype="bfloat16" if params.bf16 else None,
                                                trust_remote_code=params.trust_remote_code)
    prompts = [[{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                  "text": teacher_prompt(q, a)}]}]
               for q, a in zip(cands["prompt"], cands["answer"])]
    gens = generate(model, processor, prompts, list(cands["image"]), max_new_tokens=params.teacher_max_tokens,
                    batch_size=4, do_sample=params.teacher_temperature > 0,
                    temperature=params.teacher_temperature or 1.0, seed=params.seed)
    return [g.text for g in gens]


def build_traces(params: ColdStartParams, run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One trace per candidate row: ``id, record_id, task, grounding_kind, prompt, answer, trace, image``.

    When ``run_dir`` holds this very run, finished, the traces come from its ``traces.parquet``
    (a teacher is not asked again).
    """
    from radlab.config import StageRun
    from radlab.data.tasks import thinking_text

    cands = candidates(params)
    saved = Path(run_dir) / "traces.parquet"
    if StageRun.of(params, run_dir).reusable and saved.exists():
        frame = pd.read_parquet(saved, columns=["id", "trace"])
        by_id = dict(zip(frame["id"], frame["trace"]))
        print(f"{run_dir} holds this finished run: its traces come from {saved.name} (set force=True to write them again)")
        traces = [by_id.get(i, "") for i in cands["id"]]
    elif params.trace_source == "phantom":
        records = _records_by_id(params.data_dir)
        traces = []
        for i, row in cands.iterrows():
            rng = np.random.default_rng([params.seed, int(i)])
            rec = records.get(row["record_id"], {})
            reading = phantom_reading(rec, row["prompt"], row["task"], rng, grounding=params.grounding_trace)
            traces.append(format_trace(reading, row["answer"]))
    elif params.trace_source == "teacher_api":
        traces = teacher_traces_api(params, cands)
    else:
        traces = teacher_traces_local(params, cands)
    cands["trace"] = traces
    cands["prompt"] = [thinking_text(p, True) for p in cands["prompt"]]
    return cands


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------


def verify_traces(params: ColdStartParams, run_dir: str | os.PathLike[str], traces: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """Keep traces whose final answer matches the ground truth; returns ``(kept rows, counts)``.

    Scores come from ``radlab.rewards``' ``f1radgraph`` (partial) on reports and ``box_soft_f1`` on
    grounding, applied to the trace as a thinking completion (answer = text after the last
    ``</think>``; missing ``</think>`` scores 0).  Writes ``traces.parquet`` (every trace, its score
    and ``kept``) and ``verification.csv`` (``task, candidates, kept, dropped, keep_rate,
    mean_score``).  Kept rows are a ``datasets.Dataset`` of TRL conversational SFT rows.
    """
    import datasets

    from radlab.rewards import build_reward_funcs

    fmt = _box_format(params.data_dir)
    (report_fn, box_fn), _ = build_reward_funcs(["f1radgraph", "box_soft_f1"], f1radgraph={"level": "partial"})
    n = len(traces)
    cols = {
        "completions": [[{"role": "assistant", "content": t}] for t in traces["trace"]],
        "task": list(traces["task"]),
        "reference_report": [a if t == "report" else "" for a, t in zip(traces["answer"], traces["task"])],
        "reference_boxes": [parse_boxes(a, fmt) if t == "grounding" else [] for a, t in zip(traces["answer"], traces["task"])],
        "box_format": [fmt] * n,
        "thinking": [True] * n,
    }
    rep, box = report_fn(**cols), box_fn(**cols)
    scores = [r if t == "report" else b for r, b, t in zip(rep, box, traces["task"])]
    scores = [0.0 if s is None else float(s) for s in scores]
    thresholds = {"report": params.verify_threshold_report, "grounding": params.verify_threshold_grounding}
    traces = traces.assign(score=scores, kept=[s >= thresholds[t] for s, t in zip(scores, traces["task"])])
    table = []
    for task, sub in traces.groupby("task"):
        table.append({"task": task, "candidates": len(sub), "kept": int(sub["kept"].sum()),
                      "dropped": int((~sub["kept"]).sum()), "keep_rate": float(sub["kept"].mean()),
                      "mean_score": float(sub["score"].mean()), "threshold": thresholds[task]})
    counts = pd.DataFrame(table, columns=["task", "candidates", "kept", "dropped", "keep_rate", "mean_score", "threshold"])
    # The traces are the run's first results: the run begins here (nothing is written when
    # run_dir holds this very run, finished).
    if begin_run(params, run_dir) and is_main_process():
        runs.write_table(traces.drop(columns=["image"]), Path(run_dir) / "traces.parquet")
        runs.write_table(counts, Path(run_dir) / "verification.csv")
    kept = traces[traces["kept"]]
    rows = [{
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": p}]},
            {"role": "assistant", "content": [{"type": "text", "text": t}]},
        ],
        "images": [img], "task": task, "id": rid,
    } for p, t, img, task, rid in zip(kept["prompt"], kept["trace"], kept["image"], kept["task"], kept["id"])]
    if not rows:
        raise ParamError(
            f"no trace passed verification ({n} candidates; thresholds {thresholds}); "
            "lower verify_threshold_* or check the teacher's outputs in traces.parquet")
    return datasets.Dataset.from_list(rows), counts


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def load_cold_start_model(params: ColdStartParams, run_dir: str | os.PathLike[str]) -> tuple[Any, Any, str]:
    """The SFT model (``init_model``), full or LoRA."""
    return prepare_model(params, run_dir, name_or_path=params.init_model)


def train_cold_start(params: ColdStartParams, run_dir: str | os.PathLike[str], model: Any, processor: Any,
                     kept: Any) -> TrainResult:
    """A short SFT on the verified traces (TRL ``SFTTrainer``, assistant-only loss)."""
    return train_sft_rows(params, run_dir, model, processor, kept.shuffle(seed=params.seed))


def thinking_heldout(params: ColdStartParams) -> Any:
    """Held-out rows (``eval/test``) with thinking prompts, as conversational rows for the table."""
    import datasets

    from radlab.data.tasks import with_thinking

    ev = filter_tasks(load_data_split(params.data_dir, "eval")["test"], split_list(params.tasks))
    ev = with_thinking(ev, True)

    def to_messages(row: dict[str, Any]) -> dict[str, Any]:
        answer = {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]}
        return {"messages": list(row["prompt"]) + [answer], "images": [row["image"]]}

    rows = ev.map(to_messages, remove_columns=[c for c in ev.column_names if c not in ("task", "id")])
    return datasets.DatasetDict({"validation": rows})


def run_cold_start(params: ColdStartParams, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The whole notebook in one call (CLI / ``accelerate launch``); returns the DONE summary."""
    from radlab.training.common import setup_runtime
    from radlab.training.sft import sample_generations

    setup_runtime(params)
    traces = build_traces(params, run_dir)
    kept, counts = verify_traces(params, run_dir, traces)
    model, processor, _ = load_cold_start_model(params, run_dir)
    result = train_cold_start(params, run_dir, model, processor, kept)
    if is_main_process():
        sample_generations(params, run_dir, result.model, processor, thinking_heldout(params))
    return cold_start_summary(result, counts)


def cold_start_summary(result: TrainResult, verification: pd.DataFrame) -> dict[str, Any]:
    """The cold-start run's ``DONE`` summary (notebook and CLI alike): the trainer's plus the traces
    kept and dropped by :func:`verify_traces` (its per-task ``kept`` / ``dropped`` counts)."""
    return {**result.summary(), "traces_kept": int(verification["kept"].sum()),
            "traces_dropped": int(verification["dropped"].sum())}
