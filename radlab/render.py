"""Rendered analyses: executed notebooks as standalone HTML pages, and an experiment's ``index.html``.

``render_notebook(path)`` writes ``<notebook>.html`` beside an executed notebook with nbconvert
(JupyterLab's look, figures embedded as data URIs, code hidden behind a "show code" checkbox, no
scripts fetched from the network).  ``render_index(experiment)`` reads the run folders of
``<output_root>/<experiment>/`` alone and writes ``index.html`` there: one section per run with
its status, wall time, key numbers (the ``DONE`` summary, else the last progress record), the
analysis findings and tables, links to the rendered pages and thumbnails of ``figures/*.png``.
Everything it links is relative, so the folder can be copied or zipped and sent as it is.

``radlab run`` calls both; ``radlab render <experiment>`` rebuilds them after the fact.
"""

from __future__ import annotations

import html
import math
import os
import re
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from radlab import runs

INDEX = "index.html"
# Tables of a run shown inline on the index (the analysis writes these); other CSVs are linked.
INLINE_TABLES = ("results.csv", "comparisons.csv")
FINDINGS = "findings.md"
# A run folder without DONE whose notebook or progress file changed this recently is taken to be
# running (papermill saves the executed notebook after every cell and every 30 s within one).
RUNNING_WINDOW_S = 180.0
_TEMPLATE_DIR = Path(__file__).parent / "assets" / "nbconvert"
_TABLE_ROWS = 40
# DONE keys that are paths or bookkeeping, not results.
_NOT_NUMBERS = {"model_dir", "resumed_from", "data_dir", "output_root"}


# --------------------------------------------------------------------------------------------
# one notebook
# --------------------------------------------------------------------------------------------


# A tqdm bar line: "desc: 40%|████      | 4/10 [00:01<00:02, 3.1it/s]" or, without a total,
# "Map: 24 examples [00:00, 1234.5 examples/s]".
_BAR = re.compile(r"\d+%\|.*\||\b\d+(?:\.\d+)?[kMG]?(?:/\d+(?:\.\d+)?[kMG]?)? ?\S* ?\[\d+:\d\d(?:<|,)")
_BAR_COUNT = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")
# "path.py:12: UserWarning: message" or "UserWarning: message" (Python's warnings format); the
# indented source line that follows it belongs to it.
_WARNING = re.compile(r"^(?:.*?:\d+: )?([A-Z]\w*Warning): (.*)$")
# Warnings about the page's viewer, not the stage's results: taken out and not listed.
_VIEWER_WARNINGS = ("TqdmWarning",)
_WIDGET = "application/vnd.jupyter.widget-view+json"


def _bar_desc(line: str) -> str:
    """The bar's name (text before its counter), to keep one state per bar."""
    return re.split(r"\s*\d+%\||:?\s*\d+(?:/\d+)? ", line, maxsplit=1)[0].strip()


def tidy_stream(text: str, warnings: dict[str, int]) -> str:
    """A stream output as a reader should see it.

    Carriage returns applied (each line keeps the text after its last ``\\r``); progress bars
    left out once finished (``n/n``, or no total) and otherwise collapsed to the last state of each
    bar; Python warnings taken out into ``warnings`` (``"Category: message" -> count``) with the
    source line printed under them (tqdm's "IProgress not found", about the viewer, is dropped).
    """
    lines = []
    for raw in text.split("\n"):
        parts = [p for p in raw.split("\r") if p.strip()]
        lines.append(parts[-1] if parts else ("" if "\r" in raw else raw))
    out: list[str] = []
    bars: dict[str, int] = {}  # bar name -> index of its last state in out
    after_warning = False
    for line in lines:
        m = _WARNING.match(line.strip())
        if m:
            if m.group(1) not in _VIEWER_WARNINGS:
                key = f"{m.group(1)}: {m.group(2).strip()}"[:300]
                warnings[key] = warnings.get(key, 0) + 1
            after_warning = True
            continue
        if after_warning and line.startswith((" ", "\t")) and line.strip():
            continue  # the warning's source line
        after_warning = False
        if _BAR.search(line):
            count = _BAR_COUNT.search(line)
            finished = count is None or count.group(1) == count.group(2)
            name = _bar_desc(line)
            if name in bars:
                out[bars.pop(name)] = None  # type: ignore[call-overload]
            if not finished:
                bars[name] = len(out)
                out.append(line)
            continue
        out.append(line)
    kept = [line for line in out if line is not None]
    text = "\n".join(kept)
    return text if text.strip() else ""


def tidy_outputs(nb: Any) -> dict[str, int]:
    """Tidy an executed notebook's outputs in place for reading (:func:`tidy_stream` on every
    stream; progress widgets, whose saved state is only their first frame, left out); returns the
    warnings taken out, ``{"Category: message": count}``."""
    warnings: dict[str, int] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = tidy_stream(str(out.get("text", "")), warnings)
                if not out["text"]:
                    continue
            elif out.get("output_type") in ("display_data", "execute_result") and _WIDGET in out.get("data", {}):
                continue
            kept.append(out)
        cell["outputs"] = kept
    return warnings


def _papermill_meta(nb: Any) -> dict[str, Any]:
    return dict(nb.get("metadata", {}).get("papermill", {}) or {})


def render_notebook(
    notebook: str | os.PathLike[str],
    html_path: str | os.PathLike[str] | None = None,
    *,
    index_href: str | None = None,
) -> Path:
    """Write an executed notebook as a standalone HTML page (default: beside it, ``.html``).

    Figures are embedded, so the page is one file; code cells are hidden until the reader ticks
    "show code".  Outputs are tidied for reading (:func:`tidy_outputs`: progress bars collapsed
    or left out, warnings gathered into one collapsed note under the title bar).  ``index_href`` (e.g. ``"../index.html"``) adds a link back to the experiment's
    index.  Works on any executed notebook, papermill's or one saved from JupyterLab.  Written
    atomically; returns the page's path.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebook = Path(notebook)
    html_path = Path(html_path) if html_path else notebook.with_suffix(".html")
    nb = nbformat.read(notebook, as_version=4)
    warnings = tidy_outputs(nb)
    pm = _papermill_meta(nb)
    params = pm.get("parameters") or {}
    title = notebook.stem
    if params.get("experiment"):
        title = f"{params['experiment']} / {notebook.parent.name} · {notebook.stem}"
    bar: list[dict[str, str]] = [{"cls": "radlab-title", "text": title, "href": ""}]
    if index_href:
        bar.append({"cls": "", "text": "experiment index", "href": index_href})
    if pm.get("duration") is not None:
        bar.append({"cls": "", "text": f"wall time {format_seconds(float(pm['duration']))}", "href": ""})
    if pm.get("end_time"):
        bar.append({"cls": "", "text": f"finished {pm['end_time'][:19].replace('T', ' ')} UTC", "href": ""})
    if pm.get("exception") or _first_error(nb):
        bar.append({"cls": "radlab-failed", "text": f"failed: {_first_error(nb) or 'see below'}", "href": ""})
    bar.append({"cls": "", "text": notebook.name, "href": quote(notebook.name)})
    exporter = HTMLExporter(
        template_name="radlab",
        extra_template_basedirs=[str(_TEMPLATE_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    notes = [f"{text} (×{n})" if n > 1 else text for text, n in warnings.items()]
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}, "radlab_bar": bar,
                                                         "radlab_warnings": notes})
    return _write_page(html_path, body)


def _write_page(path: Path, text: str) -> Path:
    """Atomically write a page others may read (a temp file is private until renamed)."""
    runs.write_text(path, text)
    os.chmod(path, 0o644)
    return path


# --------------------------------------------------------------------------------------------
# what a run folder says about itself
# --------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """One run as the index shows it, read from its folder alone.

    ``status`` is one of ``done``, ``failed``, ``running``, ``missing`` (a params file but no
    folder).  ``numbers`` are the key scalars (DONE summary, else the last progress record);
    ``notes`` the DONE summary's ``skip_notes`` (the data stage's skipped rows by source and
    reason, warnings first).
    """

    name: str
    status: str
    folder: Path
    seconds: float | None = None
    started: str = ""
    notebooks: list[Path] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    findings: str = ""
    tables: dict[str, Any] = field(default_factory=dict)
    other_tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def _first_error(nb: Any) -> str:
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"
    return ""


def _scalars(summary: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in summary.items():
        if key in _NOT_NUMBERS or isinstance(value, (dict, list)) or value is None:
            continue
        if isinstance(value, str) and (len(value) > 60 or os.sep in value):
            continue
        out[key] = value
    return out


def done_notes(summary: Mapping[str, Any]) -> list[str]:
    """The lines a ``DONE`` summary asks a reader to see (``skip_notes``: the data stage's skipped
    rows by source and reason, ``WARNING`` lines first); ``[]`` when it has none."""
    notes = summary.get("skip_notes")
    return [str(n) for n in notes] if isinstance(notes, list) else []


def _trainer_numbers(run_dir: Path) -> dict[str, Any]:
    """global_step / max_steps and the last loss or reward from ``trainer_state.json``."""
    state = runs.read_json(run_dir / "trainer_state.json")
    if not state:
        return {}
    out: dict[str, Any] = {"global_step": state.get("global_step"), "max_steps": state.get("max_steps")}
    for entry in state.get("log_history", []):
        for key in ("loss", "reward", "train_loss"):
            if isinstance(entry.get(key), (int, float)):
                out[f"final_{key}"] = entry[key]
    return {k: v for k, v in out.items() if v is not None}


def read_run(run_dir: str | os.PathLike[str], *, running: bool = False, now: float | None = None) -> RunInfo:
    """What the index shows for one run folder (see :class:`RunInfo`)."""
    import nbformat

    run_dir = Path(run_dir)
    now = time.time() if now is None else now
    info = RunInfo(name=run_dir.name, status="failed", folder=run_dir)
    info.notebooks = sorted(p for p in run_dir.glob("*.ipynb") if not p.name.startswith("."))
    latest_change = 0.0
    ended = False
    for nb_path in info.notebooks:
        latest_change = max(latest_change, nb_path.stat().st_mtime)
        try:
            nb = nbformat.read(nb_path, as_version=4)
        except Exception as exc:  # a half-written or foreign file: say so, keep going
            info.error = f"{nb_path.name} unreadable: {exc}"
            continue
        pm = _papermill_meta(nb)
        info.error = info.error or _first_error(nb)
        if pm.get("start_time"):
            info.started = str(pm["start_time"])[:19]
        if pm.get("duration") is not None:
            info.seconds = float(pm["duration"])
        if pm.get("end_time"):
            ended = True
        elif pm.get("start_time"):
            try:
                start = datetime.fromisoformat(str(pm["start_time"]).replace("Z", "+00:00"))
                info.seconds = max(0.0, now - start.timestamp())
            except ValueError:
                pass
    from radlab.training.progress import PROGRESS_FILE, read_progress  # radlab.training imports the trainers

    progress_path = run_dir / PROGRESS_FILE
    if progress_path.exists():
        latest_change = max(latest_change, progress_path.stat().st_mtime)
        records = read_progress(progress_path)
        if records:
            info.progress = records[-1]
    done = runs.is_complete(run_dir)
    if done:
        info.status = "done"
        summary = runs.read_summary(run_dir)
        info.numbers = _scalars(summary)
        info.notes = done_notes(summary)
    elif running or (not ended and not info.error and now - latest_change < RUNNING_WINDOW_S and latest_change > 0):
        info.status = "running"
    else:
        info.status = "failed"
        if not info.error:
            info.error = "no DONE marker: the run was interrupted or has not finished"
    if not info.numbers:
        info.numbers = _trainer_numbers(run_dir)
    findings = run_dir / FINDINGS
    if findings.exists():
        info.findings = findings.read_text(encoding="utf-8")
    for csv in sorted(run_dir.glob("*.csv")):
        if csv.name in INLINE_TABLES:
            try:
                import pandas as pd

                info.tables[csv.name] = pd.read_csv(csv)
            except Exception as exc:  # a broken table must not hide the rest of the index
                info.tables[csv.name] = f"unreadable: {exc}"
        else:
            info.other_tables.append(csv)
    info.figures = sorted((run_dir / "figures").glob("*.png"))
    return info


def read_experiment(
    exp_dir: str | os.PathLike[str],
    *,
    expected: Collection[str] = (),
    running: Collection[str] = (),
) -> list[RunInfo]:
    """Every run folder of an experiment (in the order they started), then ``expected`` runs
    that have no folder yet as ``missing``."""
    exp_dir = Path(exp_dir)
    now = time.time()
    infos = []
    if exp_dir.is_dir():
        for d in sorted(exp_dir.iterdir()):
            if d.is_dir() and not d.name.startswith((".", "_")):
                infos.append(read_run(d, running=d.name in running, now=now))
    infos.sort(key=lambda r: (r.started == "", r.started, r.name))
    have = {r.name for r in infos}
    infos += [RunInfo(name=n, status="missing", folder=exp_dir / n) for n in expected if n not in have]
    return infos


# --------------------------------------------------------------------------------------------
# the index page
# --------------------------------------------------------------------------------------------


def format_seconds(seconds: float | None) -> str:
    """``83.2`` -> ``"1 min 23 s"``; ``None`` -> ``"–"``."""
    if seconds is None or math.isnan(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.4g}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(path: Path, base: Path) -> str:
    return quote(path.relative_to(base).as_posix())


def _progress_line(rec: Mapping[str, Any]) -> str:
    parts = []
    if rec.get("step") is not None:
        parts.append(f"step {rec['step']}" + (f" / {rec['max_steps']}" if rec.get("max_steps") else ""))
    for key in ("loss", "reward"):
        if isinstance(rec.get(key), (int, float)):
            parts.append(f"{key} {rec[key]:.4g}")
    if rec.get("flops") and rec.get("max_flops"):
        parts.append(f"{100 * rec['flops'] / rec['max_flops']:.0f}% of the FLOPs budget")
    return ", ".join(parts)


# The numbers the overview table shows for a finished run, first ones found.
_HEADLINE_KEYS = ("global_step", "final_reward", "final_loss", "traces_kept")


def _headline(info: RunInfo) -> str:
    """One line for the overview: progress while running or failed, else a few key numbers."""
    if info.status in ("running", "failed") and info.progress:
        return _progress_line(info.progress)
    parts = [f"{k} {_fmt(info.numbers[k])}" for k in _HEADLINE_KEYS if k in info.numbers]
    parts += [f"{k} {_fmt(v)}" for k, v in info.numbers.items() if k.startswith("heldout_")][:2]
    return ", ".join(parts)


def _markdown(text: str) -> str:
    """Markdown to HTML with raw HTML escaped (findings are text, never markup to trust)."""
    import mistune

    return str(mistune.create_markdown(escape=True, plugins=["table"])(text))


def _table_html(frame: Any) -> str:
    if isinstance(frame, str):
        return f"<p class='error'>{_e(frame)}</p>"
    note = ""
    if len(frame) > _TABLE_ROWS:
        note = f"<p class='note'>first {_TABLE_ROWS} of {len(frame)} rows</p>"
        frame = frame.head(_TABLE_ROWS)
    return frame.to_html(index=False, escape=True, border=0, classes="table", float_format=lambda v: f"{v:.4g}",
                         na_rep="") + note


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
  padding: 1em 1.5em 3em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin: 0; }
.meta { color: #666; font-size: 0.9em; }
table.table, table.overview { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
table.table th, table.table td, table.overview th, table.overview td { border-bottom: 1px solid #e4e4e4;
  padding: 0.2em 0.7em; text-align: left; vertical-align: top; }
table.table th, table.overview th { background: #f5f5f5; }
section.run { border: 1px solid #ddd; border-radius: 6px; padding: 0.8em 1em; margin: 1.2em 0; }
.head { display: flex; gap: 1em; align-items: baseline; flex-wrap: wrap; }
.status { font-size: 0.8em; font-weight: 600; padding: 0.1em 0.6em; border-radius: 1em; color: #fff; }
.status-done { background: #2e7d32; } .status-failed { background: #c62828; }
.status-running { background: #1565c0; } .status-missing { background: #9e9e9e; }
.error { color: #b00020; font-family: monospace; white-space: pre-wrap; }
.note { color: #666; font-size: 0.85em; }
ul.notes { margin: 0.4em 0; padding-left: 1.2em; } li.warning { color: #b00020; font-weight: 600; font-size: 0.9em; }
.numbers { display: flex; flex-wrap: wrap; gap: 0.3em 1.4em; font-size: 0.9em; margin: 0.5em 0; }
.numbers span b { font-variant-numeric: tabular-nums; }
.thumbs { display: flex; flex-wrap: wrap; gap: 0.6em; margin-top: 0.6em; }
.thumbs figure { margin: 0; text-align: center; font-size: 0.8em; color: #555; }
.thumbs img { max-width: 260px; max-height: 180px; border: 1px solid #ddd; background: #fff; }
.findings { background: #fafafa; border-left: 3px solid #1565c0; padding: 0.2em 1em; margin: 0.6em 0; }
"""


def _run_section(info: RunInfo, base: Path) -> str:
    out = [f"<section class='run' id='run-{_e(info.name)}'>", "<div class='head'>",
           f"<h2>{_e(info.name)}</h2>", f"<span class='status status-{_e(info.status)}'>{_e(info.status)}</span>"]
    if info.seconds is not None:
        out.append(f"<span class='meta'>wall time {_e(format_seconds(info.seconds))}</span>")
    if info.started:
        out.append(f"<span class='meta'>started {_e(info.started.replace('T', ' '))} UTC</span>")
    out.append("</div>")
    links = []
    for nb in info.notebooks:
        page = nb.with_suffix(".html")
        if page.exists():
            links.append(f"<a href='{_href(page, base)}'>{_e(page.name)}</a>")
        links.append(f"<a href='{_href(nb, base)}'>{_e(nb.name)}</a>")
    if info.status != "missing":
        links.append(f"<a href='{_href(info.folder, base)}/'>folder</a>")
    if links:
        out.append("<div class='meta'>" + " · ".join(links) + "</div>")
    if info.status == "missing":
        out.append("<p class='note'>a params file names this run, but it has no folder yet</p>")
    if info.status in ("running", "failed") and info.progress:
        out.append(f"<p class='meta'>last progress: {_e(_progress_line(info.progress))}</p>")
    if info.status == "failed" and info.error:
        out.append(f"<p class='error'>{_e(info.error)}</p>")
    if info.numbers:
        out.append("<div class='numbers'>" + "".join(
            f"<span>{_e(k)} <b>{_e(_fmt(v))}</b></span>" for k, v in info.numbers.items()) + "</div>")
    if info.notes:
        out.append("<ul class='notes'>" + "".join(
            f"<li class='{'warning' if n.startswith('WARNING') else 'note'}'>{_e(n)}</li>" for n in info.notes) + "</ul>")
    if info.findings:
        out.append(f"<div class='findings'>{_markdown(info.findings)}</div>")
    for name, frame in info.tables.items():
        rows = f" ({len(frame)} rows)" if not isinstance(frame, str) else ""
        out.append(f"<details><summary class='meta'>{_e(name)}{_e(rows)} · "
                   f"<a href='{_href(info.folder / name, base)}'>csv</a></summary>{_table_html(frame)}</details>")
    if info.other_tables:
        out.append("<div class='meta'>tables: " + ", ".join(
            f"<a href='{_href(p, base)}'>{_e(p.name)}</a>" for p in info.other_tables) + "</div>")
    if info.figures:
        out.append("<div class='thumbs'>")
        for fig in info.figures:
            href = _href(fig, base)
            out.append(f"<figure><a href='{href}'><img src='{href}' alt='{_e(fig.stem)}'></a>"
                       f"<figcaption>{_e(fig.stem)}</figcaption></figure>")
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def index_html(experiment: str, infos: list[RunInfo], exp_dir: Path,
               replicas: Mapping[str, tuple[str, int]] | None = None) -> str:
    """The index page's HTML (see :func:`render_index`); ``replicas`` marks replicate runs
    (``{"grpo_s1": ("grpo", 1)}``, :func:`radlab.experiment.replicates`)."""
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.status] = counts.get(info.status, 0) + 1
    refresh = "<meta http-equiv='refresh' content='30'>" if counts.get("running") else ""
    rows = []
    for info in infos:
        key = _headline(info)
        rep = (replicas or {}).get(info.name)
        mark = f" <span class='meta'>(replicate seed {rep[1]} of {_e(rep[0])})</span>" if rep else ""
        rows.append(
            f"<tr><td><a href='#run-{_e(info.name)}'>{_e(info.name)}</a>{mark}</td>"
            f"<td><span class='status status-{_e(info.status)}'>{_e(info.status)}</span></td>"
            f"<td>{_e(format_seconds(info.seconds))}</td><td>{_e(key or '')}</td></tr>"
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join([
        "<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>", refresh,
        f"<title>radlab · {_e(experiment)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>radlab experiment <code>{_e(experiment)}</code></h1>",
        f"<p class='meta'>{_e(summary)} · written {generated} UTC from the run folders in "
        f"<code>{_e(exp_dir)}</code> · rebuild with <code>radlab render {_e(experiment)}</code></p>",
        "<table class='overview'><tr><th>run</th><th>status</th><th>wall time</th><th>headline</th></tr>",
        *rows, "</table>",
        *(_run_section(info, exp_dir) for info in infos),
        "</body></html>", "",
    ])


def render_index(
    experiment: str,
    output_root: str | os.PathLike[str] = "runs",
    *,
    params_root: str | os.PathLike[str] | None = None,
    running: Collection[str] = (),
    pages: bool = True,
    planned: Collection[str] = (),
) -> Path:
    """Write ``<output_root>/<experiment>/index.html`` from the run folders alone; returns its path.

    ``pages``: first (re)render each run's notebook page that is missing or older than its
    notebook.  ``params_root``: runs with ``<params_root>/<experiment>/<run>.yaml`` but no folder
    are listed as missing; so are ``planned`` runs (the runner's plan, replicates included).
    ``running``: runs the caller knows to be running (the runner).  Replicate runs
    (``<run>_s<k>``, from their ``params.yaml``) are marked with their seed and run.
    """
    from radlab.experiment import read_runs, replicates

    exp_dir = Path(output_root) / experiment
    expected: list[str] = []
    if params_root is not None and (Path(params_root) / experiment).is_dir():
        expected = sorted(p.stem for p in (Path(params_root) / experiment).glob("*.yaml"))
    expected += [n for n in planned if n not in expected]
    infos = read_experiment(exp_dir, expected=expected, running=running)
    if pages:
        # A running notebook is still being written; its page comes when it ends.
        for info in infos:
            for nb in info.notebooks if info.status != "running" else ():
                page = nb.with_suffix(".html")
                if not page.exists() or page.stat().st_mtime < nb.stat().st_mtime:
                    render_notebook(nb, index_href=f"../{INDEX}")
    return _write_page(exp_dir / INDEX, index_html(experiment, infos, exp_dir, replicates(read_runs(exp_dir))))


__all__ = ["render_notebook", "render_index", "tidy_outputs", "tidy_stream", "read_run", "read_experiment", "RunInfo", "format_seconds", "done_notes",
           "INDEX"]
