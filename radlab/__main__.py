"""Command line: ``radlab run <experiment>`` (also ``python -m radlab``), ``radlab build-model``."""

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
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs (stage, inputs, params file) in execution order and exit")

    build = sub.add_parser("build-model", help="write an embedded Qwen3-VL (random init) to a folder")
    build.add_argument("out_dir")
    build.add_argument("--size", default="tiny", help="tiny | small | base")
    build.add_argument("--seed", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "run":
        from radlab.config import ParamError
        from radlab.pipeline import describe, plan, resolve_paths, run_pipeline

        try:
            if args.dry_run:
                root, params_root, output_root = resolve_paths(args.output_root, args.params_root)
                pl = plan(args.experiment, params_root=params_root, only=args.only, output_root=output_root, root=root)
                print(describe(pl, output_root=output_root, force=args.force))
                return 0
            results = run_pipeline(args.experiment, only=args.only, force=args.force, jobs=args.jobs,
                                   output_root=args.output_root, params_root=args.params_root)
        except ParamError as exc:
            print(f"radlab: {exc}", file=sys.stderr)
            return 2
        return 0 if all(r.status in ("done", "skipped") for r in results) else 1
    if args.command == "build-model":
        from radlab.models import build_tiny_qwen3vl

        path = build_tiny_qwen3vl(args.out_dir, args.size, seed=args.seed)
        print(path)
        return 0
    return 2  # pragma: no cover - argparse enforces the choices


if __name__ == "__main__":
    sys.exit(main())
