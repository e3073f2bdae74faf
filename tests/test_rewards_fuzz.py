"""Fuzz: every registered reward on 10,000 random and malformed completions.

No exception, one value per completion, ``None`` exactly on rows the reward does not apply to,
and every other value finite and inside the reward's documented ``value_range``.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radlab.rewards import REWARDS

N_FUZZ = 10_000
BATCH = 500  # completions per call, like one large GRPO step

REFS = [
    "Heart size is normal. There is a small left pleural effusion. No pneumothorax.",
    "Moderate cardiomegaly. Mild pulmonary edema. Bibasilar atelectasis. Right PICC tip in the SVC.",
    "No acute cardiopulmonary process.",
    "",
]
ODD_NUMBERS = ["nan", "inf", "-inf", "1e999", "-1e999", "NaN", "1e-999", "-0.0", "99999999999999999999", "0.5e", "--1", "."]


def _rand_text(rng: random.Random, max_len: int) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyz .,;:[]()<>/",
        "0123456789.,-+eE[] ",
        "".join(chr(c) for c in range(0x20, 0x7F)),
        "\u00e9\u00fc\u4e2d\u6587\U0001f600\u200b\ufeff\u0000\n\t\r\u202e",
    ]
    pool = rng.choice(pools)
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, max_len)))


def _rand_box_text(rng: random.Random) -> str:
    def num() -> str:
        r = rng.random()
        if r < 0.3:
            return rng.choice(ODD_NUMBERS)
        if r < 0.6:
            return f"{rng.uniform(-2, 2):.2f}"
        return str(rng.randint(-100, 2000))

    boxes = [f"[{', '.join(num() for _ in range(rng.choice([3, 4, 4, 4, 5])))}]" for _ in range(rng.randint(0, 6))]
    sep = rng.choice([", ", " and ", "", "]["])
    return rng.choice(["", "The box is ", "<think>[0.1, 0.2, 0.3, 0.4]</think>"]) + sep.join(boxes)


def _rand_completion(rng: random.Random) -> object:
    kind = rng.randrange(16)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([{}, {"role": "assistant"}, {"content": "x"}, 3, 2.5, float("nan"), b"bytes", object()])
    if kind == 2:
        return [[["nested"]], [1, [2, [3]]]][rng.randrange(2)]
    if kind == 3:  # conversational with odd content
        content = rng.choice(
            [None, 5, "", [{"type": "text", "text": None}], [{"type": "text", "text": "<think>a</think>b"}], [1, "x"],
             {"text": "x"}, _rand_box_text(rng)]
        )
        return rng.choice([[{"role": "assistant", "content": content}], [], [None], [{"role": "user"}], ["str"]])
    if kind == 4:  # huge
        return rng.choice(["x" * 200_000, "[0.1, 0.2, 0.3, 0.4] " * 8_000, "<think>" * 20_000, "a " * 150_000])
    if kind in (5, 6, 7):
        return _rand_box_text(rng)
    if kind in (8, 9):  # realistic-ish report variants
        ref = rng.choice(REFS[:3])
        words = ref.split()
        rng.shuffle(words)
        return " ".join(words[: rng.randint(0, len(words))])
    if kind == 10:  # think tag soup
        parts = ["<think>", "</think>", "<think/>", "</ think>", _rand_text(rng, 30), rng.choice(REFS)]
        return "".join(rng.choice(parts) for _ in range(rng.randint(0, 6)))
    return _rand_text(rng, rng.choice([10, 60, 200]))


def _rand_gt(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.3:
        return []
    if r < 0.85:
        out = []
        for _ in range(rng.randint(1, 3)):
            x0, y0 = rng.random(), rng.random()
            out.append([x0, y0, min(1.0, x0 + rng.random()), min(1.0, y0 + rng.random())])
        return out
    # junk a broken pipeline might hand over; the rewards must still not raise
    return rng.choice([None, [[float("nan"), 0, 1, 1]], [[0.1, 0.2, 0.3]], [["a", "b", "c", "d"]], [[0.5, 0.5, 0.5, 0.5]],
                       [[1e999, 0, 1, 1]]])


def _batch(rng: random.Random, n: int) -> tuple[list[object], dict]:
    comps = [_rand_completion(rng) for _ in range(n)]
    task = [rng.choice(["report", "grounding", "grounding", "other", ""]) for _ in range(n)]
    kw = {
        "task": task,
        "reference_report": [rng.choice(REFS) if t == "report" else "" for t in task],
        "reference_boxes": [_rand_gt(rng) if t == "grounding" else [] for t in task],
        "box_format": [rng.choice(["norm", "norm", "qwen1000", "bogus", None]) for _ in range(n)],
        "thinking": [rng.choice([True, False, None, 0, 1, "true"]) for _ in range(n)],
    }
    return comps, kw


def _check(name: str, out: list, comps: list, kw: dict) -> None:
    fn = REWARDS[name]
    lo, hi = fn.value_range
    assert isinstance(out, list) and len(out) == len(comps), name
    for i, v in enumerate(out):
        task = kw["task"][i]
        if fn.task is not None and task != fn.task:
            assert v is None, (name, i, task, v)
        if v is not None:
            assert isinstance(v, float) and math.isfinite(v) and lo <= v <= hi, (name, i, repr(comps[i])[:200], v)


def test_fuzz_every_reward_10k_completions():
    rng = random.Random(20251210)
    seen = 0
    for _ in range(N_FUZZ // BATCH):
        comps, kw = _batch(rng, BATCH)
        for name, fn in REWARDS.items():
            _check(name, fn(comps, **kw), comps, kw)
        seen += len(comps)
    assert seen == N_FUZZ


odd_scalars = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=80), st.binary(max_size=8)
)
odd_objects = st.recursive(
    odd_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["role", "content", "text", "type"]), children, max_size=3),
    ),
    max_leaves=12,
)
box_texts = st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(str), st.sampled_from(ODD_NUMBERS), st.text(max_size=4)),
    min_size=0,
    max_size=9,
).map(lambda xs: "[" + ", ".join(xs) + "]")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    comps=st.lists(st.one_of(odd_objects, box_texts), min_size=1, max_size=6),
    thinking=st.booleans(),
    task=st.sampled_from(["report", "grounding"]),
)
def test_hypothesis_odd_objects(comps, thinking, task):
    n = len(comps)
    kw = {
        "task": [task] * n,
        "reference_report": [REFS[0]] * n,
        "reference_boxes": [[[0.1, 0.2, 0.3, 0.4]]] * n,
        "box_format": ["norm"] * n,
        "thinking": [thinking] * n,
    }
    for name, fn in REWARDS.items():
        _check(name, fn(comps, **kw), comps, kw)


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_empty_batch(name):
    assert REWARDS[name]([], task=[], reference_report=[], reference_boxes=[], box_format=[], thinking=[]) == []
