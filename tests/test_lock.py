"""requirements/lock.txt pins every requirement of pyproject.toml, with the CPU torch, and `make install` uses it."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
LOCKED_EXTRAS = ("dev", "lock")  # the extras `make lock` compiles (gpu is left to GPU users)


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a pip-compile output; raises on a line that is not ``name==version``."""
    pins: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip() or line.startswith("-"):
            raise ValueError(f"{path}:{n}: {raw!r} is not a 'name==version' pin")
        pins[canonicalize_name(name.strip())] = version.strip()
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_read_lock_rejects_a_line_that_is_not_a_pin(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# header\nPyYAML==6.0.2            # via radlab\n\n")
    assert read_lock(good) == {"pyyaml": "6.0.2"}
    for bad in ("numpy>=1.26\n", "--extra-index-url file:///opt/pypi\n", "-e .\n", "numpy==\n"):
        (tmp_path / "bad.txt").write_text(bad)
        with pytest.raises(ValueError, match="bad.txt:1"):
            read_lock(tmp_path / "bad.txt")


def test_lock_pins_every_requirement_of_pyproject_within_its_range() -> None:
    pins = read_lock(LOCK)
    for req in project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not pinned in {LOCK.name}: run make lock"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), \
            f"{LOCK.name} pins {req.name}=={pins[name]} outside pyproject's {req}: run make lock"


def test_lock_holds_the_cpu_torch_and_no_cuda_packages() -> None:
    pins = read_lock(LOCK)
    torch = Version(pins["torch"])
    assert torch.public == "2.13.0" and torch.local in (None, "cpu"), pins["torch"]
    cuda = sorted(n for n in pins if n.startswith("nvidia-") or n in ("triton", "pytorch-triton"))
    assert not cuda, f"CUDA packages in {LOCK.name}: {cuda}"
    # torch's own dependencies are pinned too (the CPU build's metadata: no nvidia-*, no triton).
    for dep in ("filelock", "fsspec", "jinja2", "networkx", "sympy", "typing-extensions", "setuptools"):
        assert dep in pins, dep


def _make(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-C", str(venv.parent), f"VENV={venv}", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_install_installs_the_lock_and_its_stamp_follows_the_lock(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml", "requirements/lock.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()  # an existing venv: make never creates one here

    dry = _make(venv, "-n", "install")
    assert dry.returncode == 0, dry.stderr
    pip_lines = [ln for ln in dry.stdout.splitlines() if "pip install" in ln]
    # The lock, less torch (an importable torch is kept), then radlab without resolving anything else.
    assert any("requirements/lock.txt" in ln and "-r /dev/stdin" in ln and "^torch==" in ln for ln in pip_lines), \
        dry.stdout
    assert any("--no-deps -e ." in ln for ln in pip_lines), dry.stdout
    assert not any("-e ." in ln and "--no-deps" not in ln for ln in pip_lines), dry.stdout
    assert any('"torch==2.13.0+cpu"' in ln or '"torch==2.13.0"' in ln for ln in pip_lines), dry.stdout

    # The stamp the recipe touches makes install up to date; a changed lock makes it stale again.
    stamp = next(ln.split()[-1] for ln in dry.stdout.splitlines() if ln.startswith("touch "))
    Path(stamp).touch()
    assert _make(venv, "-q", "install").returncode == 0
    with (tmp_path / "requirements/lock.txt").open("a") as f:
        f.write("# edited\n")
    assert _make(venv, "-q", "install").returncode == 1
