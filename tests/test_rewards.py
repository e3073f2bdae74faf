"""Hand-written cases for every reward in radlab.rewards (TRL signature, task gating, edge cases)."""

from __future__ import annotations

import math
import os
import pickle
import sys
import textwrap

import pytest

import radlab.rewards as R
from radlab.clinical.backends import BackendUnavailable, annotate
from radlab.metrics.report import _radgraph_compute_reward
from radlab.rewards import REWARDS, build_reward_funcs
from radlab.vocab import ParamError

REF = "Heart size is normal. There is a small left pleural effusion. No pneumothorax."
PARTIAL = "Heart size is normal. No pleural effusion. No pneumothorax."
WRONG = "Large right pneumothorax."
FIG1_GT = [0.38, 0.47, 0.76, 0.62]
FIG1_PRED = "[0.35, 0.51, 0.75, 0.64]"


def report_kwargs(n: int, ref: str = REF, thinking: bool | list[bool] = False) -> dict:
    th = thinking if isinstance(thinking, list) else [thinking] * n
    return {
        "task": ["report"] * n,
        "reference_report": [ref] * n,
        "reference_boxes": [[] for _ in range(n)],
        "box_format": ["norm"] * n,
        "thinking": th,
    }


def grounding_kwargs(gts: list[list[list[float]]], fmt: str = "norm", thinking: bool = False) -> dict:
    n = len(gts)
    return {
        "task": ["grounding"] * n,
        "reference_report": [""] * n,
        "reference_boxes": gts,
        "box_format": [fmt] * n,
        "thinking": [thinking] * n,
    }


# ------------------------------------------------------------------ registry and plumbing


def test_registry_names_and_pickle_round_trip():
    assert set(REWARDS) == {
        "f1radgraph", "chexpert_f1", "bleu", "rouge_l", "radcliq_lite",
        "box_soft_f1", "box_iou", "think_format", "length_guard",
    }
    for name, fn in REWARDS.items():
        assert fn.__name__ == name
        clone = pickle.loads(pickle.dumps(fn))
        assert clone.__name__ == name
        assert type(clone) is type(fn)
        assert vars(clone) == vars(fn)


def test_pickled_reward_scores_like_the_original():
    fn = R.F1RadGraph(level="complete")
    clone = pickle.loads(pickle.dumps(fn))
    kw = report_kwargs(2)
    assert clone([REF, PARTIAL], **kw) == fn([REF, PARTIAL], **kw)


def test_build_reward_funcs_weights_and_options():
    funcs, weights = build_reward_funcs(["f1radgraph", "box_soft_f1"], None)
    assert weights == [1.0, 1.0]
    assert funcs[0] is REWARDS["f1radgraph"]
    funcs, weights = build_reward_funcs(
        ["f1radgraph", "length_guard", "box_soft_f1"], [1, 0.5, 2], f1radgraph={"level": "complete"}
    )
    assert weights == [1.0, 0.5, 2.0]
    assert funcs[0].level == "complete" and funcs[0].__name__ == "f1radgraph"
    assert funcs[0] is not REWARDS["f1radgraph"]
    assert [f.__name__ for f in funcs] == ["f1radgraph", "length_guard", "box_soft_f1"]


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda: build_reward_funcs(["nope"], None), KeyError),
        (lambda: build_reward_funcs(["bleu"], [1.0, 2.0]), ValueError),
        (lambda: build_reward_funcs(["bleu"], [float("nan")]), ValueError),
        (lambda: build_reward_funcs(["bleu"], None, rouge_l={"max_chars": 10}), ValueError),
        (lambda: build_reward_funcs(["bleu", "bleu"], None), ValueError),
        (lambda: build_reward_funcs(["f1radgraph"], None, f1radgraph={"level": "wrong"}), ValueError),
        (lambda: build_reward_funcs(["box_iou"], None, box_iou={"no_finding": "maybe"}), ValueError),
    ],
)
def test_build_reward_funcs_rejects_bad_config(call, exc):
    with pytest.raises(exc):
        call()


def test_distinct_names_allow_two_levels():
    # the same family twice needs distinct metric names: pass name=
    funcs, _ = build_reward_funcs(["f1radgraph", "bleu"], None, f1radgraph={"level": "simple", "name": "rg_simple"})
    assert funcs[0].__name__ == "rg_simple"


def test_missing_column_is_a_wiring_error():
    with pytest.raises(R.WiringError):
        REWARDS["bleu"](["x"], task=["report"])
    with pytest.raises(R.WiringError):
        REWARDS["bleu"](["x", "y"], task=["report", "report"], reference_report=[REF])


def test_trl_extra_kwargs_are_ignored():
    kw = report_kwargs(1)
    out = REWARDS["rouge_l"](
        [REF], prompts=[[{"role": "user", "content": "x"}]], completion_ids=[[1, 2]], trainer_state=object(),
        log_extra=lambda *a: None, image=[object()], id=["a"], **kw,
    )
    assert out == [1.0]


# ------------------------------------------------------------------ report rewards (real annotator)


@pytest.mark.parametrize("name", ["f1radgraph", "chexpert_f1", "bleu", "rouge_l"])
def test_report_reward_right_wrong_empty(name):
    fn = REWARDS[name]
    out = fn([REF, WRONG, "", "   "], **report_kwargs(4))
    assert out[0] == pytest.approx(1.0)
    assert out[1] < 0.5
    assert out[2] == 0.0 and out[3] == 0.0


@pytest.mark.parametrize("level", ["simple", "partial", "complete"])
def test_f1radgraph_levels_order_and_partial_credit(level):
    fn = R.F1RadGraph(level=level)
    right, partial, wrong = fn([REF, PARTIAL, WRONG], **report_kwargs(3))
    assert right == pytest.approx(1.0)
    assert 0.0 < partial < 1.0
    assert wrong < partial


def test_f1radgraph_uses_radgraph_compute_reward():
    # radlab loads radgraph/rewards.py from its file (importing the radgraph package costs ~5 s of torch)
    compute_reward = _radgraph_compute_reward()
    assert compute_reward.__code__.co_filename.endswith(os.path.join("radgraph", "rewards.py"))
    hyp, ref = annotate([PARTIAL, REF])
    expected = compute_reward(hyp, ref, "all")
    got = [R.F1RadGraph(level=lv)([PARTIAL], **report_kwargs(1))[0] for lv in ("simple", "partial", "complete")]
    assert got == pytest.approx(list(expected))


def test_report_rewards_none_on_grounding_rows():
    kw = report_kwargs(2)
    kw["task"] = ["report", "grounding"]
    for name in ("f1radgraph", "chexpert_f1", "bleu", "rouge_l", "radcliq_lite", "length_guard"):
        out = REWARDS[name]([REF, "[0.1, 0.1, 0.2, 0.2]"], **kw)
        assert out[1] is None and out[0] is not None, name


def test_report_thinking_rows_use_text_after_last_think():
    comps = [
        f"<think>wrong: {WRONG}</think>{REF}",
        f"<think>a</think>{WRONG}</think>{REF}",  # last </think> wins
        f"<think>{REF}",  # no closing tag: 0
        f"<think>{REF}</think>",  # nothing after it: 0
        [{"role": "assistant", "content": f"<think>x</think> {REF}"}],
    ]
    out = REWARDS["rouge_l"](comps, **report_kwargs(5, thinking=True))
    assert out == [pytest.approx(1.0), pytest.approx(1.0), 0.0, 0.0, pytest.approx(1.0)]


def test_non_thinking_row_with_stray_think_block_scores_its_answer():
    out = REWARDS["bleu"]([f"<think>hmm</think>{REF}"], **report_kwargs(1, thinking=False))
    assert out == [pytest.approx(1.0)]


def test_conversational_completions():
    comps = [[{"role": "assistant", "content": REF}], [{"role": "assistant", "content": [{"type": "text", "text": REF}]}]]
    assert REWARDS["rouge_l"](comps, **report_kwargs(2)) == [pytest.approx(1.0)] * 2


def test_chexpert_f1_reward():
    fn = REWARDS["chexpert_f1"]
    ref = "Large right pleural effusion. Mild cardiomegaly."
    out = fn([ref, "Large right pleural effusion.", "No pleural effusion. Heart size is normal."], **report_kwargs(3, ref=ref))
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(2 / 3)  # effusion found, cardiomegaly missed
    assert out[2] < out[1]


def test_radcliq_lite_range_order_and_malformed():
    fn = REWARDS["radcliq_lite"]
    lo, hi = fn.value_range
    out = fn([REF, PARTIAL, WRONG, "", None], **report_kwargs(5))
    assert out[0] == pytest.approx(hi, abs=1e-9)
    assert out[0] > out[1] > out[2] >= lo
    assert out[3] == pytest.approx(lo) and out[4] == pytest.approx(lo)
    assert (lo, hi) == pytest.approx((-0.6698, 0.5754), abs=1e-3)


def test_radcliq_full_mode_needs_models_and_hook_is_used():
    with pytest.raises(BackendUnavailable, match="BERTScore"):
        R.RadCliQLite(full=True)
    # the documented hook: component scorers supplied by the caller (here perfect agreement)
    fn = R.RadCliQLite(full=True, bertscore_fn=_ones, semb_fn=_ones)
    perfect = fn([REF], **report_kwargs(1))[0]
    lite = REWARDS["radcliq_lite"]([REF], **report_kwargs(1))[0]
    assert perfect > lite  # bertscore and semb at 1.0 are above their means
    assert perfect <= fn.value_range[1] + 1e-12
    pickle.loads(pickle.dumps(fn))


def _ones(preds, refs):
    return [1.0] * len(preds)


def test_length_guard():
    fn = REWARDS["length_guard"]
    ref = "x" * 100
    out = fn(["y" * 100, "y" * 50, "y" * 25, "", None], **report_kwargs(5, ref=ref))
    assert out[:3] == [0.0, 0.0, pytest.approx(-0.5)]
    assert out[3] == -1.0 and out[4] == -1.0
    long_guard = R.LengthGuard(max_ratio=2.0)
    assert long_guard(["y" * 300, "y" * 500], **report_kwargs(2, ref=ref)) == [pytest.approx(-0.5), -1.0]
    assert fn(["abc"], **report_kwargs(1, ref=""))[0] == 0.0
    thinking = fn(["<think>long thoughts</think>" + "y" * 100, "<think>" + "y" * 100], **report_kwargs(2, ref=ref, thinking=True))
    assert thinking == [0.0, -1.0]


def test_rules_backend_is_default_and_radgraph_xl_without_python_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("RADLAB_RADGRAPH_PYTHON", raising=False)
    with pytest.raises(BackendUnavailable, match="RADLAB_RADGRAPH_PYTHON"):
        R.F1RadGraph(backend="radgraph-xl")
    with pytest.raises(ValueError):
        R.F1RadGraph(backend="bogus")


FAKE_RADGRAPH = textwrap.dedent(
    """
    import os
    CACHE_DIR = os.environ.get("FAKE_RADGRAPH_CACHE", "/nonexistent")
    class RadGraph:
        def __init__(self, model_type=None, model_cache_dir=None, cuda=None, **kw):
            print("Using device: cpu")  # radgraph prints to stdout; must not corrupt the protocol
            assert model_type == "radgraph-xl" and os.environ["HF_HUB_OFFLINE"] == "1"
        def __call__(self, texts):
            out = {}
            for i, t in enumerate(texts):
                ents = {str(k + 1): {"tokens": w, "label": "Observation::definitely present", "start_ix": k,
                                     "end_ix": k, "relations": []} for k, w in enumerate(t.lower().split())}
                out[str(i)] = {"text": t, "entities": ents}
            return out
    """
)


def _fake_radgraph(tmp_path, monkeypatch, with_weights: bool):
    pkg = tmp_path / "fake" / "radgraph"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from radgraph.radgraph import RadGraph\n")
    (pkg / "radgraph.py").write_text(FAKE_RADGRAPH)
    cache = tmp_path / "cache"
    if with_weights:
        (cache / "radgraph-xl").mkdir(parents=True)
        (cache / "radgraph-xl" / "weights.th").write_text("x")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    monkeypatch.setenv("RADLAB_RADGRAPH_PYTHON", sys.executable)
    monkeypatch.setenv("RADLAB_RADGRAPH_CACHE", str(cache))


def test_radgraph_xl_backend_out_of_process(tmp_path, monkeypatch):
    """The subprocess protocol, with a stand-in radgraph package (no weights exist offline)."""
    _fake_radgraph(tmp_path, monkeypatch, with_weights=True)
    fn = R.F1RadGraph(backend="radgraph-xl", level="simple")
    out = fn(["heart normal effusion", "nothing here", ""], **report_kwargs(3, ref="Heart normal"))
    assert out[0] == pytest.approx(0.8)  # {heart, normal} of 3 hyp tokens vs 2 ref tokens
    assert out[1] == 0.0 and out[2] == 0.0
    assert pickle.loads(pickle.dumps(fn)).backend == "radgraph-xl"


def test_radgraph_xl_backend_without_weights_never_downloads(tmp_path, monkeypatch):
    _fake_radgraph(tmp_path, monkeypatch, with_weights=False)
    fn = R.F1RadGraph(backend="radgraph-xl")
    with pytest.raises(BackendUnavailable, match="weights not found"):
        fn(["Heart normal."], **report_kwargs(1))
    assert not os.path.exists(tmp_path / "cache" / "radgraph-xl")


# ------------------------------------------------------------------ grounding rewards


def test_box_soft_f1_figure1_case():
    """Figure 1 of the paper shows 0.6 for this pair; the official code (and radlab) give 0.747."""
    fn = REWARDS["box_soft_f1"]
    out = fn([FIG1_PRED, "[0.84, 0.34, 0.91, 0.50]"], **grounding_kwargs([[FIG1_GT], [FIG1_GT]]))
    iou = 0.0407 / 0.0683
    assert out[0] == pytest.approx(2 * iou / (1 + iou), abs=1e-3)
    assert out[0] == pytest.approx(0.747, abs=1e-3)
    assert out[1] == 0.0


def test_box_soft_f1_counts_false_positives_and_misses():
    fn = REWARDS["box_soft_f1"]
    a, b = [0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]
    out = fn(
        [
            "[0.1, 0.1, 0.3, 0.3] and [0.6, 0.6, 0.9, 0.9]",  # both exact
            "[0.1, 0.1, 0.3, 0.3]",  # one of two: R = 0.5, P = 1
            "[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9] and [0.0, 0.9, 0.05, 1.0]",  # + one FP: P = 2/3
        ],
        **grounding_kwargs([[a, b]] * 3),
    )
    assert out == [pytest.approx(1.0), pytest.approx(2 / 3), pytest.approx(0.8)]


@pytest.mark.parametrize("name", ["box_soft_f1", "box_iou"])
def test_grounding_no_finding_credit(name):
    fn = REWARDS[name]
    kw = grounding_kwargs([[], [], [], [FIG1_GT]])
    out = fn(["No abnormality is seen.", "[0.1, 0.1, 0.2, 0.2]", "", "no finding"], **kw)
    assert out == [1.0, 0.0, 0.0, 0.0]
    official = R.FACTORIES[name](no_finding="official")
    assert official(["No abnormality is seen."], **grounding_kwargs([[]])) == [0.0]
    phrase = R.FACTORIES[name](no_finding="phrase")
    assert phrase(["No abnormality is seen.", "The lungs."], **grounding_kwargs([[], []])) == [1.0, 0.0]


def test_box_iou_reward():
    fn = REWARDS["box_iou"]
    out = fn(
        [FIG1_PRED, f"[0.0, 0.0, 0.1, 0.1] and {FIG1_PRED}", "no box", "[nan, 0.1, 0.2, 0.3]"],
        **grounding_kwargs([[FIG1_GT]] * 4),
    )
    assert out[0] == pytest.approx(0.596, abs=1e-3)
    assert out[1] == pytest.approx(out[0])  # best one-to-one match, extra box not penalised
    assert out[2] == 0.0 and out[3] == 0.0


def test_grounding_qwen1000_format_and_thinking():
    fn = REWARDS["box_soft_f1"]
    gt = [[0.1, 0.2, 0.3, 0.4]]
    assert fn(["[100, 200, 300, 400]"], **grounding_kwargs([gt], fmt="qwen1000")) == [pytest.approx(1.0)]
    comps = ["<think>[0.5, 0.5, 0.6, 0.6]</think>[0.1, 0.2, 0.3, 0.4]", "<think>[0.1, 0.2, 0.3, 0.4]"]
    assert fn(comps, **grounding_kwargs([gt, gt], thinking=True)) == [pytest.approx(1.0), 0.0]


def test_grounding_rewards_none_on_report_rows():
    kw = grounding_kwargs([[FIG1_GT], []])
    kw["task"] = ["grounding", "report"]
    for name in ("box_soft_f1", "box_iou"):
        out = REWARDS[name]([FIG1_PRED, REF], **kw)
        assert out[0] is not None and out[1] is None


def test_mixed_batch_report_and_grounding_in_one_call():
    comps = [REF, FIG1_PRED]
    kw = {
        "task": ["report", "grounding"],
        "reference_report": [REF, ""],
        "reference_boxes": [[], [FIG1_GT]],
        "box_format": ["norm", "norm"],
        "thinking": [False, False],
    }
    funcs, _ = build_reward_funcs(["f1radgraph", "box_soft_f1"], None)
    rg, box = (f(comps, **kw) for f in funcs)
    assert rg[0] == pytest.approx(1.0) and rg[1] is None
    assert box[0] is None and box[1] == pytest.approx(0.747, abs=1e-3)


# ------------------------------------------------------------------ think format


def test_think_format():
    fn = REWARDS["think_format"]
    comps = [
        "<think>reason</think>The answer.",
        "  <think>reason</think> [0.1, 0.2, 0.3, 0.4]",
        "<think>reason</think>",  # no answer
        "<think></think>answer",  # empty reasoning
        "reason</think>answer",  # no opening tag
        "<think>reason",  # never closed
        "plain answer",
        [{"role": "assistant", "content": "<think>r</think>a"}],
    ]
    out = fn(comps, thinking=[True] * len(comps), task=["report"] * len(comps))
    assert out == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    relaxed = R.ThinkFormat(require_open=False)
    assert relaxed(["reason</think>answer"], thinking=[True]) == [1.0]
    # non-thinking rows: None (whatever the task)
    assert fn(["<think>r</think>a", "a"], thinking=[False, False], task=["report", "grounding"]) == [None, None]


def test_all_rewards_finite_on_a_realistic_batch():
    comps = [REF, PARTIAL, WRONG, "", FIG1_PRED, "no", "[1, 2, 3]", None]
    kw = {
        "task": ["report"] * 4 + ["grounding"] * 4,
        "reference_report": [REF] * 4 + [""] * 4,
        "reference_boxes": [[]] * 4 + [[FIG1_GT], [], [FIG1_GT], [FIG1_GT]],
        "box_format": ["norm"] * 8,
        "thinking": [False] * 8,
    }
    for name, fn in REWARDS.items():
        out = fn(comps, **kw)
        assert len(out) == len(comps)
        lo, hi = fn.value_range
        for v in out:
            assert v is None or (math.isfinite(v) and lo <= v <= hi), (name, out)


# ----------------------------------------------------------------------------------------------
# reward options in params: name:key=value items
# ----------------------------------------------------------------------------------------------


def test_reward_options_are_the_flat_constructor_keywords():
    from radlab.rewards import FACTORIES, reward_options

    assert reward_options("f1radgraph") == {"level": "partial", "backend": "rules", "max_chars": 2048, "name": "f1radgraph"}
    assert reward_options("length_guard") == {"min_ratio": 0.5, "penalty": -1.0, "max_ratio": None, "name": "length_guard"}
    # callables (RadCliQ's full-metric hooks) cannot come from a params file
    assert "bertscore_fn" not in reward_options("radcliq_lite")
    assert all("name" in reward_options(n) for n in FACTORIES)


def test_items_with_options_build_distinct_named_rewards():
    funcs, weights = build_reward_funcs(
        ["f1radgraph", "f1radgraph:level=complete", "length_guard:min_ratio=1:penalty=-0.5", "box_soft_f1"],
        [1, 1, 0.5, 1], f1radgraph={"backend": "rules"})
    assert [f.__name__ for f in funcs] == [
        "f1radgraph", "f1radgraph:level=complete", "length_guard:min_ratio=1.0:penalty=-0.5", "box_soft_f1"]
    assert funcs[0].level == "partial" and funcs[1].level == "complete" and funcs[1].backend == "rules"
    assert funcs[2].min_ratio == 1.0 and funcs[2].penalty == -0.5
    assert funcs[3] is REWARDS["box_soft_f1"]
    assert pickle.loads(pickle.dumps(funcs[1])).__name__ == "f1radgraph:level=complete"
    # an item's own name option names the metric
    (fn,), _ = build_reward_funcs(["f1radgraph:level=complete:name=rgf1c"])
    assert fn.__name__ == "rgf1c"


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("bleu:levl=1", r"reward 'bleu' has no option 'levl'; its options: \['max_chars', 'name'\]"),
        ("length_guard:min_ratio=high", r"reward 'length_guard': option 'min_ratio' must be float, got str 'high'"),
        ("box_iou:no_finding=true", r"reward 'box_iou': option 'no_finding' must be str, got bool True"),
        ("think_format:min_think_chars=2.5", r"option 'min_think_chars' must be int, got float"),
        ("radcliq_lite:bertscore_fn=x", r"reward 'radcliq_lite' has no option 'bertscore_fn'"),
    ],
)
def test_bad_reward_options_name_the_option_and_reward(item, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_reward_funcs([item])


@pytest.mark.parametrize(
    ("names", "pattern"),
    [
        ("bleu,f1radgraph:levl=complete", r"grpo.yaml: parameter 'reward_names': reward 'f1radgraph' has no option 'levl'"),
        ("f1radgraph:level=full", r"parameter 'reward_names': reward 'f1radgraph': unknown F1-RadGraph level 'full'"),
        ("bleux,box_iou", r"parameter 'reward_names': unknown reward 'bleux'; available: \["),
        ("bleu:level", r"parameter 'reward_names': item 'bleu:level': expected 'name' or 'name:key=value"),
    ],
)
def test_grpo_params_check_reward_options(names, pattern):
    from radlab import config

    with pytest.raises(ParamError, match=pattern):
        config.validate("grpo", {"reward_names": names}, source="grpo.yaml", check_inputs=True)


def test_grpo_params_keep_canonical_items():
    from radlab import config

    p = config.validate("grpo", {"reward_names": "bleu, f1radgraph:level=complete ,box_soft_f1:no_finding=phrase",
                                 "reward_weights": "1,2,1"}, check_inputs=False)
    assert p.reward_names == ["bleu", "f1radgraph:level=complete", "box_soft_f1:no_finding=phrase"]
    assert p.reward_weights == [1.0, 2.0, 1.0]


def test_readme_and_notebook_help_list_every_reward_option():
    import dataclasses
    from pathlib import Path

    from radlab.params import GRPOParams
    from radlab.rewards import FACTORIES, reward_options

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| reward | task |"):]
    table = table[:table.index("\n\n")]
    help_text = {f.name: f for f in dataclasses.fields(GRPOParams)}["reward_names"].metadata["help"]
    for name in FACTORIES:
        row = next((line for line in table.splitlines() if line.startswith(f"| `{name}` ")), None)
        assert row is not None, f"README reward table lacks {name}"
        assert name in help_text
        for option in reward_options(name):
            assert f"`{option}`" in row or option == "name", (name, option)
            assert option in help_text, (name, option)
