"""Replicates (models trained with several seeds) in the analysis: grouping, pairing, pooling, tables,
findings and the per-replicate figure, on hand-made run params and per-sample score tables."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radlab import analysis, runs
from radlab import evaluation as ev
from radlab.config import validate
from radlab.experiment import discover_models, label_runs, replicates, split_replicate
from radlab.metrics import paired_bootstrap
from radlab.plots_analysis import make_figures, one_per_label, replicate_differences
from radlab.vocab import ParamError

# ---------------------------------------------------------------------------------------------
# Which runs are replicates of which (from params.yaml)
# ---------------------------------------------------------------------------------------------

SFT = {"stage": "sft", "seed": 0, "run_name": "sft", "learning_rate": 1.0e-3, "init_model": "", "init_run": ""}


def _p(base: dict, **kw: object) -> dict:
    return {**base, **kw}


RUNS = {
    "sft": SFT,
    "sft_s1": _p(SFT, seed=1, run_name="sft_s1"),
    "sft_s2": _p(SFT, seed=2, run_name="sft_s2", learning_rate=0.5),  # a user's own run: other lr
    "sft_s3": _p(SFT, seed=0, run_name="sft_s3"),  # named like one, but seed 0
    "more": _p(SFT, run_name="more", init_run="sft", init_model="/r/e/sft/model"),
    "more_s1": _p(SFT, seed=1, run_name="more_s1", init_run="sft_s1", init_model="/r/e/sft_s1/model"),
    "grpo": {"stage": "grpo", "seed": 0, "init_model": "/r/e/sft/model", "reward_names": "f1radgraph,box_soft_f1"},
    "grpo_s1": {"stage": "grpo", "seed": 1, "init_model": "/r/e/sft_s1/model", "reward_names": "f1radgraph,box_soft_f1"},
    "grpo_bleu": {"stage": "grpo", "seed": 0, "init_model": "/r/e/sft/model", "reward_names": "bleu,box_soft_f1"},
}


def test_replicates_are_found_from_params_and_share_the_label() -> None:
    assert replicates(RUNS) == {"sft_s1": ("sft", 1), "more_s1": ("more", 1), "grpo_s1": ("grpo", 1)}
    labels = label_runs(RUNS)
    assert labels["sft_s1"] == labels["sft"] == "sft"
    assert labels["more_s1"] == labels["more"] == "sft_more"
    assert labels["grpo_s1"] == labels["grpo"] == "sft+grpo"
    assert labels["sft_s2"] == "sft_s2" and labels["sft_s3"] == "sft_s3"  # runs of their own
    assert split_replicate("sft+grpo@s2") == ("sft+grpo", 2) and split_replicate("sft@sx") == ("sft@sx", 0)


def _finished(exp: Path, run: str, params: dict) -> None:
    runs.write_yaml(exp / run / "params.yaml", params)
    (exp / run / "model").mkdir(parents=True)
    (exp / run / "model" / "config.json").write_text("{}")
    runs.mark_complete(exp / run)


def test_discover_models_names_replicates_and_reads_every_one(tmp_path: Path) -> None:
    exp = tmp_path / "e"
    d = str(exp)
    _finished(exp, "sft", SFT)
    _finished(exp, "sft_s1", _p(SFT, seed=1, run_name="sft_s1"))
    _finished(exp, "grpo", {"stage": "grpo", "seed": 0, "init_model": f"{d}/sft/model"})
    _finished(exp, "grpo_s1", {"stage": "grpo", "seed": 1, "init_model": f"{d}/sft_s1/model"})
    _finished(exp, "grpo_bleu", {"stage": "grpo", "seed": 0, "init_model": f"{d}/sft/model", "reward_names": "bleu"})
    params = validate("analysis", {"experiment": "e", "output_root": str(tmp_path)}, check_inputs=False)
    specs, notes = discover_models(params)
    got = {s.run: (s.name, s.group, s.replicate, s.start) for s in specs}
    assert got == {"sft": ("sft@s0", "sft", 0, ""), "sft_s1": ("sft@s1", "sft", 1, ""),
                   "grpo": ("sft+grpo@s0", "sft+grpo", 0, "sft"), "grpo_s1": ("sft+grpo@s1", "sft+grpo", 1, "sft"),
                   "grpo_bleu": ("sft+grpo[bleu]", "sft+grpo[bleu]", 0, "sft")} and notes == []
    # Naming a run names its replicates; a run's comparisons name the label of all of them.
    only = validate("analysis", {"experiment": "e", "output_root": str(tmp_path), "models": "grpo"}, check_inputs=False)
    assert sorted(s.name for s in discover_models(only)[0]) == ["sft+grpo@s0", "sft+grpo@s1"]
    frame = analysis.models_frame(specs).set_index("run")
    assert frame.loc["grpo_s1", ["model", "label", "seed"]].tolist() == ["sft+grpo@s1", "sft+grpo", 1]
    bad = validate("analysis", {"experiment": "e", "output_root": str(tmp_path), "model_dirs": "x@s1=radlab:tiny"},
                   check_inputs=False)
    with pytest.raises(ParamError, match="'x@s1': '@s' marks replicates"):
        discover_models(bad)


# ---------------------------------------------------------------------------------------------
# Pairing and pooled comparisons on hand-made per-sample tables
# ---------------------------------------------------------------------------------------------


def test_pair_replicates_by_seed_with_a_note_when_counts_differ() -> None:
    models = ["sft@s0", "sft@s1", "sft@s2", "sft+grpo@s0", "sft+grpo@s1", "text_only", "sft_more"]
    pairs, note = ev.pair_replicates(models, "sft+grpo", "sft")
    assert pairs == [(0, "sft+grpo@s0", "sft@s0"), (1, "sft+grpo@s1", "sft@s1")]
    assert note == ("comparison sft+grpo − sft: 2 replicate(s) of sft+grpo (seeds 0, 1), 3 of sft (seeds 0, 1, 2): "
                    "paired the same seed on both sides (seeds 0, 1)")
    assert ev.pair_replicates(models, "sft", "text_only") == (
        [(0, "sft@s0", "text_only"), (1, "sft@s1", "text_only"), (2, "sft@s2", "text_only")], "")
    assert ev.pair_replicates(models, "sft+grpo", "sft_more")[0] == [(0, "sft+grpo@s0", "sft_more")]
    assert ev.pair_replicates(models, "sft+grpo@s1", "sft@s2") == ([(1, "sft+grpo@s1", "sft@s2")], "")
    assert ev.pair_replicates(models, "sft+grpo", "nope") == ([], "")


def _scores(model: str, report: np.ndarray, grounding: np.ndarray) -> pd.DataFrame:
    n = len(report)
    return pd.DataFrame({
        "model": model, "task": ["report"] * n + ["grounding"] * n, "id": [f"r{i}" for i in range(n)] * 2,
        "grounding_kind": [""] * n + ["anatomy"] * n,
        "rouge_l": np.r_[report, [np.nan] * n], "map50": np.r_[[np.nan] * n, grounding]})


def _per_sample(gains: dict[int, tuple[float, float]], sft_seeds: tuple[int, ...] = (0, 1, 2), n: int = 150
                ) -> pd.DataFrame:
    """sft@s<k> and sft+grpo@s<k> (score = item base + replicate shift + gain), plus text_only.
    ``gains``: seed -> (report gain, grounding gain) of RL over its own SFT replicate."""
    rng = np.random.default_rng(0)
    base_r, base_g = rng.uniform(0.2, 0.6, n), rng.uniform(0.2, 0.6, n)
    frames = [_scores("text_only", base_r * 0.5, base_g * 0.1)]
    many = len(sft_seeds) > 1
    for k in sft_seeds:
        shift = 0.05 * k  # SFT seeds differ as a whole; pairing within a replicate removes it
        name = f"sft@s{k}" if many else "sft"
        frames.append(_scores(name, base_r + shift + rng.normal(0, 0.05, n), base_g + shift + rng.normal(0, 0.05, n)))
    for k, (gr, gg) in gains.items():
        sft = frames[1 + sft_seeds.index(k)]
        name = f"sft+grpo@s{k}" if len(gains) > 1 else "sft+grpo"
        frames.append(_scores(name, sft["rouge_l"].to_numpy()[:n] + gr + rng.normal(0, 0.05, n),
                              sft["map50"].to_numpy()[n:] + gg + rng.normal(0, 0.05, n)))
    return pd.concat(frames, ignore_index=True)


GAINS = {0: (0.04, -0.01), 1: (0.02, 0.03), 2: (-0.01, 0.05)}


def test_comparisons_pool_replicates_and_keep_each_replicate() -> None:
    per_sample = _per_sample(GAINS)
    comp = ev.comparisons_table(per_sample, [("sft+grpo", "sft"), ("sft", "text_only")], n_boot=400)
    assert list(comp.columns) == ev.COMPARISONS_COLUMNS
    pooled = comp[comp["replicate"].isna()].set_index(["model_a", "model_b", "task", "metric"])
    row = pooled.loc[("sft+grpo", "sft", "report", "rouge_l")]
    own = comp[(comp["model_b"].str.startswith("sft@")) & (comp["metric"] == "rouge_l") & (comp["task"] == "report")]
    assert own["replicate"].tolist() == [0, 1, 2] and own["model_a"].tolist() == [f"sft+grpo@s{k}" for k in range(3)]
    assert row["diff"] == pytest.approx(own["diff"].mean()) and row["n_replicates"] == 3 and row["n"] == 150
    assert row["n_agree"] == sum(np.sign(own["diff"]) == np.sign(row["diff"]))
    assert own["diff"].tolist() == pytest.approx([g[0] for g in GAINS.values()], abs=0.02)
    # Each replicate's own row is its plain paired comparison (items only).
    a = per_sample[(per_sample["model"] == "sft+grpo@s1") & (per_sample["task"] == "report")]
    b = per_sample[(per_sample["model"] == "sft@s1") & (per_sample["task"] == "report")]
    ref = paired_bootstrap(a, b, 400, 0, metrics=["rouge_l"]).iloc[0]
    one = own[own["replicate"] == 1].iloc[0]
    assert (one["diff"], one["ci_low"], one["ci_high"]) == pytest.approx((ref["diff"], ref["ci_low"], ref["ci_high"]))
    # The pooled CI covers the seeds' spread: wider than any one replicate's item CI.
    assert row["ci_high"] - row["ci_low"] > (own["ci_high"] - own["ci_low"]).max()
    # text_only has no training draw: paired with every SFT replicate.
    assert pooled.loc[("sft", "text_only", "grounding", "map50"), "n_replicates"] == 3
    assert "grounding:anatomy" in set(pooled.index.get_level_values("task"))


def test_one_replicate_is_todays_comparison() -> None:
    per_sample = _per_sample({0: (0.03, 0.02)}, sft_seeds=(0,))
    comp = ev.comparisons_table(per_sample, [("sft+grpo", "sft")], n_boot=400)
    assert comp["replicate"].isna().all() and (comp["n_replicates"] == 1).all() and (comp["n_agree"] == 1).all()
    a = per_sample[(per_sample["model"] == "sft+grpo") & (per_sample["task"] == "report")]
    b = per_sample[(per_sample["model"] == "sft") & (per_sample["task"] == "report")]
    ref = paired_bootstrap(a, b, 400, 0, metrics=["rouge_l"]).iloc[0]
    row = comp[(comp["task"] == "report") & (comp["metric"] == "rouge_l")].iloc[0]
    assert (row["diff"], row["ci_low"], row["ci_high"]) == (ref["diff"], ref["ci_low"], ref["ci_high"])


def test_unequal_replicates_pair_what_exists_and_say_so() -> None:
    per_sample = _per_sample({0: (0.03, 0.0), 1: (0.02, 0.0)}, sft_seeds=(0, 1, 2))
    pairs = [("sft+grpo", "sft")]
    comp = ev.comparisons_table(per_sample, pairs, n_boot=200)
    assert set(comp.loc[comp["replicate"].isna(), "n_replicates"]) == {2}
    assert set(comp["replicate"].dropna()) == {0, 1}
    (note,) = ev.pairing_notes(per_sample, pairs)
    assert "3 of sft (seeds 0, 1, 2): paired the same seed on both sides (seeds 0, 1)" in note


# ---------------------------------------------------------------------------------------------
# Tables, key tests, findings and the figure
# ---------------------------------------------------------------------------------------------


def _tables(gains: dict[int, tuple[float, float]], sft_seeds: tuple[int, ...] = (0, 1, 2)
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_sample = _per_sample(gains, sft_seeds)
    results = ev.results_table(per_sample, n_boot=200)
    comp = ev.comparisons_table(per_sample, [("sft+grpo", "sft"), ("sft", "text_only")], n_boot=400)
    return results, comp


def test_tables_show_replicate_means_with_their_spread() -> None:
    results, _ = _tables(GAINS)
    pooled = analysis.pool_results(results).set_index(["model", "task", "metric"])
    row = pooled.loc[("sft+grpo", "report", "rouge_l")]
    reps = results[results["model"].str.startswith("sft+grpo@") & (results["task"] == "report")
                   & (results["metric"] == "rouge_l")]["value"]
    assert row["value"] == pytest.approx(reps.mean()) and row["sd"] == pytest.approx(reps.std(ddof=1))
    assert (row["n_replicates"], row["min"], row["max"]) == (3, reps.min(), reps.max()) and math.isnan(row["ci_low"])
    assert pooled.loc[("text_only", "report", "rouge_l"), "n_replicates"] == 1  # keeps its CI
    t1 = analysis.table1(results)
    assert list(t1.text.index) == ["sft", "sft+grpo", "text_only"]
    assert t1.text.loc["sft+grpo", "R-L"].replace("**", "").endswith(
        f"{row['value'] * 100:.1f} ± {row['sd'] * 100:.1f} (3 seeds)".split(" ", 1)[1])
    assert "[" in t1.text.loc["text_only", "R-L"] and "mean ± sd over its seeds" in t1.caption
    t2 = analysis.table2(results)
    assert "(3 seeds)" in t2.text.loc["sft", "All"]
    assert analysis.pool_results(analysis.pool_results(results)) is not None  # pooled input passes through
    single, _ = _tables({0: (0.03, 0.02)}, sft_seeds=(0,))
    assert "seeds" not in analysis.table1(single).caption


def test_key_tests_and_findings_pool_replicates() -> None:
    results, comp = _tables({0: (0.06, 0.05), 1: (0.05, 0.06), 2: (0.07, 0.04)})
    tests = analysis.key_tests(comp, results, "rouge_l", "map50")
    assert set(zip(tests["model_a"], tests["model_b"])) == {("sft+grpo", "sft"), ("sft", "text_only")}
    rl = tests.set_index(["model_a", "task"]).loc[("sft+grpo", "report")]
    assert (rl["n_replicates"], rl["n_agree"], rl["verdict"]) == (3, 3, "better")
    text = analysis.findings(results, comp, report_metric="rouge_l", grounding_metric="map50")
    assert "RL vs SFT, report (R-L)" in text and "(means over 3 seeds)" in text
    assert "mean over 3 seed-paired replicates" in text and "3 of 3 replicates agree in sign (seed 0 +0.0" in text
    assert "One training run per model" not in text


def test_findings_say_a_one_draw_ci_covers_test_items_only() -> None:
    results, comp = _tables({0: (0.06, 0.05)}, sft_seeds=(0,))
    text = analysis.findings(results, comp, report_metric="rouge_l", grounding_metric="map50")
    assert ("One training run per model in sft+grpo − sft, sft − text_only: each CI covers the test items, not "
            "training randomness") in text and "--seeds 0,1,2" in text


def test_replicate_figure(tmp_path: Path) -> None:
    results, comp = _tables(GAINS)
    fig, note = replicate_differences(comp, results, tmp_path, report_metric="rouge_l")
    assert fig is not None and note == ""
    assert (tmp_path / "figures" / "replicate_differences.png").exists()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert any("sft+grpo − sft" in t and "of 3 agree" in t for t in labels)
    single_results, single = _tables({0: (0.03, 0.02)}, sft_seeds=(0,))
    none, why = replicate_differences(single, single_results)
    assert none is None and "--seeds 0,1,2" in why
    # The per-sample figures show one model per label (its lowest seed).
    per_sample = _per_sample(GAINS)
    assert sorted(one_per_label(per_sample)["model"].unique()) == ["sft+grpo@s0", "sft@s0", "text_only"]
    figs, notes = make_figures(per_sample, {}, tmp_path / "none", tmp_path / "out", comparisons=comp, results=results,
                               report_metric="rouge_l", n_qualitative=0)
    assert "replicate_differences" in figs


def test_index_marks_replicates_and_lists_planned_ones(tmp_path: Path) -> None:
    from radlab import render

    exp = tmp_path / "e"
    _finished(exp, "sft", SFT)
    _finished(exp, "sft_s1", _p(SFT, seed=1, run_name="sft_s1"))
    _finished(exp, "sft_s2", _p(SFT, seed=2, run_name="sft_s2", learning_rate=0.5))  # not a replicate
    page = render.render_index("e", tmp_path, pages=False, planned=["sft", "sft_s1", "grpo_s1"]).read_text()
    assert "sft_s1</a> <span class='meta'>(replicate seed 1 of sft)</span>" in page
    assert "sft_s2</a></td>" in page
    assert "grpo_s1" in page and "status-missing" in page


# ---------------------------------------------------------------------------------------------
# End to end: a replicated smoke experiment through `radlab run --seeds 0,1`
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_replicated_smoke_experiment(smoke_root: Path, tmp_path: Path) -> None:
    """data (linked), sft and grpo with seeds 0,1 (sft_s1, grpo_s1 from sft_s1), then the analysis
    pooling them: seed-paired comparisons with two-level CIs, the figure, the index."""
    import os
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    params = tmp_path / "params" / "smoke"
    params.mkdir(parents=True)
    for run in ("data", "sft", "grpo", "analysis"):
        shutil.copy(repo / "params" / "smoke" / f"{run}.yaml", params)
    out = tmp_path / "runs"
    (out / "smoke").mkdir(parents=True)
    os.symlink(smoke_root / "smoke" / "data", out / "smoke" / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "radlab", "run", "smoke", "--seeds", "0,1", "--jobs", "2",
                           "--params-root", str(tmp_path / "params"), "--output-root", str(out)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = out / "smoke"
    for run in ("sft", "sft_s1", "grpo", "grpo_s1", "analysis"):
        assert runs.is_complete(exp / run), run
    from radlab.experiment import read_params

    assert read_params(exp / "sft_s1")["seed"] == 1 and read_params(exp / "sft")["seed"] == 0
    assert read_params(exp / "grpo_s1")["init_model"].endswith("smoke/sft_s1/model")
    assert "seeds" not in read_params(exp / "sft_s1")
    results = pd.read_csv(exp / "analysis" / "results.csv")
    assert {"sft@s0", "sft@s1", "sft+grpo@s0", "sft+grpo@s1", "text_only"} <= set(results["model"])
    comp = pd.read_csv(exp / "analysis" / "comparisons.csv")
    rl = comp[(comp["model_a"] == "sft+grpo") & (comp["model_b"] == "sft") & comp["replicate"].isna()]
    assert len(rl) and (rl["n_replicates"] == 2).all()
    own = comp[(comp["model_a"] == "sft+grpo@s1") & (comp["model_b"] == "sft@s1")]
    assert len(own) and (own["replicate"] == 1).all()
    findings = (exp / "analysis" / "findings.md").read_text()
    assert "mean over 2 seed-paired replicates" in findings and "± " in findings
    assert (exp / "analysis" / "figures" / "replicate_differences.png").exists()
    assert "(replicate seed 1 of grpo)" in (exp / "index.html").read_text()


def test_a_notebook_ignores_the_runner_key_seeds() -> None:
    """papermill -f params/demo/grpo_bleu.yaml by hand: 'seeds' is the runner's, the notebook runs its one seed."""
    p = validate("grpo", {"seeds": 0, "seed": 0, "reward_names": "bleu,box_soft_f1"}, check_inputs=False)
    assert p.seed == 0 and not hasattr(p, "seeds")
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) \['seedz'\]"):
        validate("grpo", {"seedz": 0}, check_inputs=False)


def test_reward_curves_share_a_panel_with_their_replicates(tmp_path: Path) -> None:
    from radlab.plots_analysis import reward_curves

    exp = tmp_path / "e"
    grpo = {"stage": "grpo", "seed": 0, "init_model": f"{exp}/sft/model"}
    for run, params in (("grpo", grpo), ("grpo_s1", {**grpo, "seed": 1, "init_model": f"{exp}/sft_s1/model"}),
                        ("grpo_bleu", {**grpo, "reward_names": "bleu"})):
        runs.write_yaml(exp / run / "params.yaml", params)
        steps = np.arange(1, 11)
        pd.DataFrame({"step": steps, "metric": "rewards/box_soft_f1/mean", "value": steps / 10}).to_csv(
            exp / run / "log_history.csv", index=False)
    fig, note = reward_curves(exp)
    assert note == "" and [ax.get_title() for ax in fig.axes] == ["grpo (seeds 0, 1)", "grpo_bleu"]
