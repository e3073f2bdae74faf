"""Run folders: ``runs/<experiment>/<stage>/``, written atomically and self-describing.

Each stage folder holds ``params.yaml`` (resolved parameters), ``env.json`` (git commit,
package versions, torch device), its tables (CSV/Parquet), ``figures/``, and for training
stages ``trainer_state.json``, ``log_history.csv``, checkpoints and the final ``model/``.
A stage is *complete* when its ``DONE`` marker exists; the runner skips complete stages.
A complete folder is read-only for radlab: stage functions write into it only after
``radlab.config.StageRun.begin`` (called when a stage's heavy work starts) cleared ``DONE``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

DONE_MARKER = "DONE"

TRACKED_PACKAGES = (
    "radlab",
    "torch",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "papermill",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "radgraph",
    "vllm",
    "deepspeed",
)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file: either the old content or the new.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-JSON values via ``str``)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_yaml(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> Path:
    """Atomically write a flat mapping as YAML (floats keep a dot, so PyYAML re-reads them)."""
    return write_text(path, yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False))


def write_table(df: Any, path: str | os.PathLike[str]) -> Path:
    """Atomically write a pandas DataFrame as ``.csv`` or ``.parquet`` by suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"{path}: unsupported table suffix {path.suffix!r} (use .csv or .parquet)")
    return path


def save_figure(fig: Any, run_dir: str | os.PathLike[str], name: str, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save a matplotlib figure as ``<run_dir>/figures/<name>.<fmt>`` (atomic per file)."""
    out = []
    for fmt in formats:
        path = Path(run_dir) / "figures" / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
        out.append(path)
    return out


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str:
    """Current git commit (with ``-dirty`` if the tree has changes), or ``"unknown"``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> str:
    """The CPU's model name (``/proc/cpuinfo``'s first ``model name``, else ``platform.processor()``;
    ``"unknown"`` when neither says): numbers computed on CPU can differ between CPU models."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def environment_info() -> dict[str, Any]:
    """What ``env.json`` records: commit, versions, python, platform, CPU model and torch build/device.

    ``torch_build`` is ``torch.__version__`` with its build suffix (``2.13.0+cpu``, ``2.9.0+cu128``)
    and ``torch_cuda`` the CUDA version it was built for (``None`` for CPU builds).
    """
    info: dict[str, Any] = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "packages": package_versions(),
    }
    try:
        import torch

        info["torch_build"] = str(torch.__version__)
        info["torch_cuda"] = torch.version.cuda
        info["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
        info["cuda_device_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except Exception as exc:  # pragma: no cover - torch is a hard dependency
        info["torch_device"] = f"unavailable: {exc}"
    return info


def stage_dir(output_root: str | os.PathLike[str], experiment: str, stage: str) -> Path:
    """``<output_root>/<experiment>/<stage>``."""
    return Path(output_root) / experiment / stage


def is_complete(run_dir: str | os.PathLike[str]) -> bool:
    """True when the stage wrote its ``DONE`` marker."""
    return (Path(run_dir) / DONE_MARKER).exists()


def mark_complete(run_dir: str | os.PathLike[str], summary: Mapping[str, Any] | None = None) -> Path:
    """Write the ``DONE`` marker (JSON summary inside) as the stage's last act.

    A folder that already holds ``DONE`` is a finished run that this session reused (its stage
    functions returned the saved outputs; ``StageRun.begin`` clears ``DONE`` when a run really
    starts), so its marker is left as it is.
    """
    marker = Path(run_dir) / DONE_MARKER
    if marker.exists():
        return marker
    return write_json(marker, dict(summary or {}))


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object file of a run folder (``trainer_state.json``, ``DONE``, ...); ``{}`` when the
    file is absent, empty, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON summary in a run's ``DONE`` marker (``{}`` when absent or unreadable)."""
    return read_json(Path(run_dir) / DONE_MARKER)


def clear_complete(run_dir: str | os.PathLike[str]) -> None:
    """Remove the ``DONE`` marker so a rerun is not skipped."""
    marker = Path(run_dir) / DONE_MARKER
    if marker.exists():
        marker.unlink()
