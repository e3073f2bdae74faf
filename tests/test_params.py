"""Every TRL setting is a parameter: GRPOConfig / SFTConfig fields by name, flat types, radlab's exceptions."""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from trl import GRPOConfig, SFTConfig

from radlab import config
from radlab.params import TRL_EXCLUDED, own_fields
from radlab.vocab import ParamError, flat_type

TRL_CONFIGS = {"sft": SFTConfig, "cold_start": SFTConfig, "grpo": GRPOConfig}


@pytest.mark.parametrize("stage", sorted(TRL_CONFIGS))
def test_every_trl_field_is_a_parameter_but_the_listed_exceptions(stage: str) -> None:
    cls = config.params_class(stage)
    params = {f.name for f in dataclasses.fields(cls)}
    trl = {f.name for f in dataclasses.fields(TRL_CONFIGS[stage]) if f.init}
    assert trl - set(TRL_EXCLUDED) <= params, (trl - set(TRL_EXCLUDED)) - params
    assert not set(TRL_EXCLUDED) & params
    # Every TRL field radlab does not list as an exception has a flat type (nothing dropped silently).
    hints = typing.get_type_hints(TRL_CONFIGS[stage])
    unflat = sorted(n for n in trl - set(TRL_EXCLUDED) if flat_type(hints[n]) is None)
    assert unflat == []
    # The fields radlab declares are its own; the rest carry TRL's default and help.
    own = {f.name for f in own_fields(cls)}
    trl_defaults = {f.name: f for f in dataclasses.fields(TRL_CONFIGS[stage])}
    for f in dataclasses.fields(cls):
        if f.name not in own:
            assert f.metadata["trl"] and f.metadata["help"].startswith("(TRL)"), f.name
            assert f.name in trl_defaults, f.name


class _Mode(enum.Enum):
    A = "a"


@pytest.mark.parametrize(
    ("tp", "flat"),
    [
        (int, (int, "")),
        (float | None, (float | None, "")),
        (_Mode | str, (str, "")),
        (int | str | None, (int | str | None, "")),
        (str | None | Literal[False], (str | bool | None, "")),
        (list[str], (str, "list")),
        (list[str] | None, (str | None, "list")),
        (None | str | list[str], (str | None, "")),  # report_to: the text is passed as it is
        (dict[str, Any] | str | None, (str | None, "json")),
        (dict | None, (str | None, "json")),
        (object, None),
        (list[object] | None, None),
    ],
)
def test_trl_types_become_flat_literals(tp: Any, flat: Any) -> None:
    assert flat_type(tp) == flat


def _grpo_values(tmp_path: Path, **extra: object) -> dict[str, object]:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "model").mkdir(exist_ok=True)
    return {"experiment": "t", "output_root": str(tmp_path / "runs"), "data_dir": str(tmp_path / "data"),
            "init_model": str(tmp_path / "model"), **extra}


def test_a_trl_field_radlab_never_names_reaches_grpo_config_and_params_yaml(tmp_path: Path) -> None:
    from radlab.training import grpo_config

    extra = {"top_k": 5, "repetition_penalty": 1.1, "steps_per_generation": 2, "importance_sampling_level": "sequence",
             "log_completions": True, "generation_kwargs": '{"min_new_tokens": 2}', "label_names": "a, b",
             "optim": "adamw_torch"}
    run = config.resolve("grpo", _grpo_values(tmp_path, **extra))
    cfg = grpo_config(run.params, run.run_dir)
    assert (cfg.top_k, cfg.repetition_penalty, cfg.steps_per_generation) == (5, 1.1, 2)
    assert (cfg.importance_sampling_level, cfg.log_completions, cfg.optim) == ("sequence", True, "adamw_torch")
    assert cfg.generation_kwargs == {"min_new_tokens": 2} and cfg.label_names == ["a", "b"]
    # radlab's own defaults and derived values still hold
    assert cfg.output_dir == str(run.run_dir / "checkpoints") and cfg.remove_unused_columns is False
    assert cfg.logging_first_step is True and cfg.disable_tqdm is True and cfg.epsilon_high == cfg.epsilon
    if (run.run_dir / "params.yaml").exists():  # resolve writes it (or StageRun.begin, when the stage starts)
        written = yaml.safe_load((run.run_dir / "params.yaml").read_text())
    else:
        written = dataclasses.asdict(run.params)
    assert written["top_k"] == 5 and written["importance_sampling_level"] == "sequence"


def test_a_trl_field_reaches_sft_config(tmp_path: Path) -> None:
    from radlab.training import sft_config

    params = config.validate("sft", _grpo_values(tmp_path, neftune_noise_alpha=5.0, packing_strategy="wrapped",
                                                  dataset_kwargs='{"skip_prepare_dataset": false}'))
    cfg = sft_config(params, tmp_path / "run")
    assert cfg.neftune_noise_alpha == 5.0 and cfg.packing_strategy == "wrapped"
    assert cfg.dataset_kwargs == {"skip_prepare_dataset": False}


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"top_k": "5"}, r"parameter 'top_k' must be int, got str"),
        ({"top_kk": 5}, r"unknown parameter\(s\) \['top_kk'\] for stage 'grpo'; 'top_kk': did you mean 'top_k'"),
        ({"output_dir": "x"}, r"'output_dir' is set by radlab \(derived: <run>/checkpoints/\)"),
        ({"hub_token": "x"}, r"'hub_token' is set by radlab \(a credential: set HF_TOKEN"),
        ({"min_p": "low"}, r"parameter 'min_p' must be float \| None"),
        ({"generation_kwargs": "{min_new_tokens: 2"}, r"parameter 'generation_kwargs': .* is not JSON"),
        ({"generation_kwargs": "[1]"}, r"parameter 'generation_kwargs': expected a JSON object"),
    ],
)
def test_bad_trl_values_are_named(tmp_path: Path, extra: dict[str, object], pattern: str) -> None:
    with pytest.raises(ParamError, match=pattern):
        config.validate("grpo", _grpo_values(tmp_path, **extra), source="grpo.yaml")
