"""Live training progress: trainers append to ``<run_dir>/progress.jsonl``, the runner tails it.

One JSON object a line, one line per optimizer step (written when the step's logs are in, so
``loss``/``reward`` are that step's when it logged), plus a ``begin`` and an ``end`` line::

    {"event": "step", "step": 12, "max_steps": 300, "elapsed_s": 41.3, "time": 1764770000.1,
     "epoch": 0.4, "loss": 1.93}

``elapsed_s`` counts this training session (a resumed run starts again from 0 at its resumed
``step``); ``time`` is the wall clock, so a reader can tell a record of this session from an old
one.  A fresh run (step 0 at the start) starts the file anew; a resumed run appends.  Callers add
keys (e.g. ``flops`` and ``max_flops`` for a compute budget) with ``extra``.

This module imports nothing heavy: the runner reads progress without importing transformers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"
# Logged metrics carried into progress records (GRPO logs "reward", SFT "loss").
METRICS = ("loss", "reward")


def progress_callback(
    run_dir: str | os.PathLike[str],
    *,
    extra: Callable[[Any], dict[str, Any]] | None = None,
    echo: Callable[[str], None] | None = None,
) -> Any:
    """A ``TrainerCallback`` appending progress records to ``<run_dir>/progress.jsonl``.

    ``extra(state)`` returns more keys for each record (``state`` is transformers' TrainerState).
    ``echo`` also prints the records as the runner's plain lines (the start, every tenth of the
    run, the end): the compact progress a notebook cell shows instead of a log dict per step.
    Only the main process writes.
    """
    from transformers import TrainerCallback

    path = Path(run_dir) / PROGRESS_FILE

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.path = path
            self.start = 0.0
            self.latest: dict[str, float] = {}
            self.pending: dict[str, Any] | None = None  # a step's record waiting for its logs
            self.display = ProgressDisplay(echo, tty=False) if echo is not None else None

        def _record(self, state: Any, event: str) -> dict[str, Any]:
            record: dict[str, Any] = {
                "event": event,
                "step": int(state.global_step),
                "max_steps": int(state.max_steps or 0),
                "elapsed_s": round(time.perf_counter() - self.start, 3),
                "time": round(time.time(), 3),
                "epoch": None if state.epoch is None else round(float(state.epoch), 4),
            }
            if extra is not None:
                record.update(extra(state))
            return record

        def _write(self, state: Any, record: dict[str, Any]) -> None:
            if state.is_world_process_zero:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({**record, **self.latest}, default=str) + "\n")
                if self.display is not None:
                    self.display.show(self.path.parent.name, [{**record, **self.latest}])

        def _flush(self, state: Any) -> None:
            if self.pending is not None:
                self._write(state, self.pending)
                self.pending = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()
            self.latest = {}
            self.pending = None
            if state.is_world_process_zero:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if state.global_step == 0 and self.path.exists():
                    self.path.unlink()  # a fresh run: the old file described another training
            self._write(state, self._record(state, "begin"))

        def on_step_end(self, args, state, control, **kwargs):
            # A step's logs arrive after on_step_end: its record is written on_log, or at the next step.
            self._flush(state)
            self.pending = self._record(state, "step")

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in METRICS:
                value = (logs or {}).get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.latest[key] = round(float(value), 6)
            if self.pending is not None and self.pending["step"] == state.global_step:
                self._flush(state)

        def on_train_end(self, args, state, control, **kwargs):
            self._flush(state)
            self._write(state, self._record(state, "end"))

    return ProgressCallback()


def read_progress(path: str | os.PathLike[str], *, since: float = 0.0) -> list[dict[str, Any]]:
    """The records of a progress file written at or after ``since`` (unix time); a torn or
    foreign last line is skipped (the writer may be mid-line)."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and float(rec.get("time", 0.0) or 0.0) >= since:
            records.append(rec)
    return records


class ProgressTail:
    """Incrementally read new complete records of one progress file (the runner polls this)."""

    def __init__(self, path: str | os.PathLike[str], *, since: float = 0.0) -> None:
        self.path = Path(path)
        self.since = since
        self.offset = 0
        self.inode = -1
        self._buffer = b""

    def read(self) -> list[dict[str, Any]]:
        """Records appended since the last call (a replaced or truncated file restarts at 0)."""
        try:
            st = self.path.stat()
        except OSError:
            return []
        if st.st_ino != self.inode or st.st_size < self.offset:
            self.inode, self.offset, self._buffer = st.st_ino, 0, b""
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        *lines, self._buffer = (self._buffer + chunk).split(b"\n")
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and float(rec.get("time", 0.0) or 0.0) >= self.since:
                out.append(rec)
        return out


def fraction_done(rec: dict[str, Any]) -> float | None:
    """How far a run is, 0..1: its compute budget when it has one, else step / max_steps."""
    if rec.get("max_flops") and rec.get("flops") is not None:
        return min(1.0, float(rec["flops"]) / float(rec["max_flops"]))
    if rec.get("max_steps"):
        return min(1.0, float(rec.get("step") or 0) / float(rec["max_steps"]))
    return None


def describe(rec: dict[str, Any]) -> str:
    """``step 120/1600, loss 1.234`` (what a progress line and a bar's postfix say)."""
    parts = [f"step {rec.get('step', 0)}" + (f"/{rec['max_steps']}" if rec.get("max_steps") else "")]
    if rec.get("max_flops") and rec.get("flops") is not None:
        parts.append(f"{100 * float(rec['flops']) / float(rec['max_flops']):.0f}% of FLOPs budget")
    for key in METRICS:
        if isinstance(rec.get(key), (int, float)):
            parts.append(f"{key} {rec[key]:.4g}")
    return ", ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


class ProgressDisplay:
    """Shows the progress of the runs the runner has started, from their ``progress.jsonl``.

    On a terminal: one tqdm bar per running run (step of max_steps, or percent of a compute
    budget; ETA; last loss or reward).  Otherwise (CI logs): plain lines through ``log``, one at
    the start, one each time a run passes another ``every`` of its total (10 % by default), one
    at the end.  Call :meth:`poll` often; it only reads what was appended.
    """

    def __init__(self, log: Callable[[str], None] = print, *, tty: bool | None = None, every: float = 0.1,
                 file: Any = None) -> None:
        import sys

        self.log = log
        self.file = file if file is not None else sys.stdout
        self.tty = self.file.isatty() if tty is None else tty
        self.every = every
        self.tails: dict[str, ProgressTail] = {}
        self.bars: dict[str, Any] = {}
        self.printed: dict[str, float] = {}
        self.last_step: dict[str, Any] = {}
        self.last: dict[str, dict[str, Any]] = {}

    def start(self, name: str, run_dir: str | os.PathLike[str]) -> None:
        """Follow ``<run_dir>/progress.jsonl`` for records written from now on."""
        self.tails[name] = ProgressTail(Path(run_dir) / PROGRESS_FILE, since=time.time())

    def message(self, text: str) -> None:
        """``log(text)`` without tearing the bars."""
        if self.bars:
            from tqdm import tqdm

            with tqdm.external_write_mode(file=self.file):
                self.log(text)
        else:
            self.log(text)

    def poll(self) -> None:
        """Read new records of every followed run and update its bar or print its line."""
        for name, tail in list(self.tails.items()):
            records = tail.read()
            if records:
                self.show(name, records)

    def finish(self, name: str) -> None:
        """Stop following ``name`` (its last records are shown first)."""
        if name in self.tails:
            self.poll()
            del self.tails[name]
        bar = self.bars.pop(name, None)
        if bar is not None:
            bar.close()

    def close(self) -> None:
        for name in list(self.tails):
            self.finish(name)

    def show(self, name: str, records: list[dict[str, Any]]) -> None:
        """Show the latest of ``records`` of run ``name`` (a bar update, or a plain line when due)."""
        rec = records[-1]
        self.last[name] = rec
        frac = fraction_done(rec)
        if self.tty:
            self._bar(name, rec, frac)
            return
        # Plain lines: the first record, each further `every` of the run, and the end (if not just shown).
        shown = self.printed.get(name)
        end = rec.get("event") == "end" and self.last_step.get(name) != rec.get("step")
        if end or shown is None or (frac is not None and frac >= shown + self.every):
            elapsed = float(rec.get("elapsed_s") or 0.0)
            head, *rest = describe(rec).split(", ")
            if frac is not None:
                head += f" ({100 * frac:.0f}%)"
            rest.append(f"elapsed {_clock(elapsed)}")
            if frac and 0 < frac < 1 and rec.get("event") != "end":
                rest.append(f"ETA {_clock(elapsed * (1 - frac) / frac)}")
            self.log(f"[progress] {name:<11} " + ", ".join([head, *rest]))
            self.printed[name] = frac if frac is not None else 0.0
            self.last_step[name] = rec.get("step")

    def _bar(self, name: str, rec: dict[str, Any], frac: float | None) -> None:
        from tqdm import tqdm

        compute = bool(rec.get("max_flops"))
        n = round(100 * frac, 1) if compute and frac is not None else int(rec.get("step") or 0)
        bar = self.bars.get(name)
        if bar is None:
            # initial: a resumed run's bar starts at its resumed step, so the rate (and ETA) is this session's.
            total = 100 if compute else (int(rec["max_steps"]) if rec.get("max_steps") else None)
            bar = tqdm(total=total, initial=n, desc=f"{name:<11}", unit="%" if compute else "step", file=self.file,
                       position=len(self.bars), leave=False, dynamic_ncols=True)
            self.bars[name] = bar
        bar.set_postfix_str(", ".join(describe(rec).split(", ")[1:]), refresh=False)
        if n > bar.n:
            bar.update(n - bar.n)
        else:
            bar.refresh()
