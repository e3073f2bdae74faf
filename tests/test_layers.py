"""radlab's layers: no import cycle (imports inside functions included), a leaf vocabulary, and the
import-linter contracts of pyproject.toml (docs/architecture.md, "Layers")."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def import_graph(package: Path) -> dict[str, set[str]]:
    """``{module: {radlab modules it imports}}`` for every ``.py`` under ``package`` (a folder whose
    parent is the import root), from the AST: every ``import`` anywhere in the file counts, also
    inside functions and ``if TYPE_CHECKING`` blocks.  ``from a.b import c`` imports ``a.b.c`` when
    that is a module, else ``a.b``; a module never depends on its own ancestors (packages)."""
    base = package.parent
    mods: dict[str, Path] = {}
    for p in package.rglob("*.py"):
        name = ".".join(p.relative_to(base).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                b = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    b = ".".join(parts + ([b] if b else []))
                targets = [b] + [f"{b}.{a.name}" for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != m and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_cycle_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "low.py": "def f():\n    from pkg.high import g\n    return g\n",  # the function-level edge closes the cycle
        "high.py": "from pkg import low\n",
        "sub/__init__.py": "from . import a\n",  # a package importing its own module is no cycle
        "sub/a.py": "from .. import low\nfrom ..sub import b\n",
        "sub/b.py": "import pkg.low as L\n",
    })
    edges = import_graph(pkg)
    assert edges["pkg.low"] == {"pkg.high"} and edges["pkg.sub.a"] == {"pkg.low", "pkg.sub.b"}
    assert cycles(edges) == [["pkg.high", "pkg.low"]]
    (pkg / "low.py").write_text("def f():\n    return 1\n")
    assert cycles(import_graph(pkg)) == []


def test_radlab_has_no_import_cycle() -> None:
    found = cycles(import_graph(ROOT / "radlab"))
    assert found == [], f"radlab modules import each other in a circle (imports inside functions count): {found}"


def test_vocab_and_params_are_leaves() -> None:
    edges = import_graph(ROOT / "radlab")
    assert edges["radlab.vocab"] == set(), "radlab.vocab is the bottom layer: it imports nothing from radlab"
    assert edges["radlab.params"] <= {"radlab.vocab", "radlab.runs", "radlab.formats"}, edges["radlab.params"]


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter not installed (pip install -e '.[dev]')")
def test_import_linter_contracts_are_kept() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is installed but its lint-imports command is not on the PATH"
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout and "Contracts: " in res.stdout, res.stdout[-2000:]
