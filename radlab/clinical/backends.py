"""Report annotator backends: the offline rules annotator and RadGraph-XL out of process.

``annotate(texts, backend)`` returns RadGraph-format annotations ``{"text", "entities": {id:
{"tokens", "label", "relations"}}}`` from ``"rules"`` (:func:`radlab.clinical.annotate`, offline,
cached per text) or ``"radgraph-xl"`` (radgraph 0.1.18 in the python named by
``RADLAB_RADGRAPH_PYTHON``, one long-lived worker process; weights never downloaded).  Every report
metric and reward that needs annotations goes through here.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

Annotation = dict[str, Any]

ANNOTATOR_BACKENDS = ("rules", "radgraph-xl")
RADGRAPH_PYTHON_ENV = "RADLAB_RADGRAPH_PYTHON"
RADGRAPH_CACHE_ENV = "RADLAB_RADGRAPH_CACHE"


class BackendUnavailable(RuntimeError):
    """A scorer backend (annotator, BERTScore, CheXbert) is not usable in this environment.

    Rewards re-raise it instead of scoring 0: it is a configuration error, not model output.
    """


def check_backend(backend: str, need: Sequence[str] = ("annotate",)) -> None:
    """Raise :class:`BackendUnavailable` (cheaply, without loading models) if ``backend`` cannot run.

    ``need`` names the ``radlab.clinical`` functions the caller uses (``chexpert_labels`` is needed
    for the CheXpert metrics with any backend).
    """
    if backend == "rules" or "chexpert_labels" in need:
        try:
            import radlab.clinical as clinical
        except ImportError as exc:
            raise BackendUnavailable(f"radlab.clinical failed to import: {exc}") from exc
        missing = [f for f in need if not callable(getattr(clinical, f, None))]
        if missing:
            raise BackendUnavailable(f"radlab.clinical lacks {missing}")
        if backend == "rules":
            return
    if backend == "radgraph-xl":
        python = os.environ.get(RADGRAPH_PYTHON_ENV, "")
        if not python:
            raise BackendUnavailable(
                "annotator backend 'radgraph-xl' runs radgraph 0.1.18 out of process (its model loading breaks "
                f"under transformers 5): set {RADGRAPH_PYTHON_ENV} to a python with radgraph==0.1.18 and "
                "transformers<5, and put the radgraph-xl weights in its cache "
                f"(or {RADGRAPH_CACHE_ENV}/radgraph-xl). radlab never downloads them."
            )
        if not os.path.exists(python):
            raise BackendUnavailable(f"{RADGRAPH_PYTHON_ENV}={python!r} does not exist")
        return
    raise ValueError(f"unknown annotator backend {backend!r}; expected one of {ANNOTATOR_BACKENDS}")


# Runs inside RADLAB_RADGRAPH_PYTHON.  Protocol: one JSON list of texts per stdin line, one JSON
# object per stdout line ({"ready"}, {"annotations": [...]}, or {"error": str}).  Library prints
# are sent to stderr so they cannot corrupt the protocol; HF offline flags forbid downloads, and the
# weights directory is checked first because RadGraph() would otherwise download it.
_RADGRAPH_WORKER = r"""
import json, os, sys
proto = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr
def reply(obj):
    proto.write(json.dumps(obj) + "\n")
    proto.flush()
try:
    import radgraph
    from radgraph.radgraph import CACHE_DIR
    cache = os.environ.get("RADLAB_RADGRAPH_CACHE") or CACHE_DIR
    model_dir = os.path.join(cache, "radgraph-xl")
    if not os.path.isdir(model_dir) or not os.listdir(model_dir):
        reply({"error": "radgraph-xl weights not found at " + model_dir + " (radlab never downloads them; "
               "unpack radgraph-xl.tar.gz there or set RADLAB_RADGRAPH_CACHE)"})
        sys.exit(0)
    model = radgraph.RadGraph(model_type="radgraph-xl", model_cache_dir=cache, cuda=-1)
except Exception as exc:
    reply({"error": "radgraph-xl failed to load: %s: %s" % (type(exc).__name__, exc)})
    sys.exit(0)
reply({"ready": True})
for line in sys.stdin:
    texts = json.loads(line)
    try:
        out = model(texts)
        reply({"annotations": [out.get(str(i), {"text": t, "entities": {}}) for i, t in enumerate(texts)]})
    except Exception as exc:
        reply({"error": "radgraph-xl inference failed: %s: %s" % (type(exc).__name__, exc)})
"""


class _RadGraphXLWorker:
    """One long-lived radgraph-xl subprocess (model loaded once) plus a per-text cache."""

    def __init__(self, python: str, cache_dir: str) -> None:
        self.python = python
        self.cache_dir = cache_dir
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._cache: dict[str, Annotation] = {}
        self._lock = threading.Lock()

    def _fail(self, message: str) -> BackendUnavailable:
        self._stderr.seek(0)
        tail = self._stderr.read()[-2000:]
        self.close()
        return BackendUnavailable(message + (f"\n--- radgraph-xl worker stderr (tail) ---\n{tail}" if tail else ""))

    def _request(self, payload: object) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        if payload is not None:
            self._proc.stdin.write(json.dumps(payload) + "\n")
            self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise self._fail("radgraph-xl worker exited unexpectedly")
        reply = json.loads(line)
        if "error" in reply:
            raise self._fail(reply["error"])
        return reply

    def _start(self) -> None:
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if self.cache_dir:
            env[RADGRAPH_CACHE_ENV] = self.cache_dir
        self._proc = subprocess.Popen(
            [self.python, "-c", _RADGRAPH_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
        )
        self._request(None)  # wait for {"ready": true}

    def annotate(self, texts: Sequence[str]) -> list[Annotation]:
        with self._lock:
            todo = list(dict.fromkeys(t for t in texts if t and t not in self._cache))
            if todo:
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                anns = self._request(todo)["annotations"]
                self._cache.update(zip(todo, anns))
            return [self._cache[t] if t else {"text": "", "entities": {}} for t in texts]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None


_WORKERS: dict[tuple[str, str], _RadGraphXLWorker] = {}


@atexit.register
def _close_workers() -> None:
    for worker in _WORKERS.values():
        worker.close()


def annotate(texts: Sequence[str], backend: str = "rules") -> list[Annotation]:
    """RadGraph-format annotations ``{"text", "entities": {id: {"tokens","label","relations"}}}``.

    ``rules`` is :func:`radlab.clinical.annotate` (offline, cached per text).  ``radgraph-xl`` runs
    radgraph 0.1.18 in the python named by ``RADLAB_RADGRAPH_PYTHON`` (weights from its cache or
    ``RADLAB_RADGRAPH_CACHE``; never downloaded).  ``[n] str -> [n] dict``.
    """
    texts = [t if isinstance(t, str) else "" for t in texts]
    check_backend(backend)
    if backend == "rules":
        from radlab import clinical

        return list(clinical.annotate(texts))
    key = (os.environ[RADGRAPH_PYTHON_ENV], os.environ.get(RADGRAPH_CACHE_ENV, ""))
    if key not in _WORKERS:
        _WORKERS[key] = _RadGraphXLWorker(*key)
    return _WORKERS[key].annotate(texts)
