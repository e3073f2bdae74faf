"""Command line: ``radlab run <experiment>`` (also ``python -m radlab``), ``radlab render <experiment>``,
``radlab build-model``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``radlab`` console script; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="radlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute an experiment's stage notebooks with papermill")
    run.add_argument("experiment", help="params/<experiment>/ holds one YAML per run, each with a 'stage:' key; "
                     "the file's name is the run's name")
    run.add_argument("--only", action="append", default=[], metavar="RUN",
                     help="run only this run (repeatable), e.g. --only grpo")
    run.add_argument("--force", action="store_true", help="rerun runs whose folder is already complete")
    run.add_argument("--jobs", type=int, default=1, help="independent runs executed in parallel (threads split)")
    run.add_argument("--output-root", default="runs", help="root of run folders (default: runs)")
    run.add_argument("--params-root", default=None, help="root of params folders (default: <repo>/params)")
    run.add_argument("--seeds", default=None, metavar="0,1,2",
                     help="replicate every training run whose params file sets no 'seeds' of its own: seed 0 is the "
                          "run itself, seed k>=1 the run <run>_s<k> (a chain replicates together: grpo_s1 starts "
                          "from sft_s1); the analysis pools the replicates")
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs (stage, inputs, params file) in execution order and exit")

    ren = sub.add_parser("render", help="rebuild <output-root>/<experiment>/index.html (and missing HTML pages) "
                                         "from the run folders; or render one executed notebook")
    ren.add_argument("experiment", help="an experiment name, or the path of an executed .ipynb to render beside it")
    ren.add_argument("--output-root", default="runs", help="root of run folders (default: runs)")
    ren.add_argument("--params-root", default=None,
                     help="root of params folders; runs with a params file but no folder are listed as missing "
                          "(default: <repo>/params)")

    build = sub.add_parser("build-model", help="write an embedded Qwen3-VL (random init) to a folder")
    build.add_argument("out_dir")
    build.add_argument("--size", default="tiny", help="tiny | small | base")
    build.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "run":
        from radlab.pipeline import describe, plan, resolve_paths, run_pipeline
        from radlab.vocab import ParamError

        try:
            if args.dry_run:
                root, params_root, output_root = resolve_paths(args.output_root, args.params_root)
                pl = plan(args.experiment, params_root=params_root, only=args.only, output_root=output_root, root=root,
                          seeds=args.seeds)
                print(describe(pl, output_root=output_root, force=args.force))
                return 0
            results = run_pipeline(args.experiment, only=args.only, force=args.force, jobs=args.jobs,
                                   output_root=args.output_root, params_root=args.params_root, seeds=args.seeds)
        except ParamError as exc:
            print(f"radlab: {exc}", file=sys.stderr)
            return 2
        return 0 if all(r.status in ("done", "skipped") for r in results) else 1
    if args.command == "render":
        from pathlib import Path

        from radlab import render
        from radlab.pipeline import repo_root

        if args.experiment.endswith(".ipynb"):
            if not Path(args.experiment).is_file():
                print(f"radlab: no notebook {args.experiment}", file=sys.stderr)
                return 2
            print(render.render_notebook(args.experiment))
            return 0
        exp_dir = Path(args.output_root) / args.experiment
        if not exp_dir.is_dir():
            print(f"radlab: no run folders in {exp_dir} (run `radlab run {args.experiment}` first, "
                  "or pass --output-root)", file=sys.stderr)
            return 2
        params_root = Path(args.params_root) if args.params_root else repo_root() / "params"
        print(render.render_index(args.experiment, args.output_root, params_root=params_root))
        return 0
    if args.command == "build-model":
        from radlab.models import build_tiny_qwen3vl

        path = build_tiny_qwen3vl(args.out_dir, args.size, seed=args.seed)
        print(path)
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
