"""Write the training notebooks (``01_sft``, ``02_cold_start``, ``03_grpo``) with nbformat.

The ``parameters`` cell is generated from the stage's dataclass (names, types, defaults, help),
so the notebook and :mod:`radlab.training.params` cannot drift apart.  Run
``python -m radlab.training.notebooks [repo_root]`` after changing a parameter; notebooks are
written without outputs.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from radlab.config import NOTEBOOKS, params_class
from radlab.params import own_fields


def _type_name(tp: Any) -> str:
    """The literal's type for the parameters cell (``str | list[str]`` is written as ``str``)."""
    if tp in (str, int, float, bool):
        return tp.__name__
    args = [a for a in typing.get_args(tp) if a in (str, int, float, bool)]
    return args[0].__name__ if args else "str"


def _comment(text: str) -> str:
    """One-line help comment without ``=`` (papermill's parameter parser rejects a line whose
    comment holds one, and then drops that parameter from ``inspect_notebook``)."""
    text = " ".join(text.split())
    text = text.replace(">=", "≥").replace("<=", "≤").replace(" = ", ": ")
    return text.replace("=", " is ")


def parameters_source(stage: str) -> str:
    """``name: type = default  # help`` for every field of ``stage``'s params class."""
    cls = params_class(stage)
    hints = typing.get_type_hints(cls)
    lines = []
    for f in own_fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = _comment(str(f.metadata.get("help", "")))
        lines.append(f"{f.name}: {_type_name(hints[f.name])} = {default!r}  # {help_text}")
    return "\n".join(lines)


SFT_CELLS: list[tuple[str, str]] = [
    ("md", "# 01 · Supervised fine-tuning (SFT)\n\n"
           "TRL's `SFTTrainer` on the data stage's conversational rows (report generation + visual grounding mix), "
           "assistant-only loss. Outputs in `runs/<experiment>/<run_name>/`: `model/`, `checkpoints/`, "
           "`trainer_state.json`, `log_history.csv`, `figures/loss.*`, `generations.csv`, `image_dependence.csv`.\n\n"
           "Resume a killed run with `-p resume True`."),
    ("params", ""),
    ("code", 'import radlab.config\nimport radlab.runs\nimport radlab.training as training\n\n'
             'run = radlab.config.resolve("sft", globals())\nrun.run_dir'),
    ("code", "info = training.setup_runtime(run.params)\ninfo"),
    ("md", "## Data\nThe data stage's `sft/` DatasetDict (`train`, `validation`), restricted to `tasks`."),
    ("code", "data = training.load_sft_data(run.params)\ndata"),
    ("md", "## Model\n`radlab:<size>` is built into `base_model/` with the data's texts in the tokenizer corpus."),
    ("code", "model, processor, model_path = training.load_sft_model(run.params, run.run_dir, data)\nmodel_path"),
    ("md", "## Training"),
    ("code", "result = training.train_sft(run.params, run.run_dir, model, processor, data)\nresult.summary()"),
    ("code", "from IPython.display import Image, display\n\nfor path in result.figures:\n"
             "    if path.suffix == \".png\":\n        display(Image(filename=str(path)))"),
    ("md", "## Greedy generations on held-out rows"),
    ("code", "generations = training.sample_generations(run.params, run.run_dir, result.model, processor, data)\n"
             "generations"),
    ("md", "## Does the report use the image?\n"
           "Mean assistant-token loss on held-out report rows with the true image vs another row's image. "
           "A gap near 0 means the reports are written from the text prior alone."),
    ("code", "image_dependence = training.image_dependence(run.params, run.run_dir, result.model, processor, data)\n"
             "image_dependence"),
    ("code", "summary = result.summary()\n"
             "summary[\"image_loss_gap\"] = float(image_dependence[\"mean_loss\"].iloc[-1]) if len(image_dependence) else None\n"
             "radlab.runs.mark_complete(run.run_dir, summary)"),
]

COLD_START_CELLS: list[tuple[str, str]] = [
    ("md", "# 02 · Cold start: verified `<think>` traces, then a short SFT\n\n"
           "Traces are written for the SFT training rows (`trace_source`: the phantom's ground-truth reading, an "
           "OpenAI-compatible teacher server, or a local teacher model), **verified** (the final answer after the last "
           "`</think>` must match the ground truth: F1-RadGraph partial for reports, box soft-F1 for grounding), and the "
           "kept ones train the SFT model for a few steps. Outputs: `traces.parquet`, `verification.csv`, `model/`, "
           "`log_history.csv`, `figures/loss.*`, `generations.csv`."),
    ("params", ""),
    ("code", 'import radlab.config\nimport radlab.runs\nimport radlab.training as training\n\n'
             'run = radlab.config.resolve("cold_start", globals())\nrun.run_dir'),
    ("code", "info = training.setup_runtime(run.params)\ninfo"),
    ("md", "## Traces"),
    ("code", "traces = training.build_traces(run.params, run.run_dir)\n"
             "print(traces[\"trace\"].iloc[0])\ntraces[[\"id\", \"task\", \"prompt\"]].head()"),
    ("md", "## Verification: kept and dropped traces"),
    ("code", "kept, verification = training.verify_traces(run.params, run.run_dir, traces)\nverification"),
    ("md", "## Short SFT on the kept traces, from the SFT model"),
    ("code", "model, processor, model_path = training.load_cold_start_model(run.params, run.run_dir)\nmodel_path"),
    ("code", "result = training.train_cold_start(run.params, run.run_dir, model, processor, kept)\nresult.summary()"),
    ("code", "from IPython.display import Image, display\n\nfor path in result.figures:\n"
             "    if path.suffix == \".png\":\n        display(Image(filename=str(path)))"),
    ("md", "## Greedy generations with the thinking prompt (held-out rows)"),
    ("code", "generations = training.sample_generations(\n"
             "    run.params, run.run_dir, result.model, processor, training.thinking_heldout(run.params))\n"
             "generations"),
    ("code", "summary = {**result.summary(), \"traces_kept\": int(verification[\"kept\"].sum()),\n"
             "           \"traces_dropped\": int(verification[\"dropped\"].sum())}\n"
             "radlab.runs.mark_complete(run.run_dir, summary)"),
]

GRPO_CELLS: list[tuple[str, str]] = [
    ("md", "# 03 · GRPO with clinical rewards\n\n"
           "TRL's `GRPOTrainer` on report and grounding prompts in one run (each reward scores its own task and returns "
           "`None` on the other). `thinking=True` starts from the cold-start model, asks for `<think>…</think>` first and "
           "adds the `think_format` reward; the run folder is `run_name` (default `grpo` / `grpo_think`). Outputs: "
           "`model/`, `log_history.csv`, `completions.parquet` (sampled completions with rewards), `heldout.csv` (greedy "
           "held-out scores during training), `heldout_final.csv`, `figures/grpo_rewards.*`, `figures/grpo_dynamics.*`."),
    ("params", ""),
    ("code", 'import radlab.config\nimport radlab.runs\nimport radlab.training as training\n\n'
             'run = radlab.config.resolve("grpo", globals())\nrun.run_dir'),
    ("code", "info = training.setup_runtime(run.params)\ninfo"),
    ("md", "## Prompts and held-out rows"),
    ("code", "data = training.load_grpo_data(run.params)\ndata"),
    ("md", "## Policy and rewards"),
    ("code", "model, processor, model_path = training.load_grpo_model(run.params, run.run_dir)\nmodel_path"),
    ("code", "reward_funcs, reward_weights = training.build_rewards(run.params)\n"
             "dict(zip([f.__name__ for f in reward_funcs], reward_weights))"),
    ("md", "## Training"),
    ("code", "result = training.train_grpo(run.params, run.run_dir, model, processor, data, reward_funcs, reward_weights)\n"
             "result.summary()"),
    ("code", "from IPython.display import Image, display\n\nfor path in result.figures:\n"
             "    if path.suffix == \".png\":\n        display(Image(filename=str(path)))"),
    ("md", "## Sampled completions and their rewards (a few steps)"),
    ("code", "training.completions_table(run.run_dir, per_step=4)"),
    ("md", "## Final greedy held-out scores"),
    ("code", "scores = training.heldout_scores(run.params, run.run_dir, result.model, processor, data, reward_funcs)\n"
             "scores"),
    ("code", "summary = {**result.summary(), **{f\"heldout_{r.task}_{r.reward}\": r.mean for r in scores.itertuples()}}\n"
             "radlab.runs.mark_complete(run.run_dir, summary)"),
]

CELLS = {"sft": SFT_CELLS, "cold_start": COLD_START_CELLS, "grpo": GRPO_CELLS}


def build_notebook(stage: str) -> Any:
    """The nbformat notebook of ``stage`` (no outputs)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in CELLS[stage]:
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(src))
        elif kind == "params":
            nb.cells.append(nbformat.v4.new_code_cell(parameters_source(stage), metadata={"tags": ["parameters"]}))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(src))
    for i, cell in enumerate(nb.cells):
        cell["id"] = str(i)  # stable ids as nbstripout normalises them: regenerating gives no diff
    return nb


def write_notebooks(root: str | Path = ".") -> list[Path]:
    """Write ``notebooks/01_sft.ipynb``, ``02_cold_start.ipynb`` and ``03_grpo.ipynb`` under ``root``."""
    import nbformat

    from radlab import runs

    out = []
    for stage in CELLS:
        path = Path(root) / "notebooks" / f"{NOTEBOOKS[stage]}.ipynb"
        runs.write_text(path, nbformat.writes(build_notebook(stage)) + "\n")
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write_notebooks(sys.argv[1] if len(sys.argv) > 1 else "."):
        print(p)
