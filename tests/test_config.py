"""Parameter validation, params YAMLs, environment files and run-folder writes."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from radlab import config, runs
from radlab.config import ParamError
from radlab.params import CommonParams, own_fields

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
    monkeypatch.setitem(config.STAGE_PARAMS, "toy", _ToyParams)
    monkeypatch.setitem(config.NOTEBOOKS, "toy", "99_toy")
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


def test_collect_ignores_kernel_names_modules_and_callables() -> None:
    ns = {"lr": 0.1, "In": [], "Out": {}, "json": json, "_private": 1, "f": lambda: 0, "get_ipython": print}
    assert config.collect(ns) == {"lr": 0.1}


def test_resolve_writes_params_and_env_and_clears_done(toy_stage: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "exp" / "toy"
    runs.mark_complete(run_dir)
    run = config.resolve(toy_stage, {"experiment": "exp", "output_root": str(tmp_path), "steps": 2})
    assert run.run_dir == run_dir
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["steps"] == 2
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and env["torch_device"] in ("cpu", "cuda")
    assert not runs.is_complete(run_dir)


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
    assert stage in config.STAGES, f"{path}: 'stage: {stage}' must be one of {config.STAGES}"
    assert values.get("run_name", path.stem) == path.stem, f"{path}: run_name must be the file's name or absent"
    text = path.read_text()
    # PyYAML reads 1e-5 as a string: floats must carry a dot.
    assert not re.search(r":\s*[-+]?\d+e[-+]?\d+\s*(#.*)?$", text, re.M), f"{path}: write floats like 1.0e-05"
    config.validate(stage, values, source=str(path), check_inputs=False)


def test_accelerate_configs_parse() -> None:
    for path in sorted((ROOT / "params" / "accelerate").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and "distributed_type" in data, path


def test_environment_yml_agrees_with_pyproject() -> None:
    """environment.yml names Python and installs the package itself: pyproject stays the one truth."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = env["dependencies"]
    py = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    major, minor = (int(x) for x in py.split("=")[-1].split(".")[:2])
    lo = project["requires-python"].removeprefix(">=")
    assert (major, minor) >= tuple(int(x) for x in lo.split(".")), (py, project["requires-python"])
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-e .[dev]"], "environment.yml must install the package, not re-list its dependencies"
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
    del expected["run_name"]
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
    assert config.parse_item("bleu") == ("bleu", {})
    assert config.parse_item(" f1radgraph:level=complete ") == ("f1radgraph", {"level": "complete"})
    assert config.parse_item("r:x=0.5:n=3:on=true:s='a b'") == ("r", {"x": 0.5, "n": 3, "on": True, "s": "a b"})
    # A colon not followed by key= stays in the value (paths, URLs).
    assert config.parse_item("mimic:root=C:/data:url=http://h:8000/v1") == (
        "mimic", {"root": "C:/data", "url": "http://h:8000/v1"})
    assert config.parse_items("a, b:k=v,,c") == [("a", {}), ("b", {"k": "v"}), ("c", {})]
    assert config.parse_items(["a", "b:k=1"]) == [("a", {}), ("b", {"k": 1})]
    assert config.parse_items("") == []


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
        config.parse_item(text)


@pytest.mark.parametrize("exp", ["demo", "smoke"])
def test_reward_ablation_differs_from_grpo_only_in_its_rewards(exp: str) -> None:
    """grpo_bleu.yaml is the Table 3 ablation: grpo.yaml with another report reward, nothing else."""
    base = config.load_yaml(ROOT / "params" / exp / "grpo.yaml")
    ablation = config.load_yaml(ROOT / "params" / exp / "grpo_bleu.yaml")
    assert ablation.pop("reward_names") == "bleu,box_soft_f1" and ablation.pop("run_name") == "grpo_bleu"
    base.pop("reward_names")
    assert ablation == base
