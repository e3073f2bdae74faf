"""The pipeline runner behind ``radlab run <experiment>``.

It executes the stage notebooks with papermill, each with ``params/<experiment>/<run>.yaml``,
writing the executed notebook into the run folder ``runs/<experiment>/<run>/``.  A run whose
folder holds ``DONE`` is skipped unless forced.  Runs form a small dependency graph, so with
``jobs=2`` independent runs (e.g. ``grpo`` and ``cold_start``) share the two cores, each kernel
limited to ``threads`` torch/OMP threads.

An experiment is its params folder: every ``params/<experiment>/<run>.yaml`` is a run, one
execution of the notebook its ``stage:`` key names, in the run folder named after the file (the
runner passes ``-p run_name <run>``).  The runs a run waits for follow from the inputs it names
(``data_dir``, ``init_model``, ``init_run``, GRPO's derived start model; the analysis reads every
model run): see :meth:`radlab.params.CommonParams.depends_on`.  ``radlab run <exp> --dry-run``
prints the graph (:func:`describe`).

Replicates: a training run's ``seeds`` (a params-file key the runner reads and never passes on;
``radlab run <exp> --seeds 0,1,2`` sets it for every training run whose file does not) makes one run
per seed: seed 0 is the run itself, seed ``k >= 1`` the run ``<run>_s<k>`` with ``seed: k`` and its
inputs moved to the ``_s<k>`` replicates of replicated input runs, so a chain replicates together
(``grpo_s1`` starts from ``sft_s1``).  See :func:`plan`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from radlab import render, runs
from radlab.config import RUNNER_KEYS, load_yaml, validate
from radlab.vocab import NOTEBOOKS, STAGES, TRAINING_STAGES, ParamError


@dataclass(frozen=True)
class RunSpec:
    """One notebook execution: ``name`` is its run folder (the params file's stem), ``stage`` picks
    the notebook, ``after`` lists the runs of the experiment it reads (from its input fields).

    A replicate (``sft_s1``) names the run it replicates in ``replicate_of`` (``""`` for a run of
    its own), its seed in ``seed``, and the parameters the runner sets on top of the params file
    in ``overrides`` (``(("seed", 1), ("init_model", ".../sft_s1/model"))``).
    """

    name: str
    stage: str
    after: tuple[str, ...] = ()
    seed: int = 0
    replicate_of: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()


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
    """The runs of an experiment, one per params file, in execution (dependency) order."""

    experiment: str
    runs: list[RunSpec]
    params: dict[str, Path] = field(default_factory=dict)
    # Inputs read from earlier, complete run folders that have no params file here.
    external: dict[str, Path] = field(default_factory=dict)
    # Replicated runs (seed-0 run name) -> their seeds, e.g. {"sft": (0, 1, 2), "grpo": (0, 1, 2)}.
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)


def replicate_name(run: str, seed: int) -> str:
    """The run folder of replicate ``seed`` of ``run``: ``run`` itself for seed 0, else ``<run>_s<seed>``."""
    return run if seed == 0 else f"{run}_s{seed}"


def parse_seeds(value: Any, source: str = "seeds") -> tuple[int, ...]:
    """``"0,1,2"``, ``[0, 1, 2]`` or ``0`` -> ``(0, 1, 2)`` (sorted, unique).

    Seed 0 is the run itself, so it must be listed; anything but non-negative integers is a
    :class:`ParamError` naming ``source``.
    """
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if isinstance(item, bool) or not text.isdigit():
            raise ParamError(f"{source}: {value!r} is not a comma-separated list of seeds (integers >= 0), e.g. '0,1,2'")
        out.add(int(text))
    if not out:
        raise ParamError(f"{source}: {value!r} lists no seed; e.g. '0,1,2' (0 is the run itself)")
    if 0 not in out:
        raise ParamError(f"{source}: {value!r} must include 0: seed 0 is the run itself (its replicates are "
                         "<run>_s1, <run>_s2, ...)")
    return tuple(sorted(out))


def repo_root() -> Path:
    """The folder holding ``notebooks/`` and ``params/`` (the repo root, or the current folder)."""
    here = Path(__file__).resolve().parents[1]
    return here if (here / "notebooks").is_dir() else Path.cwd()


PARAMS_SUFFIXES = (".yaml", ".yml")


def _read_runs(exp_dir: Path) -> dict[str, tuple[str, Path, dict[str, Any]]]:
    """``{run: (stage, file, values)}`` for every params file of the experiment folder."""
    found: dict[str, tuple[str, Path, dict[str, Any]]] = {}
    for path in sorted(p for p in exp_dir.iterdir() if p.suffix in PARAMS_SUFFIXES and p.is_file()):
        values = load_yaml(path)
        stage = values.get("stage")
        if not stage:
            raise ParamError(f"{path}: no 'stage:' key; a params file names the stage it runs, one of {list(STAGES)} "
                             f"(e.g. 'stage: {path.stem if path.stem in STAGES else 'grpo'}')")
        if stage not in STAGES:
            raise ParamError(f"{path}: unknown stage {stage!r}; expected one of {list(STAGES)}")
        name = path.stem
        if values.get("run_name") not in (None, "", name):
            raise ParamError(f"{path}: run_name {values['run_name']!r} contradicts the file's name: the run is named "
                             f"{name!r} after its file (drop run_name, or rename the file)")
        if name in found:
            raise ParamError(f"{path}: run {name!r} is also defined by {found[name][1]}")
        found[name] = (stage, path, values)
    return found


def _order(deps: dict[str, list[str]], files: dict[str, Path]) -> list[str]:
    """Topological order; among runs ready together, the one heading the longest chain of runs that
    wait on it first (with ``--jobs 2`` the critical path starts early), then by name.

    Raises :class:`ParamError` naming the files of a cycle.
    """
    done: list[str] = []
    left = dict(deps)
    while left:
        ready = [n for n, ds in left.items() if all(d not in left for d in ds)]
        if not ready:
            cycle = _cycle(left)
            raise ParamError("cycle between runs: " + " -> ".join(f"{n} ({files[n]})" for n in cycle)
                             + "; each run reads the next one's outputs")
        height = _heights(deps)
        nxt = min(ready, key=lambda n: (-height[n], n))
        done.append(nxt)
        del left[nxt]
    return done


def _heights(deps: dict[str, list[str]]) -> dict[str, int]:
    """Length of the longest chain of runs waiting on each run (0 for a run nothing waits on)."""
    waiting: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            waiting[d].append(n)
    memo: dict[str, int] = {}

    def height(n: str) -> int:
        if n not in memo:
            memo[n] = 0  # cycles are reported before this is used
            memo[n] = max((1 + height(w) for w in waiting[n]), default=0)
        return memo[n]

    return {n: height(n) for n in deps}


def _cycle(left: dict[str, list[str]]) -> list[str]:
    """One cycle among runs that all wait on each other: ``[a, b, a]``."""
    path: list[str] = []
    node = next(iter(left))
    while node not in path:
        path.append(node)
        node = next(d for d in left[node] if d in left)
    return path[path.index(node):] + [node]


def plan(
    experiment: str,
    *,
    params_root: Path,
    only: Sequence[str] = (),
    output_root: str | os.PathLike[str] = "runs",
    root: str | os.PathLike[str] | None = None,
    seeds: str | Sequence[int] | None = None,
) -> Plan:
    """Every ``params/<experiment>/*.yaml`` is a run: its ``stage:`` picks the notebook, its stem names it.

    Each file is validated as its notebook will see it (``experiment``, ``output_root`` and
    ``run_name`` as the runner passes them; input folders not checked yet), and the runs it reads
    follow from its input fields (``depends_on``).  ``root`` is the folder notebooks run in (relative
    paths in params files are taken from there).  Nothing is skipped silently: a file without
    ``stage:``, an unknown stage, a bad value, an input run with neither a params file nor a complete
    folder, or a cycle is a :class:`ParamError` naming the file.  ``only`` restricts the plan to
    these runs (their inputs must then be complete already or come earlier in ``only``); a run named
    there brings its replicates.

    Replicates: ``seeds`` (``"0,1,2"``, the ``--seeds`` flag) applies to every training run whose
    params file has no ``seeds`` key of its own; a run with neither inherits its replicated inputs'
    seeds (:func:`_replicate_seeds`).  Each seed ``k >= 1`` of a run adds the run ``<run>_s<k>`` from
    the same file (:func:`_replicas`: ``seed: k``, inputs moved to ``_s<k>`` replicates, in
    ``RunSpec.overrides``); ``Plan.seeds`` lists the replicated runs.
    """
    exp_dir = params_root / experiment
    if not exp_dir.is_dir():
        known = sorted(p.name for p in params_root.iterdir() if p.is_dir()) if params_root.is_dir() else []
        raise ParamError(f"no params folder {exp_dir} for experiment {experiment!r}; known experiments: {known}")
    found = _read_runs(exp_dir)
    if not found:
        raise ParamError(f"{exp_dir}: no params files (*.yaml, each with a 'stage:' key)")
    stages = {name: stage for name, (stage, _, _) in found.items()}
    files = {name: path for name, (_, path, _) in found.items()}
    explicit = {name: parse_seeds(values["seeds"], f"{path}: seeds")
                for name, (_, path, values) in found.items() if "seeds" in values}
    cli = parse_seeds(seeds, "--seeds") if seeds not in (None, "", (), []) else None
    deps: dict[str, list[str]] = {}
    external: dict[str, Path] = {}
    validated: dict[str, Any] = {}
    given: dict[str, dict[str, Any]] = {}
    with contextlib.chdir(root or Path.cwd()):
        for name, (stage, path, values) in found.items():
            given[name] = {**{k: v for k, v in values.items() if k not in RUNNER_KEYS},
                           "experiment": experiment, "output_root": str(output_root), "run_name": name}
            params = validated[name] = validate(stage, given[name], source=str(path), check_inputs=False)
            deps[name] = params.depends_on(stages)
            for dep in deps[name]:
                if dep in found:
                    continue
                folder = params.stage_path(dep)
                if not runs.is_complete(folder):
                    raise ParamError(
                        f"{path}: run {name!r} reads run {dep!r}, but {exp_dir} has no {dep}.yaml and {folder} "
                        f"is not a complete run; add {dep}.yaml (with 'stage:') or point the input elsewhere")
                external[dep] = folder
        order = _order({n: [d for d in ds if d in found] for n, ds in deps.items()}, files)
        run_seeds = _replicate_seeds(order, stages, files, deps, explicit, cli, validated)
        replicas = _replicas(order, stages, files, given, validated, run_seeds)
    all_stages = {**stages, **{spec.name: spec.stage for spec in replicas}}
    specs = {n: RunSpec(n, stages[n], tuple(validated[n].depends_on(all_stages))) for n in found}
    specs.update({r.name: r for r in replicas})
    names = set(specs)
    for o in only:
        if o not in names:
            raise ParamError(f"--only {o!r}: unknown run; runs of {experiment!r}: {sorted(names)}")
    files.update({r.name: files[r.replicate_of] for r in replicas})
    full_order = _order({n: [d for d in s.after if d in names] for n, s in specs.items()}, files)
    chosen = set(only) | {r.name for r in replicas if r.replicate_of in only}
    selected = [specs[n] for n in full_order if not only or n in chosen]
    replicated = {n: ks for n, ks in run_seeds.items() if len(ks) > 1}
    return Plan(experiment, selected, {s.name: files[s.name] for s in selected}, external, replicated)


def _replicate_seeds(order: Sequence[str], stages: Mapping[str, str], files: Mapping[str, Path],
                     deps: Mapping[str, Sequence[str]], explicit: Mapping[str, tuple[int, ...]],
                     cli: tuple[int, ...] | None, validated: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each run's seeds: its file's ``seeds``, else ``--seeds``, else those of its replicated inputs
    (a run whose input is replicated is replicated too), else ``(0,)``; training stages only.

    Errors name the file: ``seeds`` on the data or analysis stage (one data draw; the analysis reads
    every replicate), ``seeds`` with a ``seed`` other than 0, and a replicate whose input run has no
    replicate of that seed (``grpo_s2`` must start from ``sft_s2``).
    """
    out: dict[str, tuple[int, ...]] = {}
    for name in order:
        if stages[name] not in TRAINING_STAGES:
            if name in explicit:
                raise ParamError(f"{files[name]}: seeds: the {stages[name]} stage is not replicated (one data draw; "
                                 "the analysis reads every replicate); set seeds on the training runs")
            out[name] = (0,)
            continue
        inputs = [d for d in deps[name] if d in out and stages[d] in TRAINING_STAGES]
        inherited = tuple(sorted({k for d in inputs for k in out[d]})) or (0,)
        ks = explicit.get(name) or cli or inherited
        if len(ks) > 1 and validated[name].seed != 0:
            raise ParamError(f"{files[name]}: seed {validated[name].seed} with seeds {','.join(map(str, ks))}: "
                             "replicate k runs with seed k, so leave seed at 0 (the run itself is seed 0)")
        for d in inputs:
            lacking = [k for k in ks if k not in out[d]]
            if lacking:
                raise ParamError(
                    f"{files[name]}: run {name!r} has seeds {','.join(map(str, ks))}, but its input run {d!r} "
                    f"({files[d]}) has no replicate of seed {','.join(map(str, lacking))}: a replicate starts from "
                    f"the same replicate of its input ({replicate_name(name, lacking[0])} from "
                    f"{replicate_name(d, lacking[0])}); give {d} these seeds too, or drop them here")
        out[name] = ks
    return out


def _replicas(order: Sequence[str], stages: Mapping[str, str], files: Mapping[str, Path],
              given: Mapping[str, dict[str, Any]], validated: Mapping[str, Any],
              run_seeds: Mapping[str, tuple[int, ...]]) -> list[RunSpec]:
    """The replicate runs ``<run>_s<k>`` (k >= 1): ``seed: k``, and each input that points into a
    replicated run (``init_run``, ``init_model`` or a derived start model) moved to its ``_s<k>``
    replicate.  A params file already named like a replicate is a :class:`ParamError`."""
    out: list[RunSpec] = []
    for name in order:
        for k in run_seeds[name][1:]:
            rep = replicate_name(name, k)
            if rep in files:
                raise ParamError(f"{files[rep]}: run {rep!r} has the name of replicate seed {k} of run {name!r} "
                                 f"({files[name]}, seeds {','.join(map(str, run_seeds[name]))}); rename the file "
                                 "or drop that seed")
            overrides: dict[str, Any] = {"seed": k}
            init = str(given[name].get("init_run") or "")
            if init and k in run_seeds.get(init, ()) and init != name:
                overrides["init_run"] = replicate_name(init, k)
            stage, params = stages[name], validated[name]
            probe = validate(stage, {**given[name], **overrides, "run_name": rep}, source=str(files[name]),
                             check_inputs=False)
            for f in dataclasses.fields(probe):
                value = getattr(probe, f.name)
                src = probe.run_of(value) if f.metadata.get("path") and isinstance(value, str) else None
                if src and src in run_seeds and k in run_seeds[src] and src != name:
                    rel = Path(os.path.abspath(value)).relative_to(Path(os.path.abspath(params.output_root))
                                                                    / params.experiment)
                    overrides[f.name] = str(params.stage_path(replicate_name(src, k)).joinpath(*rel.parts[1:]))
            final = validate(stage, {**given[name], **overrides, "run_name": rep}, source=str(files[name]),
                             check_inputs=False)
            after = tuple(final.depends_on(stages))
            out.append(RunSpec(rep, stage, after, k, name, tuple(overrides.items())))
    return out


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is below it (shorter tables)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def describe(pl: Plan, *, output_root: str | os.PathLike[str] | None = None, force: bool = False) -> str:
    """The plan as a table: each run's stage, the runs it reads, its params file, in execution order.

    With ``output_root``, a run whose folder is complete is marked as skipped (unless ``force``).
    """
    rows = [("run", "stage", "after (inputs)", "params file", "")]
    for spec in pl.runs:
        note = ""
        if output_root is not None and not force and runs.is_complete(Path(output_root) / pl.experiment / spec.name):
            note = "complete: skipped"
        shown = _shown(pl.params[spec.name]) + (f" (replicate seed {spec.seed} of {spec.replicate_of})"
                                                if spec.replicate_of else "")
        rows.append((spec.name, spec.stage, ", ".join(spec.after) or "-", shown, note))
    for name, folder in pl.external.items():
        rows.append((name, "(done)", "-", f"complete run {_shown(folder)}, no params file", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip()
             for r in rows]
    head = [f"radlab run {pl.experiment}: {len(pl.runs)} run(s) in this order"]
    by_seeds: dict[tuple[int, ...], list[str]] = {}
    for name, ks in pl.seeds.items():
        by_seeds.setdefault(ks, []).append(name)
    head += [f"replicates (seeds {','.join(map(str, ks))}; seed k >= 1 is <run>_s<k>): {', '.join(names)}"
             for ks, names in by_seeds.items()]
    return "\n".join([*head, *lines])


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


def notebook_parameters(spec: RunSpec, params_file: Path) -> dict[str, Any]:
    """What a run's notebook gets from its params file: the file's values without the runner's own
    keys (:data:`RUNNER_KEYS`), with the replicate's overrides (``seed``, moved inputs) on top."""
    values = {k: v for k, v in load_yaml(params_file).items() if k not in RUNNER_KEYS}
    return {**values, **dict(spec.overrides)}


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
        "-y", yaml.safe_dump(notebook_parameters(spec, params_file), sort_keys=False),
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
    if out_nb.exists():
        # The page a person reads (a failed run's too: it shows the error); a rendering problem
        # is reported but never fails a run that trained.
        try:
            render.render_notebook(out_nb, index_href=f"../{render.INDEX}")
        except Exception as exc:
            log(f"[warn] {spec.name}: could not render {out_nb.name} as HTML: {type(exc).__name__}: {exc}")
    if proc.returncode != 0:
        where = _failing_cell(out_nb) if out_nb.exists() else proc.stderr.strip().splitlines()[-1:]
        return RunResult(spec.name, "failed", seconds, out_nb,
                         error=f"{notebook.relative_to(root)} failed in {where}; executed notebook: {out_nb}")
    return RunResult(spec.name, "done", seconds, out_nb)


def resolve_paths(
    output_root: str | os.PathLike[str] = "runs",
    params_root: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path, Path]:
    """``(root, params_root, output_root)``: the notebooks' folder (the repo), ``<root>/params`` unless
    given, and the run folders' root (relative to ``root``)."""
    root_p = Path(root) if root else repo_root()
    params_p = Path(params_root) if params_root else root_p / "params"
    out_root = Path(output_root)
    return root_p, params_p, out_root if out_root.is_absolute() else root_p / out_root


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
    tty: bool | None = None,
    seeds: str | Sequence[int] | None = None,
) -> list[RunResult]:
    """Run an experiment's notebooks in dependency order; stop scheduling after a failure.

    Earlier runs stay intact; a failed run has no ``DONE`` marker, so the next invocation
    retries it (training stages resume from their last checkpoint).  While runs train, their
    progress is shown (tqdm bars on a terminal, else plain lines through ``log``; ``tty``
    overrides the detection).  Each executed notebook is rendered as HTML beside it, and
    ``<output_root>/<experiment>/index.html`` is rewritten after every run; its path is the
    last line logged.
    """
    root_p, params_p, out_root = resolve_paths(output_root, params_root, root)
    pl = plan(experiment, params_root=params_p, only=only, output_root=out_root, root=root_p, seeds=seeds)
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
    from radlab.training.progress import ProgressDisplay  # radlab.training imports the trainers

    display = ProgressDisplay(log, tty=tty)
    log = display.message  # log lines must not tear the progress bars

    def write_index(final: bool = False) -> Path | None:
        try:
            return render.render_index(experiment, out_root, params_root=params_p if final else None,
                                       running={s.name for s in running.values()}, pages=final,
                                       planned=[s.name for s in pl.runs] if final else ())
        except Exception as exc:  # the index is a view; it never fails the pipeline
            log(f"[warn] could not write {out_root / experiment / render.INDEX}: {type(exc).__name__}: {exc}")
            return None

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
                # --force reaches the stage as force=True: a finished run folder is then replaced
                # (without it, the stage reuses a finished run with the same params).
                fut = pool.submit(
                    execute, spec, pl.params[spec.name], experiment=experiment, output_root=out_root,
                    root=root_p, threads=threads, log=log, extra={"force": True} if force else None,
                )
                running[fut] = spec
                display.start(spec.name, run_dir)
            if not running:
                if pending and not failed:
                    # Nothing can start: only possible if a dependency is unknown; fail loudly.
                    raise RuntimeError(f"cannot schedule {[s.name for s in pending]}")
                continue
            done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            display.poll()
            for fut in done:
                spec = running.pop(fut)
                display.finish(spec.name)
                res = fut.result()
                results[spec.name] = res
                n = len(results)
                if res.status == "done":
                    log(f"[{n}/{total}] {spec.name:<11} done in {res.seconds:7.1f} s -> {res.output}")
                    for line in render.done_notes(runs.read_summary(res.output.parent)) if res.output else ():
                        log(f"    {spec.name}: {line}")  # e.g. the data stage's skipped rows by reason
                else:
                    failed = True
                    log(f"[{n}/{total}] {spec.name:<11} FAILED after {res.seconds:.1f} s: {res.error}")
            if done:
                write_index()
    display.close()
    ordered = [results[s.name] for s in pl.runs if s.name in results]
    log(f"radlab run {experiment}: finished in {time.perf_counter() - t_start:.1f} s")
    log("stage times: " + ", ".join(f"{r.name}={r.seconds:.0f}s" for r in ordered if r.status == "done"))
    index = write_index(final=True)
    if index is not None:
        log(f"index: {index}")
    return ordered


__all__ = ["RUNNER_KEYS", "RunSpec", "RunResult", "StageFailed", "plan", "describe", "execute", "notebook_parameters",
           "parse_seeds", "replicate_name", "run_pipeline"]
