"""Every stage's parameters, in one place: one dataclass per stage, ``STAGE_PARAMS`` maps them.

Each dataclass is what one notebook's ``parameters`` cell declares (same names, types and
defaults: the demo's) and what :func:`radlab.config.validate` checks.  Fields are flat literals so
that papermill ``-p`` and flat YAML files can set every one of them; field ``metadata`` carries
``help`` and, for input paths, ``path="file" | "dir"`` (must exist once derived defaults are
filled in).  ``""`` / ``0`` mean "derive": ``__post_init__`` fills derived values (input folders
from the experiment, the starting checkpoint from the previous run, reward lists from
``thinking``) and rejects bad values with a :class:`~radlab.vocab.ParamError` naming the field.

This module is a leaf of the house: it imports :mod:`radlab.vocab`, :mod:`radlab.runs` and
:mod:`radlab.formats`, never the data loaders, the rewards or the run graph.  Names that only
those know (data sources and loader options, reward names and options, annotator backends,
resize modes, comparisons and model folders) are checked by :func:`radlab.names.check_names`,
which :func:`radlab.config.validate` calls once the dataclass is built.

Every stage shares :class:`CommonParams`: ``experiment``, ``output_root``, ``seed``, ``stage``
(the stage a params file is written for; checked against the class) and ``run_name`` (the run
folder; ``''`` = the stage name).  :meth:`CommonParams.depends_on` derives the runs a run reads
from its input fields (the run graph of ``radlab run``).

The training stages also carry every field of ``trl.SFTConfig`` / ``trl.GRPOConfig`` by name
(:func:`trl_fields`): the ones declared here are radlab's own or TRL fields with radlab's default
(:func:`own_fields`, the notebooks' parameters cells); the others keep TRL's default, help and a
flat type; :data:`TRL_EXCLUDED` lists the few radlab sets itself.  So this module imports TRL's
config classes (no model code runs).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from transformers.trainer_utils import SchedulerType
from trl import GRPOConfig, SFTConfig

from radlab import formats, runs
from radlab.vocab import GROUNDING_KINDS, STAGES, TASKS, TRAINING_STAGES, ParamError, flat_type, split_list


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class CommonParams:
    """Fields every stage shares."""

    STAGE: ClassVar[str] = ""

    experiment: str = field(default="demo", metadata=_help("experiment name; outputs go to <output_root>/<experiment>/<run_name>/"))
    output_root: str = field(default="runs", metadata=_help("root folder of all run folders"))
    seed: int = field(default=0, metadata=_help("global random seed"))
    stage: str = field(default="", metadata=_help(
        "the stage these parameters are for (params files say it; radlab run picks the notebook by it); "
        "'' = this notebook's stage, anything else must equal it"))
    run_name: str = field(default="", metadata=_help(
        "run folder name under <output_root>/<experiment>/ (radlab run passes the params file's name); '' = the stage name"))
    force: bool = field(default=False, metadata=_help(
        "replace a finished run folder whose params differ (otherwise that is an error; a finished run with the same params is reused)"))

    def __post_init__(self) -> None:
        if self.stage and self.stage != self.STAGE:
            raise ParamError(
                f"parameter 'stage': the params say stage {self.stage!r}, but these are the parameters of "
                f"stage {self.STAGE!r}; run them with the {self.stage!r} notebook or fix 'stage'")
        self.stage = self.STAGE
        if not self.run_name:
            self.run_name = self.STAGE
        if "/" in self.run_name or "\\" in self.run_name or self.run_name in (".", ".."):
            raise ParamError(f"parameter 'run_name': {self.run_name!r} must be a plain folder name")

    @property
    def run_dir(self) -> Path:
        """``<output_root>/<experiment>/<run_name>`` (several runs of one stage can coexist)."""
        return runs.stage_dir(self.output_root, self.experiment, self.run_name or self.STAGE)

    def stage_path(self, run: str) -> Path:
        """Run folder of another run of the same experiment."""
        return runs.stage_dir(self.output_root, self.experiment, run)

    def run_of(self, path: str) -> str | None:
        """The run of this experiment whose folder holds ``path``, else ``None``.

        ``runs/demo/sft/model`` -> ``"sft"`` (relative paths are taken from the current folder, as the
        notebooks see them); a path outside ``<output_root>/<experiment>/`` belongs to no run.
        """
        if not path:
            return None
        experiment_dir = Path(os.path.abspath(self.output_root)) / self.experiment
        try:
            rel = Path(os.path.abspath(path)).relative_to(experiment_dir)
        except ValueError:
            return None
        return rel.parts[0] if rel.parts else None

    def depends_on(self, experiment_runs: Mapping[str, str]) -> list[str]:
        """The runs of this experiment that this run reads, in field order.

        Derived from the input fields (those with ``path`` metadata, after ``__post_init__`` filled
        the derived defaults): ``data_dir`` '' -> the ``data`` run, GRPO's ``init_model`` '' -> ``sft`` or
        ``cold_start`` by ``thinking``, ``init_run: sft`` -> ``sft``, any path into
        ``<output_root>/<experiment>/<run>/`` -> that run.  ``experiment_runs`` maps every run of the
        experiment to its stage (for stages that read all runs of a kind, like the analysis).
        """
        out: list[str] = []
        for f in dataclasses.fields(self):
            if not f.metadata.get("path"):
                continue
            run = self.run_of(getattr(self, f.name))
            if run and run != self.run_name and run not in out:
                out.append(run)
        return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

PHANTOM = "phantom"


@dataclass
class DataParams(CommonParams):
    """Parameters of the data stage (``notebooks/00_data.ipynb``)."""

    STAGE: ClassVar[str] = "data"

    source: str = field(default=PHANTOM, metadata={"help": "'phantom' (synthetic) or a real dataset name known to radlab.data.loaders"})
    source_root: str = field(default="", metadata={"help": "folder of the real dataset (unused for phantom)", "path": "dir"})
    source_limit: int = field(default=0, metadata={"help": "read at most this many real records (0: all)"})
    sources: str = field(default="", metadata={"help": "several real datasets, comma separated; each item names a loader with its root, task weights and sizes (syntax: radlab.data.sources); empty: use source"})
    n_train: int = field(default=3000, metadata={"help": "SFT training cases (patients)"})
    n_validation: int = field(default=100, metadata={"help": "SFT validation cases"})
    n_grpo: int = field(default=2000, metadata={"help": "GRPO prompt cases (fresh patients, disjoint from SFT)"})
    n_eval: int = field(default=1000, metadata={"help": "test cases; each gives one report and one grounding item"})
    image_size: int = field(default=128, metadata={"help": "image side in pixels (multiple of 32)"})
    resize_mode: str = field(default="longest", metadata={"help": "real images: 'longest' (long side image_size, aspect kept) or 'letterbox' (padded to an image_size square: one size, needed by use_vllm)"})
    difficulty: float = field(default=0.3, metadata={"help": "phantom difficulty in [0,1]: lower contrast, more noise/jitter"})
    prevalence: float = field(default=0.25, metadata={"help": "phantom probability of each finding kind"})
    p_mention_min: float = field(default=0.2, metadata={"help": "phantom: min probability that an absent finding is negated"})
    p_mention_max: float = field(default=0.6, metadata={"help": "phantom: max probability that an absent finding is negated"})
    p_uncertain: float = field(default=0.15, metadata={"help": "phantom: share of findings drawn near threshold (hedged, label -1)"})
    mix_report: float = field(default=1.0, metadata={"help": "SFT report rows per case"})
    mix_abnormality: float = field(default=0.5, metadata={"help": "SFT one-class abnormality grounding rows per case (weight for GRPO/eval)"})
    mix_abnormality_all: float = field(default=0.1, metadata={"help": "SFT all-abnormality grounding rows per case (weight for GRPO/eval)"})
    mix_anatomy: float = field(default=0.2, metadata={"help": "SFT anatomy grounding rows per case (weight for GRPO/eval)"})
    mix_phrase: float = field(default=0.2, metadata={"help": "SFT phrase grounding rows per case (weight for GRPO/eval)"})
    negative_rate: float = field(default=0.2, metadata={"help": "share of one-class abnormality items asking for an absent finding"})
    box_format: str = field(default="norm", metadata={"help": "box text in answers: 'norm' ([0.12, 0.34, ...]) or 'qwen1000'"})
    thinking_grpo: bool = field(default=False, metadata={"help": "GRPO prompts ask for <think>...</think> first"})
    thinking_eval: bool = field(default=False, metadata={"help": "eval prompts ask for <think>...</think> first"})
    workers: int = field(default=2, metadata={"help": "processes for rendering / image resizing (1: in-process)"})
    n_gallery: int = field(default=8, metadata={"help": "samples in the gallery figure"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size < 32 or self.image_size % 32:
            raise ParamError(f"image_size must be a multiple of 32 and >= 32, got {self.image_size}")
        if self.box_format not in formats.BOX_FORMATS:
            raise ParamError(f"box_format must be one of {formats.BOX_FORMATS}, got {self.box_format!r}")
        for name in ("n_train", "n_eval"):
            if getattr(self, name) < 1:
                raise ParamError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_validation", "n_grpo", "source_limit"):
            if getattr(self, name) < 0:
                raise ParamError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("difficulty", "prevalence", "p_mention_min", "p_mention_max", "negative_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParamError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.p_mention_min > self.p_mention_max:
            raise ParamError(f"p_mention_min ({self.p_mention_min}) must be <= p_mention_max ({self.p_mention_max})")
        if not 0.0 <= self.p_uncertain < 1.0:
            raise ParamError(f"p_uncertain must be in [0, 1), got {self.p_uncertain}")
        mixes = self.mix()
        if any(v < 0 for v in mixes.values()):
            raise ParamError(f"mix_* must be >= 0, got {mixes}")
        if mixes["report"] <= 0 and sum(mixes[k] for k in GROUNDING_KINDS) <= 0:
            raise ParamError("at least one mix_* must be > 0")
        if self.workers < 1:
            raise ParamError(f"workers must be >= 1, got {self.workers}")
        if self.sources.strip() and self.source != PHANTOM:
            raise ParamError(f"give either source ({self.source!r}) or sources, not both: one source is a sources list of one item")
        if self.source != PHANTOM and not self.source_root:
            raise ParamError(f"source {self.source!r} needs source_root (the dataset folder)")
        # source / sources / resize_mode name the data stage's loaders and resize modes: radlab.names
        # checks them when radlab.config.validate resolves these params.

    @property
    def is_phantom(self) -> bool:
        """True for the synthetic phantom data (no real source)."""
        return not self.sources.strip() and self.source == PHANTOM

    def mix(self) -> dict[str, float]:
        """``{"report": .., "abnormality": .., ...}`` from the ``mix_*`` fields."""
        return {"report": self.mix_report, **{k: getattr(self, f"mix_{k}") for k in GROUNDING_KINDS}}

    def pool_sizes(self) -> dict[str, int]:
        """Cases per pool."""
        return {"train": self.n_train, "validate": self.n_validation, "grpo": self.n_grpo, "test": self.n_eval}


# --------------------------------------------------------------------------------------------
# training: SFT, cold-start SFT on <think> traces, GRPO
# --------------------------------------------------------------------------------------------

DATA_HINT = "; run notebooks/00_data.ipynb first (or set data_dir)"
SFT_HINT = "; run notebooks/01_sft.ipynb first (or set init_model)"
GRPO_HINT = ("; run notebooks/01_sft.ipynb first (thinking=False) or notebooks/02_cold_start.ipynb "
             "(thinking=True), or set init_model")

# transformers' schedulers (TrainingArguments.lr_scheduler_type), checked before any model loads.
LR_SCHEDULERS = tuple(t.value for t in SchedulerType)
LR_HELP = ("learning-rate schedule, a transformers SchedulerType: constant, constant_with_warmup, linear, cosine, "
           "cosine_with_min_lr, warmup_stable_decay, ...")
GRPO_LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
SCALE_REWARDS = ("group", "batch", "none")
VLLM_MODES = ("colocate", "server")
TRACE_SOURCES = ("phantom", "teacher_api", "teacher_local")


# --------------------------------------------------------------------------------------------
# TRL fields: every field of trl.SFTConfig / trl.GRPOConfig is a parameter of its stage
# --------------------------------------------------------------------------------------------

# The only TRL fields params cannot set, and why.  Everything else in the stage's TRL config is a
# parameter by the same name: declared below where radlab sets its own default (those are in the
# notebook's parameters cell), added from the TRL config otherwise (TRL's default, type and help).
TRL_EXCLUDED: dict[str, str] = {
    "output_dir": "derived: <run>/checkpoints/",
    "resume_from_checkpoint": "use resume: True (continues from the run's last checkpoint)",
    "use_cpu": "derived: True exactly when no CUDA device is visible",
    "remove_unused_columns": "always False: the rewards read the reference columns, the collator the images",
    "length_column_name": "derived: the token-length column the SFT stage writes",
    "train_sampling_strategy": "derived from group_by_length",
    "hub_token": "a credential: set HF_TOKEN in the environment, never in a params file",
    "parallelism_config": "not a flat value (an accelerate ParallelismConfig object); use an accelerate config file",
}


def _flat_default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v.value if isinstance(v, enum.Enum) else v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value) if value else None
    return value


def own_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields radlab declares for a stage (its notebook's parameters cell shows exactly these);
    the others come from the stage's TRL config (metadata ``trl``) and are set by params files or
    ``-p`` like any other."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("trl")]


def trl_fields(config_cls: type) -> Any:
    """Class decorator (below ``@dataclass``): add every field of ``config_cls`` (a TRL config) that
    the class and its bases do not declare and :data:`TRL_EXCLUDED` does not list, with TRL's
    default, flat type and help (metadata ``trl=True``)."""

    def add(cls: type) -> type:
        declared = set(cls.__dict__.get("__annotations__", {}))
        for base in cls.__mro__[1:]:
            if dataclasses.is_dataclass(base):
                declared |= {f.name for f in dataclasses.fields(base)}
        hints = typing.get_type_hints(config_cls)
        annotations = cls.__dict__["__annotations__"]
        for f in dataclasses.fields(config_cls):
            if not f.init or f.name in declared or f.name in TRL_EXCLUDED:
                continue
            flat = flat_type(hints[f.name])
            if flat is None:
                warnings.warn(f"radlab: TRL field {config_cls.__name__}.{f.name} ({hints[f.name]}) cannot be a flat "
                              "parameter and is not in radlab.params.TRL_EXCLUDED; it keeps TRL's default",
                              stacklevel=2)
                continue
            tp, kind = flat
            help_text = " ".join(str(f.metadata.get("help", "")).split()) or f"TRL {config_cls.__name__}.{f.name}"
            annotations[f.name] = tp
            setattr(cls, f.name, field(default=_flat_default(f), metadata=_help(
                f"(TRL) {help_text}", trl=True, **({"trl_kind": kind} if kind else {}))))
        cls.TRL_CONFIG = config_cls
        return cls

    return add


@dataclass
class TrainingParams(CommonParams):
    """Fields shared by the SFT-style stages and GRPO: model, optimisation, checkpoints, hardware."""

    STAGE: ClassVar[str] = ""

    data_dir: str = field(default="", metadata=_help(
        "data stage folder (holds sft/, grpo/, eval/, records/); '' = <output_root>/<experiment>/data",
        path="dir", missing_hint=DATA_HINT))
    # --- model -----------------------------------------------------------------------------
    lora: bool = field(default=False, metadata=_help("train a LoRA adapter instead of all weights (merged into model/ at the end)"))
    lora_r: int = field(default=16, metadata=_help("LoRA rank"))
    lora_alpha: int = field(default=32, metadata=_help("LoRA alpha (scale = alpha / r)"))
    lora_dropout: float = field(default=0.05, metadata=_help("LoRA dropout"))
    lora_target_modules: str = field(default="all-linear", metadata=_help("'all-linear' or comma-separated module names"))
    max_pixels: int = field(default=0, metadata=_help("image pixel budget of the processor (longest_edge); 0 = the model's own"))
    trust_remote_code: bool = field(default=False, metadata=_help(
        "run code shipped with a hub model (only for models that need it; off = safe)"))
    # --- optimisation --------------------------------------------------------------------
    learning_rate: float = field(default=1.0e-03, metadata=_help("peak learning rate (AdamW)"))
    lr_scheduler_type: str = field(default="constant_with_warmup", metadata=_help(LR_HELP))
    warmup_steps: float = field(default=0.0, metadata=_help("linear warm-up: steps (>= 1) or a ratio of all steps (< 1)"))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    max_grad_norm: float = field(default=1.0, metadata=_help("gradient clipping norm"))
    num_train_epochs: float = field(default=1.0, metadata=_help("epochs; ignored when max_steps > 0"))
    max_steps: int = field(default=0, metadata=_help("optimizer steps; 0 = use num_train_epochs"))
    per_device_train_batch_size: int = field(default=16, metadata=_help("rows per device per micro-batch"))
    gradient_accumulation_steps: int = field(default=1, metadata=_help("micro-batches per optimizer step"))
    vision_lr_scale: float = field(default=1.0, metadata=_help(
        "learning rate of the vision encoder and its mergers as a multiple of learning_rate; 0 freezes them"))
    max_train_flops: float = field(default=0.0, metadata=_help(
        "compute budget of training in FLOPs (radlab.training.compute: forward+backward token-FLOPs, rollouts "
        "included): stop cleanly after the step that reaches it, checkpoint and save; 0 = none"))
    # --- logging and checkpoints ---------------------------------------------------------
    logging_steps: int = field(default=10, metadata=_help("log loss/metrics every N steps"))
    save_steps: int = field(default=200, metadata=_help("checkpoint every N steps (into <run>/checkpoints/)"))
    save_total_limit: int = field(default=2, metadata=_help("checkpoints kept (oldest deleted); 0 = keep all"))
    resume: bool = field(default=False, metadata=_help("resume from the last checkpoint in <run>/checkpoints/ (continues the step count)"))
    # --- hardware ------------------------------------------------------------------------
    bf16: bool = field(default=False, metadata=_help("bfloat16 weights/autocast (GPU); False = fp32 (CPU: faster and exact)"))
    gradient_checkpointing: bool = field(default=False, metadata=_help("trade compute for memory (large models on GPU)"))
    torch_threads: int = field(default=0, metadata=_help("torch CPU threads; 0 = $RADLAB_NUM_THREADS or torch's default"))
    dataloader_num_workers: int = field(default=0, metadata=_help("DataLoader worker processes"))
    # --- TRL settings radlab sets its own default for (all others: see TRL_EXCLUDED) -----------
    logging_first_step: bool = field(default=True, metadata=_help("log the first step too (the start of every curve)"))
    disable_tqdm: bool = field(default=True, metadata=_help(
        "hide the trainer's progress bar (progress goes to <run>/progress.jsonl and the runner's display)"))
    ddp_find_unused_parameters: bool = field(default=False, metadata=_help(
        "DDP: search for unused parameters each step (slower; radlab's models use all of theirs)"))

    # The TRL config this stage's trainer takes (set by @trl_fields on the concrete classes).
    TRL_CONFIG: ClassVar[type | None] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data_dir:
            self.data_dir = str(self.stage_path("data"))
        if self.lr_scheduler_type not in LR_SCHEDULERS:
            raise ParamError(f"parameter 'lr_scheduler_type': {self.lr_scheduler_type!r} not in {LR_SCHEDULERS}")
        for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps", "lora_r"):
            if getattr(self, key) < 1:
                raise ParamError(f"parameter {key!r} must be >= 1, got {getattr(self, key)}")
        for key in ("max_steps", "warmup_steps", "max_pixels", "save_total_limit", "torch_threads", "dataloader_num_workers",
                    "max_train_flops"):
            if getattr(self, key) < 0:
                raise ParamError(f"parameter {key!r} must be >= 0, got {getattr(self, key)}")
        if self.learning_rate <= 0:
            raise ParamError(f"parameter 'learning_rate' must be > 0, got {self.learning_rate}")
        if self.vision_lr_scale < 0:
            raise ParamError(f"parameter 'vision_lr_scale' must be >= 0, got {self.vision_lr_scale}")
        if self.max_steps == 0 and self.num_train_epochs <= 0:
            raise ParamError("set max_steps > 0 or num_train_epochs > 0")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("trl_kind") == "json" and isinstance(value, str) and value.strip():
                try:
                    loaded = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ParamError(f"parameter {f.name!r}: {value!r} is not JSON ({exc.msg}); write e.g. "
                                     "'{\"key\": 1}'") from exc
                if not isinstance(loaded, dict):
                    raise ParamError(f"parameter {f.name!r}: expected a JSON object, got {value!r}")

    def trl_values(self) -> dict[str, Any]:
        """Every field of :attr:`TRL_CONFIG` these params carry, by name, in TRL's types: comma
        lists become lists, JSON text dicts.  The config builders in :mod:`radlab.training` add
        what radlab derives (``output_dir``, ``use_cpu``, ...; :data:`TRL_EXCLUDED`) and map
        radlab's "0 = unset" values."""
        assert self.TRL_CONFIG is not None, f"{type(self).__name__} has no TRL config"
        names = {f.name for f in dataclasses.fields(self.TRL_CONFIG) if f.init}
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name not in names or f.name in TRL_EXCLUDED:
                continue
            value = getattr(self, f.name)
            kind = f.metadata.get("trl_kind")
            if kind == "list" and isinstance(value, str):
                value = split_list(value)
            elif kind == "json" and isinstance(value, str):
                value = json.loads(value) if value.strip() else None
            out[f.name] = value
        return out

    def lora_dict(self) -> dict[str, Any] | None:
        """The ``lora=`` argument of :func:`radlab.models.load_model_and_processor` (``None`` = full FT)."""
        if not self.lora:
            return None
        return {"r": self.lora_r, "alpha": self.lora_alpha, "dropout": self.lora_dropout,
                "target_modules": self.lora_target_modules}


@dataclass
@trl_fields(SFTConfig)
class _SFTLikeParams(TrainingParams):
    """SFT-specific fields, shared by the SFT and cold-start stages."""

    assistant_only_loss: bool = field(default=True, metadata=_help(
        "loss on assistant tokens only (otherwise also on the prompt and the image placeholder tokens)"))
    max_length: int = field(default=0, metadata=_help(
        "truncate rows to this many tokens; 0 = no truncation (a cut through the image tokens breaks Qwen3-VL)"))
    eval_rows: int = field(default=64, metadata=_help("held-out rows for the end-of-stage checks (generations, loss)"))
    generation_rows: int = field(default=6, metadata=_help("greedy generations shown next to their references"))
    max_new_tokens: int = field(default=96, metadata=_help("token budget of the greedy generations"))
    group_by_length: bool = field(default=False, metadata=_help(
        "batch rows of similar token length (less padding, but consecutive batches then share a length and "
        "task, which slowed the demo's learning: off by default)"))
    # A tenth of the rate on the vision side keeps what the vision warm start (or a pretrained encoder)
    # learned while the language model learns to read it; the LLaVA-OneVision recipe the paper started from
    # used 2e-6 against 1e-5.  Demo (README): at 1.0 the SFT model wrote 'effusion' in 4 of 500 test reports, the
    # references in 108; at 0.1 effusion F1 went from 0.07 to 0.86.
    vision_lr_scale: float = field(default=0.1, metadata=_help(
        "learning rate of the vision encoder and its mergers as a multiple of learning_rate; 0 freezes them"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 0 or self.eval_rows < 0 or self.generation_rows < 0 or self.max_new_tokens < 1:
            raise ParamError("max_length, eval_rows and generation_rows must be >= 0 and max_new_tokens >= 1")


@dataclass
class SFTParams(_SFTLikeParams):
    """Supervised fine-tuning on the data stage's report + grounding conversations."""

    STAGE: ClassVar[str] = "sft"

    # Demo sizing (README, "The demo"): radlab:tiny, vision warm start (400 steps), then 1200 SFT steps
    # with the vision side at a tenth of the rate.  From random init the model ignores the image for its
    # first ~1000 SFT steps; after the warm start, 1200 steps gave a held-out image-loss gap of 0.25
    # nats/token (800 steps: 0.19; 800 steps with the vision side at the full rate: 0.11).
    warmup_steps: float = field(default=30.0, metadata=_help("linear warm-up: steps (>= 1) or a ratio of all steps (< 1)"))
    max_steps: int = field(default=1200, metadata=_help("optimizer steps; 0 = use num_train_epochs"))

    model_name_or_path: str = field(default="radlab:tiny", metadata=_help(
        "'radlab:tiny|small|base' (embedded, built into <run>/base_model/ with the data's texts in the "
        "tokenizer corpus), a local folder, or a hub id such as Qwen/Qwen3-VL-2B-Instruct"))
    init_model: str = field(default="", metadata=_help(
        "start from this saved model folder instead of model_name_or_path (e.g. runs/demo/sft/model for "
        "the compute-matched 'sft_more' control); '' = model_name_or_path",
        path="dir", missing_hint=SFT_HINT))
    init_run: str = field(default="", metadata=_help(
        "start from <output_root>/<experiment>/<init_run>/model, e.g. 'sft' for the 'sft_more' control "
        "(ignored when init_model is set)"))
    tasks: str = field(default="report,grounding", metadata=_help("comma-separated tasks of the SFT mix"))
    max_train_rows: int = field(default=0, metadata=_help("subsample the training rows; 0 = all"))
    image_check_rows: int = field(default=64, metadata=_help(
        "held-out report rows for the true-vs-shuffled-image loss check; 0 = skip"))
    vision_warmup_steps: int = field(default=400, metadata=_help(
        "vision warm start before SFT: steps of training the vision tower and mergers on the training records' "
        "finding labels and boxes (radlab.training.vision_warmup; cached by content hash); 0 = off (a pretrained "
        "hub model needs none; skipped when starting from init_model)"))
    vision_warmup_lr: float = field(default=1.0e-03, metadata=_help("learning rate of the vision warm start (AdamW)"))
    vision_warmup_batch_size: int = field(default=32, metadata=_help("images per step of the vision warm start"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vision_warmup_steps < 0 or self.vision_warmup_batch_size < 1 or self.vision_warmup_lr <= 0:
            raise ParamError("need vision_warmup_steps >= 0, vision_warmup_batch_size >= 1 and vision_warmup_lr > 0")
        if self.init_run and not self.init_model:
            if self.init_run == self.run_name:
                raise ParamError(f"parameter 'init_run': {self.init_run!r} is this run's own folder")
            self.init_model = str(self.stage_path(self.init_run) / "model")
        bad = [t for t in split_list(self.tasks) if t not in TASKS]
        if bad or not split_list(self.tasks):
            raise ParamError(f"parameter 'tasks': {self.tasks!r}; expected a comma-separated subset of {TASKS}")
        if self.max_train_rows < 0 or self.image_check_rows < 0:
            raise ParamError("max_train_rows and image_check_rows must be >= 0")


@dataclass
class ColdStartParams(_SFTLikeParams):
    """Build verified ``<think>`` traces and run a short SFT on them from the SFT checkpoint."""

    STAGE: ClassVar[str] = "cold_start"

    learning_rate: float = field(default=5.0e-04, metadata=_help("peak learning rate (AdamW)"))
    warmup_steps: float = field(default=10.0, metadata=_help("linear warm-up: steps (>= 1) or a ratio of all steps (< 1)"))
    # A step cap, not a time cap: the SFT model starts near loss 9 on the traces; 150 steps left the
    # answer after </think> ignoring the grounding prompt, and 400 fit beside GRPO at no wall-time cost.
    max_steps: int = field(default=400, metadata=_help("optimizer steps; 0 = use num_train_epochs"))
    per_device_train_batch_size: int = field(default=8, metadata=_help("rows per device per micro-batch"))
    save_steps: int = field(default=100, metadata=_help("checkpoint every N steps (into <run>/checkpoints/)"))
    max_new_tokens: int = field(default=256, metadata=_help("token budget of the greedy generations (trace + answer)"))

    init_model: str = field(default="", metadata=_help(
        "model to fine-tune; '' = <output_root>/<experiment>/sft/model", path="dir", missing_hint=SFT_HINT))
    trace_source: str = field(default="phantom", metadata=_help(
        f"one of {TRACE_SOURCES}: 'phantom' writes a systematic reading from the record's ground truth; "
        "'teacher_api' asks an OpenAI-compatible server (e.g. vLLM); 'teacher_local' a local HF model"))
    # 'brief' measured on the demo (n=150 per task, 2026-12-03): grounding mAP@0.5 0.287 -> 0.480 (anatomy 0.16 ->
    # 0.84); the focused trace's target line was often another region than the one asked for.
    grounding_trace: str = field(default="brief", metadata=_help(
        "phantom traces of grounding rows: 'focused' (the asked-for target, then its reading section) or 'brief' "
        "(one fixed line naming nothing: the box then follows the prompt as without thinking)"))
    tasks: str = field(default="report,grounding", metadata=_help("comma-separated tasks to write traces for"))
    max_traces: int = field(default=0, metadata=_help("candidate rows to trace; 0 = all training rows"))
    verify_threshold_report: float = field(default=0.5, metadata=_help(
        "keep a report trace only if F1-RadGraph (partial) of its final answer vs the reference >= this"))
    verify_threshold_grounding: float = field(default=0.5, metadata=_help(
        "keep a grounding trace only if the box soft-F1 of its final answer vs the reference boxes >= this"))
    teacher_base_url: str = field(default="", metadata=_help("OpenAI-compatible base URL, e.g. http://localhost:8000/v1"))
    teacher_model: str = field(default="", metadata=_help(
        "teacher model: served model name (teacher_api) or folder / hub id (teacher_local)"))
    teacher_api_key_env: str = field(default="OPENAI_API_KEY", metadata=_help(
        "name of the environment variable holding the API key (never stored in files)"))
    teacher_max_tokens: int = field(default=1024, metadata=_help("teacher generation budget per trace"))
    teacher_temperature: float = field(default=0.7, metadata=_help("teacher sampling temperature"))
    teacher_concurrency: int = field(default=8, metadata=_help("parallel requests to the teacher server"))
    teacher_timeout: float = field(default=120.0, metadata=_help("seconds per teacher request"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.init_model:
            self.init_model = str(self.stage_path("sft") / "model")
        if self.grounding_trace not in ("focused", "brief"):
            raise ParamError(f"parameter 'grounding_trace': {self.grounding_trace!r} not in ('focused', 'brief')")
        if self.trace_source not in TRACE_SOURCES:
            raise ParamError(f"parameter 'trace_source': {self.trace_source!r} not in {TRACE_SOURCES}")
        if self.trace_source != "phantom" and not self.teacher_model:
            raise ParamError(f"trace_source={self.trace_source!r} needs teacher_model")
        if self.trace_source == "teacher_api" and not self.teacher_base_url:
            raise ParamError("trace_source='teacher_api' needs teacher_base_url (e.g. http://localhost:8000/v1)")
        bad = [t for t in split_list(self.tasks) if t not in TASKS]
        if bad or not split_list(self.tasks):
            raise ParamError(f"parameter 'tasks': {self.tasks!r}; expected a comma-separated subset of {TASKS}")
        if self.max_traces < 0 or self.teacher_concurrency < 1:
            raise ParamError("max_traces must be >= 0 and teacher_concurrency >= 1")


# The rewards of a GRPO run whose params name none: one per task, plus the format reward when thinking.
DEFAULT_REWARDS = {"report": "f1radgraph", "grounding": "box_soft_f1"}
THINK_REWARD = "think_format"


def default_reward_names(tasks: list[str], thinking: bool) -> list[str]:
    """``(["report", "grounding"], True)`` -> ``["f1radgraph", "box_soft_f1", "think_format"]``."""
    return [DEFAULT_REWARDS[t] for t in tasks if t in DEFAULT_REWARDS] + ([THINK_REWARD] if thinking else [])


@dataclass
@trl_fields(GRPOConfig)
class GRPOParams(TrainingParams):
    """GRPO with clinical rewards on both tasks, from the SFT (or cold-start) checkpoint."""

    STAGE: ClassVar[str] = "grpo"

    # Calibrated CPU recipe: full FT, lr 1e-4 constant, 4 prompts x G=8 per step, beta 0, DAPO loss.
    learning_rate: float = field(default=1.0e-04, metadata=_help("peak learning rate (AdamW)"))
    lr_scheduler_type: str = field(default="constant", metadata=_help(LR_HELP))
    max_steps: int = field(default=300, metadata=_help("optimizer steps; 0 = use num_train_epochs"))
    per_device_train_batch_size: int = field(default=32, metadata=_help(
        "completions per device per step (prompts x num_generations)"))
    logging_steps: int = field(default=1, metadata=_help("log rewards/metrics every N steps"))
    save_steps: int = field(default=50, metadata=_help("checkpoint every N steps (into <run>/checkpoints/)"))
    max_train_flops: float = field(default=1.0e12, metadata=_help(
        "compute budget of training in FLOPs (radlab.training.compute: rollout generation, policy forward+backward "
        "and reference forwards): stop cleanly after the step that reaches it, checkpoint and save; 0 = none. "
        "The demo's 1.0e12 is about 80 steps of 4x8 rollouts; sft_more gets the same budget"))

    thinking: bool = field(default=False, metadata=_help(
        "True: start from the cold-start model, prompts ask for <think>...</think> first, add the think_format reward"))
    init_model: str = field(default="", metadata=_help(
        "model to train; '' = <exp>/sft/model (thinking=False) or <exp>/cold_start/model (thinking=True)",
        path="dir", missing_hint=GRPO_HINT))
    tasks: str = field(default="report,grounding", metadata=_help("comma-separated tasks in the GRPO prompts"))
    report_fraction: float = field(default=0.0, metadata=_help(
        "fraction of report prompts after resampling the task mix; 0 = keep the data's mix"))
    max_train_prompts: int = field(default=0, metadata=_help("subsample the GRPO prompts; 0 = all"))
    reward_names: str | list[str] = field(default="", metadata=_help(
        "comma-separated rewards of radlab.rewards.REWARDS, each a name optionally followed by options, each a "
        "colon, the option, an equals sign and a value (the README's reward table lists them); options: "
        "f1radgraph level (simple, partial, complete) backend max_chars; chexpert_f1 and radcliq_lite backend "
        "max_chars (radcliq_lite also full); bleu and rouge_l max_chars; box_soft_f1 and box_iou no_finding (no_box, "
        "phrase, official); "
        "think_format require_open min_think_chars; length_guard min_ratio penalty max_ratio; every reward name "
        "(its metric key); '' means the task defaults (+ think_format when thinking)"))
    reward_weights: str | list[float] = field(default="", metadata=_help(
        "comma-separated weights, one per reward; '' = all 1.0"))
    annotator: str = field(default="rules", metadata=_help(
        "annotator of the report rewards f1radgraph / chexpert_f1 / radcliq_lite: 'rules' (offline) or "
        "'radgraph-xl' (radgraph 0.1.18 in the python named by RADLAB_RADGRAPH_PYTHON)"))
    num_generations: int = field(default=8, metadata=_help("completions per prompt (the group size G)"))
    beta: float = field(default=0.0, metadata=_help("KL coefficient; 0 = no reference model"))
    loss_type: str = field(default="dapo", metadata=_help(f"one of {GRPO_LOSS_TYPES}"))
    epsilon: float = field(default=0.2, metadata=_help("lower clip range of the ratio"))
    epsilon_high: float = field(default=0.0, metadata=_help("upper clip range (DAPO clip-higher); 0 = same as epsilon"))
    scale_rewards: str = field(default="group", metadata=_help(f"advantage scaling, one of {SCALE_REWARDS}"))
    num_iterations: int = field(default=1, metadata=_help("policy updates per generation batch (mu)"))
    temperature: float = field(default=1.0, metadata=_help("sampling temperature of the rollouts"))
    top_p: float = field(default=1.0, metadata=_help("nucleus sampling of the rollouts"))
    # The rollout budget max_completion_length = 0 stands for, by thinking (the think block comes first).
    COMPLETION_LENGTH: ClassVar[dict[bool, int]] = {False: 64, True: 160}
    max_completion_length: int = field(default=0, metadata=_help(
        "rollout token budget; 0 means 64, or 160 with thinking (the think block needs room)"))
    mask_truncated_completions: bool = field(default=False, metadata=_help("drop the loss of completions cut at the budget"))
    use_vllm: bool = field(default=False, metadata=_help("generate rollouts with vLLM (GPU)"))
    vllm_mode: str = field(default="colocate", metadata=_help("'colocate' (vLLM in the trainer processes) or 'server' (trl vllm-serve)"))
    vllm_server_host: str = field(default="0.0.0.0", metadata=_help("vLLM server host (vllm_mode='server')"))
    vllm_server_port: int = field(default=8000, metadata=_help("vLLM server port (vllm_mode='server')"))
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata=_help("GPU memory share of vLLM (colocate)"))
    vllm_tensor_parallel_size: int = field(default=1, metadata=_help("vLLM tensor parallelism (colocate)"))
    eval_every: int = field(default=50, metadata=_help(
        "score greedy held-out generations at the start, every N steps and at the end; 0 = start and end only"))
    eval_rows: int = field(default=64, metadata=_help("held-out rows per task for the periodic greedy check"))
    completions_every: int = field(default=50, metadata=_help("record the sampled completions and their rewards every N steps"))

    def __post_init__(self) -> None:
        if not self.run_name:
            self.run_name = "grpo_think" if self.thinking else "grpo"
        super().__post_init__()
        if not self.init_model:
            self.init_model = str(self.stage_path("cold_start" if self.thinking else "sft") / "model")
        if self.max_completion_length == 0:  # derived, so a saved run compares equal whichever way it was set
            self.max_completion_length = self.COMPLETION_LENGTH[self.thinking]
        tasks = split_list(self.tasks)
        if not tasks or [t for t in tasks if t not in TASKS]:
            raise ParamError(f"parameter 'tasks': {self.tasks!r}; expected a comma-separated subset of {TASKS}")
        # The items as given (radlab.names parses and checks them and makes them canonical), or the defaults.
        names = split_list(self.reward_names) or default_reward_names(tasks, self.thinking)
        self.reward_names = names
        if isinstance(self.reward_weights, str):
            try:
                weights = [float(w) for w in split_list(self.reward_weights)]
            except ValueError as exc:
                raise ParamError(f"parameter 'reward_weights': {self.reward_weights!r} is not a list of numbers") from exc
        else:
            weights = [float(w) for w in self.reward_weights]
        if not weights:
            weights = [1.0] * len(names)
        if len(weights) != len(names):
            raise ParamError(f"parameter 'reward_weights': {len(weights)} weights for {len(names)} rewards {names}")
        self.reward_weights = weights
        if self.num_generations < 2:
            raise ParamError(f"parameter 'num_generations' must be >= 2 (GRPO needs a group), got {self.num_generations}")
        if self.per_device_train_batch_size % self.num_generations:
            raise ParamError(
                f"per_device_train_batch_size ({self.per_device_train_batch_size}) counts completions and must be "
                f"divisible by num_generations ({self.num_generations}); e.g. {4 * self.num_generations} = 4 prompts")
        if self.loss_type not in GRPO_LOSS_TYPES:
            raise ParamError(f"parameter 'loss_type': {self.loss_type!r} not in {GRPO_LOSS_TYPES}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ParamError(f"parameter 'scale_rewards': {self.scale_rewards!r} not in {SCALE_REWARDS}")
        if self.use_vllm and self.max_train_flops > 0:
            raise ParamError("parameter 'max_train_flops': vLLM rollouts are not counted (they bypass the trained "
                             "module); use max_steps as the budget with use_vllm=True")
        if self.vllm_mode not in VLLM_MODES:
            raise ParamError(f"parameter 'vllm_mode': {self.vllm_mode!r} not in {VLLM_MODES}")
        if not 0.0 <= self.report_fraction < 1.0 or self.temperature <= 0 or self.max_completion_length < 1:
            raise ParamError("need 0 <= report_fraction < 1, temperature > 0, max_completion_length >= 1")
        if min(self.eval_every, self.eval_rows, self.completions_every, self.max_train_prompts) < 0:
            raise ParamError("eval_every, eval_rows, completions_every and max_train_prompts must be >= 0")


# --------------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------------


# The paper's questions as pairs of run names (radlab.experiment labels and resolves them; ``base``
# is the SFT start, ``text_only`` and ``shuffled_image`` the shortcut baselines).  The analysis
# compares these by default (``comparisons``: ``a-b`` items).
PAPER_COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("grpo", "sft", "RL vs SFT"),
    ("grpo", "sft_more", "RL vs compute-matched SFT"),
    ("grpo_think", "grpo", "thinking vs no thinking (after RL)"),
    ("grpo_think", "cold_start", "RL on the thinking model"),
    ("cold_start", "sft", "cold start vs SFT"),
    ("sft", "base", "SFT vs base"),
    ("sft", "text_only", "SFT vs text-only prior"),
    ("sft", "shuffled_image", "SFT vs shuffled image"),
)
PAPER_COMPARISONS_SPEC = ",".join(f"{a}-{b}" for a, b, _ in PAPER_COMPARISONS)


@dataclass
class AnalysisParams(CommonParams):
    """Parameters of the analysis stage (``notebooks/04_analysis.ipynb``)."""

    STAGE: ClassVar[str] = "analysis"

    models: str = field(
        default="",
        metadata={"help": "comma-separated run names to evaluate; '' = every finished training run of the experiment (labelled from its params, e.g. sft+grpo[bleu])"},
    )
    base: bool = field(default=False, metadata={"help": "also evaluate the SFT run's starting model (as 'base')"})
    comparisons: str = field(
        default=PAPER_COMPARISONS_SPEC,
        metadata={"help": "paired tests as run-name pairs 'a-b', comma-separated (diff = a - b; base, text_only and shuffled_image count as runs); the default is the paper's questions, whose missing runs are skipped with a note"},
    )
    model_dirs: str = field(
        default="",
        metadata={"help": "per-model folder overrides, comma-separated, each the run name, an equals sign and a folder or radlab:<size>; empty means runs/<exp>/<run>/model"},
    )
    data_dir: str = field(
        default="",
        metadata={"help": "data stage folder holding eval/; empty means runs/<exp>/data", "path": "dir",
                  "missing_hint": "; run notebooks/00_data.ipynb first"},
    )
    eval_split: str = field(default="test", metadata={"help": "split of data/eval/ to score"})
    n_eval: int = field(default=500, metadata={"help": "rows per task (report, grounding), seeded subset; 0 means all"})
    batch_size: int = field(default=64, metadata={"help": "prompts per generate() call"})
    max_new_tokens: int = field(default=96, metadata={"help": "generation budget of non-thinking models"})
    max_new_tokens_thinking: int = field(default=160, metadata={"help": "generation budget of thinking models (the demo's traces take 60-90 tokens)"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy decoding"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (only with do_sample)"})
    n_boot: int = field(default=2000, metadata={"help": "bootstrap resamples for CIs and paired tests"})
    ci: float = field(default=0.95, metadata={"help": "confidence level of the bootstrap intervals"})
    annotator: str = field(default="rules", metadata={"help": "report annotator of radlab.metrics: 'rules' or 'radgraph-xl'"})
    report_metric: str = field(default="f1radgraph_partial", metadata={"help": "headline report metric of the findings"})
    grounding_metric: str = field(default="map50", metadata={"help": "headline grounding metric of the findings"})
    shortcuts: bool = field(default=True, metadata={"help": "score the text-only and shuffled-image baselines"})
    shortcut_model: str = field(default="sft", metadata={"help": "run whose model reads the shuffled images"})
    use_cache: bool = field(default=True, metadata={"help": "reuse cached generations in analysis/generations/"})
    device: str = field(default="", metadata={"help": "empty means cuda if available, else cpu"})
    dtype: str = field(default="", metadata={"help": "empty means float32 on cpu, bfloat16 on cuda"})
    n_qualitative: int = field(default=4, metadata={"help": "examples per task in the qualitative figure"})
    workers: int = field(default=2, metadata={"help": "CPU only: processes generating side by side, models split across them; 1 runs in this kernel"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data_dir:
            self.data_dir = str(self.stage_path("data"))
        for key in ("n_eval", "n_boot", "n_qualitative"):
            if getattr(self, key) < 0:
                raise ParamError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("batch_size", "max_new_tokens", "max_new_tokens_thinking", "workers"):
            if getattr(self, key) < 1:
                raise ParamError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.ci < 1.0:
            raise ParamError(f"ci must be in (0, 1), got {self.ci}")
        if self.do_sample and self.temperature <= 0:
            raise ParamError(f"temperature must be > 0 when do_sample, got {self.temperature}")

    @property
    def experiment_dir(self) -> Path:
        """``<output_root>/<experiment>``: where the other runs' folders live."""
        return Path(self.output_root) / self.experiment

    def depends_on(self, experiment_runs: Mapping[str, str]) -> list[str]:
        """Its inputs (the data run) and every model run of the experiment: the analysis finds and
        compares every training run's model, so it runs after all of them."""
        out = super().depends_on(experiment_runs)
        return out + [r for r, stage in experiment_runs.items() if stage in TRAINING_STAGES and r not in out]


# stage -> its params class, in the stage table's order (radlab.vocab.STAGES).
STAGE_PARAMS: dict[str, type[CommonParams]] = {
    cls.STAGE: cls for cls in (DataParams, SFTParams, ColdStartParams, GRPOParams, AnalysisParams)}
assert tuple(STAGE_PARAMS) == STAGES, (tuple(STAGE_PARAMS), STAGES)
