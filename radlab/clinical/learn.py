"""Learn lexicon additions from RadGraph-format reference annotations.

The curated lexicon (:mod:`radlab.clinical.lexicon`) is extended by single words that reference
annotations consistently mark as entities.  ``learn_words(refs)`` is deterministic; its output on
the radgraph dev set is frozen in :mod:`radlab.clinical.lexicon_learned` (regenerate with
``python -m radlab.clinical.learn PATH_TO_reports_radgraph_xl.json``), and the benchmark's 5-fold
cross-validation re-learns it on 4 folds to measure how well such words carry to unseen reports.

Rules: a lower-case alphabetic token (length ≥ 3) that is not already in the lexicon, seen in
≥ ``min_reports`` reports, inside an entity in ≥ ``min_ratio`` of its occurrences, and a whole
one-word entity in at least half of those (parts of "plate - like" are not learned).  Class: anatomy
if most of those entities are Anatomy; otherwise an observation pre-modifier when it mostly
carries a ``modify`` relation, else a finding.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from radlab.clinical.annotator import A_HEAD, O_HEAD, O_PRE, build_lexicon


def learn_words(refs: Sequence[dict[str, Any]], *, min_reports: int = 2, min_ratio: float = 0.6) -> dict[str, str]:
    """``{word: class code}`` learned from reference annotations (see module docstring)."""
    known = build_lexicon(extra_words={}, use_learned=False)
    total: Counter[str] = Counter()
    inside: Counter[str] = Counter()
    anat: Counter[str] = Counter()
    modify: Counter[str] = Counter()
    single: Counter[str] = Counter()
    reports: defaultdict[str, set[int]] = defaultdict(set)
    for r_i, ref in enumerate(refs):
        toks = [t.lower() for t in str(ref.get("text", "")).split()]
        cover: dict[int, dict[str, Any]] = {}
        for ent in ref.get("entities", {}).values():
            for i in range(ent["start_ix"], ent["end_ix"] + 1):
                cover[i] = ent
        for i, t in enumerate(toks):
            if not (t.isalpha() and len(t) >= 3) or t in known.words:
                continue
            total[t] += 1
            reports[t].add(r_i)
            ent = cover.get(i)
            if ent is None:
                continue
            inside[t] += 1
            single[t] += ent["start_ix"] == ent["end_ix"]
            if ent["label"].startswith("Anatomy"):
                anat[t] += 1
            if any(rel == "modify" for rel, _ in ent["relations"]):
                modify[t] += 1
    out: dict[str, str] = {}
    for t, n in sorted(total.items()):
        if len(reports[t]) < min_reports or inside[t] < min_ratio * n or single[t] * 2 < inside[t]:
            continue  # rare, mostly outside entities, or only a part of multi-word entities
        if anat[t] * 2 > inside[t]:
            out[t] = A_HEAD
        else:
            out[t] = O_PRE if modify[t] * 2 > inside[t] else O_HEAD
    return out


def learn_phrases(
    refs: Sequence[dict[str, Any]], *, min_reports: int = 2, min_ratio: float = 0.7
) -> dict[tuple[str, ...], str]:
    """``{token tuple: "A" | "O"}``: multi-word entities kept whole in ≥ ``min_ratio`` of the
    occurrences of their token sequence, in ≥ ``min_reports`` reports (alphabetic tokens only)."""
    known = build_lexicon(use_learned=False)
    seen: Counter[tuple[str, ...]] = Counter()
    whole: Counter[tuple[str, ...]] = Counter()
    anat: Counter[tuple[str, ...]] = Counter()
    reports: defaultdict[tuple[str, ...], set[int]] = defaultdict(set)
    cands: set[tuple[str, ...]] = set()
    for ref in refs:
        toks = [t.lower() for t in str(ref.get("text", "")).split()]
        for ent in ref.get("entities", {}).values():
            p = tuple(toks[ent["start_ix"] : ent["end_ix"] + 1])
            if 1 < len(p) <= 4 and all(t.isalpha() for t in p) and p not in known.phrases:
                cands.add(p)
    for r_i, ref in enumerate(refs):
        toks = [t.lower() for t in str(ref.get("text", "")).split()]
        spans = {(e["start_ix"], e["end_ix"]): e for e in ref.get("entities", {}).values()}
        for i in range(len(toks)):
            for n in (2, 3, 4):
                p = tuple(toks[i : i + n])
                if p not in cands:
                    continue
                seen[p] += 1
                ent = spans.get((i, i + n - 1))
                if ent is not None:
                    whole[p] += 1
                    reports[p].add(r_i)
                    anat[p] += ent["label"].startswith("Anatomy")
    return {
        p: "A" if anat[p] * 2 > whole[p] else "O"
        for p in sorted(cands)
        if len(reports[p]) >= min_reports and whole[p] >= min_ratio * seen[p]
    }


def _main(path: str) -> None:
    data = json.load(open(path))
    refs = [d["radgraph_xl"] for d in data]
    words = learn_words(refs)
    phrases = learn_phrases(refs)
    print('"""Lexicon entries learned by :mod:`radlab.clinical.learn` (generated; do not edit by hand).')
    print()
    print("Source: RadGraph-XL annotations of the radgraph dev reports published in the tests of the")
    print("Stanford-AIMI radgraph repository (MIT licence). Only single words / short phrases and their")
    print("class are kept, no report text. Regenerate with")
    print('``python -m radlab.clinical.learn ../shared/radgraph_dev/reports_radgraph_xl.json``."""')
    print()
    print("LEARNED_WORDS: dict[str, str] = {")
    for w, c in sorted(words.items()):
        print(f'    "{w}": "{c}",')
    print("}")
    print()
    print("LEARNED_PHRASES: dict[tuple[str, ...], str] = {")
    for p, c in sorted(phrases.items()):
        print(f'    {p!r}: "{c}",'.replace("'", '"'))
    print("}")


if __name__ == "__main__":
    _main(sys.argv[1])
