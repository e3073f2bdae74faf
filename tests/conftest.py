"""Fixtures shared by test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with the smoke data stage done (``notebooks/00_data.ipynb`` under papermill):
    ``<root>/smoke/data/``.  Built once per session; tests that train write their own runs beside
    it or link it into their own output root."""
    root = tmp_path_factory.mktemp("smoke_runs")
    cmd = [sys.executable, "-m", "papermill", str(REPO / "notebooks" / "00_data.ipynb"), str(root / "00_data.ipynb"),
           "-k", "python3", "--cwd", str(REPO), "--no-progress-bar", "-f", str(REPO / "params" / "smoke" / "data.yaml"),
           "-p", "output_root", str(root)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"00_data.ipynb failed:\n{proc.stderr[-4000:]}"
    assert (root / "smoke" / "data" / "sft").is_dir()
    return root
