"""Box strings, box conversions and the think format."""

from __future__ import annotations

import math

import pytest

from radlab import formats as F


def test_format_and_parse_round_trip_norm() -> None:
    boxes = [[0.1234, 0.5, 0.9, 1.0], [0.0, 0.25, 0.333, 0.75]]
    text = F.format_boxes(boxes)
    assert text == "[0.12, 0.5, 0.9, 1.0] and [0.0, 0.25, 0.33, 0.75]"
    assert F.parse_boxes(f"The effusion is at {text}.") == [[0.12, 0.5, 0.9, 1.0], [0.0, 0.25, 0.33, 0.75]]


def test_format_joins_three_boxes_radvlm_style() -> None:
    b = [0.1, 0.1, 0.2, 0.2]
    assert F.format_boxes([b, b, b]) == "[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2] and [0.1, 0.1, 0.2, 0.2]"
    assert F.format_boxes([]) == ""


def test_qwen1000_round_trip() -> None:
    box = [0.123, 0.5, 0.9, 1.0]
    text = F.format_box(box, "qwen1000")
    assert text == "[123, 500, 900, 1000]"
    assert F.parse_boxes(text, "qwen1000") == [pytest.approx([0.123, 0.5, 0.9, 1.0])]
    assert F.norm_to_qwen1000(box) == [123, 500, 900, 1000]
    assert F.qwen1000_to_norm([123, 500, 900, 1000]) == pytest.approx(box)


def test_unknown_box_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown box format 'pixels'"):
        F.format_box([0, 0, 1, 1], "pixels")


@pytest.mark.parametrize(
    "text",
    ["", "no box here", "[0.1, 0.2, 0.3]", "[a, b, c, d]", None, 42, ["[0.1, 0.2, 0.3, 0.4]"], "[" * 10_000],
)
def test_parse_never_raises_and_finds_nothing(text: object) -> None:
    assert F.parse_boxes(text) == []


def test_parse_clips_orders_and_skips_non_finite() -> None:
    assert F.parse_boxes("[0.9, 0.8, 0.1, 1.7]") == [[0.1, 0.8, 0.9, 1.0]]
    assert F.parse_boxes("[-1, 0, 0.5, 0.5]") == [[0.0, 0.0, 0.5, 0.5]]
    assert F.parse_boxes("[1e999, 0, 0.5, 0.5] [0.1, 0.1, 0.2, 0.2]") == [[0.1, 0.1, 0.2, 0.2]]


def test_pixel_converters() -> None:
    assert F.pixel_xywh_to_norm([100, 200, 300, 400], 1000, 1000) == pytest.approx([0.1, 0.2, 0.4, 0.6])
    assert F.pixel_xyxy_to_norm([100, 200, 300, 400], 1000, 2000) == pytest.approx([0.1, 0.1, 0.3, 0.2])
    assert F.pixel_xywh_to_norm([900, 900, 300, 300], 1000, 1000) == pytest.approx([0.9, 0.9, 1.0, 1.0])


def test_is_valid_box() -> None:
    assert F.is_valid_box([0.1, 0.1, 0.2, 0.2])
    assert not F.is_valid_box([0.2, 0.1, 0.1, 0.2])
    assert not F.is_valid_box([0.1, 0.1, 0.2])
    assert not F.is_valid_box([0.1, 0.1, 0.2, math.nan])
    assert not F.is_valid_box([0.1, 0.1, 0.2, 1.2])


def test_iou() -> None:
    assert F.box_iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert F.box_iou([0, 0, 0.5, 1], [0.5, 0, 1, 1]) == 0.0
    assert F.box_iou([0, 0, 1, 1], [0, 0, 0.5, 1]) == pytest.approx(0.5)
    assert F.box_iou([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3]) == 0.0  # degenerate: no division by zero
    # The paper's Figure 1 pair.
    assert F.box_iou([0.35, 0.51, 0.75, 0.64], [0.38, 0.47, 0.76, 0.62]) == pytest.approx(0.596, abs=1e-3)


def test_split_think_uses_last_close_tag() -> None:
    s = F.split_think("<think>a</think> b </think> c")
    assert (s.answer, s.has_open, s.has_close) == ("c", True, True)
    assert F.split_think("plain answer") == F.ThinkSplit("", "plain answer", False, False)
    assert F.split_think("<think>unfinished") == F.ThinkSplit("", "<think>unfinished", True, False)
    assert F.split_think(None) == F.ThinkSplit("", "", False, False)


def test_answer_text_thinking_and_not() -> None:
    conv = [{"role": "assistant", "content": "<think>lungs clear</think>No acute process."}]
    assert F.answer_text(conv, thinking=True) == "No acute process."
    assert F.answer_text(conv, thinking=False) == "No acute process."
    assert F.answer_text("<think>no close tag", thinking=True) is None
    assert F.answer_text("<think>x</think>   ", thinking=True) is None
    assert F.answer_text("No acute process.", thinking=False) == "No acute process."


def test_completion_text_shapes() -> None:
    assert F.completion_text("x") == "x"
    assert F.completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]) == "ab"
    assert F.completion_text([{"role": "assistant", "content": None}]) == ""
    assert F.completion_text({"content": "x"}) == ""
    assert F.completion_text([]) == ""
