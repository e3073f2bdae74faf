"""Visual-grounding rewards: the official Hungarian soft-F1 and a matched-IoU reward.

Boxes are parsed with ``radlab.formats.parse_boxes(answer, fmt=box_format)``; an answer with no
parseable box scores 0 against a reference with boxes.  Report rows get ``None``.

"No finding" credit (``no_finding``):

* ``"no_box"`` (default): the reference has no box and the answer is non-empty and contains no
  box -> 1.0.  The paper's reward always gives 0 there, so such groups had zero advantage.
* ``"phrase"``: as ``"no_box"``, but the answer must also say so (a negation cue such as "no",
  "not", "none", "normal", "without", "absent", "negative", "unremarkable").
* ``"official"``: the paper's behaviour, 0 whenever the reference has no box.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import ClassVar

from radlab.formats import BOX_FORMATS, parse_boxes
from radlab.metrics.grounding import Box, clean_gt, matched_iou, soft_f1
from radlab.rewards._base import Columns, TaskReward

NO_FINDING_MODES = ("no_box", "phrase", "official")
_NEGATION = re.compile(r"\b(no|not|none|normal|without|absent|negative|unremarkable|nothing)\b", re.IGNORECASE)


class _GroundingReward(TaskReward):
    task: ClassVar[str] = "grounding"
    requires: ClassVar[tuple[str, ...]] = ("reference_boxes",)

    def __init__(self, name: str, no_finding: str = "no_box") -> None:
        if no_finding not in NO_FINDING_MODES:
            raise ValueError(f"unknown no_finding mode {no_finding!r}; expected one of {NO_FINDING_MODES}")
        self.__name__ = name
        self.no_finding = no_finding

    def _metric(self) -> Callable[[Sequence[Box], Sequence[Box], bool], float]:
        raise NotImplementedError

    def _answered(self, text: str) -> bool:
        """Whether a box-free answer counts as a "no finding" answer (only consulted when GT is empty)."""
        if self.no_finding == "official" or not text.strip():
            return False
        return self.no_finding == "no_box" or bool(_NEGATION.search(text))

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        gts = cols.get("reference_boxes", [])
        fmts = cols.get("box_format", "norm")
        metric = self._metric()
        out = []
        for ans, i in zip(answers, rows):
            if ans is None:
                out.append(0.0)
                continue
            fmt = fmts[i] if fmts[i] in BOX_FORMATS else "norm"
            pred = parse_boxes(ans, fmt=fmt)
            out.append(metric(pred, clean_gt(gts[i]), self._answered(ans)))
        return out


class BoxSoftF1(_GroundingReward):
    """The paper's grounding reward, :func:`radlab.metrics.soft_f1` (Hungarian soft-F1, min_iou 0).

    TP_mass = Σ IoU over Hungarian-matched pairs with IoU > 0; FP = n_pred − #valid pairs;
    R = TP_mass / n_gt; P = TP_mass / (TP_mass + FP); reward = 2PR / (P + R), in [0, 1].

    This is the official *code*.  The paper's Figure 1 shows 0.6 for pred [0.35, 0.51, 0.75, 0.64]
    vs GT [0.38, 0.47, 0.76, 0.62]; the code (and this reward) gives P = 1, R = IoU = 0.596,
    F1 = 0.747.  The figure's 0.6 is the IoU itself.  Plus "no finding" credit (module docstring).
    """

    def __init__(self, no_finding: str = "no_box", name: str = "box_soft_f1") -> None:
        super().__init__(name=name, no_finding=no_finding)

    def _metric(self) -> Callable[[Sequence[Box], Sequence[Box], bool], float]:
        return soft_f1


class BoxIoU(_GroundingReward):
    """Mean over GT boxes of the IoU of its Hungarian-matched prediction (unmatched GT = 0).

    :func:`radlab.metrics.matched_iou`, the ``mean_iou`` metric.  With one GT box this is the best
    IoU of any predicted box; extra boxes are not penalised (use ``box_soft_f1`` for that).  Plus
    "no finding" credit (module docstring).  Range [0, 1].
    """

    def __init__(self, no_finding: str = "no_box", name: str = "box_iou") -> None:
        super().__init__(name=name, no_finding=no_finding)

    def _metric(self) -> Callable[[Sequence[Box], Sequence[Box], bool], float]:
        return matched_iou


__all__ = ["BoxSoftF1", "BoxIoU", "NO_FINDING_MODES"]
