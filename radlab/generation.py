"""The one generation path: chat prompts with one image each in, decoded completions out.

Every stage that decodes uses :func:`generate`: SFT's sample table, GRPO's held-out checks and
final held-out scores, the cold start's local teacher, and the analysis.  So a score logged during
training and the analysis's score of the same checkpoint on the same rows are one measurement.

What it does, once for everyone:

* renders each prompt with the chat template (``add_generation_prompt=True``) and processes it
  alone (:func:`encode_prompts`), then left-pads batches itself (:func:`collate_left`): the
  tokenizer's padding side is never touched, and prompts can be sorted by length so that a batch
  wastes few pad positions (results come back in input order);
* suppresses the vision tokens (:func:`vision_token_ids`): an image placeholder in a completion
  breaks Qwen3-VL's 3-D position ids on the next forward pass and is never a valid answer;
* stops at the first end-of-sequence *or* pad token (:func:`stop_token_ids`), so the kept ids are
  what a trainer would score, and reports whether a stop token was seen (else: truncated);
* decodes without special tokens and strips surrounding whitespace (``<think>``/``</think>`` are
  ordinary tokens and survive);
* greedy by default, with a checkpoint's sampling knobs unset so greedy is greedy; sampling is
  seeded inside a forked RNG, so a check during training does not move the trainer's RNG.

The model stays on its device and dtype; inputs are moved to the model's device (Qwen3-VL casts
the pixels to its vision tower's dtype itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Bumped when a change here can change a completion: the analysis's generation cache keys on it.
GENERATION_VERSION = 2


@dataclass(frozen=True)
class Generation:
    """One decoded completion.

    ``text``: the decoded answer (special tokens removed, whitespace stripped); ``n_tokens``:
    tokens generated before the stop token; ``finished``: a stop token (EOS or pad) was seen
    within the budget (``False`` means truncated); ``ids``: the kept token ids (``n_tokens`` of
    them; empty for answers that were not decoded by a model, e.g. a baseline's text).
    """

    text: str
    n_tokens: int
    finished: bool
    ids: tuple[int, ...] = field(default=(), compare=False, repr=False)


def _tokenizer(processor: Any) -> Any:
    return getattr(processor, "tokenizer", processor)


def vision_token_ids(model: Any) -> list[int]:
    """Ids of the image/video placeholder and vision start/end tokens (never valid in an answer).

    A completion containing one breaks Qwen3-VL's 3-D position ids on the next forward pass
    (``get_rope_index`` counts a vision block that has no image), so generation suppresses them.
    """
    cfg = getattr(model, "config", None)
    names = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    ids = [getattr(cfg, n, None) for n in names]
    return sorted({int(i) for i in ids if isinstance(i, int)})


def pad_token_id(model: Any, processor: Any) -> int:
    """The pad id: the model's generation config's, else the tokenizer's, else its EOS."""
    tok = _tokenizer(processor)
    pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
    if pad is None:
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return int(pad)


def stop_token_ids(model: Any, processor: Any) -> list[int]:
    """Tokens that end a completion: the generation config's EOS ids, the tokenizer's EOS and pad."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for v in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]):
        if v is not None:
            ids.add(int(v))
    tok = _tokenizer(processor)
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    ids.add(pad_token_id(model, processor))
    return sorted(ids)


def encode_prompts(processor: Any, prompts: Sequence[Any], images: Sequence[Any]) -> list[dict[str, Any]]:
    """Render each chat prompt with ``add_generation_prompt=True`` and process it alone.

    Returns one dict of ``[1, L_i]`` text tensors (``input_ids``, ``attention_mask``,
    ``mm_token_type_ids``) and per-image tensors (``pixel_values [P_i, D]``,
    ``image_grid_thw [1, 3]``) per prompt.  Encoding once per item gives the exact prompt length
    to sort by and lets :func:`collate_left` build any batch without reprocessing images.
    """
    out = []
    for prompt, image in zip(prompts, images):
        text = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = [image]
        out.append(dict(processor(**kwargs)))
    return out


def collate_left(encodings: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Left-pad per-item encodings into one batch.

    Tensors shaped like ``input_ids`` (``[1, L_i]``) become ``[B, max L]``, padded on the left
    with ``pad_id`` (``input_ids``) or 0 (masks, token types); anything else (``pixel_values``,
    ``image_grid_thw``) is concatenated along dim 0, which is how Qwen-VL processors batch
    images.  Left padding keeps every prompt's last token at the end, where generation starts.
    """
    import torch

    lengths = [int(e["input_ids"].shape[1]) for e in encodings]
    width = max(lengths)
    batch: dict[str, Any] = {}
    for key in encodings[0]:
        values = [e[key] for e in encodings]
        if all(hasattr(v, "dim") and v.dim() == 2 and v.shape[0] == 1 and v.shape[1] == n
               for v, n in zip(values, lengths)):
            fill = pad_id if key == "input_ids" else 0
            rows = [torch.cat([torch.full((1, width - n), fill, dtype=v.dtype), v], dim=1)
                    for v, n in zip(values, lengths)]
            batch[key] = torch.cat(rows, dim=0)
        else:
            batch[key] = torch.cat(list(values), dim=0)
    return batch


def generate(
    model: Any,
    processor: Any,
    prompts: Sequence[Any],
    images: Sequence[Any],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    sort_by_length: bool = True,
    progress: bool = False,
    desc: str = "generate",
) -> list[Generation]:
    """Decode ``prompts`` (chat message lists, one image each) in left-padded batches.

    ``prompts[i]`` is a message list whose user content holds ``{"type": "image"}`` and a text
    part; ``images[i]`` its PIL image (``None`` for a text-only prompt).  Prompts are sorted by
    token length (longest first, so a memory problem shows up in the first batch) and the results
    put back in input order.  Greedy decoding is deterministic and batch-independent up to float
    rounding; sampling is seeded once per call (in a forked RNG), so a sampled row depends on the
    batch it falls in.  Returns one :class:`Generation` per prompt.
    """
    import torch
    from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")
    if not prompts:
        return []
    tok = _tokenizer(processor)
    stops = stop_token_ids(model, processor)
    stop_set = set(stops)
    pad = pad_token_id(model, processor)
    encodings = encode_prompts(processor, prompts, images)
    order = list(range(len(prompts)))
    if sort_by_length:
        order.sort(key=lambda i: -int(encodings[i]["input_ids"].shape[1]))
    device = next(model.parameters()).device
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "pad_token_id": pad,
                                  "eos_token_id": stops, "suppress_tokens": vision_token_ids(model) or None}
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
    else:
        # Unset sampling knobs a checkpoint's generation_config may carry, so greedy is greedy.
        gen_kwargs.update(temperature=None, top_k=None, top_p=None)
    results: list[Generation | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    starts = range(0, len(order), batch_size)
    fork_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            for start in tqdm(starts, desc=desc, disable=not progress, total=len(starts)):
                idx = order[start:start + batch_size]
                batch = collate_left([encodings[i] for i in idx], pad)
                batch = {k: v.to(device) for k, v in batch.items()}
                width = batch["input_ids"].shape[1]
                with torch.inference_mode():
                    out = model.generate(**batch, **gen_kwargs)
                for i, seq in zip(idx, out[:, width:].tolist()):
                    stop = next((j for j, t in enumerate(seq) if t in stop_set), None)
                    kept = seq if stop is None else seq[:stop]
                    text = tok.decode(kept, skip_special_tokens=True).strip()
                    results[i] = Generation(text=text, n_tokens=len(kept), finished=stop is not None,
                                            ids=tuple(kept))
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]


__all__ = ["GENERATION_VERSION", "Generation", "collate_left", "encode_prompts", "generate", "pad_token_id",
           "stop_token_ids", "vision_token_ids"]
