"""The training-compute count (radlab.training.compute) on hand-computed cases, and its budget."""

from __future__ import annotations

import pytest
import torch

from radlab.training.compute import (
    STATE_KEY,
    FlopCounter,
    ParamCounts,
    compute_budget_callback,
    format_flops,
    forward_flops,
    param_counts,
    real_positions,
)


class Toy(torch.nn.Module):
    """Names like Qwen3-VL's: embed_tokens (not counted), a layer, lm_head, a visual tower."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(10, 4)  # 40, a lookup: not counted
        self.layer = torch.nn.Linear(4, 4)  # 20 language parameters
        self.lm_head = torch.nn.Linear(4, 10, bias=False)  # 40 head parameters
        self.visual = torch.nn.Linear(6, 4)  # 28 vision parameters

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, logits_to_keep=0):
        h = self.layer(self.embed_tokens(input_ids))
        if pixel_values is not None:
            h = h + self.visual(pixel_values).mean()
        return self.lm_head(h).sum()


def test_param_counts_split_language_head_vision_and_drop_embeddings() -> None:
    assert param_counts(Toy()) == ParamCounts(lang=20, lang_trainable=20, head=40, head_trainable=40,
                                              vision=28, vision_trainable=28)
    frozen = Toy()
    frozen.visual.requires_grad_(False)
    frozen.layer.weight.requires_grad_(False)
    c = param_counts(frozen)
    assert (c.vision_trainable, c.lang_trainable) == (0, 4)


def test_forward_flops_hand_cases() -> None:
    c = ParamCounts(lang=100, lang_trainable=100, head=10, head_trainable=10, vision=50, vision_trainable=50)
    assert forward_flops(c, 4, 4, 2, backward=False) == 2 * (100 * 4 + 10 * 4 + 50 * 2)
    assert forward_flops(c, 4, 4, 2, backward=True) == 6 * (100 * 4 + 10 * 4 + 50 * 2)  # full FT: 6·N·t
    assert forward_flops(c, 4, 1, 0, backward=False) == 2 * (100 * 4 + 10 * 1)  # logits for one position
    lora = ParamCounts(lang=100, lang_trainable=2, head=10, head_trainable=0, vision=50, vision_trainable=0)
    # activation grads through language model and head; weight grads for 2 params; no vision backward
    assert forward_flops(lora, 4, 4, 2, backward=True) == (2 * (100 * 4 + 10 * 4 + 50 * 2)
                                                          + 2 * 102 * 4 + 2 * 10 * 4)
    assert forward_flops(c, 0, 0, 0, backward=True) == 0


def test_real_positions_skip_padding_and_post_eos_pads() -> None:
    ids = torch.tensor([[0, 0, 5, 6], [5, 6, 7, 8]])  # pad id 0, left padded
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert real_positions(ids, mask, 0) == 6
    assert real_positions(ids, None, 0) == 6  # no mask: the pad id alone decides
    assert real_positions(ids, None, None) == 8
    assert real_positions(ids, mask, 0, last=1) == 2  # logits_to_keep=1: the last column only
    # a cached decoding step: ids [B, 1] against the full mask; a finished row decodes the pad id
    step = torch.tensor([[9], [0]])
    full = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert real_positions(step, full, 0) == 1


def test_counter_counts_only_while_active_and_adds_backward_under_grad() -> None:
    model = Toy()
    counter = FlopCounter([(model, 0)])
    ids, mask, pix = torch.tensor([[1, 2, 0]]), torch.tensor([[1, 1, 0]]), torch.zeros(3, 6)
    model(input_ids=ids, attention_mask=mask, pixel_values=pix)
    assert counter.flops == 0  # inactive: e.g. a held-out check between steps
    counter.active = True
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, pixel_values=pix)
    fwd = 2 * (20 * 2 + 40 * 2 + 28 * 3)
    assert counter.flops == fwd == 408
    model(input_ids=ids, attention_mask=mask, pixel_values=pix)  # autograd on: forward + backward
    assert counter.flops == fwd + 3 * fwd
    model(input_ids=ids, attention_mask=mask, logits_to_keep=2)  # last 2 columns: one real
    assert counter.flops == 4 * fwd + 6 * (20 * 2 + 40 * 1)
    counter.close()
    model(input_ids=ids, attention_mask=mask)
    assert counter.flops == 4 * fwd + 6 * (20 * 2 + 40 * 1)


def _drive(cb, model, steps: int, state=None):
    """Run the callback through ``steps`` optimizer steps of one training forward each."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    args = TrainingArguments(output_dir="unused", report_to="none", use_cpu=True)
    state = state or TrainerState()
    control = TrainerControl()
    cb.on_train_begin(args, state, control)
    ids, mask = torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1]])
    for _ in range(steps):
        state.global_step += 1
        cb.on_step_begin(args, state, control)
        model(input_ids=ids, attention_mask=mask)
        cb.on_step_end(args, state, control)
        if control.should_training_stop:
            break
    return state, control


def test_budget_stops_after_the_step_that_reaches_it_and_resumes_the_count() -> None:
    per_step = 6 * (20 * 3 + 40 * 3)  # 1080 FLOPs per step
    model = Toy()
    cb = compute_budget_callback(FlopCounter([(model, 0)]), max_flops=3 * per_step)
    state, control = _drive(cb, model, steps=10)
    assert cb.stopped_at == 3 and state.global_step == 3 and control.should_save
    assert state.stateful_callbacks[STATE_KEY] == {"flops": 3 * per_step, "max_flops": 3 * per_step, "stopped_at": 3}

    # 2.5 steps' worth: the third step crosses it, so training stops there (not at 2)
    cb = compute_budget_callback(FlopCounter([(model, 0)]), max_flops=2.5 * per_step)
    assert _drive(cb, model, steps=10)[0].global_step == 3

    # budget 0 counts but never stops
    cb = compute_budget_callback(FlopCounter([(model, 0)]), max_flops=0)
    state, control = _drive(cb, model, steps=5)
    assert state.global_step == 5 and cb.stopped_at is None and cb.total == 5 * per_step

    # a resumed state carries the count: 5 steps done, budget 7 steps -> 2 more
    cb = compute_budget_callback(FlopCounter([(model, 0)]), max_flops=7 * per_step)
    state.stateful_callbacks[STATE_KEY] = {"flops": 5 * per_step}
    state, _ = _drive(cb, model, steps=10, state=state)
    assert state.global_step == 7 and cb.total == 7 * per_step


def test_counter_matches_the_formula_on_the_embedded_model(tmp_path) -> None:
    from radlab.models import build_tiny_qwen3vl, load_model_and_processor

    build_tiny_qwen3vl(tmp_path / "m", "tiny")
    model, proc = load_model_and_processor(str(tmp_path / "m"), dtype="float32", device="cpu")
    c = param_counts(model)
    embed = model.get_input_embeddings().weight.numel()
    assert c.lang + c.head + c.vision + embed == sum(p.numel() for p in model.parameters())
    from PIL import Image

    img = Image.new("RGB", (64, 64), 128)
    msgs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}] for t in ("a", "a b c d")]
    texts = [proc.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    batch = proc(text=texts, images=[[img], [img]], padding=True, return_tensors="pt")
    counter = FlopCounter([(model, proc.tokenizer.pad_token_id)])
    counter.active = True
    model(**batch)
    tokens = int(batch["attention_mask"].sum())
    assert tokens < batch["attention_mask"].numel()  # padding present and not counted
    assert counter.flops == forward_flops(c, tokens, tokens, batch["pixel_values"].shape[0], backward=True)


@pytest.mark.parametrize(("value", "text"), [(3.2e12, "3.20 TFLOP"), (5e6, "5.00 MFLOP"), (12, "12 FLOP")])
def test_format_flops(value: float, text: str) -> None:
    assert format_flops(value) == text


def _sum_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from radlab.training.compute import _sum_over_processes

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        total = _sum_over_processes(float(rank + 1))
        with open(f"{out}.{rank}", "w") as f:
            f.write(repr(total))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_flops_sum_over_gloo_processes(tmp_path) -> None:
    """Two CPU processes (gloo, as under ``accelerate launch`` on CPU) add their counts: 1 + 2."""
    import torch.multiprocessing as tmp

    from radlab.training.compute import _sum_over_processes

    assert _sum_over_processes(5.0) == 5.0  # no process group: the value as it is
    tmp.spawn(_sum_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "sum")), nprocs=2, join=True)
    assert [float((tmp_path / f"sum.{r}").read_text()) for r in (0, 1)] == [3.0, 3.0]
