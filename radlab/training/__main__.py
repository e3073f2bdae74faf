"""Run one training stage end to end without a notebook (also under ``accelerate launch``).

Usage::

    python -m radlab.training sft --params params/smoke/sft.yaml -p output_root /tmp/runs
    accelerate launch --config_file params/accelerate/ddp.yaml -m radlab.training grpo \\
        --params params/paper/grpo.yaml

``-p KEY VALUE`` overrides one parameter (values are parsed as YAML scalars, like papermill's
``-p``).  The stage performs the same radlab calls as its notebook, validates parameters the same
way (``radlab.config.resolve``) and writes ``DONE`` at the end; a finished run folder with the same
params is reused, one with other params needs ``-p force true`` or a new ``run_name``.  Exit status 2 on a parameter error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from radlab import runs
from radlab.config import load_yaml, resolve
from radlab.vocab import TRAINING_STAGES, ParamError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m radlab.training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=TRAINING_STAGES)
    parser.add_argument("--params", type=Path, help="flat params YAML (e.g. params/smoke/sft.yaml)")
    parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="override one parameter (YAML scalar)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Validate, run the stage, mark it complete; returns the exit status."""
    from radlab.training import STAGE_RUNNERS
    from radlab.training.common import is_main_process, partial_state

    args = parse_args(argv)
    values: dict[str, Any] = load_yaml(args.params) if args.params else {}
    if args.params:
        values.setdefault("run_name", args.params.stem)  # a run is named after its params file, as `radlab run` does
    for key, raw in args.param:
        values[key] = yaml.safe_load(raw)
    state = partial_state()
    try:
        # resolve writes nothing; the stage's model loading begins the run (params.yaml, env.json).
        run = resolve(args.stage, values)
    except ParamError as exc:
        print(f"radlab.training: {exc}", file=sys.stderr)
        return 2
    summary = STAGE_RUNNERS[args.stage](run.params, run.run_dir)
    state.wait_for_everyone()
    if is_main_process():
        summary["num_processes"] = state.num_processes
        runs.mark_complete(run.run_dir, summary)
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
