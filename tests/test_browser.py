"""The JupyterLab loop in a real browser: Debian's chromium driven by Playwright for Python.

Steps (screenshots go to the test's ``tmp_path``):

1. fixtures: the smoke data stage (shared with the other smoke tests), then the smoke ``sft`` run through
   ``radlab run``'s runner into a temporary output root (nothing is written to ``runs/``), which also
   renders its HTML page and ``index.html``;
2. a copy of ``notebooks/03_grpo.ipynb`` whose parameters cell holds ``params/smoke/grpo.yaml`` and
   that output root (what a person types into the cell) is served by JupyterLab on 127.0.0.1, a free
   port and a random token;
3. Run All: every code cell runs, none shows an error, and a figure renders (an ``<img>`` in an
   output area that the browser decoded);
4. the ``max_steps`` line of the parameters cell is edited (and ``force``, since the run is finished),
   then the parameters, resolve and training cells are re-run: the training cell's summary and the run
   folder's ``trainer_state.json`` show the new step count;
5. the index is rebuilt (``radlab render``) and opened from disk: every image decodes, every link
   points at an existing file, and every linked HTML page opens with its own images decoded.

The server (and its kernels) is stopped whatever happens.  Without chromium or Playwright the test is
skipped, except under CI (``CI=true``), where that is a failure: CI must run it.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from radlab import render
from radlab.config import load_yaml
from radlab.pipeline import run_pipeline

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RADLAB_CHROMIUM", "/usr/bin/chromium")
NOTEBOOK = "03_grpo.ipynb"
EDIT = {"max_steps": 3, "force": True}  # the second round: one more step than params/smoke/grpo.yaml
TIMEOUT_MS = 150_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_browser() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        message = "real-browser test needs " + " and ".join(missing)
        if _in_ci():
            pytest.fail(message + "; CI must run this test (.ci/run installs chromium)")
        pytest.skip(message)


def set_parameters(source: str, values: dict[str, Any]) -> str:
    """The parameters cell ``source`` with the ``name: type = value  # help`` lines of ``values`` changed.

    Raises ``KeyError`` naming a value the cell does not declare.
    """
    lines = source.splitlines()
    seen = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in values:
            i, name = node.lineno - 1, node.target.id
            line = lines[i]
            lines[i] = line[: node.value.col_offset] + repr(values[name]) + line[node.value.end_col_offset:]
            seen.add(name)
    if set(values) - seen:
        raise KeyError(f"the parameters cell does not declare {sorted(set(values) - seen)}")
    return "\n".join(lines)


def parameter_line(source: str, name: str) -> str:
    """The line of the parameters cell that declares ``name``."""
    return next(line for line in source.splitlines() if line.startswith(f"{name}:"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def smoke(smoke_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The smoke SFT run (radlab's runner, on the session's smoke data) in a temporary output root,
    and a JupyterLab folder with the smoke GRPO notebook."""
    _require_browser()
    t0 = time.perf_counter()
    base = tmp_path_factory.mktemp("browser")
    out = base / "runs"
    (out / "smoke").mkdir(parents=True)
    (out / "smoke" / "data").symlink_to(smoke_root / "smoke" / "data")
    logs: list[str] = []
    results = run_pipeline("smoke", only=["sft"], output_root=out, root=REPO, log=logs.append, tty=False)
    assert [r.status for r in results] == ["done"], "\n".join(logs)
    lab = base / "lab"
    lab.mkdir()
    nb = nbformat.read(REPO / "notebooks" / NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {k: v for k, v in load_yaml(REPO / "params" / "smoke" / "grpo.yaml").items() if k != "stage"}
    cell.source = set_parameters(cell.source, {**values, "output_root": str(out)})
    nbformat.write(nb, lab / NOTEBOOK)
    print(f"browser fixture: smoke sft run in {time.perf_counter() - t0:.1f} s")
    return {"out": out, "lab": lab, "notebook": lab / NOTEBOOK}


@pytest.fixture()
def jupyterlab(smoke: dict[str, Path], tmp_path: Path, papermill) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 (free port, random token) serving the lab folder; yields its
    URL with the token.  Stopped with its kernels (its whole process group) at the end."""
    port, token = _free_port(), secrets.token_urlsafe(24)
    settings = tmp_path / "lab_settings"
    # Every cell in the DOM (no windowing), no news or update toasts over the screenshots.
    for plugin, value in (("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                          ("@jupyterlab/apputils-extension/notification",
                           {"fetchNews": "false", "checkForUpdates": False})):
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    # The notebook tests' environment (this checkout's radlab first, offline), JupyterLab's folders private.
    env = {**papermill.env, "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={smoke['lab']}", "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield f"{url}|{token}"
    finally:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(req, timeout=10)
            proc.wait(timeout=20)
        except Exception:
            pass
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Kernels the server started are in its session; none may outlive the test.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


# JavaScript run in the page: the notebook as JupyterLab's model holds it (the app is exposed by
# --LabApp.expose_app_in_browser), and what its cells show.
_MODEL = "() => window.jupyterapp.shell.currentWidget.content.model.toJSON()"
_PROMPTS = ("() => Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'))"
            ".map(e => e.textContent.trim())")
_IMAGES = ("(sel) => Array.from(document.querySelectorAll(sel))"
           ".map(i => ({src: (i.getAttribute('src') || '').slice(0, 80), w: i.naturalWidth, done: i.complete}))")


def _errors(notebook: dict[str, Any]) -> list[str]:
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(notebook["cells"])
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def _wait_until_run(page: Any, done: Any, what: str) -> dict[str, Any]:
    """Poll the notebook model until ``done(model)``; fail at once when a cell shows an error."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        model = page.evaluate(_MODEL)
        errors = _errors(model)
        assert not errors, f"{what}: a cell shows an error: {errors}"
        prompts = page.evaluate(_PROMPTS)
        if "[*]:" not in prompts and done(model):
            return model
        assert time.monotonic() < deadline, f"{what}: not finished after {TIMEOUT_MS / 1000:.0f} s; prompts {prompts}"
        page.wait_for_timeout(500)


def _code_cells(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in model["cells"] if c["cell_type"] == "code"]


def _text(cell: dict[str, Any]) -> str:
    parts = []
    for o in cell.get("outputs", []):
        data = o.get("data", {}).get("text/plain") or o.get("text") or ""
        parts.append("".join(data) if isinstance(data, list) else data)
    return "\n".join(parts)


@pytest.mark.slow
def test_jupyterlab_loop_and_rendered_index(smoke: dict[str, Path], jupyterlab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url, token = jupyterlab.split("|")
    run_dir = smoke["out"] / "smoke" / "grpo"
    t0 = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-CodeCell .cm-content")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status"
                                   " === 'idle'")
            page.screenshot(path=str(tmp_path / "01_opened.png"))

            # 3. Run All, through the menu as a person does.
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            model = _wait_until_run(page, lambda m: all(c.get("execution_count") for c in _code_cells(m)), "Run All")
            figures = page.evaluate(_IMAGES, ".jp-OutputArea-output img")
            if figures:
                page.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "02_run_all.png"))
            assert figures and all(f["w"] > 0 for f in figures), f"no decoded figure in an output area: {figures}"
            first_state = json.loads((run_dir / "trainer_state.json").read_text())
            assert first_state["global_step"] == 2  # params/smoke/grpo.yaml

            # 4. Edit max_steps (and force) in the parameters cell, re-run parameters, resolve and training.
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            params_cell = cells.nth(0)
            source = _code_cells(model)[0]["source"]
            for name, value in EDIT.items():
                line = parameter_line(source, name)
                target = params_cell.locator(".cm-line").filter(has_text=line.split("#")[0].strip()).first
                target.click()
                page.keyboard.press("End")
                page.keyboard.press("Shift+Home")
                page.keyboard.insert_text(set_parameters(line, {name: value}))
            page.keyboard.press("Shift+Enter")  # runs the parameters cell, selects the resolve cell
            page.keyboard.press("Shift+Enter")  # runs resolve
            code = _code_cells(model)
            train_index = next(i for i, c in enumerate(code) if "train_grpo(" in c["source"])
            before = code[train_index]["execution_count"]
            cells.nth(train_index).locator(".jp-InputArea-prompt").click()
            page.keyboard.press("Shift+Enter")
            model = _wait_until_run(
                page, lambda m: (_code_cells(m)[train_index].get("execution_count") or 0) > before, "re-run")
            cells.nth(train_index).scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "03_rerun.png"))
            code = _code_cells(model)
            assert all(parameter_line(code[0]["source"], k).startswith(f"{k}: ") for k in EDIT)
            assert "max_steps: int = 3" in code[0]["source"]
            summary = _text(code[train_index])
            assert "'global_step': 3" in summary, summary
            assert json.loads((run_dir / "trainer_state.json").read_text())["global_step"] == 3
            print(f"browser: notebook steps took {time.perf_counter() - t0:.1f} s")

            # 5. The rendered index from the run folders alone: images decode, links resolve and open.
            index = render.render_index("smoke", smoke["out"], params_root=REPO / "params")
            page.goto(index.as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(tmp_path / "04_index.png"), full_page=True)
            images = page.evaluate(_IMAGES, "img")
            assert len(images) >= 3 and all(i["w"] > 0 for i in images), f"broken images: {images}"
            assert page.locator("#run-sft .status").inner_text() == "done"
            # grpo: trained in the kernel, its finishing cells not re-run yet; the index shows its figures
            assert page.locator("#run-grpo img").count() >= 1
            hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]'))"
                                  ".map(a => [a.getAttribute('href'), a.href])")
            pages = []
            for rel, absolute in hrefs:
                if rel.startswith("#"):
                    assert page.locator(f"[id='{rel[1:]}']").count() == 1, rel
                    continue
                target = Path(urllib.request.url2pathname(absolute.removeprefix("file://")))
                assert target.exists(), f"index links {rel} -> {target}, which does not exist"
                if target.suffix == ".html":
                    pages.append(absolute)
            assert any(u.endswith("/sft/01_sft.html") for u in pages), pages
            for i, page_url in enumerate(pages):
                page.goto(page_url)
                page.wait_for_load_state("load")
                if i == 0:
                    page.screenshot(path=str(tmp_path / "05_page.png"))
                assert "radlab-show-code" in page.content()
                imgs = page.evaluate(_IMAGES, "img")
                assert all(im["w"] > 0 for im in imgs), f"{page_url}: broken images {imgs}"
        finally:
            browser.close()
    keep = os.environ.get("RADLAB_BROWSER_SCREENSHOTS")
    if keep:  # copies for a person to look at (tmp_path is pruned by pytest)
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in tmp_path.glob("*.png"):
            shutil.copy(shot, Path(keep) / shot.name)
    print(f"browser: screenshots in {tmp_path}")
