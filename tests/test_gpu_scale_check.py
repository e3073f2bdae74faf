"""bench/gpu_scale_check.py without a GPU: argument checks, the no-GPU exit, the Qwen3-VL-2B
dimensions, and the model/data/GRPO-params set-up at a tiny size (the GPU run itself is not
possible here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_scale_check", ROOT / "bench" / "gpu_scale_check.py")
g = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(g)


def test_arguments():
    args = g.parse_args([])
    assert args.mode_list == ["hf", "vllm", "lora"] and args.image_size == 512 and args.dims == "2b"
    for bad in (["--modes", "hf,warp"], ["--steps", "1"], ["--image-size", "500"], ["--num-generations", "1"]):
        with pytest.raises(SystemExit):
            g.parse_args(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the script would run")
def test_without_a_gpu_it_says_so_and_measures_nothing(tmp_path, capsys):
    assert g.main(["--out", str(tmp_path), "--modes", "hf"]) == g.NO_GPU_EXIT
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "nothing was measured" in err
    assert not (tmp_path / "gpu_scale_check.json").exists()


def test_the_2b_dimensions_make_a_2b_model():
    n = g.count_parameters(g.QWEN3_VL_2B)
    assert 2.0e9 < n < 2.3e9  # Qwen3-VL-2B-Instruct: 2.13B with tied embeddings
    text, vision = g.QWEN3_VL_2B["text"], g.QWEN3_VL_2B["vision"]
    assert vision["out_hidden_size"] == text["hidden_size"] and sum(text["mrope_section"]) == text["head_dim"] // 2
    assert max(vision["deepstack_visual_indexes"]) < text["num_hidden_layers"]


def test_tiny_build_data_and_grpo_params(tmp_path):
    from radlab import config
    from radlab.generation import generate
    from radlab.models import load_model_and_processor

    args = g.parse_args(["--dims", "tiny", "--out", str(tmp_path), "--prompts", "2", "--steps", "2", "--image-size", "64"])
    folder = g.build_model(tmp_path, g.TINY, image_size=64)
    stamp = (folder / "scale_check.json").read_text()
    assert g.build_model(tmp_path, g.TINY, image_size=64) == folder and (folder / "scale_check.json").read_text() == stamp
    model, processor = load_model_and_processor(str(folder))
    cfg = model.config
    assert cfg.text_config.hidden_size == 128 and cfg.vision_config.deepstack_visual_indexes == [0]
    assert len(processor.tokenizer) == cfg.text_config.vocab_size == 2048  # padded to the model's vocabulary
    data_dir = g.build_data(tmp_path, args)
    from radlab.data.build import load_stage_datasets

    grpo_rows = load_stage_datasets(data_dir)["grpo"]["train"]
    assert {im.size for im in grpo_rows["image"]} == {(64, 64)}  # one size: vLLM-safe
    assert len(grpo_rows) == 2 * args.prompts * args.steps  # a report and a grounding prompt per case
    gens = generate(model, processor, grpo_rows["prompt"][:2], grpo_rows["image"][:2], max_new_tokens=4)
    assert len(gens) == 2 and all(0 < gen.n_tokens <= 4 for gen in gens)
    for mode in g.MODES:
        params = config.validate("grpo", g.grpo_values(args, mode, folder, data_dir))
        assert params.use_vllm == g.MODES[mode][0] and params.lora == g.MODES[mode][1]
        assert params.per_device_train_batch_size == 2 * args.num_generations and params.bf16


def test_table_reports_ratios_against_hf_and_failures():
    row = {"s_per_step": 2.0, "rollout_tokens_per_s": 1500.0, "peak_allocated_gib": 30.0, "peak_device_used_gib": 60.0,
           "params_trainable": 2_127_532_032}
    out = g.table([{**row, "mode": "hf"}, {**row, "mode": "vllm", "s_per_step": 0.5}, {"mode": "lora", "error": "exit 1: OOM"}])
    lines = out.splitlines()
    assert lines[2].startswith("| hf | 2.00 | 1.00x | 1500 |") and lines[3].startswith("| vllm | 0.50 | 0.25x |")
    assert "failed: exit 1: OOM" in lines[4]
