"""The model runs of an experiment, their labels and the comparisons between them: one home.

An experiment's trained models are found from its run folders, not from a fixed table:

* :func:`read_runs` reads every ``<output_root>/<experiment>/<run>/params.yaml`` whose ``stage`` is a
  training stage (``sft``, ``cold_start``, ``grpo``): run name -> its resolved params.
* :func:`label_runs` names each run's model from its params, in one place.  An SFT run from the
  base model is ``sft``; one that continues another SFT run is ``<that>_more`` (the compute-matched
  control ``sft_more``); the cold start is ``cold_start``; GRPO is ``<start>+grpo`` (``sft+grpo``,
  ``cold_start+grpo``), and a GRPO run whose rewards differ from the default gets its report reward
  in brackets (``sft+grpo[bleu]``, ``sft+grpo[f1radgraph:level=complete]``).  Two runs that would
  share a label keep it only for the run with the stage's usual name; the others are labelled by
  their run name.
* :func:`replicates` finds replicate runs (``radlab run --seeds``): a run ``<run>_s<k>`` whose params
  equal ``<run>``'s except ``seed: k`` and inputs moved to ``_s<k>`` replicates.  A replicate has its
  seed-0 run's label; its model is named ``<label>@s<k>`` (:func:`replicate_model`) wherever a label
  has two or more replicates, so tables and comparisons can pool them (:func:`split_replicate`).
* :func:`discover_models` turns the runs with a finished model (``model/`` and ``DONE``) into
  :class:`ModelSpec` s, plus ``base`` (the SFT start) on request and ``model_dirs`` overrides.
* :func:`reward_ablations` finds Table 3's groups: GRPO runs with the same start and thinking
  setting that use two or more reward settings; each run's other differences from the group's
  reference run (``top_k=5``) are listed, not hidden.
* Comparisons are pairs of *run names* (``grpo-sft``): :data:`radlab.params.PAPER_COMPARISONS` are
  the paper's questions and the analysis default; :func:`resolve_comparisons` checks a declared list against
  the evaluated models and maps it to labels.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radlab import runs
from radlab.vocab import TRAINING_STAGES, ParamError, split_list

# The model an SFT run started from (``sft/base_model`` or its hub checkpoint): a pseudo-run.
BASE = "base"
# Params that choose a GRPO run's rewards: what Table 3 compares.
REWARD_KEYS = frozenset({"reward_names", "reward_weights", "annotator"})
# Params that say nothing about what was trained (names, places, bookkeeping).
BOOKKEEPING_KEYS = frozenset({"run_name", "experiment", "output_root", "stage", "resume", "force", "torch_threads",
                              "dataloader_num_workers", "logging_steps", "save_steps", "save_total_limit",
                              "eval_every", "eval_rows", "completions_every"})

# The paper's runs as params files would declare them (run name -> params); its questions are
# radlab.params.PAPER_COMPARISONS (the analysis default), pairs of these run names.
PAPER_RUNS: dict[str, dict[str, Any]] = {
    "sft": {"stage": "sft"},
    "sft_more": {"stage": "sft", "init_run": "sft"},
    "cold_start": {"stage": "cold_start"},
    "grpo": {"stage": "grpo"},
    "grpo_think": {"stage": "grpo", "thinking": True},
}


def reward_names(run_params: Mapping[str, Any]) -> list[str]:
    """The reward items of a GRPO run's params (``reward_names``, options kept), in order.

    A params dict without them (a hand-written one) gets the stage's defaults for its ``tasks``
    and ``thinking``, as :class:`radlab.params.GRPOParams` fills them in.
    """
    names = split_list(run_params.get("reward_names"))
    return names or default_rewards(run_params)


def default_rewards(run_params: Mapping[str, Any]) -> list[str]:
    """The rewards a GRPO run gets when its params name none (as :class:`radlab.params.GRPOParams` fills them)."""
    from radlab.params import default_reward_names

    tasks = split_list(run_params.get("tasks", "report,grounding")) or ["report", "grounding"]
    return default_reward_names(tasks, bool(run_params.get("thinking")))


def reward_tag(run_params: Mapping[str, Any]) -> str:
    """What a GRPO run's label shows in brackets: ``""`` for the default rewards, else its report
    reward(s) (``bleu``, ``f1radgraph:level=complete``), else the other non-default items."""
    names = split_list(run_params.get("reward_names"))
    if not names:
        return ""  # none named: the defaults
    default = default_rewards(run_params)
    weights = [float(w) for w in split_list(run_params.get("reward_weights"))] or [1.0] * len(names)
    if names == default and all(w == 1.0 for w in weights):
        return ""
    from radlab.rewards import REPORT_REWARDS

    def is_report(item: str) -> bool:
        return item.split(":", 1)[0] in REPORT_REWARDS

    report, default_report = [n for n in names if is_report(n)], [n for n in default if is_report(n)]
    if report and report != default_report:
        return "+".join(report)
    extra = [n for n in names if n not in default]
    if extra:
        return "+".join(extra)
    return "+".join(f"{n}*{w:g}" for n, w in zip(names, weights))


def init_run(name: str, run_params: Mapping[str, Any], names: Collection[str]) -> str | None:
    """The run of the experiment whose model ``name`` started from, or ``None`` (a base or outside model).

    ``init_run`` when set; else an ``init_model`` of the form ``.../<experiment>/<run>/model``; else
    the stage's default start (GRPO: ``cold_start`` when thinking, else ``sft``; cold start: ``sft``).
    """
    stage = run_params.get("stage")
    explicit = str(run_params.get("init_run") or "")
    if explicit:
        return explicit if explicit in names and explicit != name else None
    path = str(run_params.get("init_model") or "")
    if path:
        p = Path(path)
        experiment = str(run_params.get("experiment") or p.parent.parent.name)
        if p.name == "model" and p.parent.parent.name == experiment and p.parent.name in names:
            return p.parent.name if p.parent.name != name else None
        return None
    default = {"grpo": "cold_start" if run_params.get("thinking") else "sft", "cold_start": "sft"}.get(str(stage))
    return default if default in names and default != name else None


# A replicated model's name: its label, this separator, the replicate's seed (``sft+grpo@s1``).
REPLICATE_MARK = "@s"


def replicate_model(label: str, seed: int) -> str:
    """The model name of replicate ``seed`` of ``label``: ``sft+grpo@s1``."""
    return f"{label}{REPLICATE_MARK}{seed}"


def split_replicate(model: str) -> tuple[str, int]:
    """``"sft+grpo@s1" -> ("sft+grpo", 1)``; a name without the mark is its own label, seed 0."""
    m = re.fullmatch(rf"(.+){re.escape(REPLICATE_MARK)}(\d+)", model)
    return (m.group(1), int(m.group(2))) if m else (model, 0)


def _replicate_view(params: Mapping[str, Any], seed: int) -> dict[str, str]:
    # What must match between a run and its replicate: everything but bookkeeping and the seed, with
    # the replicate's ``<run>_s<k>`` inputs (init_run, init_model paths) read as ``<run>``.
    def norm(value: Any) -> str:
        text = repr(value)
        return re.sub(rf"(?<![\w.-])([\w.-]+?)_s{seed}(?![\w.-])", r"\1", text) if seed else text

    return {k: norm(v) for k, v in params.items() if k not in BOOKKEEPING_KEYS and k != "seed"}


def replicates(run_params: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, int]]:
    """Replicate run -> ``(its seed-0 run, seed)``, from the runs' params (``radlab run --seeds``).

    ``<run>_s<k>`` (k >= 1) is replicate ``k`` of ``<run>`` when both are runs here, its ``seed`` is
    ``k``, and its params equal ``<run>``'s but for bookkeeping (:data:`BOOKKEEPING_KEYS`) and inputs
    that point at ``_s<k>`` replicates where ``<run>``'s point at the runs themselves
    (``init_run: sft_s1``, ``init_model: .../sft_s1/model``).  A run named so whose params differ
    otherwise is a run of its own.
    """
    out: dict[str, tuple[str, int]] = {}
    for name, params in run_params.items():
        m = re.fullmatch(r"(.+)_s(\d+)", name)
        if not m or int(m.group(2)) < 1 or m.group(1) not in run_params:
            continue
        base, seed = m.group(1), int(m.group(2))
        if params.get("seed") == seed and _replicate_view(params, seed) == _replicate_view(run_params[base], 0):
            out[name] = (base, seed)
    return out


def label_runs(run_params: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Run name -> its model's label, from each run's params (see the module docstring); a
    replicate (:func:`replicates`) has its seed-0 run's label."""
    names = set(run_params)
    reps = replicates(run_params)
    raw: dict[str, str] = {}

    def label(name: str, seen: tuple[str, ...] = ()) -> str:
        if name in reps:
            return label(reps[name][0], seen)
        if name in raw:
            return raw[name]
        p = run_params[name]
        stage = p.get("stage")
        start = init_run(name, p, names)
        start_label = label(start, (*seen, name)) if start and start not in seen else None
        if stage == "sft":
            if start_label is None:
                out = "sft" if name == "sft" else name
            elif run_params[start].get("stage") == "sft":
                out = f"{start_label}_more"
            else:
                out = f"{start_label}+sft"
        elif stage == "grpo":
            tag = reward_tag(p)
            out = (f"{start_label}+grpo" if start_label is not None else name) + (f"[{tag}]" if tag else "")
        else:
            out = name
        raw[name] = out
        return out

    for name in sorted(names - set(reps)):
        label(name)
    # One label per model: where two runs share one, the run with the stage's usual name keeps it.
    usual = set(PAPER_RUNS)
    out: dict[str, str] = {}
    for name, lab in raw.items():
        sharing = [n for n, other in raw.items() if other == lab]
        out[name] = lab if len(sharing) == 1 or name in usual and sum(n in usual for n in sharing) == 1 else name
    out.update({name: out[base] for name, (base, _) in reps.items()})
    return out


PAPER_LABELS = label_runs(PAPER_RUNS)
# Canonical display order: base, the paper's models, the shortcut baselines.
MODEL_ORDER = (BASE, *(PAPER_LABELS[r] for r in ("sft", "sft_more", "grpo", "cold_start", "grpo_think")),
               "text_only", "shuffled_image")


def paper_question(label_a: str, label_b: str) -> str:
    """The paper's question for a pair of paper labels, else ``"<a> vs <b>"``."""
    from radlab.params import PAPER_COMPARISONS

    lab = {**PAPER_LABELS, BASE: BASE, "text_only": "text_only", "shuffled_image": "shuffled_image"}
    for a, b, q in PAPER_COMPARISONS:
        if (lab[a], lab[b]) == (label_a, label_b):
            return q
    return f"{label_a} vs {label_b}"


# ----------------------------------------------------------------------------------------------
# Discovery
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """One model to evaluate.

    ``name``: its name in every per-model table (unique); ``path``: a model folder or an embedded spec
    (``radlab:small``); ``thinking``: whether its prompts ask for a think block; ``run_dir`` /
    ``run_params``: the run that produced it (``None`` / ``{}`` for overrides); ``run``: that run's
    name (the name comparisons use); ``start``: the label of the model it started from (``""`` if none).
    ``group``: its label, shared by its replicates (``sft+grpo``; default ``name``); ``replicate``: its
    seed as a replicate (0 for a run of its own).  A label with two or more replicates names each
    ``<label>@s<seed>`` (``sft+grpo@s0``, ``sft+grpo@s1``); a lone model is named by its label.
    """

    name: str
    path: str
    thinking: bool = False
    run_dir: Path | None = None
    run_params: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    run: str = ""
    start: str = ""
    group: str = ""
    replicate: int = 0

    def __post_init__(self) -> None:
        if not self.run:
            self.run = self.run_dir.name if self.run_dir is not None else self.name
        if not self.group:
            self.group = self.name


def read_params(run_dir: Path) -> dict[str, Any]:
    """A run folder's ``params.yaml`` (``{}`` when absent or unreadable)."""
    path = run_dir / "params.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def read_runs(exp_dir: Path) -> dict[str, dict[str, Any]]:
    """Run name -> params of every training run folder of ``exp_dir`` (``stage`` in :data:`TRAINING_STAGES`)."""
    out: dict[str, dict[str, Any]] = {}
    if not exp_dir.is_dir():
        return out
    for run_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        params = read_params(run_dir)
        if params.get("stage") in TRAINING_STAGES:
            out[run_dir.name] = params
    return out


def is_model_dir(path: Path) -> bool:
    """A saved model folder (full weights or a LoRA adapter)."""
    return path.is_dir() and ((path / "config.json").exists() or (path / "adapter_config.json").exists())


def base_model_path(exp_dir: Path) -> str | None:
    """The SFT start: ``sft/base_model`` if saved, else the checkpoint named in ``sft/params.yaml``.

    An embedded ``radlab:<size>`` start is only usable from ``sft/base_model`` (the SFT stage
    builds it there with the data's texts in its tokenizer); a fresh build would be another model.
    """
    folder = exp_dir / "sft" / "base_model"
    if is_model_dir(folder):
        return str(folder)
    value = read_params(exp_dir / "sft").get("model_name_or_path")
    if isinstance(value, str) and value and not value.startswith("radlab:"):
        return value
    return None


def _looks_like_hub_id(path: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$", path)) and not Path(path).exists()


def names_list(spec: str) -> list[str]:
    """``"base, sft,,grpo" -> ["base", "sft", "grpo"]`` (order kept, duplicates dropped)."""
    return list(dict.fromkeys(split_list(spec)))


def parse_model_dirs(spec: str) -> dict[str, str]:
    """``"sft=/x/model, base=radlab:small" -> {"sft": "/x/model", "base": "radlab:small"}``."""
    out: dict[str, str] = {}
    for part in split_list(spec):
        name, sep, path = part.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ParamError(f"model_dirs: expected 'name=path', got {part!r}")
        out[name.strip()] = path.strip()
    return out


def discover_models(params: Any) -> tuple[list[ModelSpec], list[str]]:
    """Every finished training run of the experiment (or those ``params.models`` names), labelled.

    ``params`` is the analysis params (``experiment_dir``, ``models``, ``base``, ``model_dirs``).
    A run counts when its folder has ``params.yaml`` with a training ``stage``, a ``model/`` and
    ``DONE``; an unfinished one is left out with a note.  ``base`` (the SFT start) is added when
    ``params.base``; ``model_dirs`` adds or replaces models by name.  Naming a run in ``models`` that
    the experiment does not have is a :class:`~radlab.vocab.ParamError` naming it.  Returns ``(specs, notes)``.
    """
    exp_dir = Path(params.experiment_dir)
    found = read_runs(exp_dir)
    labels = label_runs(found)
    reps = replicates(found)
    overrides = parse_model_dirs(params.model_dirs)
    wanted = names_list(params.models)
    unknown = [n for n in wanted if n not in found and n not in overrides and n != BASE]
    if unknown:
        raise ParamError(f"models: no training run {unknown} in {exp_dir} (runs found: {sorted(found) or 'none'}); "
                         "name run folders, or give a path in model_dirs")
    specs: list[ModelSpec] = []
    notes: list[str] = []
    if params.base or BASE in wanted:
        path = overrides.pop(BASE, None) or base_model_path(exp_dir)
        if path is None:
            notes.append("base: skipped — no sft/base_model folder (and no hub checkpoint in sft/params.yaml)")
        else:
            specs.append(ModelSpec(BASE, path, run_dir=None, run=BASE))
    # Naming a run names its replicates too.
    wanted += [r for r, (base, _) in reps.items() if base in wanted and r not in wanted]
    first = len(specs)
    for run, p in found.items():
        if wanted and run not in wanted:
            continue
        run_dir = exp_dir / run
        start = init_run(run, p, found)
        spec = ModelSpec(labels[run], overrides.pop(run, str(run_dir / "model")),
                         thinking=bool(p.get("thinking", p.get("stage") == "cold_start")), run_dir=run_dir,
                         run_params=p, run=run, start=labels[start] if start else "",
                         replicate=reps[run][1] if run in reps else 0)
        if Path(spec.path) == run_dir / "model":
            if not runs.is_complete(run_dir):
                notes.append(f"{run}: skipped — the run has not finished (no DONE in {run_dir})")
                continue
            if not is_model_dir(run_dir / "model"):
                notes.append(f"{run}: skipped — no model folder at {run_dir / 'model'}")
                continue
        specs.append(spec)
    groups: dict[str, int] = {}
    for spec in specs[first:]:
        groups[spec.group] = groups.get(spec.group, 0) + 1
    for spec in specs[first:]:
        if groups[spec.group] > 1 or spec.replicate:
            spec.name = replicate_model(spec.group, spec.replicate)
    for name, path in overrides.items():
        if not path.startswith("radlab:") and not is_model_dir(Path(path)) and not _looks_like_hub_id(path):
            raise ParamError(f"model_dirs: {name}={path!r} is not a model folder (no config.json)")
        if split_replicate(name)[1] or REPLICATE_MARK in name:
            raise ParamError(f"model_dirs: {name!r}: '{REPLICATE_MARK}' marks replicates; name the model otherwise")
        specs.append(ModelSpec(name, path, run=name))
    return specs, notes


# ----------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------


def parse_comparisons(spec: str, known: Collection[str] = ()) -> list[tuple[str, str]]:
    """``"grpo-sft,grpo_think-grpo"`` -> ``[("grpo", "sft"), ("grpo_think", "grpo")]``.

    Run names may hold a ``-`` themselves: an item is split at the one ``-`` that leaves a known
    name on both sides (with no ``known``, at the first ``-``).  A malformed item, or one whose
    names are not known, is a :class:`~radlab.vocab.ParamError` naming it.
    """
    out: list[tuple[str, str]] = []
    for item in split_list(spec):
        cuts = [m.start() for m in re.finditer("-", item)]
        if not cuts:
            raise ParamError(f"comparisons: {item!r} is not a pair 'run_a-run_b'")
        pairs = [(item[:c].strip(), item[c + 1:].strip()) for c in cuts]
        pairs = [(a, b) for a, b in pairs if a and b]
        if not pairs:
            raise ParamError(f"comparisons: {item!r} is not a pair 'run_a-run_b'")
        if known:
            good = [(a, b) for a, b in pairs if a in known and b in known]
            if len(good) != 1:
                a, b = pairs[0]
                missing = [n for n in (a, b) if n not in known] or [item]
                why = "is ambiguous" if good else f"names {', '.join(repr(m) for m in missing)}, which is not an evaluated model"
                raise ParamError(f"comparisons: {item!r} {why} (evaluated: {', '.join(sorted(known))})")
            pairs = good
        if pairs[0][0] == pairs[0][1]:
            raise ParamError(f"comparisons: {item!r} compares a model with itself")
        out.append(pairs[0])
    return out


@dataclass(frozen=True)
class Comparison:
    """A declared comparison: run names ``a``/``b``, their labels, and the question it answers."""

    a: str
    b: str
    label_a: str
    label_b: str
    question: str


def resolve_comparisons(spec: str, run_labels: Mapping[str, str]) -> tuple[list[Comparison], list[str]]:
    """The declared comparisons, checked against the evaluated models (``run name -> label``).

    The paper's default list (:data:`radlab.params.PAPER_COMPARISONS_SPEC`) skips a pair whose run is missing
    with a note; in any other list a pair naming a run that was not evaluated is a
    :class:`~radlab.vocab.ParamError` naming it.  Returns ``(comparisons, notes)``.
    """
    from radlab.params import PAPER_COMPARISONS, PAPER_COMPARISONS_SPEC

    notes: list[str] = []
    if split_list(spec) == split_list(PAPER_COMPARISONS_SPEC):
        pairs = []
        for a, b, _ in PAPER_COMPARISONS:
            missing = [n for n in (a, b) if n not in run_labels]
            if missing:
                notes.append(f"comparison {a} − {b} skipped: {', '.join(missing)} not evaluated")
            else:
                pairs.append((a, b))
    else:
        pairs = parse_comparisons(spec, known=set(run_labels))
    out = [Comparison(a, b, run_labels[a], run_labels[b], paper_question(run_labels[a], run_labels[b])) for a, b in pairs]
    return out, notes


# Params that choose which runs a reward ablation compares: the model a GRPO run starts from
# (``init_run`` / ``init_model``) and whether it thinks.  Runs are grouped by these, so they are
# never listed as a difference within a group.
ABLATION_GROUP_KEYS = frozenset({"init_run", "init_model", "thinking"})


@dataclass
class RewardAblation:
    """One group of Table 3: GRPO runs from the same start with the same thinking setting.

    ``start``: the label of the model they all started from (``""`` when outside the experiment:
    the value of ``init_model``, or none); ``thinking``: their thinking setting; ``runs``: the
    reference run first, then the others by run name; ``reference``: the run the others are
    compared with (default rewards, preferring the stage's usual name); ``differences``: run name
    -> the settings other than rewards in which it differs from the reference (``["top_k=5"]``;
    ``[]`` for the reference and for runs that differ only in their rewards).
    """

    start: str
    thinking: bool
    runs: list[ModelSpec]
    reference: str
    differences: dict[str, list[str]]


def _own(value: Any, run: str) -> str:
    # A value that names the run's own folder (a derived output path) says nothing about training.
    return re.sub(rf"(?<![\w.-]){re.escape(run)}(?![\w.-])", "<run>", repr(value))


def _reward_setting(p: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(reward_names(p)), tuple(split_list(p.get("reward_weights"))), p.get("annotator")


def setting_differences(run: str, params: Mapping[str, Any], reference: str,
                        reference_params: Mapping[str, Any]) -> list[str]:
    """The settings of ``run`` that differ from ``reference``'s, as ``key=value`` items, sorted by key.

    Rewards (:data:`REWARD_KEYS`), bookkeeping (:data:`BOOKKEEPING_KEYS`) and what groups runs
    (:data:`ABLATION_GROUP_KEYS`) are left out; so is a value that differs only by naming the
    run's own folder.  A key the run's params lack is ``key unset``.  E.g. ``["top_k=5"]``.
    """
    skip = REWARD_KEYS | BOOKKEEPING_KEYS | ABLATION_GROUP_KEYS
    out: list[str] = []
    for key in sorted((set(params) | set(reference_params)) - skip):
        if key in params and key in reference_params and \
                _own(params[key], run) == _own(reference_params[key], reference):
            continue
        out.append(f"{key}={_scalar(params[key])}" if key in params else f"{key} unset")
    return out


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def reward_ablations(specs: Sequence[ModelSpec]) -> list[RewardAblation]:
    """Table 3's groups: GRPO runs with the same start and thinking setting, using two or more reward settings.

    A reward comparison is meaningful between runs that train the same model in the same mode, so
    runs are grouped by their start (:attr:`ModelSpec.start`, else :func:`init_run` among
    ``specs``, else ``init_model``) and ``thinking``; a group counts when its runs use at least two
    different reward settings (``reward_names`` / ``reward_weights`` / ``annotator``).  Other
    differences (a learning rate, ``top_k: 5``) do not split a group: they are listed per run
    against the group's reference (see :class:`RewardAblation`), so a reader sees when a
    comparison is not rewards-only.
    """
    grpo = [s for s in specs if s.run_params.get("stage") == "grpo"]
    label_of = {s.run: s.name for s in specs}
    groups: dict[tuple[str, bool], list[ModelSpec]] = {}
    for s in grpo:
        first = init_run(s.run, s.run_params, label_of)
        start = s.start or (label_of[first] if first else str(s.run_params.get("init_model") or ""))
        groups.setdefault((start, bool(s.run_params.get("thinking"))), []).append(s)
    out: list[RewardAblation] = []
    for (start, thinking), group in groups.items():
        if len(group) < 2 or len({_reward_setting(s.run_params) for s in group}) < 2:
            continue
        # The reference: default rewards, the stage's usual run name first, then by run name.
        ref = min(group, key=lambda s: (reward_tag(s.run_params) != "", s.run not in PAPER_RUNS, s.run))
        ordered = [ref, *sorted((s for s in group if s is not ref), key=lambda s: s.run)]
        diffs = {s.run: setting_differences(s.run, s.run_params, ref.run, ref.run_params) if s is not ref else []
                 for s in ordered}
        out.append(RewardAblation(start, thinking, ordered, ref.run, diffs))
    return out


__all__ = [
    "BASE", "Comparison", "MODEL_ORDER", "ModelSpec", "PAPER_LABELS", "PAPER_RUNS", "RewardAblation", "base_model_path", "default_rewards", "discover_models",
    "init_run", "is_model_dir", "label_runs", "names_list", "paper_question", "parse_comparisons", "parse_model_dirs",
    "REPLICATE_MARK", "read_params", "read_runs", "replicate_model", "replicates", "resolve_comparisons",
    "reward_ablations", "reward_names", "reward_tag", "setting_differences", "split_replicate",
]
