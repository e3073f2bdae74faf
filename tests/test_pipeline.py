"""The ``radlab run`` runner on throwaway notebooks: order, skip, force, failure reporting."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from radlab import runs
from radlab.__main__ import main
from radlab.config import NOTEBOOKS, ParamError
from radlab.pipeline import plan, run_pipeline


def _notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('experiment: str = "x"  # experiment\noutput_root: str = "runs"  # root')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


MARK = (
    "import os, radlab.runs as r\n"
    "d = os.path.join(output_root, experiment, os.environ.get('X', '{name}'))\n"
    "r.write_text(os.path.join(output_root, experiment, 'order.txt'),"
    " (open(os.path.join(output_root, experiment, 'order.txt')).read() if os.path.exists("
    "os.path.join(output_root, experiment, 'order.txt')) else '') + '{name}\\n')\n"
    "r.mark_complete(os.path.join(output_root, experiment, '{name}'))\n"
)


@pytest.fixture()
def fake_repo(tmp_path: Path) -> Path:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "exp").mkdir(parents=True)
    for stage, nb in NOTEBOOKS.items():
        _notebook(tmp_path / "notebooks" / f"{nb}.ipynb", MARK.format(name=stage))
    for run in ("data", "sft"):
        (tmp_path / "params" / "exp" / f"{run}.yaml").write_text("{}\n")
    return tmp_path


def test_runs_in_order_then_skips_complete(fake_repo: Path) -> None:
    out = fake_repo / "runs"
    logs: list[str] = []
    res = run_pipeline("exp", root=fake_repo, output_root=out, log=logs.append)
    assert [(r.name, r.status) for r in res] == [("data", "done"), ("sft", "done")]
    assert (out / "exp" / "order.txt").read_text().split() == ["data", "sft"]
    assert (out / "exp" / "sft" / "01_sft.ipynb").exists()
    assert any("done in" in line for line in logs)
    res = run_pipeline("exp", root=fake_repo, output_root=out, log=logs.append)
    assert [r.status for r in res] == ["skipped", "skipped"]
    res = run_pipeline("exp", root=fake_repo, output_root=out, only=["sft"], force=True, log=logs.append)
    assert [(r.name, r.status) for r in res] == [("sft", "done")]


def test_failure_names_notebook_and_cell_and_keeps_earlier(fake_repo: Path) -> None:
    _notebook(fake_repo / "notebooks" / "01_sft.ipynb", "x = 1\nraise ValueError('boom in sft')")
    out = fake_repo / "runs"
    logs: list[str] = []
    res = run_pipeline("exp", root=fake_repo, output_root=out, log=logs.append)
    assert [r.status for r in res] == ["done", "failed"]
    err = res[1].error
    assert "notebooks/01_sft.ipynb failed in code cell 2" in err and "ValueError: boom in sft" in err
    assert runs.is_complete(out / "exp" / "data") and not runs.is_complete(out / "exp" / "sft")


def test_plan_errors_are_clear(fake_repo: Path) -> None:
    with pytest.raises(ParamError, match="no params folder .*nope.* known experiments: \\['exp'\\]"):
        plan("nope", params_root=fake_repo / "params")
    with pytest.raises(ParamError, match="--only 'sfft': unknown run"):
        plan("exp", params_root=fake_repo / "params", only=["sfft"])
    (fake_repo / "params" / "exp" / "sft.yaml").write_text("a: [1\n")
    with pytest.raises(ParamError, match="sft.yaml: invalid YAML"):
        plan("exp", params_root=fake_repo / "params")


def test_cli_exit_codes(fake_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--params-root", str(fake_repo / "params")]) == 2
    assert "no params folder" in capsys.readouterr().err
