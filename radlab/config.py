"""Stage parameters: one validation call per notebook, before any heavy work.

Each stage declares its parameters as a dataclass (``STAGE_PARAMS``); field ``metadata``
carries ``help`` and, for paths, ``path="file" | "dir"`` (must exist once derived defaults
are filled in).  A notebook's second cell is::

    run = radlab.config.resolve("sft", globals())

which (1) collects the parameter names the notebook defined (papermill's injected ones
included), (2) rejects unknown keys and wrong types with an error that names the key,
(3) lets the dataclass fill derived defaults and check inputs (``__post_init__``), and
(4) writes ``params.yaml`` and ``env.json`` into ``runs/<experiment>/<stage>/``.
Training stages then build their typed TRL configs with ``HfArgumentParser.parse_dict``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from radlab import runs

STAGES = ("data", "sft", "cold_start", "grpo", "analysis")
NOTEBOOKS = {
    "data": "00_data",
    "sft": "01_sft",
    "cold_start": "02_cold_start",
    "grpo": "03_grpo",
    "analysis": "04_analysis",
}
# Import strings, so that importing radlab.config stays light (no torch/trl at import).
STAGE_PARAMS = {
    "data": "radlab.data.build:DataParams",
    "sft": "radlab.training:SFTParams",
    "cold_start": "radlab.training:ColdStartParams",
    "grpo": "radlab.training:GRPOParams",
    "analysis": "radlab.evaluation:AnalysisParams",
}

_SKIP_INPUT_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("radlab_skip_input_checks", default=False)

# Names an IPython kernel defines that are not parameters.
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


class ParamError(ValueError):
    """A parameter is unknown, mistyped, or points at a missing input. Names the key/path."""


@dataclass
class CommonParams:
    """Fields every stage shares."""

    STAGE: ClassVar[str] = ""

    experiment: str = field(default="demo", metadata={"help": "experiment name; outputs go to <output_root>/<experiment>/<stage>/"})
    output_root: str = field(default="runs", metadata={"help": "root folder of all run folders"})
    seed: int = field(default=0, metadata={"help": "global random seed"})

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<experiment>/<run_name or stage>`` for the concrete stage class."""
        return runs.stage_dir(self.output_root, self.experiment, getattr(self, "run_name", "") or self.STAGE)

    def stage_path(self, stage: str) -> Path:
        """Run folder of another stage of the same experiment."""
        return runs.stage_dir(self.output_root, self.experiment, stage)


def params_class(stage: str) -> type:
    """The dataclass declaring ``stage``'s parameters."""
    if stage not in STAGE_PARAMS:
        raise ParamError(f"unknown stage {stage!r}; expected one of {STAGES}")
    module, _, name = STAGE_PARAMS[stage].partition(":")
    return getattr(importlib.import_module(module), name)


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
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
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def validate(stage: str, values: Mapping[str, Any], *, source: str = "parameters", check_inputs: bool = True) -> Any:
    """Build ``stage``'s params dataclass from ``values``; raise :class:`ParamError` on bad input.

    ``source`` names where the values came from (a YAML path, "notebook") for the message.
    ``check_inputs=False`` validates keys and types only (used to parse paper-scale configs whose
    data folders exist only on the user's cluster); dataclasses see it as ``RADLAB_SKIP_INPUT_CHECKS``.
    """
    cls = params_class(stage)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ParamError(
            f"{source}: unknown parameter(s) {unknown} for stage {stage!r}; known: {sorted(fields)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        tp = hints[key]
        if not _type_ok(value, tp):
            raise ParamError(
                f"{source}: parameter {key!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
                + (" (write YAML floats with a dot, e.g. 1.0e-05)" if tp is float and isinstance(value, str) else "")
            )
        if tp is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    token = _SKIP_INPUT_CHECKS.set(not check_inputs)
    try:
        params = cls(**kwargs)
    except ParamError as exc:
        raise ParamError(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ParamError(f"{source}: {exc}") from exc
    finally:
        _SKIP_INPUT_CHECKS.reset(token)
    if check_inputs:
        check_paths(params, source=source)
    return params


def inputs_checked() -> bool:
    """False while :func:`validate` runs with ``check_inputs=False``; ``__post_init__`` hooks
    that look at the file system (e.g. "run 00_data first") should skip those checks then."""
    return not _SKIP_INPUT_CHECKS.get()


def check_paths(params: Any, *, source: str = "parameters") -> None:
    """Every field with ``metadata['path']`` in {"file", "dir"} must exist (empty = unused)."""
    for f in dataclasses.fields(params):
        kind = f.metadata.get("path")
        value = getattr(params, f.name)
        if not kind or not value:
            continue
        p = Path(value)
        ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
        if not ok:
            hint = f.metadata.get("missing_hint", "")
            raise ParamError(f"{source}: parameter {f.name!r}: {kind} {str(p)!r} does not exist{hint}")


def collect(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter values a notebook defined: public, non-module, non-callable globals."""
    out = {}
    for key, value in namespace.items():
        if key.startswith("_") or key in _KERNEL_NAMES:
            continue
        if isinstance(value, (types.ModuleType, types.FunctionType, type)) or callable(value):
            continue
        out[key] = value
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a flat params YAML with ``safe_load``; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a flat mapping of parameters, got {type(data).__name__}")
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ParamError(f"{path}: parameters must be flat (papermill merges -f files shallowly): {nested}")
    return data


def defaults(stage: str) -> dict[str, Any]:
    """The dataclass defaults of ``stage`` (what an empty parameters cell would mean)."""
    cls = params_class(stage)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


@dataclass
class StageRun:
    """What ``resolve`` hands a notebook: the typed params and the run folder."""

    stage: str
    params: Any
    run_dir: Path

    def path(self, *parts: str) -> Path:
        """A path inside the run folder."""
        return self.run_dir.joinpath(*parts)


def resolve(stage: str, namespace: Mapping[str, Any], *, write: bool = True) -> StageRun:
    """Validate a notebook's parameters and prepare its run folder.

    ``namespace`` is the notebook's ``globals()``.  Writes ``params.yaml`` and ``env.json``
    (atomically) and clears a stale ``DONE`` marker, so a rerun is never mistaken for complete.
    """
    params = validate(stage, collect(namespace), source=f"notebook {NOTEBOOKS[stage]}.ipynb")
    # Stages with several runs (grpo / grpo_think, sft / sft_more) name their folder by run_name.
    run_dir = runs.stage_dir(params.output_root, params.experiment, getattr(params, "run_name", "") or stage)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.clear_complete(run_dir)
        runs.write_yaml(run_dir / "params.yaml", dataclasses.asdict(params))
        runs.write_json(run_dir / "env.json", runs.environment_info())
    return StageRun(stage=stage, params=params, run_dir=run_dir)
