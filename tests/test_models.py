"""The embedded Qwen3-VL builder and the one loading path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radlab import models


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.build_tiny_qwen3vl(tmp_path_factory.mktemp("m") / "tiny", "tiny", corpus=["Small left pleural effusion."])


def test_build_writes_self_contained_folder(tiny_dir: Path) -> None:
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "radlab_build.json"} <= names
    assert not tiny_dir.with_name("tiny.building").exists()
    info = json.loads((tiny_dir / "radlab_build.json").read_text())
    assert 0.5e6 < info["parameters"] < 1.5e6, info["parameters"]


def test_tokenizer_conventions(tiny_dir: Path) -> None:
    proc = models.load_processor(str(tiny_dir))
    tok = proc.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    ids = tok.encode("[0.37, 0.5]", add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(ids)
    assert {"3", "7", "5"} <= set(pieces), pieces  # one token per digit
    text = "<think>heart normal</think>No acute process."
    # <think> survives skip_special_tokens, as in Qwen3; the image pad does not.
    assert "<think>" in tok.decode(tok.encode(text), skip_special_tokens=True)
    assert "<|im_end|>" not in tok.decode(tok.encode("x<|im_end|>"), skip_special_tokens=True)


def test_chat_template_marks_assistant_tokens(tiny_dir: Path) -> None:
    proc = models.load_processor(str(tiny_dir))
    msgs = [
        {"role": "user", "content": [{"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "No acute process."}]},
    ]
    out = proc.tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    mask = np.asarray(out["assistant_masks"])
    ids = np.asarray(out["input_ids"])
    answer = proc.tokenizer.decode(ids[mask == 1])
    assert answer.startswith("No acute process.") and "<|im_end|>" in answer
    assert "Describe" not in answer


@pytest.mark.slow
def test_reload_offline_in_fresh_process_and_generate(tiny_dir: Path) -> None:
    """The Auto classes load the folder offline, without trust_remote_code, once radlab is imported."""
    code = f"""
import radlab.models, numpy as np
from PIL import Image
from transformers import AutoProcessor, AutoModelForImageTextToText
proc = AutoProcessor.from_pretrained({str(tiny_dir)!r})
assert type(proc).__name__ == "Qwen3VLImageOnlyProcessor", type(proc)
model = AutoModelForImageTextToText.from_pretrained({str(tiny_dir)!r})
img = Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Describe."}}]}}]
text = proc.apply_chat_template(msgs, add_generation_prompt=True)
inputs = proc(text=[text], images=[img], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
print("GEN", out.shape[1] - inputs["input_ids"].shape[1])
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "GEN" in res.stdout


def test_save_reload_is_bit_identical(tiny_dir: Path, tmp_path: Path) -> None:
    """A model changed after loading, saved with its processor and loaded back: same tensors, same logits."""
    model, proc = models.load_model_and_processor(str(tiny_dir), device="cpu")
    with torch.no_grad():  # weights the builder never wrote, so the reload must come from the save
        for i, p in enumerate(model.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.01)
    model.save_pretrained(tmp_path / "saved")
    proc.save_pretrained(tmp_path / "saved")
    again, proc2 = models.load_model_and_processor(str(tmp_path / "saved"), device="cpu")
    original, _ = models.load_model_and_processor(str(tiny_dir), device="cpu")
    ours, theirs = model.state_dict(), again.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert not torch.equal(original.state_dict()["lm_head.weight"], theirs["lm_head.weight"])

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True)
    inputs, inputs2 = proc(text=[text], images=[img], return_tensors="pt"), proc2(text=[text], images=[img], return_tensors="pt")
    assert all(torch.equal(inputs[k], inputs2[k]) for k in inputs)
    model.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, again(**inputs2).logits)


def test_every_tensor_gets_gradient(tiny_dir: Path) -> None:
    """Deepstack indexes below the text depth: no parameter is left out of the loss."""
    model, proc = models.load_model_and_processor(str(tiny_dir), device="cpu")
    img = Image.fromarray(np.full((64, 64), 128, np.uint8))
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Normal."}]}]
    text = proc.apply_chat_template(msgs)
    inputs = proc(text=[text], images=[img], return_tensors="pt")
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    model(**inputs, labels=labels).loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad


def test_lora_wraps_and_trains_only_adapters(tiny_dir: Path) -> None:
    model, _ = models.load_model_and_processor(str(tiny_dir), lora={"r": 4, "alpha": 8}, device="cpu")
    counts = models.count_parameters(model)
    assert 0 < counts["trainable"] < counts["total"] / 2
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_embedded_spec_builds_on_demand(tmp_path: Path) -> None:
    model, proc = models.load_model_and_processor("radlab:tiny", build_dir=tmp_path, device="cpu")
    assert (tmp_path / "radlab-tiny" / "config.json").exists()
    assert model.config.model_type == "qwen3_vl"
    with pytest.raises(ValueError, match="unknown embedded model 'radlab:huge'"):
        models.embedded_spec("radlab:huge")


def test_missing_inputs_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="needs config.json"):
        models.load_model_and_processor(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a hub id"):
        models.load_model_and_processor("not a model")
    code = (
        "import radlab.models as m\n"
        "try:\n    m.load_model_and_processor('Qwen/Qwen3-VL-2B-Instruct')\n"
        "except m.ModelNotAvailableError as e:\n    print('CLEAR', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "CLEAR" in res.stdout and "not in the local Hugging Face cache" in res.stdout, res.stderr[-1500:]


def test_unknown_size_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedded model size"):
        models.build_tiny_qwen3vl(tmp_path / "x", "huge")


def test_build_is_deterministic(tmp_path: Path) -> None:
    a = models.build_tiny_qwen3vl(tmp_path / "a", "tiny", seed=3)
    b = models.build_tiny_qwen3vl(tmp_path / "b", "tiny", seed=3)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
