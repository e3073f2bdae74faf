"""Re-running cells in a live kernel, in the orders a person uses (``00_data`` on smoke params).

A real IPython kernel (jupyter_client) executes the notebook's own cells: Run All; the parameters
and resolve cells again after later cells defined ``run``/``result`` (the old failure was
``ParamError: unknown parameter(s) ['result', 'run']``); one later cell again; an edited parameter
and a typo typed into the parameters cell.  The finished run folder stays byte-identical throughout.
"""

from __future__ import annotations

import ast
import hashlib
import queue
from pathlib import Path
from typing import Any

import nbformat
import pytest

from radlab import config

REPO = Path(__file__).resolve().parents[1]


def files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def edit_parameters(cell: str, **values: Any) -> str:
    """The parameters cell with some defaults replaced, as a person edits it (comments kept)."""
    lines = cell.splitlines()
    for node in ast.parse(cell).body:
        assert isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        if node.target.id in values:
            line = lines[node.lineno - 1]
            lines[node.lineno - 1] = line[:node.value.col_offset] + repr(values[node.target.id]) + line[node.value.end_col_offset:]
    return "\n".join(lines)


class Kernel:
    """A python3 kernel that runs cells with history, like JupyterLab; ``run`` returns the error or ''."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd), env=env)

    def run(self, code: str, timeout: float = 300) -> tuple[str, str]:
        """Execute ``code`` (stored in ``In``); returns ``(error 'Name: value' or '', text output)``."""
        outputs: list[str] = []
        error = ""

        def hook(msg: dict[str, Any]) -> None:
            nonlocal error
            kind, content = msg["msg_type"], msg["content"]
            if kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "stream":
                outputs.append(content["text"])
            elif kind in ("execute_result", "display_data"):
                outputs.append(content["data"].get("text/plain", ""))

        try:
            self.kc.execute_interactive(code, store_history=True, timeout=timeout, output_hook=hook)
        except queue.Empty:  # pragma: no cover - a hung kernel
            raise AssertionError(f"cell timed out: {code[:80]}") from None
        return error, "".join(outputs)

    def ok(self, code: str) -> str:
        error, out = self.run(code)
        assert not error, f"cell failed: {error}\n{code}"
        return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture()
def kernel(tmp_path: Path, papermill):
    k = Kernel(REPO, papermill.env)  # the notebook tests' environment
    yield k
    k.close()


@pytest.mark.slow
def test_rerunning_cells_in_a_live_kernel(kernel: Kernel, tmp_path: Path) -> None:
    nb = nbformat.read(REPO / "notebooks" / "00_data.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    smoke = config.load_yaml(REPO / "params" / "smoke" / "data.yaml")
    smoke["output_root"] = str(tmp_path / "runs")
    params_cell = edit_parameters(code[0], **smoke)
    run_dir = tmp_path / "runs" / "smoke" / "data"

    # Run All.
    kernel.ok(params_cell)
    for cell in code[1:]:
        kernel.ok(cell)
    assert (run_dir / "DONE").exists() and (run_dir / "params.yaml").exists()
    before = files(run_dir)

    # The parameters cell and resolve again, after later cells defined run/result.
    kernel.ok(params_cell)
    assert "n_train=24" in kernel.ok(code[1])
    # One later cell again, and the build cell with the same params: the finished stage is read back.
    assert "record" in kernel.ok(code[3])  # result.counts
    out = kernel.ok(code[2])
    assert "holds this finished data stage" in out
    kernel.ok(code[-1])  # mark_complete on a reused run keeps DONE
    assert files(run_dir) == before

    # An edited value is picked up: a finished run with other params is a clear error naming the key...
    kernel.ok(edit_parameters(params_cell, n_train=12))
    error, _ = kernel.run(code[1])
    assert error.startswith("ParamError") and "n_train: 24 -> 12" in error and "force=True" in error
    # ...and force=True lets it through (resolve only: the build cell would then replace the stage).
    kernel.ok(edit_parameters(params_cell, n_train=12, force=True))
    assert "n_train=12" in kernel.ok(code[1])
    # A typo typed into the parameters cell is named, before anything loads.
    kernel.ok(params_cell + "\nn_trian: int = 5  # typo")
    error, _ = kernel.run(code[1])
    assert error.startswith("ParamError") and "['n_trian']" in error
    # Fixing the typo (line removed, the stale global still defined) works again.
    kernel.ok(params_cell)
    assert "n_train=24" in kernel.ok(code[1])
    assert files(run_dir) == before


@pytest.mark.slow
def test_papermill_typo_is_named_before_any_work(tmp_path: Path, papermill) -> None:
    proc = papermill("01_sft.ipynb", tmp_path / "out.ipynb", output_root=tmp_path / "runs", lerning_rate=0.1,
                     timeout=240)
    assert proc.returncode != 0
    assert "ParamError" in proc.stderr and "['lerning_rate']" in proc.stderr
    assert not (tmp_path / "runs").exists(), "nothing is written before the parameters are valid"
