"""Fixtures shared by test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


class Papermill:
    """Runs a stage notebook under papermill the way every notebook test does.

    ``papermill("03_grpo.ipynb", out, params="params/smoke/grpo.yaml", output_root=root, thinking=False)`` runs
    ``python -m papermill notebooks/03_grpo.ipynb <out> -k python3 --cwd <repo> --no-progress-bar -f <repo>/params/
    smoke/grpo.yaml -p output_root <root> -p thinking False`` and returns the ``CompletedProcess`` (text output).
    ``notebook`` is a name in ``notebooks/`` or a path; ``params`` is relative to the repository or absolute;
    each keyword is one ``-p name value`` (papermill reads the value's type from its text).
    """

    def __init__(self) -> None:
        # The checkout's radlab first (PYTHONPATH), offline, and quiet: tests read stderr.
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}

    def command(self, notebook: str | Path, out: Path, *, params: str | Path | None = None,
                **parameters: object) -> list[str]:
        """The papermill command line (a list for ``subprocess``)."""
        cmd = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / notebook), str(out), "-k", "python3",
               "--cwd", str(REPO), "--no-progress-bar"]
        if params is not None:
            cmd += ["-f", str(REPO / params)]
        for name, value in parameters.items():
            cmd += ["-p", name, str(value)]
        return cmd

    def __call__(self, notebook: str | Path, out: Path, *, params: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 300,
                 **parameters: object) -> subprocess.CompletedProcess[str]:
        """Run it; ``env`` adds to the shared environment (e.g. ``{"OMP_NUM_THREADS": "2"}``)."""
        return subprocess.run(self.command(notebook, out, params=params, **parameters), env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def papermill() -> Papermill:
    """The one builder of papermill commands for notebook tests (see ``Papermill``)."""
    return Papermill()


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory, papermill: Papermill) -> Path:
    """A runs folder with the smoke data stage done (``notebooks/00_data.ipynb`` under papermill):
    ``<root>/smoke/data/``.  Built once per session; tests that train write their own runs beside
    it or link it into their own output root."""
    root = tmp_path_factory.mktemp("smoke_runs")
    proc = papermill("00_data.ipynb", root / "00_data.ipynb", params="params/smoke/data.yaml", output_root=root,
                     timeout=240)
    assert proc.returncode == 0, f"00_data.ipynb failed:\n{proc.stderr[-4000:]}"
    assert (root / "smoke" / "data" / "sft").is_dir()
    return root
