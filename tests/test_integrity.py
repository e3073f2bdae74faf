"""The analysis' integrity checks on hand-made inputs: environment differences behind each comparison
(env.json of the runs and their start runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from radlab import analysis, runs
from radlab.experiment import ModelSpec

ENV = {"created_utc": "2026-12-07T10:00:00+00:00", "git_commit": "abc123", "python": "3.11.7",
       "platform": "Linux-x86_64", "cpu_model": "AMD EPYC", "torch_build": "2.13.0+cpu", "torch_cuda": None,
       "torch_device": "cpu", "cuda_device_name": None, "torch_threads": 2,
       "packages": {"torch": "2.13.0+cpu", "transformers": "5.25.0", "peft": "0.22.0"}}


def _run(exp: Path, name: str, params: dict, env: dict | None) -> Path:
    d = exp / name
    d.mkdir(parents=True)
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    if env is not None:
        (d / "env.json").write_text(json.dumps(env))
    return d


def _pairs(*pairs: tuple[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"model_a": a, "model_b": b, "task": "report", "metric": "rouge_l"} for a, b in pairs])


@pytest.fixture
def experiment(tmp_path: Path) -> list[ModelSpec]:
    exp = tmp_path / "runs" / "e"
    other = {**ENV, "cpu_model": "Intel Xeon", "created_utc": "2026-12-08T00:00:00+00:00",
             "packages": {**ENV["packages"], "transformers": "5.24.0"}}
    sft = _run(exp, "sft", {"stage": "sft"}, ENV)
    grpo = _run(exp, "grpo", {"stage": "grpo", "thinking": False, "init_model": ""}, {**ENV, "created_utc": "x"})
    more = _run(exp, "sft_more", {"stage": "sft"}, other)
    bleu = _run(exp, "grpo_bleu", {"stage": "grpo", "thinking": False, "reward_names": "bleu"},
                {**ENV, "git_commit": "def456-dirty"})
    old = _run(exp, "sft_old", {"stage": "sft"}, None)
    return [ModelSpec("sft", "x", run_dir=sft, run_params={"stage": "sft"}),
            ModelSpec("sft+grpo", "x", run_dir=grpo, run_params={"stage": "grpo"}, start="sft"),
            ModelSpec("sft_more", "x", run_dir=more, run_params={"stage": "sft"}),
            ModelSpec("sft+grpo[bleu]", "x", run_dir=bleu, run_params={"stage": "grpo"}, start="sft"),
            ModelSpec("sft_old", "x", run_dir=old, run_params={"stage": "sft"}),
            ModelSpec("base", "radlab:small")]


def test_run_chain_follows_the_default_start(experiment: list[ModelSpec]) -> None:
    grpo = experiment[1].run_dir
    assert [p.name for p in analysis.run_chain(grpo)] == ["grpo", "sft"]
    assert [p.name for p in analysis.run_chain(experiment[0].run_dir)] == ["sft"]
    assert analysis.run_chain(None) == []


def test_environment_differences_list_every_difference_and_say_when_there_is_none(
        experiment: list[ModelSpec], tmp_path: Path) -> None:
    comparisons = _pairs(("sft+grpo", "sft"), ("sft+grpo", "sft_more"), ("sft+grpo[bleu]", "sft+grpo"),
                         ("sft", "sft_old"), ("sft", "text_only"), ("sft", "base"))
    out_dir = tmp_path / "analysis"
    out_dir.mkdir()
    diffs = analysis.environment_differences(experiment, comparisons, out_dir)
    by_pair = {k: dict(zip(g["field"], zip(g["a"], g["b"]))) for k, g in diffs.groupby(["model_a", "model_b"])}
    # Same environment (created_utc is not compared): no rows.
    assert ("sft+grpo", "sft") not in by_pair
    # sft_more: another CPU and transformers; nothing else.
    assert by_pair[("sft+grpo", "sft_more")] == {"cpu_model": ("AMD EPYC", "Intel Xeon"),
                                                 "packages/transformers": ("5.25.0", "5.24.0")}
    # A difference inside a chain (the GRPO run's commit vs its SFT start's) is named per run.
    assert by_pair[("sft+grpo[bleu]", "sft+grpo")] == {"git_commit": ("def456-dirty (grpo_bleu); abc123 (sft)", "abc123")}
    # A run without env.json: its environment is unknown, every field says so.
    assert by_pair[("sft", "sft_old")]["cpu_model"] == ("AMD EPYC", "no env.json")
    # Shortcut baselines and models without a run folder are not compared.
    assert not {("sft", "text_only"), ("sft", "base")} & set(by_pair)
    assert pd.read_csv(out_dir / "environment_differences.csv").shape == diffs.shape

    text = analysis.environment_sentences(diffs, experiment, comparisons)
    assert text[0].startswith("Environment, sft+grpo vs sft: every run behind both models shares the environment")
    assert "cpu_model AMD EPYC vs Intel Xeon; transformers 5.25.0 vs 5.24.0" in text[1]
    assert len(text) == 4


def test_environment_info_records_cpu_model_and_torch_build(tmp_path: Path) -> None:
    info = runs.environment_info()
    assert info["cpu_model"] and info["torch_build"].startswith(info["packages"]["torch"].split("+")[0])
    assert "torch_cuda" in info
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    assert runs.cpu_model(cpuinfo) == "AMD EPYC 9654 96-Core Processor"
    cpuinfo.write_text("processor\t: 0\n")  # no model name (e.g. some ARM kernels): platform's answer
    assert runs.cpu_model(cpuinfo) == runs.cpu_model(tmp_path / "absent")
