"""radlab's shared vocabulary: the names every layer speaks, and how a flat parameter value is read.

This module is the bottom of the house: it imports nothing from radlab, and everything may import
it (``pyproject.toml``'s ``[tool.importlinter]`` contracts check that).  One home each for:

* :class:`ParamError`, the error of every bad parameter (unknown, mistyped, malformed, missing input);
* the stage table (:data:`STAGE_TABLE`: stage -> notebook, whether it trains a model) and its views
  :data:`STAGES`, :data:`NOTEBOOKS`, :data:`TRAINING_STAGES`;
* the task names :data:`TASKS` and :data:`GROUNDING_KINDS`;
* comma-separated lists (:func:`split_list`) and items with options (:func:`parse_item`,
  :func:`parse_items`: ``"f1radgraph:level=complete"`` -> ``("f1radgraph", {"level": "complete"})``);
* the type check of flat values (:func:`type_ok`, :func:`type_name`, :func:`flat_type`), used by
  :func:`radlab.config.validate` for params and by :func:`radlab.rewards.check_reward_options` for
  reward options.
"""

from __future__ import annotations

import enum
import functools
import operator
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml


class ParamError(ValueError):
    """A parameter is unknown, mistyped, or points at a missing input. Names the key/path."""


# --------------------------------------------------------------------------------------------
# stages and tasks
# --------------------------------------------------------------------------------------------

# The stage table, in the pipeline's natural order: stage, its notebook (notebooks/<name>.ipynb),
# whether its runs write a model (<run>/model/).
STAGE_TABLE: tuple[tuple[str, str, bool], ...] = (
    ("data", "00_data", False),
    ("sft", "01_sft", True),
    ("cold_start", "02_cold_start", True),
    ("grpo", "03_grpo", True),
    ("analysis", "04_analysis", False),
)
STAGES: tuple[str, ...] = tuple(stage for stage, _, _ in STAGE_TABLE)
NOTEBOOKS: dict[str, str] = {stage: notebook for stage, notebook, _ in STAGE_TABLE}
TRAINING_STAGES: tuple[str, ...] = tuple(stage for stage, _, trains in STAGE_TABLE if trains)

# The two tasks every dataset row, reward and score belongs to, and the four kinds of grounding rows.
TASKS = ("report", "grounding")
GROUNDING_KINDS = ("abnormality", "abnormality_all", "anatomy", "phrase")


# --------------------------------------------------------------------------------------------
# lists and items
# --------------------------------------------------------------------------------------------


def split_list(value: str | Sequence[Any] | None) -> list[str]:
    """``"a, b,c"`` or ``["a", "b"]`` -> ``["a", "b", "c"]`` (blank items dropped; ``None`` -> ``[]``)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


_OPTION_SEP = re.compile(r":(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)")


def parse_item(text: str) -> tuple[str, dict[str, Any]]:
    """``"f1radgraph:level=complete:x=0.5"`` -> ``("f1radgraph", {"level": "complete", "x": 0.5})``.

    One item of a comma-separated list (reward names, data sources): a name, then ``:key=value``
    options.  Values are YAML scalars (``0.5`` float, ``true`` bool, ``complete`` str); a colon
    not followed by ``key=`` belongs to the value (``root=C:/data``, ``url=http://host:8000``).
    Raises :class:`ParamError` naming the item when it is malformed.
    """
    item = str(text).strip()
    name, *options = _OPTION_SEP.split(item)
    name = name.strip()
    if not name or "=" in name or ":" in name:
        raise ParamError(f"item {item!r}: expected 'name' or 'name:key=value:key2=value2'")
    out: dict[str, Any] = {}
    for option in options:
        key, _, raw = option.partition("=")
        key, raw = key.strip(), raw.strip()
        if not raw:
            raise ParamError(f"item {item!r}: option {key!r} has no value (write {key}=VALUE)")
        if key in out:
            raise ParamError(f"item {item!r}: option {key!r} given twice")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamError(f"item {item!r}: option {key!r}: {raw!r} is not a YAML scalar") from exc
        if isinstance(value, (dict, list)):
            raise ParamError(f"item {item!r}: option {key!r}: {raw!r} must be a scalar, not a {type(value).__name__}")
        out[key] = value
    return name, out


def parse_items(text: str | Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``"a,b:k=v,c"`` (or ``["a", "b:k=v"]``) -> ``[("a", {}), ("b", {"k": "v"}), ("c", {})]``.

    Blank items are dropped; option values cannot hold commas (the item separator).
    """
    return [parse_item(p) for p in split_list(text)]


# --------------------------------------------------------------------------------------------
# flat types
# --------------------------------------------------------------------------------------------

SCALARS = (bool, int, float, str)


def type_ok(value: Any, tp: Any) -> bool:
    """Whether ``value`` (as YAML or papermill gives it) is of the flat type ``tp``.

    ``bool`` is no ``int``; an ``int`` is a ``float`` (``3`` for ``3.0``); unions, ``None``,
    ``list[...]``/``tuple[...]`` of such and ``dict`` are understood.
    ``type_ok(3, float)`` -> True, ``type_ok(True, int)`` -> False, ``type_ok("a", str | None)`` -> True.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def type_name(tp: Any) -> str:
    """``float`` -> ``"float"``, ``float | None`` -> ``"float | None"`` (for error messages)."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def widen(value: Any, tp: Any) -> Any:
    """``value`` as ``tp`` holds it: an ``int`` given for a ``float``-only type becomes a ``float``."""
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def flat_type(tp: Any) -> tuple[Any, str] | None:
    """A type as the flat literal a parameter carries, and how to convert it back.

    ``(tp, "")``: as is (enums become their ``str`` values, ``Literal`` its values' types);
    ``"list"``: a ``list[...]``-only type, written as comma-separated text; ``"json"``: a dict
    type, written as JSON text (``'{"min_new_tokens": 4}'``).  ``None`` when it cannot be flat.
    ``flat_type(int | None)`` -> ``(int | None, "")``; ``flat_type(list[str])`` -> ``(str, "list")``.
    """
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    flat: list[Any] = []
    kind, optional = "", False
    for m in members:
        origin = typing.get_origin(m)
        if m is type(None):
            optional = True
        elif m in SCALARS:
            flat.append(m)
        elif isinstance(m, type) and issubclass(m, enum.Enum):
            flat.append(str)
        elif origin is typing.Literal:
            flat.extend(type(v) for v in typing.get_args(m))
        elif m is dict or origin is dict:
            kind = "json"
        elif origin is list and all(a in SCALARS or (isinstance(a, type) and issubclass(a, enum.Enum))
                                    for a in typing.get_args(m)):
            kind = kind or "list"
        else:
            return None
    if kind == "list" and str in flat:
        kind = ""  # a str alternative exists (report_to, debug): pass the text as it is
    if kind:
        flat = [str]
    if not flat:
        return None
    out = functools.reduce(operator.or_, dict.fromkeys(flat))
    return (out | None if optional else out), kind
