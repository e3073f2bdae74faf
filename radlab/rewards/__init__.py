"""TRL reward functions for report generation and visual grounding, plus a registry.

Every reward has TRL's signature ``fn(completions, **kwargs) -> list[float | None]`` and reads the
GRPO dataset columns (``task``, ``reference_report``, ``reference_boxes``, ``box_format``,
``thinking``; see ``docs/architecture.md``).  It returns ``None`` on rows of the other task (so
report and grounding rows can train in one run), never raises on model output (malformed -> the
reward's ``malformed`` value, 0.0 for all but ``radcliq_lite`` and ``length_guard``), scores thinking
rows on the text after the last ``</think>``, is picklable and carries a stable ``__name__`` (TRL
logs ``rewards/<__name__>/mean``).  Pipeline errors (a missing column, an unavailable scorer
backend) do raise.

=================  =========  ================  ==================================================
name               task       range             what
=================  =========  ================  ==================================================
``f1radgraph``     report     [0, 1]            F1-RadGraph (level simple/partial/complete)
``chexpert_f1``    report     [0, 1]            per-sample F1 over CheXpert-14 labels
``bleu``           report     [0, 1]            sentence BLEU-4 / 100
``rouge_l``        report     [0, 1]            ROUGE-L F (stemmed)
``radcliq_lite``   report     [-0.670, 0.575]   −RadCliQ-v1 with the offline components
``box_soft_f1``    grounding  [0, 1]            the paper's Hungarian soft-F1 (+ no-finding credit)
``box_iou``        grounding  [0, 1]            mean matched IoU over GT (+ no-finding credit)
``think_format``   both       [0, 1]            ``<think>…</think>answer`` format (thinking rows)
``length_guard``   report     [penalty, 0]      penalty for answers < min_ratio × reference length
=================  =========  ================  ==================================================

Use :func:`build_reward_funcs` to get ``(funcs, weights)`` for
``GRPOTrainer(reward_funcs=funcs, args=GRPOConfig(reward_weights=weights))``.

Options: a reward's constructor keywords with flat types (:func:`reward_options`), written in
params as ``name:key=value`` items (``f1radgraph:level=complete``, ``length_guard:min_ratio=0.7``).
A reward built with options is named (and logged by TRL) as its canonical item, e.g.
``rewards/f1radgraph:level=complete/mean``, so runs that differ only in options stay distinct.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from radlab.clinical.backends import BackendUnavailable
from radlab.rewards._base import TaskReward, WiringError
from radlab.rewards.grounding import NO_FINDING_MODES, BoxIoU, BoxSoftF1
from radlab.rewards.report import Bleu, CheXpertF1, F1RadGraph, LengthGuard, RadCliQLite, RougeL
from radlab.rewards.shaping import ThinkFormat
from radlab.vocab import flat_type, parse_item, type_name, type_ok, widen

RewardFunc = Callable[..., list[float | None]]

# name -> class; each class's defaults give the registry's instance, and its keyword arguments are
# the options build_reward_funcs accepts for that name.
FACTORIES: dict[str, type[TaskReward]] = {
    "f1radgraph": F1RadGraph,
    "chexpert_f1": CheXpertF1,
    "bleu": Bleu,
    "rouge_l": RougeL,
    "radcliq_lite": RadCliQLite,
    "box_soft_f1": BoxSoftF1,
    "box_iou": BoxIoU,
    "think_format": ThinkFormat,
    "length_guard": LengthGuard,
}

REWARDS: dict[str, RewardFunc] = {name: factory() for name, factory in FACTORIES.items()}

REPORT_REWARDS = ("f1radgraph", "chexpert_f1", "bleu", "rouge_l", "radcliq_lite", "length_guard")
GROUNDING_REWARDS = ("box_soft_f1", "box_iou")
# rewards scored on an annotation of the report; their ``backend`` option picks the annotator
ANNOTATED_REWARDS = ("f1radgraph", "chexpert_f1", "radcliq_lite")


def reward_options(name: str) -> dict[str, Any]:
    """``{option: default}`` of reward ``name``: its constructor's keywords with flat literal types
    (:func:`radlab.vocab.flat_type`: ``str``, ``int``, ``float``, ``bool``, optionally ``None``), the
    ones params can set.

    ``reward_options("f1radgraph")`` -> ``{"level": "partial", "backend": "rules", "max_chars": 2048,
    "name": "f1radgraph"}``.  Raises ``KeyError`` for an unknown reward.
    """
    if name not in FACTORIES:
        raise KeyError(f"unknown reward {name!r}; available: {sorted(FACTORIES)}")
    return {k: default for k, (_, default) in _option_types(FACTORIES[name]).items()}


def _option_types(cls: type) -> dict[str, tuple[Any, Any]]:
    """``{option: (flat type, default)}`` of a reward class's constructor keywords."""
    hints = typing.get_type_hints(cls.__init__)
    out: dict[str, tuple[Any, Any]] = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is p.empty:
            continue
        flat = flat_type(hints.get(p.name, type(p.default)))
        if flat is not None and not flat[1]:  # a scalar (or None) as it is: no list or JSON options
            out[p.name] = (flat[0], p.default)
    return out


def check_reward_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked against reward ``name``'s constructor (names and types,
    :func:`radlab.vocab.type_ok`; ints widen to floats); raises ``ValueError`` naming the reward
    and the bad option, or ``KeyError``."""
    if name not in FACTORIES:
        raise KeyError(f"unknown reward {name!r}; available: {sorted(FACTORIES)}")
    types_ = _option_types(FACTORIES[name])
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in types_:
            raise ValueError(f"reward {name!r} has no option {key!r}; its options: {sorted(types_)}")
        tp, _ = types_[key]
        if not type_ok(value, tp):
            raise ValueError(f"reward {name!r}: option {key!r} must be {type_name(tp)}, got {type(value).__name__} {value!r}")
        out[key] = widen(value, tp)
    return out


def reward_item(name: str, options: Mapping[str, Any]) -> str:
    """The canonical item text of a reward with options: ``f1radgraph:level=complete`` (keys sorted;
    ``name`` left out, it renames the reward instead)."""
    parts = [name] + [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                      for k, v in sorted(options.items()) if k != "name"]
    return ":".join(parts)


def build_reward_funcs(
    names: Sequence[str], weights: Sequence[float] | None = None, **options: Mapping[str, Any]
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and weights for TRL's ``GRPOTrainer``.

    ``names`` are registry keys (:data:`REWARDS`) or items with options,
    ``"f1radgraph:level=complete"`` (:func:`radlab.vocab.parse_item`); ``weights`` default to 1.0
    each.  ``options`` maps a registry key to constructor keywords every item of it gets (an item's
    own options win), e.g. ``build_reward_funcs(["f1radgraph", "length_guard", "box_soft_f1"],
    [1.0, 0.5, 1.0], f1radgraph={"backend": "rules"})``.  A reward whose item has options is a fresh
    instance named by its canonical item (:func:`reward_item`) unless the item gives ``name``;
    ``options`` alone keep the registry key as the name.
    Raises ``KeyError`` for an unknown name and ``ValueError`` for a bad option, duplicate metric
    names, options for a name not in ``names``, or weights of the wrong length / non-finite.
    """
    items = [parse_item(n) for n in names]
    names = [n for n, _ in items]
    unknown = [n for n in names if n not in FACTORIES]
    if unknown:
        raise KeyError(f"unknown reward(s) {unknown}; available: {sorted(FACTORIES)}")
    stray = [k for k in options if k not in names]
    if stray:
        raise ValueError(f"options given for reward(s) not in names: {stray}")
    if weights is None:
        weights = [1.0] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ValueError(f"{len(weights)} weights for {len(names)} rewards")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"reward weights must be finite, got {weights}")
    funcs: list[RewardFunc] = []
    for name, item_opts in items:
        item_opts = check_reward_options(name, item_opts)
        opts = {**check_reward_options(name, options.get(name) or {}), **item_opts}
        if item_opts and "name" not in item_opts:
            opts["name"] = reward_item(name, item_opts)
        funcs.append(FACTORIES[name](**opts) if opts else REWARDS[name])
    metric_names = [f.__name__ for f in funcs]
    dupes = sorted({m for m in metric_names if metric_names.count(m) > 1})
    if dupes:
        raise ValueError(f"duplicate reward metric names {dupes}; give one a distinct name= option")
    return funcs, weights


__all__ = [
    "REWARDS",
    "FACTORIES",
    "REPORT_REWARDS",
    "GROUNDING_REWARDS",
    "ANNOTATED_REWARDS",
    "NO_FINDING_MODES",
    "build_reward_funcs",
    "reward_options",
    "check_reward_options",
    "reward_item",
    "BackendUnavailable",
    "WiringError",
    "TaskReward",
    "F1RadGraph",
    "CheXpertF1",
    "Bleu",
    "RougeL",
    "RadCliQLite",
    "BoxSoftF1",
    "BoxIoU",
    "ThinkFormat",
    "LengthGuard",
]
