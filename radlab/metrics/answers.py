"""The answer rule every metric applies: the scoreable answer of a raw completion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radlab.formats import answer_text


def as_flags(value: bool | Sequence[bool] | None, n: int) -> list[bool]:
    """Broadcast a scalar flag (or None = False) to ``n`` rows; check a per-row sequence's length."""
    if value is None or isinstance(value, bool | np.bool_):
        return [bool(value)] * n
    flags = [bool(v) if v is not None else False for v in value]
    if len(flags) != n:
        raise ValueError(f"got {len(flags)} thinking flags for {n} rows")
    return flags


def answers_of(completions: Sequence[object], thinking: bool | Sequence[bool] | None = False) -> list[str | None]:
    """Scoreable answers of raw completions (str or conversational); ``None`` = no answer.

    ``None`` marks a thinking completion without ``</think>`` (or with nothing after it); every
    metric and reward scores such a row as malformed.
    """
    flags = as_flags(thinking, len(completions))
    return [answer_text(c, t) for c, t in zip(completions, flags)]
