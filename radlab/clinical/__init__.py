"""Offline RadGraph-style clinical annotation.

- :func:`annotate` — RadGraph-XL-format entities and relations for report texts (rules + lexicon,
  thousands of reports/s on one core, memoised per text); see :mod:`radlab.clinical.annotator`.
- :func:`chexpert_labels` / :func:`chexpert_labels_from_text` — CheXpert-14 labels derived from an
  annotation; see :mod:`radlab.clinical.chexpert`.
- :mod:`radlab.clinical.backends` — the annotator backends every report metric and reward uses:
  ``annotate(texts, backend)`` with ``"rules"`` (the function above) or ``"radgraph-xl"`` (radgraph
  0.1.18 in a separate python, one long-lived worker process), and :class:`BackendUnavailable`.
- :mod:`radlab.clinical.agreement` — entity/relation F1 and F1-RadGraph correlation between two
  annotation sets (used by ``bench/bench_annotator.py``).
"""

from radlab.clinical.annotator import annotate, cache_info, clear_cache, tokenize
from radlab.clinical.chexpert import chexpert_labels, chexpert_labels_from_text

__all__ = ["annotate", "tokenize", "clear_cache", "cache_info", "chexpert_labels", "chexpert_labels_from_text"]
