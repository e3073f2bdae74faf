"""The notebook contract, and nothing else: notebooks are hand-edited, so any other cell may change.

Checked for every ``notebooks/*.ipynb``: outputs stripped; the first code cell is the only one
tagged ``parameters`` and holds ``name: type = literal  # help`` lines whose names are fields of the
stage's params dataclass with the same type, default and help (every radlab-own field present;
TRL fields may be left out); the next code cell is the ``resolve`` call; papermill's
``--help-notebook`` documents every parameter.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import nbformat
import pytest

from radlab import config, vocab
from radlab.params import own_fields

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STAGE_OF = {f"{nb}.ipynb": stage for stage, nb in vocab.NOTEBOOKS.items()}


def help_comment(text: str) -> str:
    """A field's help as the parameters cell writes it: one line, no ``=`` (papermill's parameter
    parser drops a line whose comment holds one, and ``--help-notebook`` then omits it)."""
    text = " ".join(text.split())
    text = text.replace(">=", "≥").replace("<=", "≤").replace(" = ", ": ")
    return text.replace("=", " is ")


def literal_type(tp: Any) -> str:
    """The annotation a parameters line uses for a field type (``str | list[str]`` -> ``str``)."""
    if tp in (str, int, float, bool):
        return tp.__name__
    args = [a for a in typing.get_args(tp) if a in (str, int, float, bool)]
    return args[0].__name__ if args else "str"


def parameters_lines(source: str) -> dict[str, tuple[str, Any, str]]:
    """``{name: (annotation, value, help comment)}`` of a parameters cell; asserts the line form."""
    out = {}
    lines = source.splitlines()
    for node in ast.parse(source).body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None, (
            f"line {node.lineno}: the parameters cell holds only `name: type = literal  # help` lines")
        line = lines[node.lineno - 1]
        assert "#" in line[node.value.end_col_offset:], f"line {node.lineno}: `# help` comment missing"
        comment = line[node.value.end_col_offset:].split("#", 1)[1].strip()
        out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value), comment)
    return out


def code_cells(path: Path) -> list[Any]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_every_stage_has_its_notebook() -> None:
    assert {p.name for p in NOTEBOOKS} == set(STAGE_OF), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path) -> None:
    for i, cell in enumerate(code_cells(path)):
        assert cell.outputs == [], f"{path.name} code cell {i} has outputs"
        assert cell.execution_count is None, f"{path.name} code cell {i} has an execution count"
    res = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, f"nbstripout --verify {path.name}: {res.stdout}{res.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_then_resolve(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = code_cells(path)
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged parameters"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1, f"{path.name}: one parameters cell"
    stage = STAGE_OF[path.name]
    call = f'radlab.config.resolve("{stage}", globals())'
    assert call in code[1].source, f"{path.name}: the cell after the parameters cell must call {call}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_matches_params_class(path: Path) -> None:
    stage = STAGE_OF[path.name]
    cls = config.params_class(stage)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    defaults = config.defaults(stage)
    lines = parameters_lines(code_cells(path)[0].source)
    unknown = sorted(set(lines) - set(fields))
    assert not unknown, f"{path.name}: parameters {unknown} are not fields of {cls.__name__}"
    # Every field radlab declares is shown; TRL's other config fields are set by -p / params files.
    missing = sorted(f.name for f in own_fields(cls) if f.name not in lines)
    assert not missing, f"{path.name}: radlab parameters {missing} missing from the parameters cell"
    for name, (annotation, value, comment) in lines.items():
        assert annotation == literal_type(hints[name]), f"{path.name}: {name}: {annotation} but the field is {hints[name]}"
        assert value == defaults[name] and type(value) is type(defaults[name]), (
            f"{path.name}: {name} = {value!r} but the dataclass default is {defaults[name]!r}")
        assert comment == help_comment(str(fields[name].metadata.get("help", ""))), (
            f"{path.name}: {name}: help comment differs from the field's help")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_documents_every_parameter(path: Path) -> None:
    import papermill

    inferred = papermill.inspect_notebook(str(path))
    names = set(parameters_lines(code_cells(path)[0].source))
    assert set(inferred) == names, f"{path.name}: papermill sees {sorted(set(inferred) ^ names)} differently"
    for name, spec in inferred.items():
        assert spec["help"], f"{path.name}: parameter {name!r} has no help for --help-notebook"
        assert spec["inferred_type_name"] != "None", f"{path.name}: parameter {name!r} has no type for --help-notebook"


def assigned_names(source: str) -> set[str]:
    """Names a cell binds (assignments, loop and ``with`` targets, imports, defs); IPython magics skipped."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    names: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def test_assigned_names_on_hand_written_cells() -> None:
    assert assigned_names("a = 1\nb: int = 2\nfor c, d in x: pass\nwith f() as e: pass\nimport g.h\n") == {
        "a", "b", "c", "d", "e", "g"}
    assert assigned_names("%matplotlib inline\nprint(x)\nx[0] = 1\n") == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_later_cells_never_rebind_a_parameter(path: Path) -> None:
    # resolve reads parameter values from globals(): a later cell that rebinds one (e.g. a rewards cell
    # writing `reward_weights = ...`) changes what the next re-run of resolve sees.
    code = code_cells(path)
    params = set(parameters_lines(code[0].source))
    for i, cell in enumerate(code[1:], start=2):
        clash = sorted(assigned_names(cell.source) & params)
        assert not clash, f"{path.name} code cell {i} rebinds parameter(s) {clash}; use another name"
