"""The embedded Qwen3-VL model and the one loading path for local folders and hub ids.

``build_tiny_qwen3vl(out_dir, size)`` writes a self-contained folder that the Auto classes
load offline (``HF_HUB_OFFLINE=1``, no ``trust_remote_code``) once radlab is imported:

* a byte-level BPE tokenizer trained here on a radiology corpus (digits split one per token,
  as in Qwen), with Qwen's special tokens and ``<think>``/``</think>`` as ordinary added tokens
  (so they survive ``skip_special_tokens``, as in Qwen3);
* Qwen3-VL's chat template with ``{% generation %}`` markers (assistant-only loss works);
* an image-only Qwen3-VL processor (the stock one insists on a video processor, which needs
  torchvision; see ``Qwen3VLImageOnlyProcessor``);
* a randomly initialised ``Qwen3VLForConditionalGeneration``.

``load_model_and_processor(name_or_path, lora=..., dtype=..., device=...)`` loads either that
folder or a real checkpoint such as ``Qwen/Qwen3-VL-2B-Instruct`` the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from radlab.vocab import split_list

try:  # transformers picks the torchvision backend when torchvision works; PIL otherwise.
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older layouts
    from transformers import Qwen2VLImageProcessor as _ImageProcessor  # type: ignore[assignment]

EMBEDDED_PREFIX = "radlab:"
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
THINK_TOKENS = ["<think>", "</think>"]

CHAT_TEMPLATE_PATH = Path(__file__).with_name("assets") / "qwen3_vl_training.jinja"


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor without a video processor.

    The stock ``Qwen3VLProcessor`` type-checks a ``Qwen3VLVideoProcessor``, which cannot be
    built without a working torchvision (none exists for the CPU torch here).  ``ProcessorMixin``
    derives its sub-processors from ``__init__``'s signature, so dropping the argument is enough;
    image-token expansion, ``mm_token_type_ids`` and the chat template are unchanged.  Video input
    is not supported.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any):
        super().__init__(image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kwargs)


def register() -> None:
    """Map ``Qwen3VLConfig`` to the image-only processor for ``AutoProcessor`` (idempotent).

    Without it ``AutoProcessor.from_pretrained(folder)`` silently returns only the tokenizer
    and TRL would treat the model as text-only.
    """
    AutoProcessor.register(Qwen3VLConfig, Qwen3VLImageOnlyProcessor, exist_ok=True)


register()


@dataclass(frozen=True)
class ModelSize:
    """Architecture of one embedded size. ``mrope_section`` sums to ``head_dim / 2``."""

    text_hidden: int
    text_layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    mrope_section: tuple[int, int, int]
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    deepstack: tuple[int, ...]
    vocab_size: int = 1024
    patch_size: int = 16
    max_pixels: int = 256 * 256
    min_pixels: int = 32 * 32


# Deepstack feature i is added after text layer i, so it must stay below the layer count or it
# only reaches image-position logits, which get no loss (its weights then never change).
SIZES: dict[str, ModelSize] = {
    # ~0.94M parameters: the demo (1600 SFT steps read the phantom images; ~0.28 s/step on 2 cores),
    # unit tests and smoke runs.
    "tiny": ModelSize(128, 2, 4, 2, 32, 256, (6, 5, 5), 64, 2, 2, 128, (0,)),
    # ~4.5M parameters: writes better text, but ~0.56 s/step and still near image-blind at 700 steps.
    "small": ModelSize(256, 4, 4, 2, 64, 512, (12, 10, 10), 128, 2, 2, 256, (0, 1)),
    # ~17M parameters: a stronger CPU model for longer local runs.
    "base": ModelSize(384, 6, 6, 2, 64, 1024, (12, 10, 10), 192, 4, 3, 512, (0, 1, 2)),
}

# A compact radiology corpus so the BPE merges cover CXR vocabulary even before any data
# exists; the data stage's own reports and prompts are added when available.
_BASE_CORPUS = """
FINDINGS: IMPRESSION: EXAMINATION: Chest radiograph PA and lateral. AP portable upright view of the chest.
The lungs are clear. No focal consolidation, pleural effusion or pneumothorax. Heart size is normal.
The cardiomediastinal silhouette is within normal limits. The heart is enlarged. Moderate cardiomegaly.
Small left pleural effusion. Moderate right pleural effusion. Large bilateral pleural effusions.
Blunting of the right costophrenic angle, possibly a small effusion. Small right apical pneumothorax.
Possible tiny left apical pneumothorax. Consolidation in the right lower lobe. Patchy opacity in the left base,
may represent atelectasis or pneumonia. Bibasilar plate-like atelectasis. Mild pulmonary edema.
Pulmonary vascular congestion without frank edema. A nodule in the left upper lobe. Mass in the right mid lung zone.
Endotracheal tube tip 4 cm above the carina. Enteric tube courses below the diaphragm with tip in the stomach.
Right internal jugular central venous catheter terminates in the low SVC. Left chest wall pacemaker with leads
in the right atrium and right ventricle. Sternotomy wires are intact. No acute cardiopulmonary process.
No acute osseous abnormality. Degenerative changes of the thoracic spine. The hila are unremarkable.
Interval improvement. Unchanged from prior. Low lung volumes. Hyperinflated lungs. Widened mediastinum.
Calcified granuloma. Hemidiaphragm. Retrocardiac opacity. Perihilar haziness. Kerley B lines. Upper zone.
Mid zone. Lower zone. Apex. Base. Bilateral. Left. Right. Mild. Moderate. Severe. Small. Large. Tiny.
Please describe the findings. Write the findings section of the radiology report for this chest X-ray.
Locate the pleural effusion. Where is the cardiomegaly on this image? Give the bounding box of the nodule.
Provide bounding box coordinates for the region described. No finding. There is no abnormality to localise.
The abnormality is located at [0.12, 0.34, 0.56, 0.78]. [0.1, 0.2, 0.3, 0.4] and [0.5, 0.6, 0.7, 0.8].
<think> Technique: adequate. Devices: none. Lungs: clear. Pleura: no effusion. Heart: normal size. Bones: intact. </think>
Think step by step inside <think></think> tags, then answer.
"""


def _train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Digits one per token (as in Qwen) keep box coordinates compositional: "0.37" is 4 tokens
    # whose meaning does not depend on a merge that happened to exist in the corpus.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    # Not special: Qwen3 keeps them through skip_special_tokens so think traces stay visible.
    fast.add_tokens(THINK_TOKENS, special_tokens=False)
    fast.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    return fast


def _model_config(size: ModelSize, tokenizer: PreTrainedTokenizerFast) -> Qwen3VLConfig:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = len(tokenizer)
    text = {
        "vocab_size": vocab,
        "hidden_size": size.text_hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.text_layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "head_dim": size.head_dim,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": list(size.mrope_section),
            "mrope_interleaved": True,
        },
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }
    vision = {
        "depth": size.vision_depth,
        "hidden_size": size.vision_hidden,
        "intermediate_size": size.vision_intermediate,
        "num_heads": size.vision_heads,
        "patch_size": size.patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": size.text_hidden,  # must equal the text hidden size
        "num_position_embeddings": 256,  # a perfect square: the learned grid is resampled
        "deepstack_visual_indexes": list(size.deepstack),
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


@dataclass
class BuildInfo:
    """What ``build_tiny_qwen3vl`` records in ``radlab_build.json``."""

    size: str
    seed: int
    parameters: int
    vision_parameters: int
    vocab_size: int
    image_token_id: int
    corpus_texts: int
    architecture: dict[str, Any] = field(default_factory=dict)


def build_tiny_qwen3vl(
    out_dir: str | os.PathLike[str],
    size: str = "tiny",
    *,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    max_pixels: int | None = None,
) -> Path:
    """Write a randomly initialised Qwen3-VL + tokenizer + processor to ``out_dir``.

    ``corpus`` (extra report/prompt texts) is added to the built-in radiology corpus for the
    BPE merges.  Deterministic for a given (size, corpus, seed).  Written to a temp folder and
    renamed, so a half-built model folder never exists.  Returns ``out_dir``.
    """
    if size not in SIZES:
        raise ValueError(f"unknown embedded model size {size!r}; expected one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".building")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    texts = [line.strip() for line in _BASE_CORPUS.strip().splitlines() if line.strip()]
    extra = [t for t in (corpus or []) if isinstance(t, str) and t.strip()]
    texts += extra
    tokenizer = _train_tokenizer(texts, spec.vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE_PATH.read_text(encoding="utf-8")

    image_processor = _ImageProcessor(
        size={"shortest_edge": spec.min_pixels, "longest_edge": max_pixels or spec.max_pixels},
        patch_size=spec.patch_size,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Qwen3VLImageOnlyProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )

    config = _model_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False

    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    n_vision = sum(p.numel() for p in model.model.visual.parameters())
    info = BuildInfo(
        size=size,
        seed=seed,
        parameters=n_params,
        vision_parameters=n_vision,
        vocab_size=len(tokenizer),
        image_token_id=config.image_token_id,
        corpus_texts=len(texts),
        architecture=asdict(spec),
    )
    (tmp / "radlab_build.json").write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def embedded_spec(name: str) -> str | None:
    """``"radlab:small" -> "small"``; ``None`` for anything that is not an embedded spec."""
    if name.startswith(EMBEDDED_PREFIX):
        size = name[len(EMBEDDED_PREFIX):]
        if size not in SIZES:
            raise ValueError(f"unknown embedded model {name!r}; expected radlab:{{{','.join(SIZES)}}}")
        return size
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelNotAvailableError(OSError):
    """A hub model was asked for offline and is not in the local cache."""


def _check_available(name_or_path: str) -> None:
    if Path(name_or_path).exists():
        if not (Path(name_or_path) / "config.json").exists() and not (Path(name_or_path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"{name_or_path}: a model folder needs config.json (or adapter_config.json)")
        return
    if not _HUB_ID.match(name_or_path):
        raise FileNotFoundError(f"model {name_or_path!r} is neither an existing folder nor a hub id (org/name)")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_OFFLINE

    cached = try_to_load_from_cache(name_or_path, "config.json")
    if HF_HUB_OFFLINE and not isinstance(cached, str):
        raise ModelNotAvailableError(
            f"model {name_or_path!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            "download it on a machine with internet (`hf download "
            f"{name_or_path}`) or point the parameter at a local folder"
        )


def load_processor(name_or_path: str, *, trust_remote_code: bool = False, max_pixels: int | None = None) -> Any:
    """Load the processor of a local folder or hub id, falling back to the image-only variant.

    A real Qwen3-VL checkpoint names the stock processor, which needs torchvision for its video
    part; without torchvision we build the image-only processor from the same files instead.
    """
    _check_available(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (ImportError, ValueError, TypeError) as exc:
        if "orchvision" not in str(exc) and "video" not in str(exc).lower():
            raise
        processor = Qwen3VLImageOnlyProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if not hasattr(processor, "image_processor"):
        raise TypeError(
            f"{name_or_path}: AutoProcessor returned {type(processor).__name__} without an image processor; "
            "import radlab.models first so the image-only Qwen3-VL processor is registered"
        )
    if max_pixels:
        ip = processor.image_processor
        ip.size = {"shortest_edge": min(ip.size.get("shortest_edge", 32 * 32), max_pixels), "longest_edge": max_pixels}
    return processor


def load_model_and_processor(
    name_or_path: str,
    *,
    lora: dict[str, Any] | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    max_pixels: int | None = None,
    build_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any]:
    """The one loading path: embedded spec, local folder or hub id; full or LoRA.

    * ``name_or_path``: ``"radlab:small"`` (built into ``build_dir`` if missing), a folder
      (a full model, or a PEFT adapter folder whose base is loaded first), or a hub id.
    * ``lora``: ``{"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}`` wraps
      the model in a trainable PEFT LoRA; ``None`` loads it for full fine-tuning.
    * ``dtype``: ``"float32"``, ``"bfloat16"``, ``"auto"`` or a torch dtype (default float32 on
      CPU, bfloat16 on CUDA).
    * ``trust_remote_code`` stays off unless asked.
    Returns ``(model, processor)``.
    """
    size = embedded_spec(name_or_path)
    if size is not None:
        target = Path(build_dir or Path("runs") / "models") / f"radlab-{size}"
        if not (target / "config.json").exists():
            build_tiny_qwen3vl(target, size)
        name_or_path = str(target)
    _check_available(name_or_path)

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype is None:
        dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    elif isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)

    adapter_cfg = Path(name_or_path) / "adapter_config.json"
    if adapter_cfg.exists():
        from peft import PeftModel

        base = json.loads(adapter_cfg.read_text())["base_model_name_or_path"]
        model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(model, name_or_path, is_trainable=lora is not None)
        processor = load_processor(name_or_path if (Path(name_or_path) / "tokenizer.json").exists() else base,
                                   trust_remote_code=trust_remote_code, max_pixels=max_pixels)
    else:
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
        processor = load_processor(name_or_path, trust_remote_code=trust_remote_code, max_pixels=max_pixels)
        if lora is not None:
            model = apply_lora(model, lora)
    model.to(device)
    return model, processor


def lora_config(lora: dict[str, Any]) -> Any:
    """A PEFT ``LoraConfig`` from a flat dict (``r``, ``alpha``, ``dropout``, ``target_modules``)."""
    from peft import LoraConfig

    targets: str | Sequence[str] = lora.get("target_modules", "all-linear")
    if isinstance(targets, str) and targets != "all-linear":
        targets = split_list(targets)
    return LoraConfig(
        r=int(lora.get("r", 16)),
        lora_alpha=int(lora.get("alpha", 32)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def apply_lora(model: Any, lora: dict[str, Any]) -> Any:
    """Wrap ``model`` in a trainable PEFT LoRA."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora))


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``{"total", "trainable", "vision"}`` parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vision = 0
    for name, p in model.named_parameters():
        if ".visual." in name or name.startswith("visual.") or "model.visual" in name:
            vision += p.numel()
    return {"total": total, "trainable": trainable, "vision": vision}
