"""The analysis' integrity checks on hand-made inputs: environment differences behind each comparison
(env.json of the runs and their start runs) and the reward-hacking alarm (through the rules annotator)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from radlab import analysis, metrics, runs
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


# --------------------------------------------------------------------------------------------
# Reward hacking
# --------------------------------------------------------------------------------------------

REFS = ["The heart is enlarged. The lungs are clear."] * 10 + ["The heart size is normal. The lungs are clear."] * 10
START = ["The heart is enlarged."] * 10 + ["The lungs are clear."] * 10
# The hedge: "The heart size." shares entities with both the normal and the enlarged heart, so
# F1-RadGraph rises, while the report no longer says cardiomegaly.
HEDGE = ["The heart size. The lungs are clear."] * 20
HONEST = list(REFS)  # better on F1-RadGraph with every finding kept


def _scored(model: str, reports: list[str]) -> pd.DataFrame:
    df = metrics.score_reports(reports, REFS, ids=[f"r{i}" for i in range(len(REFS))])
    df.insert(0, "model", model)
    df["task"], df["prediction"], df["reference"] = "report", reports, REFS
    return df


SPECS = [ModelSpec("sft", "x", run_params={"stage": "sft"}),
         ModelSpec("sft+grpo", "x", run_params={"stage": "grpo", "reward_names": "f1radgraph,box_soft_f1"}, start="sft")]


def test_reward_hacking_alarm_fires_on_the_hedge_sentence(tmp_path: Path) -> None:
    per_sample = pd.concat([_scored("sft", START), _scored("sft+grpo", HEDGE)], ignore_index=True)
    table = analysis.reward_hacking(per_sample, SPECS, n_boot=500, run_dir=tmp_path)
    assert list(table["metric"]) == ["f1radgraph_partial"]  # box_soft_f1 is not a report reward
    row = table.iloc[0]
    assert row["value"] > row["start_value"] and row["diff"] > 0 and row["n"] == 20
    assert row["fallen"].startswith("Cardiomegaly 1.00->0.00 (-1.00 [")
    assert row["new_sentences"] == "the heart size (100%)"  # "the lungs are clear" is in the references
    assert bool(row["alarm"])
    assert (tmp_path / "reward_hacking.csv").exists()
    (sentence,) = analysis.reward_hacking_sentences(table)
    assert sentence.startswith("Reward hacking alarm for sft+grpo: its reward's metric rose over sft (RGF1-P 0.619->0.819")
    assert "Cardiomegaly 1.00->0.00" in sentence and "the heart size (100%)" in sentence


def test_no_alarm_when_the_reward_rises_and_every_label_f1_holds() -> None:
    per_sample = pd.concat([_scored("sft", START), _scored("sft+grpo", HONEST)], ignore_index=True)
    table = analysis.reward_hacking(per_sample, SPECS, n_boot=500)
    row = table.iloc[0]
    assert row["diff"] > 0 and row["fallen"] == "" and row["new_sentences"] == "" and not row["alarm"]
    (sentence,) = analysis.reward_hacking_sentences(table)
    assert sentence.startswith("No reward hacking alarm for sft+grpo vs sft: no CheXpert finding's F1 fell")


def test_no_alarm_when_a_label_falls_but_the_reward_does_not_rise() -> None:
    # The start writes the hedge, the GRPO model the terse reports: cardiomegaly F1 rises, F1-RadGraph falls.
    per_sample = pd.concat([_scored("sft", HEDGE), _scored("sft+grpo", START)], ignore_index=True)
    table = analysis.reward_hacking(per_sample, SPECS, n_boot=500)
    assert table.iloc[0]["diff"] < 0 and not table.iloc[0]["alarm"]
    assert "no reward metric rose" in analysis.reward_hacking_sentences(table)[0]


def test_reward_hacking_skips_what_it_cannot_check() -> None:
    per_sample = _scored("sft", START)
    assert analysis.reward_hacking(per_sample, SPECS).empty  # the GRPO model was not evaluated
    length_only = [SPECS[0], ModelSpec("sft+grpo", "x", run_params={"stage": "grpo", "reward_names": "length_guard"},
                                       start="sft")]
    both = pd.concat([per_sample, _scored("sft+grpo", HEDGE)], ignore_index=True)
    assert analysis.reward_hacking(both, length_only).empty  # no report-quality reward to check
    assert analysis.reward_hacking(both.iloc[0:0], SPECS).empty


def test_sentences_are_normalised_and_new_ones_need_a_share_and_two_reports() -> None:
    assert analysis.report_sentences("The heart  size.\nNo effusion!  Lungs clear") == {
        "the heart size", "no effusion", "lungs clear"}
    assert analysis.report_sentences("") == set() and analysis.report_sentences(None) == set()  # type: ignore[arg-type]
    reports = ["A. B."] * 2 + ["C."] * 38
    assert analysis.new_sentences(reports, ["C."]) == {"a": 0.05, "b": 0.05}
    assert analysis.new_sentences(reports, ["C.", "b"]) == {"a": 0.05}
    assert analysis.new_sentences(["A.", "C."] * 1 + ["C."] * 38, []) == {"c": 39 / 40}  # "a": one report only
    assert analysis.new_sentences([], []) == {}
