"""Answer formats shared by the task builders, the rewards and the metrics.

One module owns every text convention so that training data, rewards and evaluation
cannot drift apart:

* **Boxes.** Canonical boxes are normalised ``[x0, y0, x1, y1]`` floats in ``[0, 1]`` on the
  stored image (x to the image right = patient left, y down).  Two text conventions exist:

  - ``"norm"`` (the paper's / RadVLM's): ``[0.12, 0.34, 0.56, 0.78]``, 2 decimals;
  - ``"qwen1000"`` (Qwen3-VL's native grid): ``[120, 340, 560, 780]``, integers in 0..1000.

  Several boxes are joined as ``[a], [b] and [c]`` (RadVLM's convention).

* **Thinking.** ``<think> ... </think>answer``.  The answer is the text after the *last*
  ``</think>`` (the paper's report rewards and ``--r1`` evaluation; its grounding reward used
  the first, a defect we do not copy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

BOX_FORMATS = ("norm", "qwen1000")
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

Box = list[float]

# A bracketed group of exactly four numbers; signs, decimals and exponents allowed so that a
# malformed-but-numeric answer is parsed (and then clipped) rather than silently ignored.
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(
    r"\[\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*\]"
)


def _check_format(fmt: str) -> None:
    if fmt not in BOX_FORMATS:
        raise ValueError(f"unknown box format {fmt!r}; expected one of {BOX_FORMATS}")


def clip_box(box: Sequence[float]) -> Box:
    """Clip a normalised box to [0, 1] and order its corners. ``[4] -> [4]``."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(v))) for v in box)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def is_valid_box(box: Sequence[float]) -> bool:
    """True for a finite normalised box inside [0,1] with x0 < x1 and y0 < y1."""
    if len(box) != 4:
        return False
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return False
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return False
    return 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0


def format_box(box: Sequence[float], fmt: str = "norm") -> str:
    """Render one normalised box. ``[0.1234, 0.5, 0.9, 1.0] -> "[0.12, 0.5, 0.9, 1.0]"``.

    ``norm`` keeps two decimals written as Python would print the rounded float (``0.5`` not
    ``0.50``), which is what RadVLM's answers look like; ``qwen1000`` writes integers.
    """
    _check_format(fmt)
    if fmt == "norm":
        return "[" + ", ".join(f"{round(float(v), 2)}" for v in box) + "]"
    return "[" + ", ".join(str(int(round(float(v) * 1000))) for v in box) + "]"


def format_boxes(boxes: Sequence[Sequence[float]], fmt: str = "norm") -> str:
    """Join boxes as ``[a]``, ``[a] and [b]`` or ``[a], [b] and [c]``; ``""`` when empty."""
    parts = [format_box(b, fmt) for b in boxes]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def parse_boxes(text: object, fmt: str = "norm") -> list[Box]:
    """Every ``[x0, y0, x1, y1]`` group in ``text`` as clipped normalised boxes.

    Never raises on model output: non-strings and non-finite groups yield ``[]`` / are
    skipped.  ``qwen1000`` coordinates are divided by 1000.  Degenerate boxes (zero width or
    height after clipping) are kept, because they are what the model said; rewards score them 0.
    """
    _check_format(fmt)
    if not isinstance(text, str) or "[" not in text:
        return []
    scale = 1000.0 if fmt == "qwen1000" else 1.0
    out: list[Box] = []
    for m in _BOX_RE.finditer(text[:100_000]):
        try:
            vals = [float(g) / scale for g in m.groups()]
        except (ValueError, OverflowError):
            continue
        if not all(math.isfinite(v) for v in vals):
            continue
        out.append(clip_box(vals))
    return out


def norm_to_qwen1000(box: Sequence[float]) -> list[int]:
    """``[0.1, 0.2, 0.3, 0.4] -> [100, 200, 300, 400]``."""
    return [int(round(float(v) * 1000)) for v in box]


def qwen1000_to_norm(box: Sequence[float]) -> Box:
    """``[100, 200, 300, 400] -> [0.1, 0.2, 0.3, 0.4]``."""
    return [float(v) / 1000.0 for v in box]


def pixel_xywh_to_norm(xywh: Sequence[float], width: float, height: float, *, clip: bool = True) -> Box:
    """Pixel ``[x, y, w, h]`` (NIH, RSNA, MS-CXR, COCO) to normalised xyxy.

    ``clip=False`` keeps out-of-range values, so a loader can judge how far off a box is before
    clipping it.
    """
    x, y, w, h = (float(v) for v in xywh)
    box = [x / width, y / height, (x + w) / width, (y + h) / height]
    return clip_box(box) if clip else box


def pixel_xyxy_to_norm(xyxy: Sequence[float], width: float, height: float, *, clip: bool = True) -> Box:
    """Pixel ``[x0, y0, x1, y1]`` (VinDr, ImaGenome ``original_*``) to normalised xyxy (see ``clip``)."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    box = [x0 / width, y0 / height, x1 / width, y1 / height]
    return clip_box(box) if clip else box


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes; 0 when the union is empty (no division by zero)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass(frozen=True)
class ThinkSplit:
    """A completion split at its last ``</think>``.

    ``answer`` is the text after the last ``</think>`` (stripped); without a closing tag it is
    the whole text for non-thinking use, and ``has_close`` is False so a thinking-mode caller
    can treat it as a format failure.
    """

    think: str
    answer: str
    has_open: bool
    has_close: bool


def split_think(text: object) -> ThinkSplit:
    """``"<think>a</think> b" -> ThinkSplit(think="a", answer="b", True, True)``."""
    if not isinstance(text, str):
        return ThinkSplit("", "", False, False)
    idx = text.rfind(THINK_CLOSE)
    if idx < 0:
        return ThinkSplit("", text.strip(), THINK_OPEN in text, False)
    head, answer = text[:idx], text[idx + len(THINK_CLOSE):]
    start = head.find(THINK_OPEN)
    think = head[start + len(THINK_OPEN):] if start >= 0 else head
    return ThinkSplit(think.strip(), answer.strip(), start >= 0, True)


def completion_text(completion: object) -> str:
    """Text of a TRL completion: a str, or a conversational ``[{"role", "content"}]`` list.

    Content may itself be a list of ``{"type": "text", "text": ...}`` parts.  Anything else
    becomes ``""`` so that rewards never raise on odd shapes.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        msg = completion[-1]
        if isinstance(msg, dict):
            content = msg.get("content", "")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(
                    p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text", ""), str)
                )
    return ""


def answer_text(completion: object, thinking: bool = False) -> str | None:
    """The scoreable answer of a completion, or ``None`` when a thinking answer is missing.

    Non-thinking: the whole text.  Thinking: the text after the last ``</think>``; ``None``
    when there is no ``</think>`` or nothing after it (rewards score that 0).
    """
    text = completion_text(completion)
    if not thinking:
        # A non-thinking model that emits a think block anyway is scored on its answer part.
        return split_think(text).answer if THINK_CLOSE in text else text.strip()
    parts = split_think(text)
    if not parts.has_close or not parts.answer:
        return None
    return parts.answer
