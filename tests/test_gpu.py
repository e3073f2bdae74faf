"""GPU: the training notebooks on CUDA with the paper configs' precision settings.

Skipped without a CUDA GPU (CI has none).  On a GPU machine: ``python -m pytest tests/test_gpu.py``.
It runs ``params/smoke`` through papermill with ``bf16`` and ``gradient_checkpointing`` on, as the
paper-scale YAMLs set them, which the CPU tests cannot cover (on the CPU the trainers run fp32):

- SFT trains on the GPU, saves bfloat16 weights, and resumes from its bf16 checkpoint;
- GRPO trains a LoRA adapter with the paper's KL and clip-higher settings and merges it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_training_smoke import run_ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

GPU = {"bf16": True, "gradient_checkpointing": True}


def _done(run: Path) -> dict:
    return json.loads((run / "DONE").read_text())


def test_sft_and_grpo_on_gpu_in_bf16(tmp_path: Path, papermill) -> None:
    root = tmp_path / "runs"
    exp = root / "smoke"
    run_ok(papermill, "00_data.ipynb", tmp_path / "00_data.ipynb", "params/smoke/data.yaml", output_root=root)

    run_ok(papermill, "01_sft.ipynb", tmp_path / "01_sft.ipynb", "params/smoke/sft.yaml", output_root=root, **GPU)
    sft = exp / "sft"
    env = json.loads((sft / "env.json").read_text())
    assert env["torch_device"] == "cuda" and env["cuda_device_name"]
    params = yaml.safe_load((sft / "params.yaml").read_text())
    assert params["bf16"] is True and params["gradient_checkpointing"] is True
    assert _done(sft)["global_step"] == 4 and _done(sft)["resumed_from"] is None
    assert json.loads((sft / "model" / "config.json").read_text())["dtype"] == "bfloat16"
    assert (sft / "checkpoints" / "checkpoint-4").is_dir()

    # A run is resumed from its last checkpoint: the bf16 weights, optimizer and step (continuing this
    # finished run to more steps changes its params, so it takes force=True).
    run_ok(papermill, "01_sft.ipynb", tmp_path / "01_sft_resume.ipynb", "params/smoke/sft.yaml", output_root=root,
           **GPU, resume=True, max_steps=6, force=True)
    done = _done(sft)
    assert done["global_step"] == 6
    assert Path(done["resumed_from"]).name == "checkpoint-4"
    state = json.loads((sft / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]

    run_ok(papermill, "03_grpo.ipynb", tmp_path / "03_grpo.ipynb", "params/smoke/grpo.yaml", output_root=root, **GPU,
           lora=True, beta=0.01, epsilon_high=0.28, max_steps=3)
    grpo = exp / "grpo"
    assert json.loads((grpo / "env.json").read_text())["torch_device"] == "cuda"
    assert _done(grpo)["global_step"] == 3
    # LoRA is merged at the end: model/ is a full model, not an adapter.
    assert (grpo / "model" / "config.json").is_file() and not (grpo / "model" / "adapter_config.json").exists()
    rows = [h for h in json.loads((grpo / "trainer_state.json").read_text())["log_history"] if "kl" in h]
    assert len(rows) == 3 and all(isinstance(h["kl"], float) for h in rows)
