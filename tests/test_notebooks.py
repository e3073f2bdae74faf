"""Notebook hygiene: stripped, one tagged parameters cell that matches the stage's params class."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from radlab import config
from radlab.params import own_fields

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STAGE_OF = {f"{nb}.ipynb": stage for stage, nb in config.NOTEBOOKS.items()}


def test_notebook_names_are_the_stage_names() -> None:
    assert {p.name for p in NOTEBOOKS} <= set(STAGE_OF), [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    res = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, f"nbstripout --verify {path.name}: {res.stdout}{res.stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_matches_params_class(path: Path) -> None:
    import papermill

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: first code cell must be tagged parameters"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    stage = STAGE_OF[path.name]
    assert f'resolve("{stage}", globals())' in code[1].source, f"{path.name}: second cell must resolve {stage!r}"
    inferred = papermill.inspect_notebook(str(path))
    cls = config.params_class(stage)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    # The cell shows every field radlab declares; TRL's other fields are set by -p / params files.
    own = {f.name for f in own_fields(cls)}
    assert set(inferred) <= set(fields), f"{path.name}: not parameters of {stage!r}: {set(inferred) - set(fields)}"
    assert own <= set(inferred), f"{path.name}: parameters missing from the cell: {own - set(inferred)}"
    for name, spec in inferred.items():
        assert spec["help"], f"{path.name}: parameter {name!r} needs a '# help' comment"
        assert spec["inferred_type_name"] != "None", f"{path.name}: parameter {name!r} needs a type annotation"
    # The parameters cell holds the dataclass defaults, so the notebook and the API agree.
    defaults = config.defaults(stage)
    ns: dict[str, object] = {}
    exec(code[0].source, {}, ns)  # literals only
    for name, value in ns.items():
        if name.startswith("__"):  # __annotations__ from the typed literals
            continue
        assert value == defaults[name], f"{path.name}: {name} = {value!r} but the dataclass default is {defaults[name]!r}"
