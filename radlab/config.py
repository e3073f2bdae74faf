"""Stage parameters: one validation call per notebook, before any heavy work.

Each stage declares its parameters as a dataclass (``STAGE_PARAMS``); field ``metadata``
carries ``help`` and, for paths, ``path="file" | "dir"`` (must exist once derived defaults
are filled in).  A notebook's second cell is::

    run = radlab.config.resolve("sft", globals())

which (1) collects the parameters the notebook defined: in a kernel, the names assigned in the
last-run ``parameters`` cell and in papermill's injected ``# Parameters`` cell (read from
IPython's input history, so other globals such as ``run`` or ``result`` are never mistaken for
parameters); (2) rejects unknown keys and wrong types with an error that names the key;
(3) lets the dataclass fill derived defaults and check values (``__post_init__``), then checks the
names it gives against the loaders, rewards and annotators (:func:`radlab.names.check_names`) and
its input paths; and (4) checks
the run folder: a finished run whose ``params.yaml`` differs is an error unless ``force=True``.
``resolve`` writes nothing.  The stage's heavy function calls :meth:`StageRun.begin` right
before it writes results (``params.yaml``, ``env.json``, ``DONE`` cleared), or reuses the
finished outputs when the run folder already holds this very run.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from radlab import runs
from radlab.experiment import read_params
from radlab.names import check_names
from radlab.params import STAGE_PARAMS, TRL_EXCLUDED
from radlab.vocab import NOTEBOOKS, STAGES, ParamError, type_name, type_ok, widen

# Names an IPython kernel defines that are not parameters.
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def params_class(stage: str) -> type:
    """The dataclass declaring ``stage``'s parameters."""
    if stage not in STAGE_PARAMS:
        raise ParamError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return STAGE_PARAMS[stage]


def _unknown_message(unknown: list[str], stage: str, fields: Mapping[str, Any]) -> str:
    """Which names are unknown, with the reason for TRL fields radlab sets itself and close matches."""
    notes = []
    for key in unknown:
        if key in TRL_EXCLUDED:
            notes.append(f"{key!r} is set by radlab ({TRL_EXCLUDED[key]})")
        elif close := difflib.get_close_matches(key, list(fields), n=3):
            notes.append(f"{key!r}: did you mean {' or '.join(map(repr, close))}?")
    trl = getattr(params_class(stage), "TRL_CONFIG", None)
    where = f"the fields of radlab.params.{params_class(stage).__name__}" + (
        f" (its notebook's parameters cell and every trl.{trl.__name__} field)" if trl else "")
    return (f"unknown parameter(s) {unknown} for stage {stage!r}" + (f"; {'; '.join(notes)}" if notes else "")
            + f"; known: {where}")


# Params-file keys for the runner (``radlab run``), not for a notebook: ``seeds`` lists a training run's
# replicates (radlab.pipeline.plan).  A notebook run by hand with such a file runs its one ``seed``.
RUNNER_KEYS = ("seeds",)


def validate(stage: str, values: Mapping[str, Any], *, source: str = "parameters", check_inputs: bool = True) -> Any:
    """Build ``stage``'s params dataclass from ``values``; raise :class:`ParamError` on bad input.

    ``source`` names where the values came from (a YAML path, "notebook") for the message.
    Types are checked with :func:`radlab.vocab.type_ok`; names the params give (data sources,
    rewards, annotators, ...) with :func:`radlab.names.check_names` once the dataclass is built.
    ``check_inputs=False`` skips what looks at this machine: input paths and building the rewards
    (used to parse paper-scale configs whose data folders exist only on the user's cluster).
    """
    cls = params_class(stage)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in values.items() if k not in RUNNER_KEYS}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ParamError(f"{source}: {_unknown_message(unknown, stage, fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        tp = hints[key]
        if not type_ok(value, tp):
            raise ParamError(
                f"{source}: parameter {key!r} must be {type_name(tp)}, got {type(value).__name__} {value!r}"
                + (" (write YAML floats with a dot, e.g. 1.0e-05)" if tp is float and isinstance(value, str) else "")
            )
        kwargs[key] = widen(value, tp)
    try:
        params = cls(**kwargs)
        check_names(params, check_inputs=check_inputs)
    except (TypeError, ValueError) as exc:  # ParamError is a ValueError
        raise ParamError(f"{source}: {exc}") from exc
    if check_inputs:
        check_paths(params, source=source)
    return params


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


INJECTED_HEADER = "# Parameters"  # papermill's injected cell starts with this comment


def _literal_assignments(source: str) -> tuple[list[str], bool] | None:
    """Names a cell assigns if it holds only assignments of literals (and comments), else ``None``.

    Returns ``(names, annotated)``; ``annotated`` says whether any line is ``name: type = value``
    (the parameters cell's form).  ``"lr: float = 0.1  # help"`` -> ``(["lr"], True)``.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: list[str] = []
    annotated = False
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value, annotated = node.target.id, node.value, True
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        else:
            return None
        try:
            ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        names.append(target)
    return (names, annotated) if names else None


def parameter_names(history: list[str]) -> list[str] | None:
    """The parameter names of a kernel session, from its input history (IPython's ``In``).

    The parameters cell is the most recently run cell made only of literal assignments with at
    least one ``name: type = value`` line; papermill's injected cell (first line ``# Parameters``)
    run after it adds its names.  ``None`` when no parameters cell was run (then no names are
    taken from the namespace and every parameter keeps its default, unless papermill injected some).

    ``["", "lr: float = 0.1", "run = resolve(...)", "lr: float = 0.2\nsteps: int = 3", "run = ..."]``
    -> ``["lr", "steps"]``.
    """
    names: list[str] = []
    found = False
    for source in reversed(history):
        parsed = _literal_assignments(source)
        if parsed is None:
            continue
        cell_names, annotated = parsed
        if source.lstrip().startswith(INJECTED_HEADER):
            names = cell_names + [n for n in names if n not in cell_names]
        elif annotated:
            names = cell_names + [n for n in names if n not in cell_names]
            found = True
            break
    return names if found or names else None


def _in_kernel(namespace: Mapping[str, Any]) -> bool:
    return isinstance(namespace.get("In"), list) and "get_ipython" in namespace


def collect(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter values a notebook defined.

    In an IPython kernel (``namespace`` is the notebook's ``globals()``, holding ``In``): the
    names :func:`parameter_names` finds in the input history, with their current values from
    ``namespace``; a later cell's globals (``run``, ``result``...) are never parameters.  Outside
    a kernel (a plain dict from a script, a test or the CLI): every public, non-module,
    non-callable key.
    """
    if _in_kernel(namespace):
        names = parameter_names([str(s) for s in namespace["In"]]) or []
        return {n: namespace[n] for n in names if n in namespace}
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


# Keys that do not change what a run produces: a finished run is the same run without them.
UNCOMPARED = ("force", "resume")


def _comparable(key: str, value: Any, cls: type | None) -> Any:
    """``value`` normalised for comparing params: path fields as absolute paths."""
    path_like = key == "output_root"
    if cls is not None and not path_like:
        f = {f.name: f for f in dataclasses.fields(cls)}.get(key)
        path_like = bool(f and f.metadata.get("path"))
    if path_like and isinstance(value, str) and value and ":" not in value:
        return os.path.abspath(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass
class StageRun:
    """What ``resolve`` hands a notebook: the typed params and the run folder.

    The run folder is written only by :meth:`begin`, which the stage's heavy function calls
    right before it writes results; ``resolve`` and any cell before that leave it untouched.
    """

    stage: str
    params: Any
    run_dir: Path

    def path(self, *parts: str) -> Path:
        """A path inside the run folder."""
        return self.run_dir.joinpath(*parts)

    @classmethod
    def of(cls, params: Any, run_dir: str | os.PathLike[str] | None = None) -> StageRun:
        """The run of ``params`` (its stage class's ``STAGE``) in ``run_dir`` (default ``params.run_dir``)."""
        return cls(stage=type(params).STAGE, params=params, run_dir=Path(run_dir) if run_dir else params.run_dir)

    @property
    def finished(self) -> bool:
        """The folder holds a finished run (its ``DONE`` marker)."""
        return runs.is_complete(self.run_dir)

    def saved_params(self) -> dict[str, Any] | None:
        """The folder's ``params.yaml`` (``None`` if absent or unreadable)."""
        return read_params(self.run_dir) or None

    def differences(self) -> dict[str, tuple[Any, Any]]:
        """``{key: (saved, new)}`` for every parameter that differs from the folder's ``params.yaml``
        (all of them when there is none); ``force`` and ``resume`` are not compared."""
        saved = self.saved_params()
        new = dataclasses.asdict(self.params)
        if saved is None:
            return {k: (None, v) for k, v in new.items() if k not in UNCOMPARED}
        cls = type(self.params)
        out = {}
        for key in sorted(set(saved) | set(new)):
            if key in UNCOMPARED:
                continue
            old_v, new_v = saved.get(key), new.get(key)
            if _comparable(key, old_v, cls) != _comparable(key, new_v, cls):
                out[key] = (old_v, new_v)
        return out

    @property
    def reusable(self) -> bool:
        """The folder holds this very run, finished: stage functions return its saved outputs
        instead of recomputing them (``force=True`` never reuses)."""
        return self.finished and not getattr(self.params, "force", False) and not self.differences()

    def check(self) -> None:
        """Raise :class:`ParamError` if the folder holds a finished run with other params and
        ``force`` is off: writing into it would leave params that did not produce its model."""
        if not self.finished or getattr(self.params, "force", False):
            return
        diff = self.differences()
        if diff:
            shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(diff.items())[:8])
            more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
            raise ParamError(
                f"{self.run_dir} holds a finished {self.stage!r} run with other parameters ({shown}{more}). "
                f"Set run_name to a new name to keep it and train a new run beside it, or force=True to replace it.")

    def begin(self, *, stale: tuple[str, ...] = ()) -> bool:
        """Start (or restart) the run: write ``params.yaml`` and ``env.json`` atomically, clear
        ``DONE`` and remove the ``stale`` outputs (e.g. ``model/``) of an earlier run.

        Returns ``False`` without writing anything when :attr:`reusable` (the caller then returns
        the finished outputs); raises :class:`ParamError` as :meth:`check` does.  Call it on the
        process that writes files (the main process under ``accelerate launch``).
        """
        self.check()
        if self.reusable:
            return False
        import shutil

        self.run_dir.mkdir(parents=True, exist_ok=True)
        runs.clear_complete(self.run_dir)
        for name in stale:
            target = self.run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        runs.write_yaml(self.run_dir / "params.yaml", dataclasses.asdict(self.params))
        runs.write_json(self.run_dir / "env.json", runs.environment_info())
        return True


def resolve(stage: str, namespace: Mapping[str, Any]) -> StageRun:
    """Validate a notebook's parameters; returns the run (typed params + folder). Writes nothing.

    ``namespace`` is the notebook's ``globals()`` (or a plain dict of parameter values).  Raises
    :class:`ParamError` for an unknown or mistyped parameter, a missing input, or a finished run
    folder whose params differ (unless ``force=True``), all before any model loads.
    """
    params = validate(stage, collect(namespace), source=f"notebook {NOTEBOOKS[stage]}.ipynb")
    run = StageRun(stage=stage, params=params, run_dir=params.run_dir)
    run.check()
    return run
