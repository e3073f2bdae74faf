"""Rendered analyses and live progress: notebook pages, the experiment index, progress.jsonl."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from radlab import render, runs
from radlab.__main__ import main
from radlab.training.progress import PROGRESS_FILE, ProgressDisplay, ProgressTail, progress_callback, read_progress

# A 2x1 PNG, so <img> tags have something real to point at.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAABCAYAAAD0In+KAAAAEUlEQVR4nGP4z8DwHwQZGBgAL+4F+4PFeYEAAAAASUVORK5CYII="
)


def executed_notebook(path: Path, *, error: bool = False, experiment: str = "exp", finished: bool = True) -> Path:
    """A notebook as papermill leaves it: a markdown cell, code with an image output, maybe an error."""
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("secret_code_line = 1\nshow()")
    code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(PNG).decode()})]
    cells = [nbformat.v4.new_markdown_cell("# Stage <title>\nWhat to look at."), code]
    if error:
        bad = nbformat.v4.new_code_cell("raise ValueError('boom')")
        bad.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom <b>", traceback=["tb"])]
        cells.append(bad)
    nb.cells = cells
    nb.metadata["papermill"] = {
        "parameters": {"experiment": experiment}, "start_time": "2026-12-03T10:00:00.000000",
        "end_time": "2026-12-03T10:01:23.000000" if finished else None,
        "duration": 83.0 if finished else None, "exception": error or None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_render_notebook_is_standalone_with_code_hidden(tmp_path: Path) -> None:
    nb = executed_notebook(tmp_path / "exp" / "sft" / "01_sft.ipynb")
    page = render.render_notebook(nb, index_href="../index.html")
    assert page == nb.with_suffix(".html")
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text  # the figure is inside the page
    assert "<script src=" not in text  # nothing fetched from the network
    assert 'id="radlab-show-code"' in text and "#radlab-show-code:not(:checked)" in text
    assert "secret_code_line" in text  # code is there, hidden by CSS until asked for
    assert 'href="../index.html"' in text and "exp / sft · 01_sft" in text and "1 min 23 s" in text


def test_render_notebook_of_a_failed_run_says_so(tmp_path: Path) -> None:
    page = render.render_notebook(executed_notebook(tmp_path / "x.ipynb", error=True), tmp_path / "out" / "x.html")
    text = page.read_text(encoding="utf-8")
    assert "failed: ValueError: boom &lt;b&gt;" in text


def make_experiment(root: Path) -> Path:
    """<root>/exp with a done, a failed (stale), a running and a params-only (missing) run."""
    exp = root / "exp"
    done = exp / "analysis"
    executed_notebook(done / "04_analysis.ipynb")
    runs.mark_complete(done, {"final_reward": 0.123456, "global_step": 40, "model_dir": "/x/model",
                              "note": "<i onclick=alert(1)>x"})
    (done / "figures").mkdir()
    (done / "figures" / "curve one.png").write_bytes(PNG)
    (done / "findings.md").write_text("GRPO beats SFT on **both** tasks <img src=x onerror=alert(1)>.\n")
    (done / "results.csv").write_text("model,task,value\nsft,report,0.5\n<b>grpo</b>,report,0.6\n")
    (done / "extra.csv").write_text("a\n1\n")
    failed = exp / "sft"
    executed_notebook(failed / "01_sft.ipynb", finished=False)
    (failed / PROGRESS_FILE).write_text(json.dumps({"event": "step", "step": 3, "max_steps": 10, "loss": 2.5,
                                                    "time": 1.0}) + "\n")
    old = time.time() - 3600
    for p in failed.iterdir():
        os.utime(p, (old, old))
    running = exp / "grpo"
    executed_notebook(running / "03_grpo.ipynb", finished=False)
    (running / PROGRESS_FILE).write_text(json.dumps({"event": "step", "step": 5, "max_steps": 20, "reward": 0.25,
                                                     "time": time.time()}) + "\n")
    params = root.parent / "params" / "exp"
    params.mkdir(parents=True)
    for name in ("analysis", "sft", "grpo", "grpo_think"):
        (params / f"{name}.yaml").write_text("{}\n")
    return exp


def test_read_experiment_statuses(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "runs")
    infos = {r.name: r for r in render.read_experiment(exp, expected=["analysis", "sft", "grpo", "grpo_think"])}
    assert {n: r.status for n, r in infos.items()} == {
        "analysis": "done", "sft": "failed", "grpo": "running", "grpo_think": "missing"}
    assert infos["analysis"].seconds == 83.0
    assert infos["analysis"].numbers["final_reward"] == 0.123456 and "model_dir" not in infos["analysis"].numbers
    assert "interrupted" in infos["sft"].error and infos["sft"].progress["step"] == 3
    assert infos["grpo"].progress["reward"] == 0.25
    # The runner knows better than file times.
    assert render.read_run(exp / "sft", running=True).status == "running"


def test_index_links_escapes_and_is_relative(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path / "runs")
    index = render.render_index("exp", tmp_path / "runs", params_root=tmp_path / "params")
    assert index == exp / "index.html"
    text = index.read_text(encoding="utf-8")
    # pages rendered for every notebook that lacked one, except the running run's
    assert (exp / "analysis" / "04_analysis.html").exists() and (exp / "sft" / "01_sft.html").exists()
    assert not (exp / "grpo" / "03_grpo.html").exists()
    assert "href='analysis/04_analysis.html'" in text
    assert "src='analysis/figures/curve%20one.png'" in text  # thumbnail, relative and quoted
    assert "<i onclick" not in text and "&lt;i onclick=alert(1)&gt;x" in text
    assert "<img src=x" not in text and "<strong>both</strong>" in text  # findings: markdown, raw HTML escaped
    assert "&lt;b&gt;grpo&lt;/b&gt;" in text  # table cells escaped
    assert "href='analysis/extra.csv'" in text
    assert "final_reward <b>0.1235</b>" in text
    assert "step 5 / 20, reward 0.25" in text  # the running run's progress
    assert "status-missing'>missing" in text and "grpo_think" in text
    assert "http-equiv='refresh'" in text  # something is running: the page refreshes itself
    assert not list(exp.glob(".index.html*"))  # atomic: no temp file left


def test_index_shows_the_data_stage_skips_warning_first(tmp_path: Path) -> None:
    data = tmp_path / "runs" / "exp" / "data"
    executed_notebook(data / "00_data.ipynb")
    notes = ["WARNING: source 'nih' lost 40 of 60 rows (67%): check its root and layout (every row in skipped.csv)",
             "nih: 40 rows: missing image file <file> (e.g. /d/images/00000021_000.png)"]
    runs.mark_complete(data, {"skipped": 40, "skip_notes": notes})
    assert render.read_run(data).notes == notes
    text = render.render_index("exp", tmp_path / "runs", pages=False).read_text(encoding="utf-8")
    assert f"<li class='warning'>{notes[0]}</li>" in text.replace("&#x27;", "'")
    assert "<li class='note'>nih: 40 rows: missing image file &lt;file&gt; (e.g. /d/images/00000021_000.png)</li>" in text
    runs.clear_complete(data)
    runs.mark_complete(data, {"skipped": 0, "skip_notes": "not a list"})
    assert render.read_run(data).notes == []


def test_cli_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_experiment(tmp_path / "runs")
    assert main(["render", "exp", "--output-root", str(tmp_path / "runs"),
                 "--params-root", str(tmp_path / "params")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "runs" / "exp" / "index.html")
    assert main(["render", "nope", "--output-root", str(tmp_path / "runs")]) == 2
    assert "no run folders" in capsys.readouterr().err
    nb = executed_notebook(tmp_path / "by_hand.ipynb")
    assert main(["render", str(nb)]) == 0
    assert (tmp_path / "by_hand.html").exists()


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------


def _drive(cb, state, steps, *, log_every: int = 1, key: str = "loss") -> None:
    from transformers import TrainerControl, TrainingArguments

    args, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerControl()
    cb.on_train_begin(args, state, control)
    for _ in range(steps):
        state.global_step += 1
        cb.on_step_end(args, state, control)
        if state.global_step % log_every == 0:
            cb.on_log(args, state, control, logs={key: 1.0 / state.global_step, "grad_norm": 3.0})
    cb.on_train_end(args, state, control)


def test_progress_callback_writes_one_record_per_step_and_resume_appends(tmp_path: Path) -> None:
    from transformers import TrainerState

    state = TrainerState(max_steps=4)
    _drive(progress_callback(tmp_path, extra=lambda s: {"flops": s.global_step * 10, "max_flops": 40}), state, 4,
           log_every=2)
    recs = read_progress(tmp_path / PROGRESS_FILE)
    assert [r["event"] for r in recs] == ["begin", "step", "step", "step", "step", "end"]
    assert [r["step"] for r in recs] == [0, 1, 2, 3, 4, 4]
    assert all(r["max_steps"] == 4 and r["elapsed_s"] >= 0 and "time" in r for r in recs)
    # step 1 had no log yet; step 2's record carries step 2's loss; step 3 keeps the last one
    assert "loss" not in recs[1] and recs[2]["loss"] == 0.5 and recs[3]["loss"] == 0.5 and recs[4]["loss"] == 0.25
    assert recs[4]["flops"] == 40 and recs[4]["max_flops"] == 40
    # resumed at step 4 for 2 more steps: appended
    state.max_steps = 6
    _drive(progress_callback(tmp_path), state, 2, key="reward")
    recs2 = read_progress(tmp_path / PROGRESS_FILE)
    assert recs2[: len(recs)] == recs and recs2[len(recs)]["event"] == "begin" and recs2[-1]["reward"] == pytest.approx(1 / 6, abs=1e-6)
    # a fresh run (step 0) starts the file anew
    _drive(progress_callback(tmp_path), TrainerState(max_steps=1), 1)
    assert [r["event"] for r in read_progress(tmp_path / PROGRESS_FILE)] == ["begin", "step", "end"]


def test_progress_callback_echo_prints_compact_lines(tmp_path: Path) -> None:
    # What a notebook's training cell shows instead of one log dict per step: the start, each tenth, the end.
    from transformers import TrainerState

    lines: list[str] = []
    run_dir = tmp_path / "sft_more"
    _drive(progress_callback(run_dir, echo=lines.append), TrainerState(max_steps=100), 100)
    assert all(line.startswith("[progress] sft_more") for line in lines), lines
    assert 10 <= len(lines) <= 13, lines
    assert "step 0/100" in lines[0] and "step 100/100 (100%)" in lines[-1]
    assert len(read_progress(run_dir / PROGRESS_FILE)) == 102  # the file still gets every step


def test_progress_tail_reads_complete_lines_and_follows_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / PROGRESS_FILE
    tail = ProgressTail(path, since=100.0)
    assert tail.read() == []  # no file yet
    path.write_text(json.dumps({"step": 1, "time": 50.0}) + "\n" + json.dumps({"step": 2, "time": 150.0}) + "\n"
                    + '{"step": 3, "ti')
    assert [r["step"] for r in tail.read()] == [2]  # old record filtered, torn line held back
    with open(path, "a") as f:
        f.write('me": 151.0}\n')
    assert [r["step"] for r in tail.read()] == [3]
    path.unlink()
    path.write_text(json.dumps({"step": 1, "time": 200.0}) + "\n")
    assert [r["step"] for r in tail.read()] == [1]


def _records(path: Path, n: int, **extra) -> None:
    with open(path, "a") as f:
        for step in range(n + 1):
            f.write(json.dumps({"event": "step", "step": step, "max_steps": n, "elapsed_s": step * 2.0,
                                "time": time.time(), "loss": 1.0 / (step + 1), **extra}) + "\n")
        f.write(json.dumps({"event": "end", "step": n, "max_steps": n, "elapsed_s": n * 2.0, "time": time.time(),
                            **extra}) + "\n")


def test_display_plain_lines_every_tenth(tmp_path: Path) -> None:
    lines: list[str] = []
    display = ProgressDisplay(lines.append, tty=False)
    display.start("sft", tmp_path)
    path = tmp_path / PROGRESS_FILE
    for chunk in range(100):  # the runner polls while the trainer appends
        with open(path, "a") as f:
            f.write(json.dumps({"event": "step", "step": chunk + 1, "max_steps": 100, "elapsed_s": chunk + 1.0,
                                "time": time.time(), "loss": 0.5}) + "\n")
        display.poll()
    with open(path, "a") as f:
        f.write(json.dumps({"event": "end", "step": 100, "max_steps": 100, "elapsed_s": 100.0,
                            "time": time.time()}) + "\n")
    display.finish("sft")
    assert 10 <= len(lines) <= 12, lines
    assert lines[0].startswith("[progress] sft") and "step 1/100" in lines[0] and "loss 0.5" in lines[0]
    assert "step 11/100 (11%), loss 0.5, elapsed 0:11, ETA 1:29" == lines[1].split("sft")[1].strip()
    assert "step 100/100" in lines[-1] and "ETA" not in lines[-1]


def test_display_bars_on_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()
    lines: list[str] = []
    display = ProgressDisplay(lines.append, tty=True, file=out)
    for name in ("grpo", "cold_start"):
        (tmp_path / name).mkdir()
        display.start(name, tmp_path / name)
    _records(tmp_path / "grpo" / PROGRESS_FILE, 8)
    _records(tmp_path / "cold_start" / PROGRESS_FILE, 4, flops=1.0, max_flops=4.0)
    display.poll()
    assert set(display.bars) == {"grpo", "cold_start"}
    assert display.bars["grpo"].n == 8 and display.bars["grpo"].total == 8
    assert display.bars["cold_start"].total == 100  # a compute budget shows percent of it
    display.message("[3/7] grpo done")
    display.close()
    assert lines == ["[3/7] grpo done"] and not display.bars
    assert "grpo" in out.getvalue() and "step" in out.getvalue()


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------

TRAINS = (
    "import json, os, time, radlab.runs as r\n"
    "d = os.path.join(output_root, experiment, '{name}')\n"
    "os.makedirs(d, exist_ok=True)\n"
    "with open(os.path.join(d, 'progress.jsonl'), 'a') as f:\n"
    "    for step in range(1, 11):\n"
    "        f.write(json.dumps({{'event': 'step', 'step': step, 'max_steps': 10, 'elapsed_s': step * 0.1,"
    " 'time': time.time(), 'loss': 1.0 / step}}) + '\\n')\n"
    "r.mark_complete(d, {{'global_step': 10, 'final_loss': 0.1, 'skip_notes': ['x: 2 rows: reason of {name}']}})\n"
)


@pytest.mark.slow
def test_runner_renders_pages_and_index_and_shows_progress(tmp_path: Path) -> None:
    from radlab.pipeline import run_pipeline
    from radlab.vocab import NOTEBOOKS

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params" / "exp").mkdir(parents=True)
    for stage, name in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('experiment: str = "x"  # experiment\noutput_root: str = "runs"  # root')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(TRAINS.format(name=stage))]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "notebooks" / f"{name}.ipynb")
    for run in ("data", "sft"):
        (tmp_path / "params" / "exp" / f"{run}.yaml").write_text(f"stage: {run}\n")
    logs: list[str] = []
    out = tmp_path / "runs"
    res = run_pipeline("exp", root=tmp_path, output_root=out, log=logs.append, tty=False)
    assert [r.status for r in res] == ["done", "done"]
    assert (out / "exp" / "sft" / "01_sft.html").exists() and (out / "exp" / "data" / "00_data.html").exists()
    assert logs[-1] == f"index: {out / 'exp' / 'index.html'}"
    assert "    data: x: 2 rows: reason of data" in logs  # a finished run's DONE notes follow its "done" line
    index = (out / "exp" / "index.html").read_text(encoding="utf-8")
    assert "href='sft/01_sft.html'" in index and "final_loss <b>0.1</b>" in index
    progress = [line for line in logs if line.startswith("[progress] sft")]
    assert progress and "step 10/10" in progress[-1] and "loss 0.1" in progress[-1]


# --------------------------------------------------------------------------------------------
# pages for readers: progress collapsed, warnings gathered
# --------------------------------------------------------------------------------------------

BAR_LINE = render._BAR


def _bar(desc: str, k: int, n: int) -> str:
    filled = "█" * (10 * k // n)
    return f"{desc}: {100 * k // n:3d}%|{filled:<10}| {k}/{n} [00:0{k % 10}<00:01, 12.5it/s]"


def _noisy_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    warn = ("/venv/lib/python3.12/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update "
            "jupyter and ipywidgets.\n  from .autonotebook import tqdm as notebook_tqdm\n")
    user = "/x/radlab/y.py:7: UserWarning: 3 rows had no <boxes>\n  warnings.warn(msg)\n"
    a = nbformat.v4.new_code_cell("train()")
    a.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text=warn),
        # 146 updates of one bar written with carriage returns, as tqdm does, then the result.
        nbformat.v4.new_output("stream", name="stderr", text="\r".join(_bar("Map", k, 146) for k in range(147)) + "\n"),
        nbformat.v4.new_output("stream", name="stdout", text="loss 0.25 after 4 steps\n"),
        nbformat.v4.new_output("stream", name="stderr", text=user),
        # The same bars unrolled one per line (how an older nbconvert showed them), and an unfinished one.
        nbformat.v4.new_output("stream", name="stderr", text="\n".join(
            [_bar("Saving the dataset (1/1 shards)", k, 20) for k in range(21)]
            + [f"Generating: {k} examples [00:0{k}, 3.2 examples/s]" for k in range(5)]
            + [_bar("generate", k, 10) for k in range(7)]) + "\n"),
        nbformat.v4.new_output("display_data", data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "  0%|          | 0/24 [00:00<?, ?it/s]"}),
    ]
    b = nbformat.v4.new_code_cell("evaluate()")
    b.outputs = [nbformat.v4.new_output("stream", name="stderr", text=user + "\r".join(_bar("eval", k, 8) for k in range(9))),
                 nbformat.v4.new_output("execute_result", data={"text/html": "<table><tr><td>F1 0.42</td></tr></table>"},
                                        execution_count=2)]
    nb.cells = [nbformat.v4.new_markdown_cell("# Stage"), a, b]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _bar_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if BAR_LINE.search(line)]


def test_page_collapses_progress_and_gathers_warnings(tmp_path: Path) -> None:
    nb = _noisy_notebook(tmp_path / "exp" / "sft" / "01_sft.ipynb")
    assert len(_bar_lines(nb.read_text())) > 146  # the executed notebook as saved
    text = render.render_notebook(nb).read_text(encoding="utf-8")
    bars = _bar_lines(text)
    assert len(bars) <= 5 and any("generate:  60%" in line and "6/10" in line for line in bars), bars
    assert not any("Map:" in line or "Saving the dataset" in line or "Generating:" in line for line in bars)
    assert "TqdmWarning" not in text and "IProgress" not in text and "widget-view" not in text
    assert "loss 0.25 after 4 steps" in text and "F1 0.42" in text  # what the stage found stays
    # The stage's own warning: once, in the collapsed note under the title bar, with its count.
    assert text.count("3 rows had no &lt;boxes&gt;") == 1 and "warnings.warn(msg)" not in text
    assert "1 warning(s) while it ran" in text and "UserWarning: 3 rows had no &lt;boxes&gt; (×2)" in text
    assert render.tidy_stream("no bars\nhere\n", {}) == "no bars\nhere\n"  # plain text untouched
    assert render.tidy_stream("\r".join(_bar("x", k, 4) for k in range(5)), {}) == ""


@pytest.mark.slow
def test_smoke_data_page_has_no_progress_noise(smoke_root: Path) -> None:
    page = render.render_notebook(smoke_root / "00_data.ipynb", tmp_html := smoke_root.parent / "00_data_page.html")
    assert page == tmp_html
    text = page.read_text(encoding="utf-8")
    assert len(_bar_lines(text)) <= 5 and "TqdmWarning" not in text
    assert "skipped rows: 0" in text and "data:image/png;base64," in text  # the skip report and the figures
