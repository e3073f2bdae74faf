"""Training stages: parameter validation, TRL config building, SFT/GRPO plumbing and resume.

The data folder is the real data stage at smoke size (64-px phantoms), built once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from radlab import config
from radlab.vocab import NOTEBOOKS, TRAINING_STAGES, ParamError

REPO = Path(__file__).resolve().parents[1]


def build_smoke_data(output_root: Path, experiment: str = "t") -> Path:
    """The data stage at smoke size (``params/smoke/data.yaml``) into ``<output_root>/<experiment>/data``."""
    from radlab.config import load_yaml
    from radlab.data.build import build_datasets, params_from_dict

    values = {**load_yaml(REPO / "params" / "smoke" / "data.yaml"), "experiment": experiment,
              "output_root": str(output_root)}
    build_datasets(params_from_dict(values), figures=False)
    return output_root / experiment / "data"


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/runs`` holding experiment ``t`` with a smoke-size data folder."""
    out = tmp_path_factory.mktemp("runs")
    build_smoke_data(out)
    return out


# ----------------------------------------------------------------------------------------------
# parameters
# ----------------------------------------------------------------------------------------------


def test_unknown_key_names_it(data_root: Path) -> None:
    with pytest.raises(ParamError, match="learning_rat"):
        config.validate("sft", {"experiment": "t", "output_root": str(data_root), "learning_rat": 1.0})


def test_wrong_type_names_key(data_root: Path) -> None:
    with pytest.raises(ParamError, match="'max_steps' must be int"):
        config.validate("sft", {"experiment": "t", "output_root": str(data_root), "max_steps": "10"})
    with pytest.raises(ParamError, match="write YAML floats with a dot"):
        config.validate("grpo", {"experiment": "t", "output_root": str(data_root), "learning_rate": "1e-6"})


def test_missing_data_dir_names_path_and_notebook(tmp_path: Path) -> None:
    for stage in ("sft", "cold_start", "grpo"):
        with pytest.raises(ParamError, match=r"data_dir.*does not exist.*00_data\.ipynb"):
            config.validate(stage, {"experiment": "nothing", "output_root": str(tmp_path)})


def test_missing_init_model_points_at_previous_notebook(data_root: Path) -> None:
    base = {"experiment": "t", "output_root": str(data_root)}
    with pytest.raises(ParamError, match=r"init_model.*sft/model.*01_sft\.ipynb"):
        config.validate("grpo", base)
    with pytest.raises(ParamError, match=r"init_model.*cold_start/model.*02_cold_start\.ipynb"):
        config.validate("grpo", {**base, "thinking": True})
    with pytest.raises(ParamError, match=r"init_model.*sft/model.*01_sft\.ipynb"):
        config.validate("cold_start", base)


def test_grpo_derived_defaults(data_root: Path, tmp_path: Path) -> None:
    from radlab.params import GRPOParams

    p = GRPOParams(experiment="t", output_root=str(data_root), init_model=str(tmp_path))
    assert p.run_name == "grpo" and p.run_dir == data_root / "t" / "grpo"
    assert p.reward_names == ["f1radgraph", "box_soft_f1"] and p.reward_weights == [1.0, 1.0]
    q = GRPOParams(experiment="t", output_root=str(data_root), thinking=True, reward_weights="1, 2, 0.5")
    assert q.run_name == "grpo_think" and q.init_model.endswith("cold_start/model")
    assert q.reward_names[-1] == "think_format" and q.reward_weights == [1.0, 2.0, 0.5]
    r = GRPOParams(experiment="t", output_root=str(data_root), reward_names=["bleu", "box_iou"], reward_weights=[1, 3])
    assert r.reward_names == ["bleu", "box_iou"] and r.reward_weights == [1.0, 3.0]
    with pytest.raises(ParamError, match="divisible by num_generations"):
        GRPOParams(experiment="t", output_root=str(data_root), per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(ParamError, match="2 weights for 3 rewards"):
        GRPOParams(experiment="t", output_root=str(data_root), thinking=True, reward_weights="1,2")


def test_grpo_annotator_picks_the_report_reward_backend(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from radlab.params import GRPOParams
    from radlab.training.grpo import build_rewards

    base = {"experiment": "t", "output_root": str(data_root), "init_model": str(tmp_path)}
    with pytest.raises(ParamError, match="parameter 'annotator'"):
        config.validate("grpo", {**base, "annotator": "radgraph"})
    funcs, _ = build_rewards(GRPOParams(**base, reward_names="f1radgraph,bleu,box_soft_f1"))
    assert funcs[0].backend == "rules"
    xl = GRPOParams(**base, annotator="radgraph-xl", reward_names="f1radgraph,chexpert_f1,radcliq_lite,bleu,box_soft_f1")
    monkeypatch.delenv("RADLAB_RADGRAPH_PYTHON", raising=False)
    with pytest.raises(ParamError, match="parameter 'annotator'.*RADLAB_RADGRAPH_PYTHON"):
        build_rewards(xl)
    monkeypatch.setenv("RADLAB_RADGRAPH_PYTHON", sys.executable)
    funcs, weights = build_rewards(xl)
    assert [f.__name__ for f in funcs] == ["f1radgraph", "chexpert_f1", "radcliq_lite", "bleu", "box_soft_f1"]
    assert [f.backend for f in funcs[:3]] == ["radgraph-xl"] * 3  # bleu and box_soft_f1 annotate nothing
    assert weights == [1.0] * 5


def test_resolve_uses_run_name_folder(data_root: Path, tmp_path: Path) -> None:
    ns = {"experiment": "t", "output_root": str(data_root), "init_model": str(tmp_path), "run_name": "grpo_b"}
    run = config.resolve("grpo", ns)
    assert run.run_dir == data_root / "t" / "grpo_b"
    assert not run.run_dir.exists(), "resolve writes nothing; the stage's model loading begins the run"


def test_sft_config_defaults(data_root: Path, tmp_path: Path) -> None:
    import torch

    from radlab.params import SFTParams
    from radlab.training import sft_config

    p = SFTParams(experiment="t", output_root=str(data_root), max_steps=5)
    cfg = sft_config(p, tmp_path)
    # TRL's GPU defaults (bf16, gradient checkpointing) are off unless params turn them on.
    assert cfg.bf16 is False and cfg.gradient_checkpointing is False
    assert cfg.use_cpu is (not torch.cuda.is_available())
    assert cfg.max_length is None and cfg.assistant_only_loss is True and cfg.remove_unused_columns is False
    assert cfg.max_steps == 5 and cfg.report_to == [] and cfg.output_dir == str(tmp_path / "checkpoints")


def test_group_by_length_batches_similar_rows(data_root: Path, tmp_path: Path) -> None:
    # The length column counts text tokens, and the sampler puts similar lengths in one batch.
    import datasets
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from radlab.params import SFTParams
    from radlab.training import sft_config
    from radlab.training.sft import with_lengths

    class Tok:
        def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
            return {"input_ids": [t.split() for t in texts]}

    def row(n: int) -> dict:
        return {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]},
                             {"role": "assistant", "content": [{"type": "text", "text": " ".join(["w"] * n)}]}]}

    sizes = [1, 40, 2, 41, 3, 42, 4, 43] * 4
    rows = with_lengths(datasets.Dataset.from_list([row(n) for n in sizes]), Tok())
    assert rows["length"] == [n + 1 for n in sizes]
    p = SFTParams(experiment="t", output_root=str(data_root), max_steps=5, group_by_length=True)
    cfg = sft_config(p, tmp_path)
    assert cfg.train_sampling_strategy == "group_by_length" and cfg.length_column_name == "length"
    lengths = [n + 1 for n in sizes] * 8

    def padding(order: list[int]) -> int:
        batches = [[lengths[i] for i in order[k:k + 4]] for k in range(0, len(order), 4)]
        return sum(len(b) * max(b) - sum(b) for b in batches)

    grouped = padding(list(LengthGroupedSampler(4, lengths=lengths, generator=torch.Generator().manual_seed(0))))
    shuffled = padding(torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist())
    # Short rows are rarely padded up to a long row's length.
    assert grouped < 0.2 * shuffled
    off = sft_config(SFTParams(experiment="t", output_root=str(data_root), max_steps=5), tmp_path)
    assert off.train_sampling_strategy == "random"


def test_grpo_config_geometry(data_root: Path, tmp_path: Path) -> None:
    from radlab.params import GRPOParams
    from radlab.training import grpo_config

    p = GRPOParams(experiment="t", output_root=str(data_root), init_model=str(tmp_path), epsilon_high=0.28,
                   per_device_train_batch_size=32, num_generations=8, max_steps=3)
    cfg = grpo_config(p, tmp_path)
    assert cfg.num_generations == 8 and cfg.generation_batch_size == 32
    assert cfg.remove_unused_columns is False and cfg.beta == 0.0 and cfg.loss_type == "dapo"
    assert cfg.epsilon_high == 0.28 and cfg.reward_weights == [1.0, 1.0] and cfg.bf16 is False
    q = GRPOParams(experiment="t", output_root=str(data_root), init_model=str(tmp_path))
    assert grpo_config(q, tmp_path).epsilon_high == q.epsilon  # 0 means "same as epsilon"


# ----------------------------------------------------------------------------------------------
# notebooks and params files
# ----------------------------------------------------------------------------------------------



def test_paper_grpo_settings() -> None:
    p = config.load_yaml(REPO / "params" / "paper" / "grpo.yaml")
    assert (p["num_generations"], p["learning_rate"], p["beta"], p["epsilon"], p["epsilon_high"]) == (8, 1.0e-06, 0.01, 0.2, 0.28)
    assert p["max_completion_length"] == 1024 and p["temperature"] == 1.0 and p["bf16"] and p["gradient_checkpointing"]
    assert p["use_vllm"] is True
    text = (REPO / "params" / "paper" / "grpo.yaml").read_text()
    assert "1.0e-06" in text  # floats keep a dot, so YAML 1.1 readers see a float


# ----------------------------------------------------------------------------------------------
# cold-start traces
# ----------------------------------------------------------------------------------------------


def test_phantom_traces_are_systematic_and_verified(data_root: Path) -> None:
    from radlab.data.tasks import THINK_TRIGGER
    from radlab.formats import split_think
    from radlab.params import ColdStartParams
    from radlab.training import build_traces, verify_traces

    p = ColdStartParams(experiment="t", output_root=str(data_root), init_model=str(data_root), max_traces=12)
    traces = build_traces(p, p.run_dir)
    assert len(traces) == 12 and all(t.endswith(THINK_TRIGGER) for t in traces["prompt"])
    order = ["Technique:", "Devices:", "Lungs:", "Pleura:", "Heart and mediastinum:", "Bones:"]
    for trace, answer, task in zip(traces["trace"], traces["answer"], traces["task"]):
        parts = split_think(trace)
        assert parts.has_open and parts.has_close and parts.answer == answer
        if task == "report":
            pos = [parts.think.index(k) for k in order]
            assert pos == sorted(pos)
        else:  # focused: at most target + three sections, never the technique line
            assert "Technique:" not in parts.think and 1 <= len(parts.think.strip().splitlines()) <= 4
    assert set(traces["task"]) == {"report", "grounding"}
    # A corrupted answer must be dropped by verification.
    bad = traces.copy()
    bad.loc[0, "trace"] = bad.loc[0, "trace"].rsplit("</think>", 1)[0] + "</think>\nNo finding [0.9, 0.9, 0.95, 0.95]."
    bad.loc[1, "trace"] = "no think block at all"
    kept, counts = verify_traces(p, p.run_dir, bad)
    assert int(counts["kept"].sum()) == len(kept) == 10 and int(counts["dropped"].sum()) == 2
    assert (p.run_dir / "verification.csv").exists() and (p.run_dir / "traces.parquet").exists()


def test_finished_cold_start_reuses_its_traces(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-running a finished teacher run's trace cell reads traces.parquet; the teacher is not asked."""
    from radlab import runs
    from radlab.config import StageRun
    from radlab.params import ColdStartParams
    from radlab.training import build_traces, cold_start, verify_traces

    p = ColdStartParams(experiment="t", output_root=str(data_root), init_model=str(data_root), max_traces=6,
                        run_name="cs_teacher", trace_source="teacher_api", teacher_model="teacher",
                        teacher_base_url="http://127.0.0.1:9/v1")
    cands = cold_start.candidates(p)
    monkeypatch.setattr(cold_start, "teacher_traces_api",
                        lambda params, c: [f"<think>reading {i}</think>{a}" for i, a in zip(c["id"], c["answer"])])
    first = build_traces(p, p.run_dir)
    verify_traces(p, p.run_dir, first)  # the run begins here: params.yaml, traces.parquet
    runs.mark_complete(p.run_dir)
    assert StageRun.of(p).reusable

    def no_teacher(params: Any, c: Any) -> list[str]:
        raise AssertionError("the teacher was asked again")

    monkeypatch.setattr(cold_start, "teacher_traces_api", no_teacher)
    stamp = {f.name: f.stat().st_mtime_ns for f in p.run_dir.iterdir()}
    again = build_traces(p, p.run_dir)
    assert list(again["trace"]) == list(first["trace"]) and len(again) == len(cands)
    kept, _ = verify_traces(p, p.run_dir, again)
    assert len(kept) == len(first)
    assert {f.name: f.stat().st_mtime_ns for f in p.run_dir.iterdir()} == stamp


def test_grounding_reading_names_the_target_first() -> None:
    import numpy as np

    from radlab.training.cold_start import _section_of, phantom_reading

    rec = {"view": "PA", "findings": [{"name": "pneumothorax", "laterality": "right", "region": "right apical zone",
                                       "severity": "small", "certainty": "present"}],
           "boxes": [{"label": "left costophrenic angle"}, {"label": "pneumothorax"}], "grounding": []}
    rng = np.random.default_rng(0)
    anatomy = phantom_reading(rec, "Give the bounding box of the left costophrenic angle.", "grounding", rng).splitlines()
    assert anatomy[0].endswith(": left costophrenic angle.") and anatomy[1].startswith("Pleura: ") and len(anatomy) == 2
    finding = phantom_reading(rec, "Locate the pneumothorax.", "grounding", rng).splitlines()
    assert finding[0].endswith(": small pneumothorax in the right apical zone.") and finding[1] == "Pleura: small pneumothorax in the right apical zone."
    # An absent finding is still the target, read from its section ("No consolidation" follows).
    absent = phantom_reading(rec, "Find any consolidation and return its bounding box.", "grounding", rng).splitlines()
    assert absent[0].endswith(": consolidation.") and absent[1].startswith("Lungs: ")
    # Nothing named: the three main sections.
    allf = phantom_reading(rec, "Give bounding boxes for all abnormal findings.", "grounding", rng).splitlines()
    assert [line.split(":")[0] for line in allf] == ["Lungs", "Pleura", "Heart and mediastinum"]
    # Keywords match at word starts: "describe" is not a rib.
    assert _section_of("Describe the left clavicle") == "Bones" and _section_of("Describe this image") is None
    report = phantom_reading(rec, "Write the findings.", "report", rng).splitlines()
    assert [line.split(":")[0] for line in report] == [
        "Technique", "Devices", "Lungs", "Pleura", "Heart and mediastinum", "Bones"]
    # The brief grounding trace names nothing; report traces do not change with it.
    from radlab.training.cold_start import BRIEF_GROUNDING

    for prompt in ("Locate the pneumothorax.", "Give the bounding box of the left costophrenic angle."):
        assert phantom_reading(rec, prompt, "grounding", rng, grounding="brief") == BRIEF_GROUNDING
    brief_report = phantom_reading(rec, "Write the findings.", "report", np.random.default_rng(1), grounding="brief")
    assert brief_report == phantom_reading(rec, "Write the findings.", "report", np.random.default_rng(1))
    with pytest.raises(ParamError, match="grounding_trace"):
        config.validate("cold_start", {"grounding_trace": "long"}, check_inputs=False)


def test_teacher_prompt_uses_our_guide() -> None:
    from radlab.training.cold_start import READING_GUIDE, teacher_prompt

    text = teacher_prompt("Locate the nodule.", "The nodule is at [0.1, 0.2, 0.3, 0.4].")
    assert READING_GUIDE in text and "Locate the nodule." in text and "</think>" in text


def test_teacher_api_key_comes_from_env(monkeypatch: pytest.MonkeyPatch, data_root: Path) -> None:
    """The API path reads the key from the named environment variable and sends it as a bearer token."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from PIL import Image

    from radlab.params import ColdStartParams
    from radlab.training.cold_start import api_trace

    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            seen["auth"] = self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            out = json.dumps({"choices": [{"message": {"content": "<think>\\nLungs: clear.\\n</think>\\nNo finding."}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("RADLAB_TEST_KEY", "sekret")
        p = ColdStartParams(experiment="t", output_root=str(data_root), init_model=str(data_root),
                            trace_source="teacher_api", teacher_model="teacher",
                            teacher_base_url=f"http://127.0.0.1:{server.server_port}/v1",
                            teacher_api_key_env="RADLAB_TEST_KEY")
        out = api_trace(p, "Describe.", "No finding.", Image.new("L", (32, 32)))
    finally:
        server.shutdown()
    assert out.endswith("No finding.") and seen["auth"] == "Bearer sekret"
    assert seen["body"]["model"] == "teacher" and seen["body"]["messages"][0]["content"][0]["type"] == "image_url"


# ----------------------------------------------------------------------------------------------
# resume
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_resume_continues_step_count_and_history(data_root: Path) -> None:
    """Kill an SFT run after step 3 (checkpoint at 2), resume: steps continue, history is kept."""
    from transformers import TrainerCallback

    from radlab.training import load_sft_data, load_sft_model, setup_runtime, tidy_log_history, train_sft
    from radlab.training.sft import train_sft_rows

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("simulated kill")

    base = {"experiment": "t", "output_root": str(data_root), "run_name": "sft_resume",
            "model_name_or_path": "radlab:tiny", "max_steps": 4, "per_device_train_batch_size": 2,
            "save_steps": 2, "logging_steps": 1, "warmup_steps": 0.0}
    p = config.validate("sft", base)
    setup_runtime(p)
    data = load_sft_data(p)
    model, processor, _ = load_sft_model(p, p.run_dir, data)
    with pytest.raises(KeyboardInterrupt):
        train_sft_rows(p, p.run_dir, model, processor, data["train"], extra_callbacks=[Kill()])
    assert (p.run_dir / "checkpoints" / "checkpoint-2").is_dir() and not (p.run_dir / "model").exists()

    q = config.validate("sft", {**base, "resume": True})
    model, processor, _ = load_sft_model(q, q.run_dir, data)
    result = train_sft(q, q.run_dir, model, processor, data)
    assert result.resumed_from and result.resumed_from.endswith("checkpoint-2")
    assert result.global_step == 4
    loss_steps = sorted(result.log_history.loc[result.log_history["metric"] == "loss", "step"].tolist())
    assert loss_steps == [1, 2, 3, 4]
    assert (q.run_dir / "model" / "config.json").exists()
    state = (q.run_dir / "trainer_state.json").read_text()
    assert tidy_log_history(__import__("json").loads(state)["log_history"]).shape[0] == len(result.log_history)

    # Finished: the same params reuse the run (its model/ loaded, nothing trained or written)...
    from radlab import runs

    runs.mark_complete(q.run_dir, result.summary())
    stamp = {p.name: p.stat().st_mtime_ns for p in q.run_dir.iterdir()}
    model, processor, path = load_sft_model(q, q.run_dir, data)
    reused = train_sft(q, q.run_dir, model, processor, data)
    assert path == str(q.run_dir / "model") and reused.reused and reused.global_step == 4
    assert set(reused.figures) == {"loss"} and len(reused.log_history) == len(result.log_history)
    assert {p.name: p.stat().st_mtime_ns for p in q.run_dir.iterdir()} == stamp
    # ...and other params are refused before anything loads, unless force=True.
    with pytest.raises(ParamError, match=r"max_steps: 4 -> 6.*force=True"):
        load_sft_model(config.validate("sft", {**base, "resume": True, "max_steps": 6}), q.run_dir, data)

    # A longer max_steps (forced, as the run is finished) continues the same count from the last checkpoint.
    r = config.validate("sft", {**base, "resume": True, "max_steps": 6, "force": True})
    model, processor, _ = load_sft_model(r, r.run_dir, data)
    assert not runs.is_complete(r.run_dir) and not (r.run_dir / "model").exists()
    more = train_sft(r, r.run_dir, model, processor, data)
    assert more.resumed_from.endswith("checkpoint-4") and more.global_step == 6
    assert sorted(more.log_history.loc[more.log_history["metric"] == "loss", "step"].tolist()) == [1, 2, 3, 4, 5, 6]

    # The compute count continues across sessions (it is kept in the checkpoint's trainer state).
    assert 0 < result.train_flops < more.train_flops
    saved = __import__("json").loads((r.run_dir / "trainer_state.json").read_text())["stateful_callbacks"]
    assert saved["ComputeBudget"]["flops"] == more.train_flops

    # A compute budget just above the 6 steps done stops cleanly after the session's first step
    # (it would need several steps if the resumed count had restarted at 0), checkpoints and saves.
    w = config.validate("sft", {**base, "resume": True, "max_steps": 20, "max_train_flops": more.train_flops + 1})
    model, processor, _ = load_sft_model(w, w.run_dir, data)
    capped = train_sft(w, w.run_dir, model, processor, data)
    assert capped.stopped_by_budget and capped.global_step == 7 and capped.train_flops > w.max_train_flops
    assert (w.run_dir / "checkpoints" / "checkpoint-7").is_dir() and (w.run_dir / "model" / "config.json").exists()


def test_grpo_moves_the_policy_on_nonzero_advantages(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two GRPO steps on the tiny model (smoke params) with a reward that differs within each group:
    the advantages are not all zero, TRL logs groups with reward spread, and the policy's weights move."""
    import torch

    from radlab.formats import completion_text
    from radlab.models import build_tiny_qwen3vl
    from radlab.training import grpo, setup_runtime
    from radlab.training.grpo import load_grpo_data, load_grpo_model, train_grpo

    # Only the learning is under test: no figures (most of the time otherwise), no held-out checks.
    monkeypatch.setattr(grpo, "plot_metrics", lambda *args, **kwargs: {})

    def length(completions: list, **kwargs: Any) -> list[float]:
        # Sampled at T=1 from a random policy, two completions of one prompt almost never have the
        # same length, so every group has reward spread (the clinical rewards score them all 0).
        return [len(completion_text(c)) / 12.0 for c in completions]

    values = {k: v for k, v in config.load_yaml(REPO / "params" / "smoke" / "grpo.yaml").items() if k != "stage"}
    p = config.validate("grpo", {**values, "experiment": "t", "output_root": str(data_root), "run_name": "grpo_moves",
                                 "init_model": str(build_tiny_qwen3vl(tmp_path / "m", "tiny")), "save_steps": 100,
                                 "eval_rows": 0})
    assert (p.max_steps, p.num_generations, p.beta) == (2, 2, 0.0)
    setup_runtime(p)
    data = load_grpo_data(p)
    model, processor, _ = load_grpo_model(p, p.run_dir)
    before = {n: t.detach().clone() for n, t in model.named_parameters()}
    result = train_grpo(p, p.run_dir, model, processor, data, [length], [1.0])

    assert result.global_step == 2
    log = result.log_history
    spread = log.loc[log["metric"] == "frac_reward_zero_std", "value"]
    assert len(spread) == 2 and (spread < 1.0).all(), "every group had equal rewards: nothing to learn from"
    comp = pd.read_parquet(p.run_dir / "completions.parquet")
    assert len(comp) and (comp["advantage"].abs() > 1e-6).any(), comp[["step", "reward", "advantage"]]
    # Group-relative: within each prompt's completions the advantages sum to zero.
    assert comp.groupby(["step", "prompt"])["advantage"].sum().abs().max() < 1e-4
    after = dict(result.model.named_parameters())
    moved = [n for n, t in before.items() if not torch.equal(t, after[n].detach())]
    assert any("lm_head" in n or "embed_tokens" in n for n in moved), moved
    assert len(moved) > len(before) // 2, f"only {len(moved)} of {len(before)} tensors changed"


@pytest.mark.parametrize("stage", sorted(TRAINING_STAGES))
def test_notebook_calls_exist(stage: str) -> None:
    """Every ``training.<name>`` a notebook calls resolves (the lazy exports are complete)."""
    import re

    import radlab.training as training

    source = (REPO / "notebooks" / f"{NOTEBOOKS[stage]}.ipynb").read_text()
    for name in set(re.findall(r"training\.(\w+)\(", source)):
        assert callable(getattr(training, name)), name


def test_sft_more_starts_from_the_sft_run(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ParamError, match=r"init_model.*t/sft/model.*01_sft\.ipynb"):
        config.validate("sft", {"experiment": "t", "output_root": str(data_root), "run_name": "sft_more",
                                "init_run": "sft"})
    (data_root / "t" / "sft_src" / "model").mkdir(parents=True)
    p = config.validate("sft", {"experiment": "t", "output_root": str(data_root), "run_name": "sft_more",
                                "init_run": "sft_src"})
    assert p.init_model == str(data_root / "t" / "sft_src" / "model") and p.run_dir == data_root / "t" / "sft_more"


def test_vision_warmup_targets_hand_cases() -> None:
    from radlab.training.vision_warmup import targets

    recs = [
        {"findings": [{"name": "pleural effusion", "laterality": "left", "box_ids": [0]},
                      {"name": "pulmonary edema", "laterality": "bilateral", "box_ids": [1, 2]}],
         "boxes": [{"box_id": 0, "kind": "finding", "box": [0.6, 0.5, 0.9, 0.8]},
                   {"box_id": 1, "kind": "finding", "box": [0.1, 0.2, 0.4, 0.6]},
                   {"box_id": 2, "kind": "finding", "box": [0.6, 0.2, 0.8, 0.5]},
                   {"box_id": 3, "kind": "anatomy", "box": [0.0, 0.0, 1.0, 1.0]}]},
        {"findings": [], "boxes": []},  # a normal image: all negatives
    ]
    labels, y, names, boxes, mask = targets(recs)
    assert labels == ["pleural effusion", "pleural effusion@left", "pulmonary edema", "pulmonary edema@left",
                      "pulmonary edema@right"]
    assert y.tolist() == [[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]]
    assert names == ["pleural effusion", "pulmonary edema"]
    assert boxes[0, 1].tolist() == pytest.approx([0.1, 0.2, 0.8, 0.6])  # the union of edema's two boxes
    assert mask.tolist() == [[1, 1], [0, 0]]
    # Records without findings (real data) fall back to CheXpert positives (1 and uncertain -1).
    labels, y, *_ = targets([{"chexpert": {"Edema": 1, "Pneumothorax": -1, "Cardiomegaly": 0}},
                             {"chexpert": {"Edema": None}}])
    assert labels == ["Edema", "Pneumothorax"] and y.tolist() == [[1, 1], [0, 0]]


def test_vision_warmup_trains_only_the_vision_side_and_is_cached(data_root: Path, tmp_path: Path) -> None:
    import torch

    from radlab.models import build_tiny_qwen3vl, load_model_and_processor
    from radlab.training.vision_warmup import warm_start_vision

    build_tiny_qwen3vl(tmp_path / "m", "tiny")
    data_dir = data_root / "t" / "data"
    model, proc = load_model_and_processor(str(tmp_path / "m"), dtype="float32", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = {"steps": 3, "learning_rate": 1e-3, "batch_size": 4, "seed": 0}
    first = warm_start_vision(model, proc, data_dir, tmp_path / "m", tmp_path / "cache", **kw)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert first["cache"] == "miss" and first["flops"] > 0 and changed
    assert all("visual" in k for k in changed)  # the language model is untouched
    again, _ = load_model_and_processor(str(tmp_path / "m"), dtype="float32", device="cpu")
    second = warm_start_vision(again, proc, data_dir, tmp_path / "m", tmp_path / "cache", **kw)
    assert second["cache"] == "hit" and second["key"] == first["key"]
    assert all(torch.equal(again.state_dict()[k], after[k]) for k in after)
    # Other settings are another cache entry.
    third = warm_start_vision(again, proc, data_dir, tmp_path / "m", tmp_path / "cache", **{**kw, "steps": 2})
    assert third["cache"] == "miss" and third["key"] != first["key"]


# ----------------------------------------------------------------------------------------------
# per-module learning rate
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.1, 0.0, 1.0])
def test_vision_lr_scale_splits_the_optimizer(tmp_path: Path, scale: float) -> None:
    """The trainer's own optimizer, with the vision side at ``scale`` x the rate (0 = frozen), and a
    scheduler that keeps the ratio through warm-up."""
    from transformers import Trainer, TrainingArguments

    from radlab.models import build_tiny_qwen3vl, load_model_and_processor
    from radlab.training.common import trainer_with_vision_lr, vision_parameter_names

    build_tiny_qwen3vl(tmp_path / "m", "tiny")
    model, _ = load_model_and_processor(str(tmp_path / "m"), lora=None, dtype="float32", device="cpu")
    vision = set(vision_parameter_names(model))
    assert vision and all(".visual." in n for n in vision)
    assert {n for n, _ in model.named_parameters() if ".merger." in n or "deepstack" in n} <= vision
    args = TrainingArguments(output_dir=str(tmp_path / "o"), learning_rate=1e-3, weight_decay=0.01, warmup_steps=10,
                             lr_scheduler_type="constant_with_warmup", use_cpu=True, report_to=[])
    trainer = trainer_with_vision_lr(Trainer, model, scale)(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=20)
    by_id = {id(p): n for n, p in model.named_parameters()}
    lrs: dict[str, float] = {}
    for g in trainer.optimizer.param_groups:
        for p in g["params"]:
            lrs[by_id[id(p)]] = g["initial_lr"]  # the peak: lr itself starts at 0 (warm-up)
    expected_vision = 1e-3 * scale
    assert all(lrs[n] == pytest.approx(1e-3) for n in lrs if n not in vision)
    if scale == 0.0:
        assert not vision & lrs.keys()
        assert not any(p.requires_grad for n, p in model.named_parameters() if n in vision)
    else:
        assert vision <= lrs.keys() and all(lrs[n] == pytest.approx(expected_vision) for n in vision)
    # Weight decay stays per group (norms and biases none) after the split.
    decay = {by_id[id(p)]: g["weight_decay"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert decay["model.language_model.layers.0.mlp.up_proj.weight"] == 0.01
    assert decay["model.language_model.norm.weight"] == 0.0
    for _ in range(5):
        trainer.optimizer.step()  # no gradients: a no-op, but the scheduler expects it first
        trainer.lr_scheduler.step()
    # Half-way through warm-up both groups are at half their own peak.
    assert sorted({round(g["lr"], 12) for g in trainer.optimizer.param_groups}) == sorted(
        {round(0.5e-3, 12), round(0.5 * expected_vision, 12)} - ({0.0} if scale == 0.0 else set()))


def test_vision_lr_scale_needs_a_vision_side() -> None:
    import torch
    from transformers import Trainer

    from radlab.training.common import trainer_with_vision_lr

    with pytest.raises(ParamError, match="vision_lr_scale"):
        trainer_with_vision_lr(Trainer, torch.nn.Linear(2, 2), 0.5)
    assert trainer_with_vision_lr(Trainer, torch.nn.Linear(2, 2), 1.0) is Trainer

    from radlab.params import SFTParams

    with pytest.raises(ParamError, match="vision_lr_scale"):
        SFTParams(experiment="t", vision_lr_scale=-1.0)
