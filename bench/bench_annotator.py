"""Offline RadGraph-style annotator (radlab.clinical) vs RadGraph-XL on the radgraph dev set.

Prints, for the 300 dev reports (../shared/radgraph_dev):

- entity F1 (span = same start/end/label; tokens = same lower-cased string + label), the
  F1-RadGraph "partial" unit (tokens, label, has-relation) and relation F1;
- Pearson correlation of F1-RadGraph (partial; also simple and complete) between report pairs
  annotated by RadGraph-XL vs by radlab (random pairs, fixed seed);
- the same from 5-fold cross-validation: the learned lexicon words and phrases
  (radlab.clinical.learn) are re-learned on 4 folds and the 5th is annotated (out-of-fold annotations for all 300 reports);
  plus the curated lexicon alone (no learned words);
- Pearson of F1-RadGraph (partial) over all 44,850 report pairs of the out-of-fold annotations,
  with a 95% bootstrap CI over reports: the 2,000-pair figure is a sample and moves by about ±0.01;
- reports/s of ``annotate`` on one core with a cold cache (cache cleared before every pass).

    .venv/bin/python bench/bench_annotator.py [--pairs 2000] [--passes 10]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from radlab.clinical import annotate, clear_cache
from radlab.clinical.agreement import agreement, f1radgraph_pearson, f1radgraph_pearson_all
from radlab.clinical.annotator import build_lexicon
from radlab.clinical.learn import learn_phrases, learn_words

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEV = SHARED / "radgraph_dev" / "reports_radgraph_xl.json"


def _row(name: str, hyps: list[dict[str, Any]], refs: list[dict[str, Any]], pairs: int) -> None:
    a = agreement(hyps, refs)
    pear = {lvl: f1radgraph_pearson(hyps, refs, n_pairs=pairs, level=lvl) for lvl in ("simple", "partial", "complete")}
    print(
        f"{name:<34} {a['entity']['f1']:>6.3f} {a['entity_tokens']['f1']:>6.3f} {a['entity_partial']['f1']:>6.3f} "
        f"{a['relation']['f1']:>6.3f}   {pear['simple']:>6.3f} {pear['partial']:>6.3f} {pear['complete']:>6.3f}"
    )
    print(
        f"{'':<34} P/R entity {a['entity']['precision']:.3f}/{a['entity']['recall']:.3f}, "
        f"relation {a['relation']['precision']:.3f}/{a['relation']['recall']:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000, help="random report pairs for the Pearson correlation")
    ap.add_argument("--passes", type=int, default=10, help="timed passes over the 300 reports")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    if not DEV.is_file():
        sys.exit(f"bench_annotator: {DEV} not found; this benchmark needs ../shared/radgraph_dev beside the repo")
    data = json.loads(DEV.read_text())
    texts = [d["report"] for d in data]
    refs = [d["radgraph_xl"] for d in data]
    print(
        "Data: RadGraph-XL annotations of 300 report impressions from the radgraph repository tests "
        "(Stanford-AIMI, MIT licence; see ../shared/radgraph_dev/LICENSE)."
    )
    print(f"{len(data)} reports, {sum(len(r['entities']) for r in refs)} reference entities, pairs={args.pairs}\n")
    print(f"{'setting':<34} {'ent':>6} {'entTok':>6} {'entPar':>6} {'rel':>6}   {'rSimp':>6} {'rPart':>6} {'rComp':>6}")

    clear_cache()
    _row("full dev (shipped lexicon)", annotate(texts), refs, args.pairs)

    # k-fold CV: learned words re-learned on the training folds only
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    folds = [order[k :: args.folds] for k in range(args.folds)]
    oof: list[dict[str, Any] | None] = [None] * len(data)
    per_fold = []
    for k, test in enumerate(folds):
        train = [i for i in order if i not in set(test)]
        train_refs = [refs[i] for i in train]
        lex = build_lexicon(
            extra_words=learn_words(train_refs), extra_phrases=learn_phrases(train_refs), use_learned=False
        )
        hyp = annotate([texts[i] for i in test], lexicon=lex)
        for i, h in zip(test, hyp):
            oof[i] = h
        a = agreement(hyp, [refs[i] for i in test])
        per_fold.append((a["entity"]["f1"], a["relation"]["f1"]))
        print(f"  fold {k}: n={len(test)} entity F1 {a['entity']['f1']:.3f}  relation F1 {a['relation']['f1']:.3f}")
    oof_anns = [h for h in oof if h is not None]
    _row(f"{args.folds}-fold CV (out-of-fold)", oof_anns, refs, args.pairs)
    r, lo, hi = f1radgraph_pearson_all(oof_anns, refs, level="partial")
    print(f"{'':<34} all {len(refs) * (len(refs) - 1) // 2:,} pairs: Pearson partial {r:.3f} [{lo:.3f}, {hi:.3f}]")
    _row("curated lexicon only", annotate(texts, lexicon=build_lexicon(use_learned=False)), refs, args.pairs)

    # speed: one core (pure Python), cold cache each pass.  CPU time of this process is reported
    # next to wall time: on a shared machine the wall clock also counts other processes' work.
    walls, cpus = [], []
    for _ in range(args.passes):
        clear_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        annotate(texts)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    n = len(texts)
    print(
        f"\nspeed (one core, cold cache, {n} reports x {args.passes} passes): "
        f"wall median {n / statistics.median(walls):,.0f} reports/s (best {n / min(walls):,.0f}); "
        f"CPU-time median {n / statistics.median(cpus):,.0f} reports/s"
    )
    t0 = time.perf_counter()
    annotate(texts)
    warm = time.perf_counter() - t0
    print(f"speed (warm cache): {len(texts) / warm:,.0f} reports/s")


if __name__ == "__main__":
    main()
