"""The pipeline runner behind ``radlab run <experiment>``.

It executes the stage notebooks with papermill, each with ``params/<experiment>/<run>.yaml``,
writing the executed notebook into the run folder ``runs/<experiment>/<run>/``.  A run whose
folder holds ``DONE`` is skipped unless forced.  Runs form a small dependency graph, so with
``jobs=2`` independent runs (e.g. ``grpo`` and ``cold_start``) share the two cores, each kernel
limited to ``threads`` torch/OMP threads.

A run is one execution of a stage notebook; most stages have one run named after the stage,
the GRPO stage has two (``grpo`` with ``thinking: false`` and ``grpo_think``), and the SFT stage
has the compute-matched control ``sft_more``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from radlab import runs
from radlab.config import NOTEBOOKS, STAGES, ParamError, load_yaml


@dataclass(frozen=True)
class RunSpec:
    """One notebook execution: ``name`` is its run folder, ``stage`` picks the notebook."""

    name: str
    stage: str
    after: tuple[str, ...] = ()


# Order matters for jobs=1 (it is the order printed and executed).
RUNS: tuple[RunSpec, ...] = (
    RunSpec("data", "data"),
    RunSpec("sft", "sft", ("data",)),
    RunSpec("cold_start", "cold_start", ("sft",)),
    RunSpec("grpo", "grpo", ("sft",)),
    # The compute-matched control: SFT continued for the GRPO run's training-time budget
    # (its params set the same max_train_seconds), so it can run beside GRPO.
    RunSpec("sft_more", "sft", ("sft",)),
    RunSpec("grpo_think", "grpo", ("cold_start",)),
    RunSpec("analysis", "analysis", ("sft", "grpo", "cold_start", "grpo_think", "sft_more")),
)


class StageFailed(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


@dataclass
class RunResult:
    """What happened to one run."""

    name: str
    status: str  # "done" | "skipped" | "failed" | "blocked"
    seconds: float = 0.0
    output: Path | None = None
    error: str = ""


@dataclass
class Plan:
    """The runs of an experiment that have a params file, in dependency order."""

    experiment: str
    runs: list[RunSpec]
    params: dict[str, Path] = field(default_factory=dict)


def repo_root() -> Path:
    """The folder holding ``notebooks/`` and ``params/`` (the repo root, or the current folder)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def plan(experiment: str, *, params_root: Path, only: Sequence[str] = ()) -> Plan:
    """Select the runs of ``experiment``: those with ``params/<experiment>/<run>.yaml``.

    Raises :class:`ParamError` when the experiment folder is missing, a params file does not
    parse, or ``only`` names an unknown run.
    """
    exp_dir = params_root / experiment
    if not exp_dir.is_dir():
        known = sorted(p.name for p in params_root.iterdir() if p.is_dir()) if params_root.is_dir() else []
        raise ParamError(f"no params folder {exp_dir} for experiment {experiment!r}; known experiments: {known}")
    names = {r.name for r in RUNS}
    for o in only:
        if o not in names:
            raise ParamError(f"--only {o!r}: unknown run; expected one of {[r.name for r in RUNS]}")
    selected, params = [], {}
    for spec in RUNS:
        path = exp_dir / f"{spec.name}.yaml"
        if not path.exists():
            continue
        load_yaml(path)  # fail early on a broken file, before any stage runs
        if only and spec.name not in only:
            continue
        selected.append(spec)
        params[spec.name] = path
    if not selected:
        raise ParamError(f"{exp_dir}: no runnable params files (expected some of {[r.name + '.yaml' for r in RUNS]})")
    return Plan(experiment, selected, params)


def _failing_cell(nb_path: Path) -> str:
    """Describe the first cell with an error output in an executed notebook."""
    try:
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "(executed notebook unreadable)"
    code_index = 0
    for cell in nb.get("cells", []):
        # Number cells as in the source notebook: papermill's injected cell is not there.
        if cell.get("cell_type") != "code" or "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = "".join(cell.get("source", [])).strip().splitlines()
                first = src[0] if src else ""
                return f"code cell {code_index} (`{first[:80]}`): {out.get('ename')}: {out.get('evalue')}"
    return "(no error cell recorded; the kernel may have died)"


def execute(
    spec: RunSpec,
    params_file: Path,
    *,
    experiment: str,
    output_root: Path,
    root: Path,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    extra: dict[str, object] | None = None,
) -> RunResult:
    """Execute one run's notebook with papermill in a subprocess.

    The subprocess gets its own ``OMP_NUM_THREADS`` so that parallel runs do not oversubscribe
    the cores.  On failure the executed notebook is kept in the run folder for inspection.
    """
    notebook = root / "notebooks" / f"{NOTEBOOKS[spec.stage]}.ipynb"
    if not notebook.exists():
        return RunResult(spec.name, "failed", error=f"notebook {notebook} does not exist")
    run_dir = output_root / experiment / spec.name
    run_dir.mkdir(parents=True, exist_ok=True)
    out_nb = run_dir / notebook.name
    cmd = [
        sys.executable, "-m", "papermill", str(notebook), str(out_nb),
        "-f", str(params_file),
        "-p", "experiment", experiment,
        "-p", "run_name", spec.name,
        "-p", "output_root", str(output_root),
        "--cwd", str(root),
        "--no-progress-bar",
        "-k", "python3",
    ]
    for key, value in (extra or {}).items():
        cmd += ["-p", key, str(value)]
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), RADLAB_NUM_THREADS=str(threads))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (run_dir / "papermill.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        where = _failing_cell(out_nb) if out_nb.exists() else proc.stderr.strip().splitlines()[-1:]
        return RunResult(spec.name, "failed", seconds, out_nb,
                         error=f"{notebook.relative_to(root)} failed in {where}; executed notebook: {out_nb}")
    return RunResult(spec.name, "done", seconds, out_nb)


def run_pipeline(
    experiment: str,
    *,
    only: Sequence[str] = (),
    force: bool = False,
    jobs: int = 1,
    output_root: str | os.PathLike[str] = "runs",
    params_root: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Run an experiment's notebooks in dependency order; stop scheduling after a failure.

    Earlier runs stay intact; a failed run has no ``DONE`` marker, so the next invocation
    retries it (training stages resume from their last checkpoint).
    """
    root_p = Path(root) if root else repo_root()
    params_p = Path(params_root) if params_root else root_p / "params"
    out_root = Path(output_root)
    if not out_root.is_absolute():
        out_root = root_p / out_root
    pl = plan(experiment, params_root=params_p, only=only)
    jobs = max(1, int(jobs))
    cores = os.cpu_count() or 2
    names_in_plan = {s.name for s in pl.runs}
    results: dict[str, RunResult] = {}
    total = len(pl.runs)
    log(f"radlab run {experiment}: {total} run(s) [{', '.join(s.name for s in pl.runs)}], jobs={jobs}")

    pending = list(pl.runs)
    running: dict[Future[RunResult], RunSpec] = {}
    failed = False
    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            for spec in list(pending):
                if failed:
                    results[spec.name] = RunResult(spec.name, "blocked", error="an earlier run failed")
                    pending.remove(spec)
                    continue
                deps = [d for d in spec.after if d in names_in_plan]
                if any(results.get(d) is None for d in deps):
                    continue  # a dependency is still pending or running
                if any(results[d].status not in ("done", "skipped") for d in deps):
                    results[spec.name] = RunResult(spec.name, "blocked", error="a dependency did not finish")
                    pending.remove(spec)
                    continue
                if len(running) >= jobs:
                    break
                pending.remove(spec)
                run_dir = out_root / experiment / spec.name
                if not force and runs.is_complete(run_dir):
                    results[spec.name] = RunResult(spec.name, "skipped", output=run_dir)
                    log(f"[{len(results)}/{total}] {spec.name:<11} complete, skipped (use --force to rerun) -> {run_dir}")
                    continue
                # Threads are fixed when a kernel starts: a run that will have the machine to itself
                # (nothing running, nothing else startable) gets every core, otherwise its share.
                startable = sum(
                    1 for other in pending
                    if all(results.get(d) is not None and results[d].status in ("done", "skipped")
                           for d in other.after if d in names_in_plan)
                )
                sharing = min(jobs, len(running) + 1 + startable)
                threads = max(1, cores // sharing) if jobs > 1 else None
                log(f"[start] {spec.name:<11} {NOTEBOOKS[spec.stage]}.ipynb with {pl.params[spec.name]}"
                    + (f" ({threads} thread{'s' if threads > 1 else ''})" if threads else ""))
                fut = pool.submit(
                    execute, spec, pl.params[spec.name], experiment=experiment, output_root=out_root,
                    root=root_p, threads=threads, log=log,
                )
                running[fut] = spec
            if not running:
                if pending and not failed:
                    # Nothing can start: only possible if a dependency is unknown; fail loudly.
                    raise RuntimeError(f"cannot schedule {[s.name for s in pending]}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                spec = running.pop(fut)
                res = fut.result()
                results[spec.name] = res
                n = len(results)
                if res.status == "done":
                    log(f"[{n}/{total}] {spec.name:<11} done in {res.seconds:7.1f} s -> {res.output}")
                else:
                    failed = True
                    log(f"[{n}/{total}] {spec.name:<11} FAILED after {res.seconds:.1f} s: {res.error}")
    ordered = [results[s.name] for s in pl.runs if s.name in results]
    log(f"radlab run {experiment}: finished in {time.perf_counter() - t_start:.1f} s")
    log("stage times: " + ", ".join(f"{r.name}={r.seconds:.0f}s" for r in ordered if r.status == "done"))
    return ordered


__all__ = ["RUNS", "RunSpec", "RunResult", "StageFailed", "plan", "execute", "run_pipeline", "STAGES"]
