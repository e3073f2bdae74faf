"""Parameter validation, params YAMLs, environment files and run-folder writes."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from radlab import config, params, runs, vocab
from radlab.params import CommonParams, own_fields
from radlab.vocab import ParamError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class _ToyParams(CommonParams):
    STAGE: ClassVar[str] = "toy"
    lr: float = field(default=1.0e-4, metadata={"help": "learning rate"})
    steps: int = field(default=10, metadata={"help": "steps"})
    full: bool = field(default=True, metadata={"help": "full fine-tuning"})
    note: str | None = field(default=None, metadata={"help": "optional"})
    data_dir: str = field(default="", metadata={"help": "input", "path": "dir", "missing_hint": "; run 00_data first"})


@pytest.fixture()
def toy_stage(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(params.STAGE_PARAMS, "toy", _ToyParams)
    monkeypatch.setitem(vocab.NOTEBOOKS, "toy", "99_toy")
    return "toy"


def test_validate_accepts_good_values_and_coerces_int_to_float(toy_stage: str) -> None:
    p = config.validate(toy_stage, {"lr": 1, "steps": 3, "full": False, "note": "x"})
    assert p.lr == 1.0 and isinstance(p.lr, float)
    assert (p.steps, p.full, p.note) == (3, False, "x")


def test_unknown_key_is_named(toy_stage: str) -> None:
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) \['learning_rate'\]"):
        config.validate(toy_stage, {"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("steps", "10", r"'steps' must be int, got str"),
        ("steps", 1.5, r"'steps' must be int"),
        ("steps", True, r"'steps' must be int, got bool"),
        ("full", 1, r"'full' must be bool"),
        ("lr", "1e-5", r"write YAML floats with a dot"),
    ],
)
def test_wrong_type_is_named(toy_stage: str, key: str, value: object, pattern: str) -> None:
    with pytest.raises(ParamError, match=pattern):
        config.validate(toy_stage, {key: value})


def test_missing_input_path_is_named(toy_stage: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ParamError, match=r"'data_dir': dir .*nope.* does not exist; run 00_data first"):
        config.validate(toy_stage, {"data_dir": str(missing)})
    # Skipping input checks (paper configs) validates keys and types only.
    assert config.validate(toy_stage, {"data_dir": str(missing)}, check_inputs=False).data_dir == str(missing)


def test_collect_outside_a_kernel_takes_every_public_value() -> None:
    """A plain dict (script, CLI, test): every public, non-module, non-callable key."""
    ns = {"lr": 0.1, "Out": {}, "json": json, "_private": 1, "f": lambda: 0}
    assert config.collect(ns) == {"lr": 0.1}


PARAMS_CELL = "experiment: str = 'demo'  # experiment\nsteps: int = 10  # steps\nlr: float = 1.0e-04  # lr"
RESOLVE_CELL = 'import radlab.config\n\nrun = radlab.config.resolve("toy", globals())\nrun.params'
INJECTED_CELL = "# Parameters\nsteps = 3\noutput_root = \"/tmp/x\"\n"


def _kernel(history: list[str], **values: object) -> dict[str, object]:
    """A notebook's globals() as IPython's kernel has them: ``In`` (input history, '' first)."""
    return {"In": ["", *history], "Out": {}, "get_ipython": lambda: None, "exit": None, "quit": None, **values}


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # Run All: parameters cell, then resolve (the current cell is the last input).
        ([PARAMS_CELL, RESOLVE_CELL], ["experiment", "steps", "lr"]),
        # papermill: parameters cell, its injected cell, resolve.
        ([PARAMS_CELL, INJECTED_CELL, RESOLVE_CELL], ["steps", "output_root", "experiment", "lr"]),
        # A later cell, then the resolve cell again: later globals are not parameters.
        ([PARAMS_CELL, RESOLVE_CELL, "result = train(run)\nresult", "x = 5", RESOLVE_CELL], ["experiment", "steps", "lr"]),
        # The parameters cell edited (a line removed) and re-run: the latest one counts.
        ([PARAMS_CELL, INJECTED_CELL, RESOLVE_CELL, "steps: int = 4  # steps", RESOLVE_CELL], ["steps"]),
        # A papermill output notebook re-run in JupyterLab: injected after the parameters cell again.
        ([PARAMS_CELL, INJECTED_CELL, RESOLVE_CELL, PARAMS_CELL, INJECTED_CELL, RESOLVE_CELL],
         ["steps", "output_root", "experiment", "lr"]),
        # No parameters cell run yet (only resolve after a restart): nothing to take.
        ([RESOLVE_CELL], None),
        # Not a parameters cell: a call, a derived value, a syntax error, an empty cell.
        (["steps: int = len('abc')", "lr: float = 1 +", "", RESOLVE_CELL], None),
    ],
    ids=["run-all", "papermill", "later-cell-then-resolve", "edited-params", "papermill-output-rerun", "none", "not-literal"],
)
def test_parameter_names_from_the_input_history(history: list[str], expected: list[str] | None) -> None:
    names = config.parameter_names(["", *history])
    assert (sorted(names) if names is not None else None) == (sorted(expected) if expected is not None else None)


def test_collect_in_a_kernel_ignores_later_globals_and_takes_current_values() -> None:
    ns = _kernel([PARAMS_CELL, RESOLVE_CELL, "result = 1", RESOLVE_CELL],
                 experiment="demo", steps=10, lr=1.0e-04, run=object(), result=1, info={"a": 1}, notes=["x"])
    assert config.collect(ns) == {"experiment": "demo", "steps": 10, "lr": 1.0e-04}
    # The parameters cell edited (steps 10 -> 20) and re-run, then resolve: the new value is taken.
    ns["In"] += ["experiment: str = 'demo'  # e\nsteps: int = 20  # s\nlr: float = 1.0e-04  # l", RESOLVE_CELL]
    ns["steps"] = 20
    assert config.collect(ns)["steps"] == 20


def test_rerunning_resolve_in_a_kernel_works_and_typos_are_named(toy_stage: str, tmp_path: Path) -> None:
    """The issue's failure: resolve again after later cells defined ``run``, ``info``, ``result``."""
    cell = f"experiment: str = 'exp'  # e\noutput_root: str = {str(tmp_path)!r}  # o\nsteps: int = 3  # s"
    ns = _kernel([cell, RESOLVE_CELL], experiment="exp", output_root=str(tmp_path), steps=3)
    first = config.resolve(toy_stage, ns)
    ns.update(run=first, info={"device": "cpu"}, result=object())
    ns["In"] += ["info = {}", RESOLVE_CELL]
    assert config.resolve(toy_stage, ns).params.steps == 3
    # A typo typed into the parameters cell is an error naming it.
    ns["In"] += [cell + "\nstesp: int = 4  # typo", RESOLVE_CELL]
    ns["stesp"] = 4
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) \['stesp'\]"):
        config.resolve(toy_stage, ns)
    # ...and so is one papermill injected (papermill -p lerning_rate 0.1).
    ns["In"] += [cell, "# Parameters\nlerning_rate = 0.1\n", RESOLVE_CELL]
    ns["lerning_rate"] = 0.1
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) \['lerning_rate'\]"):
        config.resolve(toy_stage, ns)


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns)."""
    import hashlib

    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_resolve_writes_nothing_and_begin_writes_params_env_and_clears_done(toy_stage: str, tmp_path: Path) -> None:
    values = {"experiment": "exp", "output_root": str(tmp_path), "steps": 2}
    run = config.resolve(toy_stage, values)
    assert run.run_dir == tmp_path / "exp" / "toy" and not run.run_dir.exists()
    (run.run_dir / "model").mkdir(parents=True)
    assert run.begin(stale=("model",)) is True
    assert yaml.safe_load((run.run_dir / "params.yaml").read_text())["steps"] == 2
    env = json.loads((run.run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and env["torch_device"] in ("cpu", "cuda")
    assert not (run.run_dir / "model").exists(), "an earlier run's model is not left beside new params"
    # A run in progress (no DONE) begins again freely, e.g. after an interruption.
    runs.write_text(run.run_dir / "stale.txt", "x")
    assert config.resolve(toy_stage, {**values, "steps": 5}).begin(stale=("stale.txt",)) is True
    assert yaml.safe_load((run.run_dir / "params.yaml").read_text())["steps"] == 5
    assert not (run.run_dir / "stale.txt").exists()


def test_finished_run_is_reused_with_same_params_and_guarded_with_others(toy_stage: str, tmp_path: Path) -> None:
    values = {"experiment": "exp", "output_root": str(tmp_path), "steps": 2}
    run = config.resolve(toy_stage, values)
    run.begin()
    runs.mark_complete(run.run_dir, {"global_step": 2})
    before = _files(run.run_dir)
    # Same params (and the resume / force switches aside): resolve and begin write nothing.
    again = config.resolve(toy_stage, {**values, "output_root": str(tmp_path) + "/./"})
    assert again.finished and again.reusable and again.differences() == {}
    assert again.begin() is False
    runs.mark_complete(again.run_dir, {"global_step": 99})  # a reused run keeps its DONE
    assert _files(run.run_dir) == before
    # Other params: a clear error naming the differing keys and the two ways out, before anything is written.
    with pytest.raises(ParamError, match=r"finished 'toy' run with other parameters \(lr: 0.0001 -> 0.01, steps: 2 -> 3\)"
                                         r".*run_name.*force=True"):
        config.resolve(toy_stage, {**values, "steps": 3, "lr": 1.0e-02})
    assert _files(run.run_dir) == before
    # force=True replaces it: begin clears DONE and writes the new params.
    forced = config.resolve(toy_stage, {**values, "steps": 3, "force": True})
    assert not forced.reusable and forced.begin() is True
    assert not runs.is_complete(run.run_dir)
    assert yaml.safe_load((run.run_dir / "params.yaml").read_text())["steps"] == 3
    # force with the same params retrains too (never reuses).
    runs.mark_complete(run.run_dir)
    assert config.resolve(toy_stage, {**values, "steps": 3, "force": True}).begin() is True


def test_load_yaml_rejects_nested_and_non_mapping(tmp_path: Path) -> None:
    nested = tmp_path / "nested.yaml"
    nested.write_text("a: 1\nb:\n  c: 2\n")
    with pytest.raises(ParamError, match=r"nested.yaml: parameters must be flat.*\['b'\]"):
        config.load_yaml(nested)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ParamError, match="list.yaml: expected a flat mapping"):
        config.load_yaml(listy)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ParamError, match="broken.yaml: invalid YAML"):
        config.load_yaml(broken)


PARAM_FILES = sorted(p for p in (ROOT / "params").rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_params_yaml_parses_and_validates(path: Path) -> None:
    """Keys and types of every params file match its stage (paper inputs exist only on clusters)."""
    values = config.load_yaml(path)
    stage = values.get("stage")
    assert stage in vocab.STAGES, f"{path}: 'stage: {stage}' must be one of {vocab.STAGES}"
    assert values.get("run_name", path.stem) == path.stem, f"{path}: run_name must be the file's name or absent"
    text = path.read_text()
    # PyYAML reads 1e-5 as a string: floats must carry a dot.
    assert not re.search(r":\s*[-+]?\d+e[-+]?\d+\s*(#.*)?$", text, re.M), f"{path}: write floats like 1.0e-05"
    params = config.validate(stage, values, source=str(path), check_inputs=False)
    if path.stem == "grpo_think":
        assert params.thinking is True, f"{path}: grpo_think starts from the cold start (thinking: true)"


def test_accelerate_configs_parse() -> None:
    for path in sorted((ROOT / "params" / "accelerate").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and "distributed_type" in data, path


def test_environment_yml_agrees_with_pyproject() -> None:
    """environment.yml names Python and installs the same lock as ``make install``, then the package:
    pyproject and the lock stay the one truth."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    py = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    major, minor = (int(x) for x in py.split("=")[-1].split(".")[:2])
    lo = project["requires-python"].removeprefix(">=")
    assert (major, minor) >= tuple(int(x) for x in lo.split(".")), (py, project["requires-python"])
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert "-r requirements/lock.txt" in pip_section and pip_section[-1] == "-e .", pip_section
    assert not [d for d in pip_section if not d.startswith(("-r ", "-e ", "--"))], \
        "environment.yml must install the lock, not re-list its dependencies"
    conda_pkgs = {d.split("=")[0] for d in deps if isinstance(d, str)}
    assert conda_pkgs <= {"python", "pip"}, f"dependencies belong in pyproject.toml: {conda_pkgs}"
    required = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "papermill", "jupyterlab",
                "ipykernel", "matplotlib", "seaborn", "pandas", "pyarrow", "pyyaml", "tqdm", "radgraph", "scipy"}
    names = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert required <= names, required - names
    assert not any(d.startswith("torchvision") for d in project["dependencies"])


def test_atomic_write_keeps_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "table.json"
    runs.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), runs.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]


def test_write_table_rejects_unknown_suffix(tmp_path: Path) -> None:
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2]})
    assert pd.read_csv(runs.write_table(df, tmp_path / "t.csv")).a.tolist() == [1, 2]
    assert pd.read_parquet(runs.write_table(df, tmp_path / "t.parquet")).a.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"t.xlsx: unsupported table suffix"):
        runs.write_table(df, tmp_path / "t.xlsx")


def test_common_params_fields_are_documented() -> None:
    for f in dataclasses.fields(CommonParams):
        assert f.metadata.get("help"), f.name


def _own_defaults(stage: str) -> dict[str, object]:
    """The defaults of the fields radlab declares (TRL's other fields keep TRL's defaults)."""
    own = {f.name for f in own_fields(config.params_class(stage))}
    return {k: v for k, v in config.defaults(stage).items() if k in own}


@pytest.mark.parametrize("stage", ["data", "sft", "cold_start", "grpo", "analysis"])
def test_demo_params_are_the_notebook_defaults(stage: str) -> None:
    """params/demo/<stage>.yaml is the embedded default: exactly the dataclass (and notebook) defaults,
    plus the 'stage' key that names its notebook (run_name '' is the file's name, so it is left out)."""
    values = config.load_yaml(ROOT / "params" / "demo" / f"{stage}.yaml")
    expected = {**_own_defaults(stage), "stage": stage}
    del expected["run_name"], expected["force"]  # force: a per-invocation switch, never in a file
    assert values == expected


def test_stage_key_must_match_the_class() -> None:
    assert config.validate("data", {"stage": "data"}, check_inputs=False).stage == "data"
    assert config.validate("data", {}, check_inputs=False).stage == "data"  # '' means this stage
    with pytest.raises(ParamError, match=r"notebook 03_grpo.*stage 'sft'.*parameters of stage 'grpo'"):
        config.validate("grpo", {"stage": "sft"}, source="notebook 03_grpo.ipynb", check_inputs=False)


@pytest.mark.parametrize("stage", ["data", "sft", "cold_start", "grpo", "analysis"])
def test_run_name_defaults_to_the_stage_and_names_the_folder(stage: str, tmp_path: Path) -> None:
    p = config.validate(stage, {"output_root": str(tmp_path), "experiment": "e"}, check_inputs=False)
    assert p.run_name == stage or (stage == "grpo" and p.run_name == "grpo")
    assert p.run_dir == tmp_path / "e" / stage
    q = config.validate(stage, {"output_root": str(tmp_path), "experiment": "e", "run_name": "x1"}, check_inputs=False)
    assert q.run_dir == tmp_path / "e" / "x1"
    with pytest.raises(ParamError, match=r"'run_name': '\.\./x' must be a plain folder name"):
        config.validate(stage, {"run_name": "../x"}, check_inputs=False)


def test_parse_item_reads_options_as_yaml_scalars() -> None:
    assert vocab.parse_item("bleu") == ("bleu", {})
    assert vocab.parse_item(" f1radgraph:level=complete ") == ("f1radgraph", {"level": "complete"})
    assert vocab.parse_item("r:x=0.5:n=3:on=true:s='a b'") == ("r", {"x": 0.5, "n": 3, "on": True, "s": "a b"})
    # A colon not followed by key= stays in the value (paths, URLs).
    assert vocab.parse_item("mimic:root=C:/data:url=http://h:8000/v1") == (
        "mimic", {"root": "C:/data", "url": "http://h:8000/v1"})
    assert vocab.parse_items("a, b:k=v,,c") == [("a", {}), ("b", {"k": "v"}), ("c", {})]
    assert vocab.parse_items(["a", "b:k=1"]) == [("a", {}), ("b", {"k": 1})]
    assert vocab.parse_items("") == []


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("level=complete", r"item 'level=complete': expected 'name' or 'name:key=value"),
        (":k=1", r"item ':k=1': expected"),
        ("r:k", r"item 'r:k': expected"),
        ("r:k=", r"item 'r:k=': option 'k' has no value"),
        ("r:k=1:k=2", r"item 'r:k=1:k=2': option 'k' given twice"),
        ("r:k=[1", r"item 'r:k=\[1': option 'k': '\[1' is not a YAML scalar"),
        ("r:k={a: 1}", r"option 'k'.* must be a scalar"),
    ],
)
def test_parse_item_rejects_malformed_items_naming_them(text: str, pattern: str) -> None:
    with pytest.raises(ParamError, match=pattern):
        vocab.parse_item(text)


@pytest.mark.parametrize("exp", ["demo", "smoke"])
def test_reward_ablation_differs_from_grpo_only_in_its_rewards(exp: str) -> None:
    """grpo_bleu.yaml is the Table 3 ablation: grpo.yaml with another report reward, nothing else
    (besides the runner's 'seeds: 0': one training draw when --seeds replicates the other runs)."""
    base = config.load_yaml(ROOT / "params" / exp / "grpo.yaml")
    ablation = config.load_yaml(ROOT / "params" / exp / "grpo_bleu.yaml")
    assert ablation.pop("reward_names") == "bleu,box_soft_f1" and ablation.pop("run_name") == "grpo_bleu"
    assert ablation.pop("seeds") == 0
    base.pop("reward_names")
    assert ablation == base


@pytest.mark.parametrize("exp", ["demo", "smoke"])
def test_combined_reward_ablation_is_one_more_table3_row(exp: str) -> None:
    """grpo_chexpert.yaml: grpo.yaml with F1-RadGraph and CheXpert F1 as report rewards, nothing else;
    labelled ``sft+grpo[f1radgraph+chexpert_f1]`` and grouped with ``grpo`` (and ``grpo_bleu``) in Table 3."""
    from radlab.experiment import ModelSpec, label_runs, reward_ablations

    base = config.load_yaml(ROOT / "params" / exp / "grpo.yaml")
    combined = config.load_yaml(ROOT / "params" / exp / "grpo_chexpert.yaml")
    assert combined.pop("reward_names") == "f1radgraph,chexpert_f1,box_soft_f1"
    assert combined.pop("run_name") == "grpo_chexpert"
    base.pop("reward_names")
    assert combined == base
    run_params = {name: {**config.load_yaml(ROOT / "params" / exp / f"{name}.yaml")}
                  for name in ("sft", "grpo", "grpo_bleu", "grpo_chexpert")}
    labels = label_runs(run_params)
    assert labels["grpo_chexpert"] == "sft+grpo[f1radgraph+chexpert_f1]"
    specs = [ModelSpec(labels[n], "x", run_params=p, run=n, start="sft" if n != "sft" else "") for n, p in run_params.items()]
    (group,) = reward_ablations(specs)
    assert [s.run for s in group.runs] == ["grpo", "grpo_bleu", "grpo_chexpert"]
    assert group.reference == "grpo" and group.differences["grpo_chexpert"] == []


def _notebook_defaults(stage_notebook: str) -> dict[str, Any]:
    """The values of a notebook's parameters cell (its first code cell), as papermill starts from."""
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / f"{stage_notebook}.ipynb", as_version=4)
    namespace: dict[str, Any] = {}
    exec(next(c.source for c in nb.cells if c.cell_type == "code"), namespace)  # noqa: S102 - our own notebook
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


@pytest.mark.parametrize("thinking, budget", [(False, 64), (True, 160)])
def test_grpo_completion_budget_is_derived_from_thinking(tmp_path: Path, thinking: bool, budget: int) -> None:
    """``make demo`` then ``papermill 03_grpo.ipynb -p thinking True`` reuses the finished run: the demo
    params file and the notebook's defaults both leave max_completion_length at 0, which resolves to the
    budget of the thinking setting, so the saved params.yaml (derived value) compares equal."""
    from radlab.config import StageRun

    demo = config.load_yaml(ROOT / "params" / "demo" / ("grpo_think.yaml" if thinking else "grpo.yaml"))
    assert demo["max_completion_length"] == 0 and demo["thinking"] is thinking
    made = config.validate("grpo", {**demo, "output_root": str(tmp_path)}, check_inputs=False)
    assert made.max_completion_length == budget
    # The finished run `make demo` leaves (params.yaml holds the derived value).
    made.run_dir.mkdir(parents=True)
    runs.write_yaml(made.run_dir / "params.yaml", dataclasses.asdict(made))
    runs.mark_complete(made.run_dir, {})
    assert config.read_params(made.run_dir)["max_completion_length"] == budget

    notebook = {**_notebook_defaults("03_grpo"), "output_root": str(tmp_path), "thinking": thinking}
    assert notebook["max_completion_length"] == 0 and notebook["experiment"] == "demo"
    run = StageRun.of(config.validate("grpo", notebook, check_inputs=False))
    assert run.run_dir == made.run_dir and run.differences() == {}
    run.check()  # no "finished 'grpo' run with other parameters"
    assert run.reusable

    # An explicit budget is kept, and one that differs from the finished run's is still a difference.
    other = StageRun.of(config.validate("grpo", {**notebook, "max_completion_length": 100}, check_inputs=False))
    assert other.params.max_completion_length == 100
    assert other.differences() == {"max_completion_length": (budget, 100)}
    with pytest.raises(ParamError, match=rf"other parameters \(max_completion_length: {budget} -> 100\)"):
        other.check()
    with pytest.raises(ParamError, match="max_completion_length >= 1"):
        config.validate("grpo", {**notebook, "max_completion_length": -1}, check_inputs=False)
