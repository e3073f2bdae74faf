"""Report-generation rewards: F1-RadGraph, CheXpert F1, BLEU, ROUGE-L and RadCliQ-lite.

Each is a thin wrapper over :func:`radlab.metrics.report_scores`, so a reward and the evaluation
metric of the same name score identically (up to the reward's 2048-character cut, the paper's).
Rows of the grounding task get ``None``; rows without a scoreable answer (empty, or a thinking row
without ``</think>``) get the reward's ``malformed`` value (0.0; RadCliQ-lite: its worst value).
Texts are *not* lowercased (the paper's workers lowercase; our annotator handles case itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from radlab.clinical.backends import ANNOTATOR_BACKENDS, BackendUnavailable, check_backend
from radlab.metrics.report import LEVELS, PairScorer, radcliq_range, report_scores
from radlab.rewards._base import Columns, TaskReward

# The paper's reward workers cut both texts to 2048 characters; it also bounds the cost of a
# runaway completion (ROUGE-L is quadratic in length).
MAX_CHARS = 2048


class _ReportReward(TaskReward):
    """A report reward backed by one metric of :func:`radlab.metrics.report_scores`."""

    task: ClassVar[str] = "report"
    requires: ClassVar[tuple[str, ...]] = ("reference_report",)
    metric: str = ""

    def __init__(self, *, name: str, backend: str = "rules", max_chars: int | None = MAX_CHARS) -> None:
        if backend not in ANNOTATOR_BACKENDS:
            raise ValueError(f"unknown annotator backend {backend!r}; expected one of {ANNOTATOR_BACKENDS}")
        if backend != "rules":
            check_backend(backend)  # fail at construction, not at the first training step
        self.__name__ = name
        self.backend = backend
        self.max_chars = max_chars

    def _refs(self, rows: list[int], cols: Columns) -> list[str]:
        refs = cols.get("reference_report", "")
        return [refs[i] if isinstance(refs[i], str) else "" for i in rows]

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        scores = report_scores(
            answers, self._refs(rows, cols), backend=self.backend, metrics=[self.metric], max_chars=self.max_chars
        )
        return scores[self.metric].tolist()


class F1RadGraph(_ReportReward):
    """F1-RadGraph at ``level`` (simple / partial / complete; default partial).

    ``radgraph.rewards.compute_reward`` on annotations of the answer and the reference from
    ``backend``: ``"rules"`` (radlab.clinical, offline) or ``"radgraph-xl"`` (radgraph 0.1.18 in the
    python named by ``RADLAB_RADGRAPH_PYTHON``; raises :class:`BackendUnavailable` at construction
    when unset).  The paper's RGF1-C ablation used ``complete``, and its outputs collapsed to ~93
    characters: pair it with ``length_guard``.  Range [0, 1].
    """

    def __init__(
        self, level: str = "partial", backend: str = "rules", max_chars: int | None = MAX_CHARS, name: str = "f1radgraph"
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown F1-RadGraph level {level!r}; expected one of {LEVELS}")
        super().__init__(name=name, backend=backend, max_chars=max_chars)
        self.level = level
        self.metric = f"f1radgraph_{level}"


class CheXpertF1(_ReportReward):
    """Per-sample F1 of the 14 CheXpert labels of answer vs reference (``metrics.chexpert_f1``).

    Labels come from ``radlab.clinical.chexpert_labels`` on the backend's annotation and are
    binarised as f1chexbert's ``rrg`` mode does: positive *or uncertain* = 1, negative or not
    mentioned = 0.  Both vectors all-zero = 1.0 (agreement); an empty answer = 0.0.  Range [0, 1].
    """

    metric = "chexpert_f1"

    def __init__(self, backend: str = "rules", max_chars: int | None = MAX_CHARS, name: str = "chexpert_f1") -> None:
        super().__init__(name=name, backend=backend, max_chars=max_chars)


class Bleu(_ReportReward):
    """sacrebleu sentence BLEU-4 (exp smoothing, effective order) / 100. Range [0, 1]."""

    metric = "bleu4"

    def __init__(self, max_chars: int | None = MAX_CHARS, name: str = "bleu") -> None:
        super().__init__(name=name, max_chars=max_chars)


class RougeL(_ReportReward):
    """ROUGE-L F-measure with Porter stemming (rouge-score). Range [0, 1]."""

    metric = "rouge_l"

    def __init__(self, max_chars: int | None = MAX_CHARS, name: str = "rouge_l") -> None:
        super().__init__(name=name, max_chars=max_chars)


class RadCliQLite(_ReportReward):
    """−RadCliQ-v1 (higher is better), with the components that exist offline.

    RadCliQ-v1 = Σ_k c_k (x_k − μ_k)/σ_k + b over (radgraph, bertscore, semb_score, bleu_score)
    (constants in :mod:`radlab.metrics`).  Offline:

    * ``radgraph`` = (entity F1 + relation F1)/2 on the backend's annotations, as RadCliQ defines it;
    * ``bleu_score`` = sentence BLEU-4 (coefficient 4e-12: it has no effect, as in the paper);
    * ``bertscore`` and ``semb_score`` (CheXbert embedding cosine) need models that are not
      available offline; they are set to their training mean μ, so their z-terms are 0.

    The lite score therefore ranks exactly as the RadGraph component does, on a scale of
    [−0.670, +0.575] (the paper's full reward runs about −1.6 … −0.7 in training).  A missing
    answer gets the worst value (−0.670), the analogue of the paper's fixed −3.

    **Full RadCliQ hook:** pass ``bertscore_fn`` and ``semb_fn``, picklable callables
    ``fn(preds: list[str], refs: list[str]) -> (n,) floats`` backed by locally stored models
    (BERTScore F1 with distilroberta-base, baseline-rescaled; CheXbert embedding cosine).  With
    ``full=True`` both are required and :class:`BackendUnavailable` is raised without them.
    """

    metric = "radcliq_lite"

    def __init__(
        self,
        backend: str = "rules",
        bertscore_fn: PairScorer | None = None,
        semb_fn: PairScorer | None = None,
        full: bool = False,
        max_chars: int | None = MAX_CHARS,
        name: str = "radcliq_lite",
    ) -> None:
        if full and (bertscore_fn is None or semb_fn is None):
            raise BackendUnavailable(
                "full RadCliQ-v1 needs the BERTScore (distilroberta-base) and CheXbert-embedding components, "
                "which radlab cannot compute offline: pass bertscore_fn= and semb_fn= backed by local models, "
                "or use full=False (RadCliQ-lite: those terms held at their training mean)."
            )
        super().__init__(name=name, backend=backend, max_chars=max_chars)
        self.bertscore_fn = bertscore_fn
        self.semb_fn = semb_fn
        self.full = full
        avail = ["radgraph", "bleu_score"] + [k for k, fn in (("bertscore", bertscore_fn), ("semb_score", semb_fn)) if fn]
        best, worst = radcliq_range(avail)
        self.value_range = (-worst, -best)
        self.malformed = -worst

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        scores = report_scores(
            answers,
            self._refs(rows, cols),
            backend=self.backend,
            metrics=["radcliq_lite"],
            max_chars=self.max_chars,
            bertscore_fn=self.bertscore_fn,
            semb_fn=self.semb_fn,
        )
        return (-scores["radcliq_lite"]).tolist()


class LengthGuard(TaskReward):
    """Penalty for answers much shorter than the reference (guards against short-output hacking).

    ratio = len(answer) / len(reference) in characters.  Score 0 when ``ratio >= min_ratio``, else
    ``penalty * (1 - ratio / min_ratio)`` (a linear ramp down to ``penalty`` for an empty answer).
    With ``max_ratio`` set, answers longer than ``max_ratio`` × the reference are penalised the
    same way (ramping to ``penalty`` at twice ``max_ratio``).  A missing answer (no ``</think>`` on a
    thinking row) scores ``penalty``, not 0: 0 is this reward's best value.  An empty reference
    scores 0.  Report rows only; range [penalty, 0].

    The paper saw F1-RadGraph-complete training collapse outputs to ~93 characters; a weight of
    ~0.5 against a [0, 1] report reward makes that collapse a net loss.
    """

    task: ClassVar[str] = "report"
    requires: ClassVar[tuple[str, ...]] = ("reference_report",)

    def __init__(
        self, min_ratio: float = 0.5, penalty: float = -1.0, max_ratio: float | None = None, name: str = "length_guard"
    ) -> None:
        if not 0 < min_ratio <= 1:
            raise ValueError(f"min_ratio must be in (0, 1], got {min_ratio}")
        if penalty > 0:
            raise ValueError(f"penalty must be <= 0, got {penalty}")
        if max_ratio is not None and max_ratio <= 1:
            raise ValueError(f"max_ratio must be > 1, got {max_ratio}")
        self.__name__ = name
        self.min_ratio = float(min_ratio)
        self.penalty = float(penalty)
        self.max_ratio = None if max_ratio is None else float(max_ratio)
        self.value_range = (self.penalty, 0.0)
        self.malformed = self.penalty

    def score(self, answers: list[str | None], rows: list[int], cols: Columns) -> list[float]:
        refs = cols.get("reference_report", "")
        out = []
        for ans, i in zip(answers, rows):
            ref = refs[i] if isinstance(refs[i], str) else ""
            out.append(self.score_one(ans, ref))
        return out

    def score_one(self, answer: str | None, reference: str) -> float:
        ref_len = len(reference.strip())
        if ref_len == 0:
            return 0.0
        if not answer:
            return self.penalty
        ratio = len(answer.strip()) / ref_len
        if ratio < self.min_ratio:
            return self.penalty * (1.0 - ratio / self.min_ratio)
        if self.max_ratio is not None and ratio > self.max_ratio:
            return self.penalty * min(1.0, (ratio - self.max_ratio) / self.max_ratio)
        return 0.0


__all__: Sequence[str] = ["F1RadGraph", "CheXpertF1", "Bleu", "RougeL", "RadCliQLite", "LengthGuard", "MAX_CHARS"]
