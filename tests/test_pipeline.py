"""The ``radlab run`` runner on throwaway notebooks: order, skip, force, failure reporting."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from radlab import runs
from radlab.__main__ import main
from radlab.pipeline import plan, run_pipeline
from radlab.vocab import NOTEBOOKS, ParamError


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
        (tmp_path / "params" / "exp" / f"{run}.yaml").write_text(f"stage: {run}\n")
    return tmp_path


@pytest.mark.slow
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


@pytest.mark.slow
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


def _plan(repo: Path, **kw: object):
    return plan("exp", params_root=repo / "params", output_root=repo / "runs", root=repo, **kw)


@pytest.mark.parametrize(
    ("files", "pattern"),
    [
        ({"extra.yaml": "seed: 1\n"}, r"extra.yaml: no 'stage:' key"),
        ({"extra.yaml": "stage: rl\n"}, r"extra.yaml: unknown stage 'rl'; expected one of"),
        ({"extra.yaml": "stage: sft\nrun_name: other\n"}, r"extra.yaml: run_name 'other' contradicts the file's name"),
        ({"extra.yaml": "stage: sft\nlearning_rate: 1.0e-4\nmax_stepz: 3\n"}, r"extra.yaml: unknown parameter\(s\) \['max_stepz'\]"),
        ({"extra.yaml": "stage: sft\ninit_run: nope\n"}, r"extra.yaml: run 'extra' reads run 'nope', but .* has no nope.yaml"),
        ({"a.yaml": "stage: sft\ninit_run: b\n", "b.yaml": "stage: sft\ninit_run: a\n"},
         r"cycle between runs: a \(.*a.yaml\) -> b \(.*b.yaml\) -> a"),
    ],
)
def test_plan_names_the_file_of_a_bad_run(fake_repo: Path, files: dict[str, str], pattern: str) -> None:
    for name, text in files.items():
        (fake_repo / "params" / "exp" / name).write_text(text)
    with pytest.raises(ParamError, match=pattern):
        _plan(fake_repo)


def test_every_params_file_is_a_run_ordered_by_its_inputs(fake_repo: Path) -> None:
    exp = fake_repo / "params" / "exp"
    (exp / "grpo_bleu.yaml").write_text("stage: grpo\nreward_names: bleu,box_soft_f1\n")
    (exp / "grpo.yaml").write_text("stage: grpo\n")
    (exp / "cold_start.yaml").write_text("stage: cold_start\n")
    (exp / "think.yaml").write_text("stage: grpo\nthinking: true\n")
    (exp / "analysis.yaml").write_text("stage: analysis\n")
    pl = _plan(fake_repo)
    order = [s.name for s in pl.runs]
    after = {s.name: s.after for s in pl.runs}
    assert order[:2] == ["data", "sft"] and order[-1] == "analysis"
    assert after["grpo_bleu"] == after["grpo"] == ("data", "sft")
    assert after["think"] == ("data", "cold_start")  # GRPO's derived start model
    assert order.index("cold_start") < order.index("think")
    assert set(after["analysis"]) == {"data", "sft", "cold_start", "grpo", "grpo_bleu", "think"}
    assert {s.name: s.stage for s in pl.runs}["grpo_bleu"] == "grpo"
    assert pl.params["grpo_bleu"] == exp / "grpo_bleu.yaml"


def test_input_from_a_complete_run_without_params_file(fake_repo: Path) -> None:
    exp = fake_repo / "params" / "exp"
    (exp / "sft.yaml").unlink()
    (exp / "sft_more.yaml").write_text("stage: sft\ninit_run: sft\n")
    with pytest.raises(ParamError, match=r"sft_more.yaml: run 'sft_more' reads run 'sft'"):
        _plan(fake_repo)
    runs.mark_complete(fake_repo / "runs" / "exp" / "sft")
    pl = _plan(fake_repo)
    assert [(s.name, s.after) for s in pl.runs] == [("data", ()), ("sft_more", ("data", "sft"))]
    assert pl.external == {"sft": fake_repo / "runs" / "exp" / "sft"}


def test_dry_run_prints_the_graph_and_runs_nothing(fake_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (fake_repo / "params" / "exp" / "grpo_bleu.yaml").write_text("stage: grpo\nreward_names: bleu,box_soft_f1\n")
    runs.mark_complete(fake_repo / "runs" / "exp" / "data")
    args = ["run", "exp", "--dry-run", "--params-root", str(fake_repo / "params"),
            "--output-root", str(fake_repo / "runs")]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "radlab run exp: 3 run(s) in this order"
    table = [line.split() for line in lines[2:]]
    assert [row[:2] for row in table] == [["data", "data"], ["sft", "sft"], ["grpo_bleu", "grpo"]]
    assert table[2][2:4] == ["data,", "sft"] and table[2][4].endswith("grpo_bleu.yaml")
    assert lines[2].endswith("complete: skipped")
    assert not (fake_repo / "runs" / "exp" / "sft").exists()
    assert main([*args, "--force"]) == 0
    assert "skipped" not in capsys.readouterr().out


def test_cli_exit_codes(fake_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nope", "--params-root", str(fake_repo / "params")]) == 2
    assert "no params folder" in capsys.readouterr().err
