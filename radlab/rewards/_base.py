"""Shared plumbing of the TRL reward functions: column access, task gating, never-raise scoring.

TRL calls ``fn(prompts=..., completions=..., completion_ids=..., **columns)`` where every column
is a list aligned with ``completions`` (one entry per completion, so a prompt's value repeats G
times).  Each reward here scores only the rows of its own task and returns ``None`` elsewhere,
which TRL turns into NaN and leaves out of the weighted sum (``nansum``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

from radlab.clinical.backends import BackendUnavailable
from radlab.formats import answer_text


class WiringError(ValueError):
    """The reward was called with missing or misaligned columns: a pipeline bug, so it raises."""


def column(kwargs: dict[str, Any], name: str, n: int, default: Any) -> list[Any]:
    """Column ``name`` as a list of ``n`` values.

    A missing column (or ``None``) gives ``default`` on every row; a scalar (str/bool/number) is
    broadcast.  A list of the wrong length is a wiring error and raises ``ValueError``.
    """
    value = kwargs.get(name)
    if value is None:
        return [default] * n
    if isinstance(value, str | bool | int | float):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise WiringError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


class Columns:
    """Read-only access to TRL's reward kwargs as lists aligned with the ``n`` completions."""

    def __init__(self, kwargs: dict[str, Any], n: int, completions: Sequence[object] = ()) -> None:
        self.kwargs = kwargs
        self.n = n
        self.completions = completions  # the raw completions, for rewards that look past the answer
        self._cache: dict[str, list[Any]] = {}

    def get(self, name: str, default: Any = None) -> list[Any]:
        if name not in self._cache:
            self._cache[name] = column(self.kwargs, name, self.n, default)
        return self._cache[name]


def flag(value: Any) -> bool:
    """A thinking flag from a dataset cell (bool, numpy bool, 0/1, None, "true")."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value)
    except Exception:  # odd objects are "not thinking"
        return False


def safe_answer(completion: object, thinking: bool) -> str | None:
    """``radlab.formats.answer_text`` that never raises; ``None`` = no scoreable answer."""
    try:
        return answer_text(completion, thinking)
    except Exception:  # model output must never crash a training step
        return None


class TaskReward:
    """Base of every reward: gate on ``task``, extract answers, score, sanitise.

    Subclasses set ``task`` (``"report"``, ``"grounding"`` or ``None`` for both), ``value_range``
    (documented bounds, enforced by clipping), ``malformed`` (the score of a row without a
    scoreable answer) and implement :meth:`score`.  Instances hold only plain attributes, so they
    pickle (TRL and multiprocessing may pickle reward functions).
    """

    task: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    value_range: tuple[float, float] = (0.0, 1.0)
    malformed: float = 0.0
    __name__: str

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        """Scores of the task's rows. ``answers[k]`` is row ``rows[k]``'s answer (None = missing)."""
        raise NotImplementedError

    def applies(self, task: Any, thinking: bool) -> bool:
        """Whether a row gets a score (else ``None``)."""
        return self.task is None or task == self.task

    def __call__(self, completions: Sequence[object], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        tasks = column(kwargs, "task", n, self.task)
        thinking = [flag(t) for t in column(kwargs, "thinking", n, False)]
        rows = [i for i in range(n) if self.applies(tasks[i], thinking[i])]
        out: list[float | None] = [None] * n
        if not rows:
            return out
        missing = [c for c in self.requires if kwargs.get(c) is None]
        if missing:
            raise WiringError(f"reward {self.__name__!r} needs the dataset column(s) {missing}")
        answers = [safe_answer(completions[i], thinking[i]) for i in rows]
        cols = Columns(kwargs, n, completions)
        for c in self.requires:
            cols.get(c)  # length check up front, outside the never-raise zone
        try:
            scores = list(self.score(answers, rows, cols))
            if len(scores) != len(rows):
                raise RuntimeError(f"{self.__name__} scored {len(scores)} of {len(rows)} rows")
        except (BackendUnavailable, WiringError):
            raise
        except Exception as exc:  # fall back to row by row so one bad row cannot sink the batch
            if not getattr(self, "_warned", False):
                # Visible once per process: a scorer bug must not hide behind a stream of zeros.
                warnings.warn(
                    f"reward {self.__name__!r}: batch scoring failed ({type(exc).__name__}: {exc}); "
                    "scoring row by row, failing rows get the malformed value",
                    RuntimeWarning,
                    stacklevel=2,
                )
                object.__setattr__(self, "_warned", True)
            scores = []
            for k, i in enumerate(rows):
                try:
                    scores.append(self.score([answers[k]], [i], cols)[0])
                except (BackendUnavailable, WiringError):
                    raise
                except Exception:
                    scores.append(self.malformed)
        lo, hi = self.value_range
        for i, s in zip(rows, scores):
            try:
                v = float(s)
            except (TypeError, ValueError):
                v = self.malformed
            out[i] = min(hi, max(lo, v)) if math.isfinite(v) else self.malformed
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()) if k != "__name__")
        return f"{type(self).__name__}(name={self.__name__!r}{', ' + params if params else ''})"
