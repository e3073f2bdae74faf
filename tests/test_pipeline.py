"""The ``radlab run`` runner on throwaway notebooks: order, skip, force, failure reporting."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from radlab import runs
from radlab.__main__ import main
from radlab.pipeline import describe, plan, run_pipeline
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


# ---------------------------------------------------------------------------------------------
# Replicates: seeds
# ---------------------------------------------------------------------------------------------


def _replicated_exp(repo: Path) -> Path:
    exp = repo / "params" / "exp"
    (exp / "sft_more.yaml").write_text("stage: sft\ninit_run: sft\n")
    (exp / "cold_start.yaml").write_text("stage: cold_start\n")
    (exp / "grpo.yaml").write_text("stage: grpo\n")
    (exp / "grpo_think.yaml").write_text("stage: grpo\nthinking: true\n")
    (exp / "grpo_bleu.yaml").write_text("seeds: 0\nstage: grpo\nreward_names: bleu,box_soft_f1\n")
    (exp / "analysis.yaml").write_text("stage: analysis\n")
    return exp


def test_seeds_replicate_every_chain_with_remapped_inputs(fake_repo: Path) -> None:
    _replicated_exp(fake_repo)
    pl = _plan(fake_repo, seeds="0,1")
    specs = {s.name: s for s in pl.runs}
    d = fake_repo / "runs" / "exp"
    assert set(specs) == {"data", "sft", "sft_s1", "sft_more", "sft_more_s1", "cold_start", "cold_start_s1", "grpo",
                          "grpo_s1", "grpo_think", "grpo_think_s1", "grpo_bleu", "analysis"}
    assert pl.seeds == {n: (0, 1) for n in ("sft", "sft_more", "cold_start", "grpo", "grpo_think")}
    # Seed 0 is the run as it was (nothing passed on top of its file); seed 1 gets seed 1 and moved inputs.
    assert specs["sft"].overrides == () and specs["sft"].replicate_of == ""
    assert specs["sft_s1"].overrides == (("seed", 1),) and specs["sft_s1"].after == ("data",)
    assert dict(specs["sft_more_s1"].overrides) == {"seed": 1, "init_run": "sft_s1"}
    assert dict(specs["cold_start_s1"].overrides) == {"seed": 1, "init_model": str(d / "sft_s1" / "model")}
    assert dict(specs["grpo_s1"].overrides) == {"seed": 1, "init_model": str(d / "sft_s1" / "model")}
    assert dict(specs["grpo_think_s1"].overrides) == {"seed": 1, "init_model": str(d / "cold_start_s1" / "model")}
    assert [(specs[n].seed, specs[n].replicate_of, specs[n].after) for n in ("grpo_s1", "grpo_think_s1")] == [
        (1, "grpo", ("data", "sft_s1")), (1, "grpo_think", ("data", "cold_start_s1"))]
    assert specs["grpo_bleu"].after == ("data", "sft") and "grpo_bleu_s1" not in specs  # its file says seeds: 0
    assert {"sft_s1", "grpo_s1", "grpo_think_s1", "sft_more_s1", "cold_start_s1"} <= set(specs["analysis"].after)
    order = [s.name for s in pl.runs]
    assert all(order.index(dep) < order.index(s.name) for s in pl.runs for dep in s.after)
    assert order[-1] == "analysis" and pl.params["grpo_s1"] == pl.params["grpo"]
    text = describe(pl)
    assert "replicates (seeds 0,1; seed k >= 1 is <run>_s<k>): sft, " in text
    assert any(line.split()[:2] == ["grpo_s1", "grpo"] and line.endswith("(replicate seed 1 of grpo)")
               for line in text.splitlines())
    # --only names a run and its replicates.
    assert [s.name for s in _plan(fake_repo, seeds="0,1", only=["grpo"]).runs] == ["grpo", "grpo_s1"]
    # Without --seeds nothing is replicated: the one-draw plan of today.
    assert not _plan(fake_repo).seeds and len(_plan(fake_repo).runs) == 8


def test_seeds_in_a_params_file_and_inheritance(fake_repo: Path) -> None:
    exp = fake_repo / "params" / "exp"
    (exp / "sft.yaml").write_text("stage: sft\nseeds: 0,2\n")
    (exp / "grpo.yaml").write_text("stage: grpo\n")  # input replicated: replicated too
    pl = _plan(fake_repo)
    specs = {s.name: s for s in pl.runs}
    assert set(specs) == {"data", "sft", "sft_s2", "grpo", "grpo_s2"}
    assert dict(specs["grpo_s2"].overrides) == {"seed": 2,
                                                "init_model": str(fake_repo / "runs" / "exp" / "sft_s2" / "model")}
    assert pl.seeds == {"sft": (0, 2), "grpo": (0, 2)}


@pytest.mark.parametrize(
    ("files", "seeds", "pattern"),
    [
        ({"sft_s1.yaml": "stage: sft\n"}, "0,1", r"sft_s1.yaml: run 'sft_s1' has the name of replicate seed 1 of run 'sft'"),
        ({"data.yaml": "stage: data\nseeds: 0,1\n"}, None, r"data.yaml: seeds: the data stage is not replicated"),
        ({"sft.yaml": "stage: sft\nseeds: 1,2\n"}, None, r"sft.yaml: seeds: '1,2' must include 0"),
        ({"sft.yaml": "stage: sft\nseeds: a\n"}, None, r"sft.yaml: seeds: 'a' is not a comma-separated list"),
        ({}, "0,-1", r"--seeds: '0,-1' is not a comma-separated list"),
        ({"sft.yaml": "stage: sft\nseed: 3\n"}, "0,1", r"sft.yaml: seed 3 with seeds 0,1: .* leave seed at 0"),
        ({"sft.yaml": "stage: sft\nseeds: 0\n", "grpo.yaml": "stage: grpo\nseeds: 0,1\n"}, None,
         r"grpo.yaml: run 'grpo' has seeds 0,1, but its input run 'sft' .* has no replicate of seed 1: .*"
         r"\(grpo_s1 from sft_s1\)"),
    ],
)
def test_seed_errors_name_the_file(fake_repo: Path, files: dict[str, str], seeds: str | None, pattern: str) -> None:
    for name, text in files.items():
        (fake_repo / "params" / "exp" / name).write_text(text)
    with pytest.raises(ParamError, match=pattern):
        _plan(fake_repo, seeds=seeds)


def test_replicates_run_with_their_seed_and_inputs(fake_repo: Path) -> None:
    """The runner hands a replicate its seed and moved inputs on top of the params file, never 'seeds'."""
    body = ("import os, radlab.runs as r\n"
            "d = os.path.join(output_root, experiment, run_name)\n"
            "r.write_text(os.path.join(d, 'got.txt'), f\"{globals().get('seed', 0)} {globals().get('init_run', '-')} "
            "{'seeds' in globals()}\")\n"
            "r.mark_complete(d)\n")
    _notebook(fake_repo / "notebooks" / "01_sft.ipynb", body)
    (fake_repo / "params" / "exp" / "sft.yaml").write_text("stage: sft\nseeds: 0,1\n")
    (fake_repo / "params" / "exp" / "more.yaml").write_text("stage: sft\ninit_run: sft\n")
    out = fake_repo / "runs"
    runs.mark_complete(out / "exp" / "data")  # skipped: four kernels, not five
    res = run_pipeline("exp", root=fake_repo, output_root=out, log=lambda _: None)
    assert sorted(r.name for r in res if r.status == "done") == ["more", "more_s1", "sft", "sft_s1"], res
    got = {n: (out / "exp" / n / "got.txt").read_text() for n in ("sft", "sft_s1", "more", "more_s1")}
    assert got == {"sft": "0 - False", "sft_s1": "1 - False", "more": "0 sft False", "more_s1": "1 sft_s1 False"}
    # --seeds on the command line: the file's own seeds win (sft: 0,1); 'more' takes the flag's and then
    # lacks its input's seed 2, a clear error.
    assert main(["run", "exp", "--dry-run", "--params-root", str(fake_repo / "params"), "--output-root", str(out),
                 "--seeds", "0,1,2"]) == 2
