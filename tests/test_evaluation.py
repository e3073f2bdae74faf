"""Tests of the analysis stage: generation, answer extraction, contracts, findings, notebook.

Everything runs on a tiny random Qwen3-VL and a handful of phantom cases built in fixtures, so
the module does not depend on the data or training stages having run.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from radlab import evaluation as ev
from radlab import generation as gen
from radlab.analysis import TABLE3_COLUMNS, findings, key_tests, table1, table2, table3, verdict
from radlab.config import validate
from radlab.vocab import ParamError

ROOT = Path(__file__).resolve().parents[1]

REPORT_PROMPT = "Write the findings section of the radiology report for this chest X-ray."


def _prompt(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": text}]}]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radlab.models import build_tiny_qwen3vl

    return build_tiny_qwen3vl(tmp_path_factory.mktemp("models") / "tiny", "tiny")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real data stage on ``params/smoke/data.yaml`` (phantom, 64 px), built into a temp root."""
    import dataclasses

    from radlab import runs
    from radlab.config import load_yaml
    from radlab.data.build import build_datasets

    root = tmp_path_factory.mktemp("runs")
    params = validate("data", {**load_yaml(ROOT / "params" / "smoke" / "data.yaml"), "output_root": str(root)})
    build_datasets(params, figures=False)
    runs.write_yaml(params.run_dir / "params.yaml", dataclasses.asdict(params))  # what resolve() writes
    return params.run_dir


@pytest.fixture(scope="session")
def experiment(smoke_data: Path, tiny_model: Path) -> Path:
    """``<root>/smoke/``: the smoke data stage plus finished ``sft``, ``grpo``, ``grpo_bleu`` (the
    same GRPO params but other rewards: a reward ablation), ``grpo_rouge`` (other rewards and a TRL
    setting radlab never names, ``top_k: 5``) and ``cold_start`` runs, each a copy of the tiny model
    (so their paired differences are exactly 0), and a GRPO ``log_history.csv``.

    ``sft_more`` has a model but no ``DONE`` (an unfinished run: left out with a note); ``base``
    and ``grpo_think`` are deliberately absent (missing-run handling).
    """
    from radlab import runs

    exp = smoke_data.parent
    grpo = {"stage": "grpo", "experiment": "smoke", "thinking": False, "tasks": "report,grounding",
            "init_model": str(exp / "sft" / "model"), "learning_rate": 1.0e-05}
    for run, params in (("sft", {"stage": "sft"}), ("cold_start", {"stage": "cold_start"}),
                        ("grpo", {**grpo, "reward_names": ["f1radgraph", "box_soft_f1"]}),
                        ("grpo_bleu", {**grpo, "run_name": "grpo_bleu", "reward_names": ["bleu", "box_soft_f1"]}),
                        ("grpo_rouge", {**grpo, "run_name": "grpo_rouge", "reward_names": ["rouge_l", "box_soft_f1"],
                                        "top_k": 5}),
                        ("sft_more", {"stage": "sft", "init_run": "sft"})):
        shutil.copytree(tiny_model, exp / run / "model")
        runs.write_yaml(exp / run / "params.yaml", params)
        if run != "sft_more":
            runs.mark_complete(exp / run)
    (exp / "grpo" / "log_history.csv").write_text(
        "step,epoch,metric,value\n" + "".join(
            f"{s},0.1,rewards/f1radgraph/mean,{0.2 + 0.01 * s}\n{s},0.1,rewards/box_soft_f1/mean,{0.1 + 0.02 * s}\n"
            f"{s},0.1,completions/mean_length,{30 - s}\n" for s in range(1, 6)))
    return exp.parent


# ----------------------------------------------------------------------------------------------
# Answer extraction and generation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, thinking, answer, missing", [
    ("<think>look</think> No effusion.", True, "No effusion.", False),
    ("<think>a</think>x<think>b</think> [0.1, 0.2, 0.3, 0.4]", True, "[0.1, 0.2, 0.3, 0.4]", False),
    ("<think>never closed", True, "", True),
    ("<think>closed but empty</think>   ", True, "", True),
    ("No effusion.", False, "No effusion.", False),
    ("<think>t</think>Heart normal.", False, "Heart normal.", False),
])
def test_extract_answer(text: str, thinking: bool, answer: str, missing: bool) -> None:
    assert ev.extract_answer(text, thinking) == (answer, missing)


def _gen_inputs(n: int = 7) -> tuple[list, list]:
    rng = np.random.default_rng(0)
    texts = ["Locate the effusion.", REPORT_PROMPT, "Where is the nodule? Give the bounding box."]
    prompts = [_prompt(texts[i % 3] * (1 + i % 2)) for i in range(n)]
    # Different image sizes give different numbers of image tokens, so batches need real padding.
    images = [Image.fromarray((rng.random((64 + 32 * (i % 3), 64)) * 255).astype("uint8")) for i in range(n)]
    return prompts, images


def test_batched_equals_per_sample_greedy(tiny_model: Path) -> None:
    from radlab.models import load_model_and_processor

    model, proc = load_model_and_processor(str(tiny_model))
    prompts, images = _gen_inputs()
    one = gen.generate(model, proc, prompts, images, batch_size=1, max_new_tokens=12, sort_by_length=False)
    many = gen.generate(model, proc, prompts, images, batch_size=4, max_new_tokens=12)
    assert one == many
    # A random model rarely emits EOS: those rows are counted as truncated at the full budget.
    for g in many:
        assert g.finished or g.n_tokens == 12


def test_collate_left_matches_processor_batch(tiny_model: Path) -> None:
    from radlab.models import load_model_and_processor

    _, proc = load_model_and_processor(str(tiny_model))
    prompts, images = _gen_inputs(3)
    encs = gen.encode_prompts(proc, prompts, images)
    mine = gen.collate_left(encs, proc.tokenizer.pad_token_id)
    texts = [proc.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    theirs = proc(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    assert set(mine) == set(theirs)
    for k in theirs:
        assert (mine[k] == theirs[k]).all(), k


def test_truncation_and_eos_counting(tiny_model: Path) -> None:
    """Forcing EOS as the first token gives finished rows; a 1-token budget without it truncates."""
    import torch

    from radlab.models import load_model_and_processor

    model, proc = load_model_and_processor(str(tiny_model))
    prompts, images = _gen_inputs(3)
    eos = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        w = model.lm_head.weight  # on a GPU the model is on cuda in bf16; the bias must follow it
        model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.lm_head.out_features, device=w.device, dtype=w.dtype))
        model.lm_head.bias[eos] = 1e4
    gens = gen.generate(model, proc, prompts, images, batch_size=2, max_new_tokens=5)
    assert all(g.finished and g.n_tokens == 0 and g.text == "" for g in gens)
    with torch.no_grad():
        model.lm_head.bias[eos] = -1e4
    gens = gen.generate(model, proc, prompts, images, batch_size=2, max_new_tokens=3)
    assert all(not g.finished and g.n_tokens == 3 for g in gens)


def test_grpo_heldout_and_analysis_score_one_checkpoint_equally(smoke_data: Path, tiny_model: Path) -> None:
    """Issue 14 point 5: one checkpoint on the same rows, through GRPO's held-out check and through the
    analysis, gives the same completions, lengths and scores (one generation path, rewards = metrics)."""
    from transformers import TrainerState

    from radlab.models import load_model_and_processor
    from radlab.rewards import build_reward_funcs
    from radlab.training.grpo import HELDOUT_PREFIX, heldout_callback

    ds = ev.load_eval_dataset(smoke_data)
    rows = ds.select(ev.select_indices(list(ds["task"]), list(ds["id"]), 6, seed=0))
    assert not any(rows["thinking"]) and set(rows["task"]) == {"report", "grounding"}
    budget = 24
    funcs, _ = build_reward_funcs(["f1radgraph", "box_soft_f1"])
    model, proc = load_model_and_processor(str(tiny_model), device="cpu", dtype="float32")
    # The untrained model writes word pieces; its own first answers become the report references,
    # so the report scores are real numbers (not a trivial 0 = 0) that any change of text would move.
    first = gen.generate(model, proc, rows["prompt"], rows["image"], max_new_tokens=budget)
    refs = [g.text + " Small left pleural effusion." if t == "report" else r
            for g, t, r in zip(first, rows["task"], rows["reference_report"])]
    rows = rows.remove_columns("reference_report").add_column("reference_report", refs)
    state = TrainerState()
    cb = heldout_callback(proc, rows, funcs, every=0, max_new_tokens=budget)
    cb.on_train_begin(None, state, None, model=model)
    (logged,) = cb.records

    evalset = ev.EvalSet.from_dataset(rows, 0, seed=0)
    eval_rows, _ = evalset.for_mode(False)
    spec = ev.ModelSpec("sft+grpo", str(tiny_model))
    frame = ev.evaluate_model(spec, eval_rows, cache_dir=None, batch_size=32, max_new_tokens=budget,
                              device="cpu", dtype="float32")
    scored = ev.score_rows(frame, evalset.by_key())
    assert list(frame["completion"]) == [g.text for g in first]
    assert logged[HELDOUT_PREFIX + "mean_length"] == pytest.approx(scored["n_tokens"].mean())
    report = scored[scored["task"] == "report"]
    ground = scored[scored["task"] == "grounding"]
    assert logged[HELDOUT_PREFIX + "f1radgraph"] == pytest.approx(report["f1radgraph_partial"].mean())
    assert logged[HELDOUT_PREFIX + "box_soft_f1"] == pytest.approx(ground["box_soft_f1"].mean())
    assert report["f1radgraph_partial"].max() > 0


def test_switch_thinking_matches_data_stage(smoke_data: Path) -> None:
    from radlab.data.tasks import with_thinking

    ds = ev.load_eval_dataset(smoke_data).select(range(6))
    evalset = ev.EvalSet.from_dataset(ds, 0, seed=0)
    rows, note = evalset.for_mode(True)
    theirs = list(with_thinking(ds, True))
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in theirs]
    assert all(r["thinking"] for r in rows) and note.startswith(f"{len(rows)} of {len(rows)}")
    plain, note = evalset.for_mode(False)
    assert [r["id"] for r in plain] == [r["id"] for r in rows] and note == ""


def test_select_indices_is_seeded_and_per_task() -> None:
    tasks = ["report"] * 10 + ["grounding"] * 6
    ids = [f"r{i}" for i in range(10)] + [f"g{i}" for i in range(6)]
    a = ev.select_indices(tasks, ids, 4, seed=1)
    assert a == ev.select_indices(tasks, ids, 4, seed=1)
    assert sum(tasks[i] == "report" for i in a) == 4 and sum(tasks[i] == "grounding" for i in a) == 4
    assert ev.select_indices(tasks, ids, 0, seed=1) == list(range(16))


# ----------------------------------------------------------------------------------------------
# Params and missing runs
# ----------------------------------------------------------------------------------------------


def test_params_validation(experiment: Path) -> None:
    base = {"experiment": "smoke", "output_root": str(experiment)}
    p = validate("analysis", base)
    assert p.data_dir == str(experiment / "smoke" / "data")
    with pytest.raises(ParamError, match="'grpo' is not a pair"):
        validate("analysis", {**base, "comparisons": "grpo-sft,grpo"})
    with pytest.raises(ParamError, match=r"no training run \['nonsense'\]"):
        ev.discover_models(validate("analysis", {**base, "models": "sft,nonsense"}))
    with pytest.raises(ParamError, match="n_evl"):
        validate("analysis", {**base, "n_evl": 3})
    with pytest.raises(ParamError, match="data_dir"):
        validate("analysis", {**base, "experiment": "absent"})


def test_every_finished_run_is_found_and_labelled(experiment: Path) -> None:
    p = validate("analysis", {"experiment": "smoke", "output_root": str(experiment), "base": True})
    specs, notes = ev.discover_models(p)
    assert [(s.run, s.name, s.thinking, s.start) for s in specs] == [
        ("cold_start", "cold_start", True, "sft"), ("grpo", "sft+grpo", False, "sft"),
        ("grpo_bleu", "sft+grpo[bleu]", False, "sft"), ("grpo_rouge", "sft+grpo[rouge_l]", False, "sft"),
        ("sft", "sft", False, "")]
    text = " ".join(notes)
    assert "base: skipped" in text and "sft_more: skipped — the run has not finished (no DONE" in text
    assert "data" not in {s.run for s in specs}  # not a training run
    only = validate("analysis", {"experiment": "smoke", "output_root": str(experiment), "models": "grpo_bleu,sft"})
    assert [s.name for s in ev.discover_models(only)[0]] == ["sft+grpo[bleu]", "sft"]


def test_labels_from_params() -> None:
    from radlab.experiment import label_runs

    runs_ = {"sft": {"stage": "sft"}, "sft_more": {"stage": "sft", "init_run": "sft"},
             "cold_start": {"stage": "cold_start"},
             "grpo": {"stage": "grpo", "reward_names": ["f1radgraph", "box_soft_f1"]},
             "grpo_think": {"stage": "grpo", "thinking": True, "experiment": "e", "init_model": "runs/e/cold_start/model"},
             "grpo_bleu": {"stage": "grpo", "reward_names": "bleu,box_soft_f1"},
             "grpo_rgc": {"stage": "grpo", "reward_names": "f1radgraph:level=complete,box_soft_f1"},
             "grpo_box": {"stage": "grpo", "reward_names": "f1radgraph,box_iou"},
             "grpo_w": {"stage": "grpo", "reward_names": "f1radgraph,box_soft_f1", "reward_weights": "1.0,2.0"},
             "grpo_lr": {"stage": "grpo", "learning_rate": 1.0e-04},  # same label as grpo: its run name wins
             "sft_big": {"stage": "sft"}, "grpo_big": {"stage": "grpo", "experiment": "e",
                                                      "init_model": "runs/e/sft_big/model"},
             "grpo_hub": {"stage": "grpo", "init_model": "Qwen/Qwen3-VL-2B-Instruct"}}
    assert label_runs(runs_) == {
        "sft": "sft", "sft_more": "sft_more", "cold_start": "cold_start", "grpo": "sft+grpo",
        "grpo_think": "cold_start+grpo", "grpo_bleu": "sft+grpo[bleu]", "grpo_rgc": "sft+grpo[f1radgraph:level=complete]",
        "grpo_box": "sft+grpo[box_iou]", "grpo_w": "sft+grpo[f1radgraph*1+box_soft_f1*2]", "grpo_lr": "grpo_lr",
        "sft_big": "sft_big", "grpo_big": "sft_big+grpo", "grpo_hub": "grpo_hub"}


def test_comparisons_are_run_name_pairs() -> None:
    from radlab.experiment import parse_comparisons, resolve_comparisons
    from radlab.params import PAPER_COMPARISONS_SPEC

    labels = {"sft": "sft", "grpo": "sft+grpo", "grpo-bleu": "sft+grpo[bleu]", "text_only": "text_only"}
    pairs, notes = resolve_comparisons("grpo-sft, grpo-bleu-grpo", labels)
    assert [(c.a, c.b, c.label_a, c.label_b, c.question) for c in pairs] == [
        ("grpo", "sft", "sft+grpo", "sft", "RL vs SFT"),
        ("grpo-bleu", "grpo", "sft+grpo[bleu]", "sft+grpo", "sft+grpo[bleu] vs sft+grpo")] and notes == []
    with pytest.raises(ParamError, match="'grpo_think-grpo' names 'grpo_think', which is not an evaluated model"):
        resolve_comparisons("grpo-sft,grpo_think-grpo", labels)
    with pytest.raises(ParamError, match="compares a model with itself"):
        parse_comparisons("sft-sft")
    # The paper's default list skips what the experiment lacks, with a note per pair.
    pairs, notes = resolve_comparisons(PAPER_COMPARISONS_SPEC, labels)
    assert [(c.a, c.b) for c in pairs] == [("grpo", "sft"), ("sft", "text_only")]
    assert "comparison grpo − sft_more skipped: sft_more not evaluated" in notes


# ----------------------------------------------------------------------------------------------
# The whole evaluation: contracts and cache
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def evaluated(experiment: Path) -> tuple:
    # The smoke params, so that the notebook test below finds these generations in the cache.
    from radlab.config import load_yaml

    values = {**load_yaml(ROOT / "params" / "smoke" / "analysis.yaml"), "output_root": str(experiment)}
    p = validate("analysis", values)
    specs, notes = ev.discover_models(p)
    evalset = ev.load_eval_set(p)
    out = ev.evaluate_all(p, specs, evalset, p.run_dir, notes)
    return p, specs, evalset, out


@pytest.mark.slow  # needs the session's evaluate_all run (the analysis end to end)
def test_output_contracts(evaluated: tuple) -> None:
    p, _, evalset, out = evaluated
    results = pd.read_csv(p.run_dir / "results.csv")
    comps = pd.read_csv(p.run_dir / "comparisons.csv")
    per = pd.read_parquet(p.run_dir / "per_sample.parquet")
    assert list(results.columns) == ["model", "task", "metric", "value", "ci_low", "ci_high", "n"]
    assert list(comps.columns) == ["model_a", "model_b", "task", "metric", "diff", "ci_low", "ci_high", "n",
                                   "n_replicates", "n_agree", "replicate"]
    # One training run per model: every comparison is one replicate pair (no per-replicate rows).
    assert (comps["n_replicates"] == 1).all() and comps["replicate"].isna().all()
    assert {"model", "task", "grounding_kind", "id", "prediction", "reference"} <= set(per.columns)
    assert set(results["model"]) == {"sft", "sft+grpo", "sft+grpo[bleu]", "sft+grpo[rouge_l]", "cold_start",
                                     "text_only", "shuffled_image"}
    # The thinking model answered the same items with the think trigger; a random model never
    # closes </think>, so every answer is missing and counted.
    think = per[per["model"] == "cold_start"]
    assert think["thinking"].all() and think["missing_think"].eq(1.0).all() and (think["prediction"] == "").all()
    assert any(n.startswith("cold_start: ") and "switched to the thinking form" in n for n in out.notes)
    assert {("cold_start", "sft")} <= set(zip(comps["model_a"], comps["model_b"]))
    kinds = {f"grounding:{k}" for k in per.loc[per["task"] == "grounding", "grounding_kind"].unique()}
    assert {"report", "grounding"} | kinds == set(results["task"]) and kinds
    metrics = set(results["metric"])
    assert {"f1radgraph_partial", "chexpert_f1_micro14", "map50", "mean_chars", "truncated"} <= metrics
    assert (results["n"] > 0).all()
    # Each model is scored on the same rows.
    n_rows = len(evalset.rows)
    assert (per.groupby("model").size() == n_rows).all()
    # Same weights under two names: every paired difference is exactly 0.
    same = comps[(comps["model_a"] == "sft+grpo") & (comps["model_b"] == "sft")]
    assert not same.empty and np.allclose(same["diff"], 0) and np.allclose(same[["ci_low", "ci_high"]], 0)
    assert {("sft", "text_only"), ("sft", "shuffled_image")} <= set(zip(comps["model_a"], comps["model_b"]))
    assert any("sft_more" in n for n in out.notes)
    assert any(n.startswith("comparison grpo − sft_more skipped") for n in out.skipped_pairs)
    assert [(c.a, c.b) for c in out.pairs][:2] == [("grpo", "sft"), ("cold_start", "sft")]


@pytest.mark.slow  # needs the session's evaluate_all run (the analysis end to end)
def test_generation_cache_is_reused(evaluated: tuple) -> None:
    p, specs, evalset, out = evaluated
    assert not out.timings.set_index("model").loc["sft", "cached"]
    again = ev.evaluate_all(p, specs, evalset, p.run_dir)
    assert again.timings.set_index("model").loc[["sft", "sft+grpo", "cold_start", "shuffled_image"], "cached"].all()
    cols = ["model", "id", "completion", "f1radgraph_partial", "map50"]
    pd.testing.assert_frame_equal(out.per_sample[cols], again.per_sample[cols])


@pytest.mark.slow
def test_parallel_workers_match_in_kernel(evaluated: tuple, tmp_path: Path) -> None:
    # Two spawned worker processes must produce the in-kernel greedy generations, in job order.
    import dataclasses

    p, specs, evalset, out = evaluated
    par = dataclasses.replace(p, workers=2, use_cache=False, device="cpu")
    jobs = [ev.EvalJob(s, evalset.for_mode(s.thinking)[0]) for s in specs]
    frames = ev.run_jobs(par, jobs, tmp_path / "generations")
    assert [f["model"].iloc[0] for f in frames] == [s.name for s in specs]
    got = pd.concat(frames, ignore_index=True)
    want = out.per_sample[out.per_sample["model"].isin([s.name for s in specs])]
    if not ev._cpu_only(p):
        # The fixture decoded on the GPU in bf16, the CPU workers decode in fp32: compare them with
        # the in-kernel path on the CPU instead.
        ref = ev.run_jobs(dataclasses.replace(p, workers=1, use_cache=False, device="cpu"), jobs, tmp_path / "in_kernel")
        want = pd.concat(ref, ignore_index=True)
    pd.testing.assert_frame_equal(got[["model", "id", "completion"]].reset_index(drop=True),
                                  want[["model", "id", "completion"]].reset_index(drop=True))
    assert not got["cached"].any() and len(list((tmp_path / "generations").glob("*.parquet"))) == len(specs)


@pytest.mark.slow  # needs the session's evaluate_all run (the analysis end to end)
def test_tables_and_figures(evaluated: tuple) -> None:
    from radlab.plots_analysis import make_figures

    p, specs, evalset, out = evaluated
    t1 = table1(out.results)
    assert t1 is not None and "sft" in t1.values.index and "**" in t1.markdown()
    t2 = table2(out.results)
    assert t2 is not None and "All" in t2.values.columns and len(t2.values.columns) >= 2
    t3, why = table3(out.results, specs, p.run_dir)
    assert why == "" and list(t3.values.index) == ["sft+grpo", "sft+grpo[bleu]", "sft+grpo[rouge_l]"]
    assert {"RGF1-P", "mAP@0.5", "chars", "tokens (report)"} <= set(t3.values.columns)
    assert list(t3.info["other settings"]) == ["reference", "–", "top_k=5"]
    tidy = pd.read_csv(p.run_dir / "table3.csv", keep_default_na=False)
    assert set(tidy["model"]) == {"sft+grpo", "sft+grpo[bleu]", "sft+grpo[rouge_l]"}
    assert set(tidy["task"]) == {"report", "grounding"}
    assert tidy.loc[tidy["model"] == "sft+grpo[bleu]", "rewards"].iloc[0] == "bleu,box_soft_f1"
    assert set(tidy.loc[tidy["run"] == "grpo_rouge", "other_settings"]) == {"top_k=5"}
    figs, notes = make_figures(out.per_sample, evalset.by_key(), p.experiment_dir, p.run_dir, n_qualitative=2)
    assert {"reward_curves", "completion_length", "iou_histogram", "qualitative"} <= set(figs)
    for name in figs:
        assert (p.run_dir / "figures" / f"{name}.png").exists() and (p.run_dir / "figures" / f"{name}.pdf").exists()


# ----------------------------------------------------------------------------------------------
# Findings from hand-made tables
# ----------------------------------------------------------------------------------------------


def _tables(rl_diff: tuple[float, float, float], grpo_chars: float = 200.0,
            think: tuple[float, float, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    res = [
        ("sft", "report", "f1radgraph_partial", 0.50), ("sft+grpo", "report", "f1radgraph_partial", 0.50 + rl_diff[0]),
        ("sft", "report", "mean_chars", 200.0), ("sft+grpo", "report", "mean_chars", grpo_chars),
        ("sft", "grounding", "map50", 0.40), ("sft+grpo", "grounding", "map50", 0.45),
    ]
    comp = [("sft+grpo", "sft", "report", "f1radgraph_partial", *rl_diff),
            ("sft+grpo", "sft", "grounding", "map50", 0.05, 0.02, 0.08)]
    if think is not None:
        res += [("cold_start+grpo", "report", "f1radgraph_partial", 0.50 + rl_diff[0] + think[0])]
        comp += [("cold_start+grpo", "sft+grpo", "report", "f1radgraph_partial", *think)]
    results = pd.DataFrame([(m, t, me, v, v - 0.01, v + 0.01, 1000) for m, t, me, v in res],
                           columns=ev.RESULTS_COLUMNS)
    # The layout before replicates (no n_replicates/n_agree/replicate): the analysis reads it as one replicate.
    comparisons = pd.DataFrame([(*c, 1000) for c in comp], columns=ev.COMPARISONS_COLUMNS[:8])
    return results, comparisons


def test_findings_rl_better() -> None:
    text = findings(*_tables((0.03, 0.01, 0.05)))
    assert "RL vs SFT, report (RGF1-P): sft+grpo 0.530 vs sft 0.500" in text
    assert "sft+grpo is better (the CI excludes 0)" in text
    assert "compute-matched control (sft_more" in text and "is missing" in text
    assert "No length collapse" in text


def test_findings_rl_worse_and_ci_crossing_zero() -> None:
    worse = findings(*_tables((-0.04, -0.06, -0.02)))
    assert "report (RGF1-P)" in worse and "sft+grpo is worse (the CI excludes 0)" in worse
    unclear = findings(*_tables((0.01, -0.01, 0.03)))
    assert "no detectable difference (the CI includes 0)" in unclear.split("grounding")[0]


def test_findings_length_collapse_and_thinking() -> None:
    text = findings(*_tables((0.01, 0.0, 0.02), grpo_chars=93.0, think=(-0.002, -0.01, 0.006)))
    assert "Possible reward hacking: sft+grpo's reports are 53% shorter than sft's (93 vs 200 characters)" in text
    assert "Thinking vs no thinking after RL, report" in text
    results, comparisons = _tables((0.01, 0.0, 0.02), think=(-0.002, -0.01, 0.006))
    tests = key_tests(comparisons, results).set_index(["question", "task"])
    assert tests.loc[("RL vs SFT", "report"), "verdict"] == "no detectable difference"
    assert tests.loc[("RL vs SFT", "grounding"), "verdict"] == "better"
    assert tests.loc[("thinking vs no thinking (after RL)", "report"), "verdict"] == "no detectable difference"


def _grpo_spec(run: str, name: str, **params: object) -> ev.ModelSpec:
    base = {"stage": "grpo", "thinking": False, "tasks": "report,grounding", "learning_rate": 1.0e-05,
            "output_dir": f"runs/e/{run}/checkpoints"}  # a value naming the run's own folder is no difference
    p = {**base, **params}
    return ev.ModelSpec(name, "x", thinking=bool(p["thinking"]), run_dir=Path(f"runs/e/{run}"), run_params=p, run=run)


def test_reward_ablations_group_by_start_and_thinking() -> None:
    """Hand-written run params: grouped by start and thinking; other differences listed, not dropped."""
    from radlab.experiment import reward_ablations

    specs = [ev.ModelSpec("sft", "x", run_dir=Path("runs/e/sft"), run_params={"stage": "sft"}),
             ev.ModelSpec("sft_big", "x", run_dir=Path("runs/e/sft_big"), run_params={"stage": "sft"}),
             _grpo_spec("grpo_rouge", "sft+grpo[rouge_l]", reward_names="rouge_l,box_soft_f1", top_k=5),
             _grpo_spec("grpo", "sft+grpo"),
             _grpo_spec("grpo_bleu", "sft+grpo[bleu]", reward_names="bleu,box_soft_f1"),
             _grpo_spec("grpo_lr", "grpo_lr", learning_rate=1.0e-04, top_p=0.9),  # default rewards, other lr
             # the thinking run starts from cold_start: its own group, which has one run
             _grpo_spec("grpo_think", "cold_start+grpo", thinking=True),
             # same rewards as grpo_bleu but another start: never compared with the sft runs
             _grpo_spec("grpo_big_bleu", "sft_big+grpo[bleu]", init_run="sft_big", reward_names="bleu,box_soft_f1"),
             _grpo_spec("grpo_big", "sft_big+grpo", experiment="e", init_model="runs/e/sft_big/model"),
             # an outside start (a hub checkpoint) with other rewards: alone
             _grpo_spec("grpo_hub", "grpo_hub", init_model="Qwen/Qwen3-VL-2B-Instruct", reward_names="bleu")]
    groups = reward_ablations(specs)
    assert [(g.start, g.thinking, g.reference, [s.run for s in g.runs]) for g in groups] == [
        ("sft", False, "grpo", ["grpo", "grpo_bleu", "grpo_lr", "grpo_rouge"]),
        ("sft_big", False, "grpo_big", ["grpo_big", "grpo_big_bleu"])]
    assert groups[0].differences == {"grpo": [], "grpo_bleu": [], "grpo_lr": ["learning_rate=0.0001", "top_p=0.9"],
                                     "grpo_rouge": ["top_k=5"]}
    # init_run vs init_model naming the same start is no difference (the start is what groups them)
    assert groups[1].differences == {"grpo_big": [], "grpo_big_bleu": []}
    # a key only the reference has is named too
    only_ref = reward_ablations([_grpo_spec("grpo", "sft+grpo", top_k=5), _grpo_spec("b", "b", reward_names="bleu")])
    assert only_ref[0].differences == {"grpo": [], "b": ["top_k unset"]}
    # the same rewards everywhere is no reward ablation, whatever else differs
    assert reward_ablations([_grpo_spec("grpo", "sft+grpo"), _grpo_spec("grpo_lr", "grpo_lr", learning_rate=0.1)]) == []


def test_table3_reward_ablation(tmp_path: Path) -> None:
    specs = [ev.ModelSpec("sft", "x", run_dir=Path("runs/e/sft"), run_params={"stage": "sft"}),
             _grpo_spec("grpo", "sft+grpo"),
             _grpo_spec("grpo_bleu", "sft+grpo[bleu]", run_name="grpo_bleu", reward_names="bleu,box_soft_f1"),
             # other rewards and a TRL setting radlab never names: in the table, its difference listed
             _grpo_spec("grpo_rouge", "sft+grpo[rouge_l]", reward_names="rouge_l,box_soft_f1", top_k=5),
             _grpo_spec("grpo_think", "cold_start+grpo", thinking=True)]
    rows = [(m, "report", me, v) for m, vals in (("sft", (0.40, 200.0)), ("sft+grpo", (0.45, 180.0)),
                                                 ("sft+grpo[bleu]", (0.42, 90.0)), ("sft+grpo[rouge_l]", (0.3, 50.0)),
                                                 ("cold_start+grpo", (0.5, 150.0)))
            for me, v in zip(("f1radgraph_partial", "mean_chars"), vals)]
    rows += [(m, "grounding", "map50", 0.3) for m in ("sft+grpo", "sft+grpo[bleu]")]
    results = pd.DataFrame([(m, t, me, v, v, v, 10) for m, t, me, v in rows], columns=ev.RESULTS_COLUMNS)
    table, why = table3(results, specs, tmp_path)
    assert why == "" and list(table.values.index) == ["sft+grpo", "sft+grpo[bleu]", "sft+grpo[rouge_l]"]
    assert list(table.values.columns) == ["RGF1-P", "mAP@0.5", "chars"]
    assert table.info.loc["sft+grpo[rouge_l]"].to_dict() == {"rewards": "rouge_l,box_soft_f1", "other settings": "top_k=5"}
    assert list(table.info["other settings"]) == ["reference", "–", "top_k=5"]
    assert table.best.loc["sft+grpo", "RGF1-P"] and not table.best["chars"].any()
    assert table.text.loc["sft+grpo[bleu]", "chars"] == "90 [90, 90]"
    assert "| model | rewards | other settings | RGF1-P |" in table.markdown() and "top_k=5" in table.markdown()
    assert "top_k=5" in table.styler().to_html()
    tidy = pd.read_csv(tmp_path / "table3.csv", keep_default_na=False)
    assert list(tidy.columns) == TABLE3_COLUMNS
    rouge = tidy[tidy["run"] == "grpo_rouge"]
    assert set(rouge["other_settings"]) == {"top_k=5"} and set(rouge["reference"]) == {"grpo"}
    assert set(rouge["rewards"]) == {"rouge_l,box_soft_f1"} and set(rouge["start"]) == {"sft"}
    assert set(tidy.loc[tidy["run"] != "grpo_rouge", "other_settings"]) == {""}
    # Without a second reward setting from the same start there is no Table 3, and the note says why.
    none, why = table3(results, [specs[0], specs[1], specs[4]])
    assert none is None and "same start and thinking setting but different rewards" in why


def test_verdict_lower_is_better() -> None:
    assert verdict(-0.1, -0.2, -0.05, lower_is_better=True) == "better"
    assert verdict(0.1, 0.05, 0.2) == "better"
    assert verdict(0.0, -0.1, 0.1) == "no detectable difference"
    assert verdict(math.nan, 0, 0) == "undetermined"


# ----------------------------------------------------------------------------------------------
# The notebook
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_notebook_smoke(experiment: Path, tmp_path: Path, papermill) -> None:
    """papermill 04_analysis on params/smoke/analysis.yaml against the fixture experiment."""
    out = tmp_path / "out.ipynb"

    def analysis(out: Path):
        return papermill("04_analysis.ipynb", out, params="params/smoke/analysis.yaml", env={"OMP_NUM_THREADS": "2"},
                         experiment="smoke", output_root=experiment)

    proc = analysis(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = experiment / "smoke" / "analysis"
    for name in ("results.csv", "comparisons.csv", "per_sample.parquet", "findings.md", "DONE"):
        assert (run_dir / name).exists(), name
    assert "RL vs SFT" in (run_dir / "findings.md").read_text()
    # The run with other rewards and top_k: 5 is in Table 3 (notebook, findings, csv) with its difference listed,
    # and so on the experiment's rendered index.
    from radlab import render

    assert "top_k=5" in out.read_text() and "| sft+grpo[rouge_l] | rouge_l,box_soft_f1 | top_k=5 |" in (
        run_dir / "findings.md").read_text()
    assert "grpo_rouge" in set(pd.read_csv(run_dir / "table3.csv")["run"])
    index = render.render_index("smoke", experiment).read_text(encoding="utf-8")
    assert "sft+grpo[rouge_l]" in index and "top_k=5" in index
    # Re-running the finished analysis with the same params reads its tables back and writes nothing.
    import hashlib

    def files() -> dict[str, tuple[str, int]]:
        return {str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                for p in sorted(run_dir.rglob("*")) if p.is_file()}

    before = files()
    proc = analysis(tmp_path / "again.ipynb")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "holds this finished analysis" in (tmp_path / "again.ipynb").read_text()
    assert files() == before
