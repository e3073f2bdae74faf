"""Format shaping: the think-format reward (both tasks, thinking rows only).

The paper has no format reward; its only format signal is the fixed score of a missing
``</think>``.  ``think_format`` makes the format explicit so it can be weighted and logged.
The length guard lives in :mod:`radlab.rewards.report` (it needs the reference report).
"""

from __future__ import annotations

from typing import ClassVar

from radlab.formats import THINK_CLOSE, THINK_OPEN, completion_text
from radlab.rewards._base import Columns, TaskReward


class ThinkFormat(TaskReward):
    """1.0 for ``<think>`` reasoning ``</think>`` followed by a non-empty answer, else 0.0.

    Thinking rows of either task only (``None`` on non-thinking rows).  Checked on the raw
    completion: it must start (after whitespace) with ``<think>`` when ``require_open`` (set it
    False for templates that put ``<think>`` in the prompt, e.g. Qwen3-VL-Thinking), contain a
    ``</think>``, have at least ``min_think_chars`` characters of reasoning, and a non-empty answer
    after the last ``</think>``.  Range [0, 1].
    """

    task: ClassVar[str | None] = None

    def __init__(self, require_open: bool = True, min_think_chars: int = 1, name: str = "think_format") -> None:
        self.__name__ = name
        self.require_open = bool(require_open)
        self.min_think_chars = int(min_think_chars)

    def applies(self, task: object, thinking: bool) -> bool:
        return thinking

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        completions = cols.completions
        return [self.score_text(completion_text(completions[i]), ans) for ans, i in zip(answers, rows)]

    def score_text(self, text: str, answer: str | None) -> float:
        """Score one raw completion text given its extracted answer (None = no ``</think>``/answer)."""
        if not answer:
            return 0.0
        body = text.lstrip()
        if self.require_open and not body.startswith(THINK_OPEN):
            return 0.0
        close = body.rfind(THINK_CLOSE)
        start = len(THINK_OPEN) if body.startswith(THINK_OPEN) else 0
        think = body[start:close] if close >= 0 else ""
        return 1.0 if len(think.strip()) >= self.min_think_chars else 0.0


__all__ = ["ThinkFormat"]
