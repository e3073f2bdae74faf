"""Cost of every reward per completion and per GRPO step at demo size, cold and warm annotator cache.

A step is the demo's GRPO batch: 4 prompts x G=8 = 32 completions, half report and half
grounding (2 report prompts, 2 grounding prompts).  References are phantom reports and boxes;
completions are perturbed phantom reports (sentences dropped, shuffled, swapped with another
case's) and jittered box answers, so the texts look like a half-trained policy's samples.

* ``cold``: the annotator cache is cleared before each step (every text is new).
* ``train``: references already cached, completions new (what GRPO sees after step 1).
* ``warm``: the same step scored again (every text cached).

Times are CPU seconds of this process (``time.process_time``); the median over steps is printed.

    .venv/bin/python bench/bench_rewards.py [--steps 20] [--seed 0] [--terse]

Prints only; never asserts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

import numpy as np

from radlab import clinical, metrics
from radlab.clinical.backends import BackendUnavailable
from radlab.data import phantom
from radlab.formats import format_boxes
from radlab.rewards import REWARDS, build_reward_funcs

PROMPTS_PER_STEP = 4
G = 8


def _perturb(report: str, other: str, rng: random.Random) -> str:
    """A plausible sampled report: drop / shuffle sentences, sometimes borrow another case's."""
    sents = [s.strip() + "." for s in report.split(".") if s.strip()]
    others = [s.strip() + "." for s in other.split(".") if s.strip()]
    out = [s for s in sents if rng.random() > 0.2]
    if others and rng.random() < 0.5:
        out.insert(rng.randrange(len(out) + 1), rng.choice(others))
    if rng.random() < 0.3:
        rng.shuffle(out)
    return " ".join(out)


def _jitter(boxes: list[list[float]], rng: random.Random) -> str:
    if not boxes or rng.random() < 0.1:
        return "No abnormality is seen." if rng.random() < 0.5 else "The finding is at [0.1, 0.1, 0.2, 0.2]."
    moved = [[min(1.0, max(0.0, v + rng.gauss(0, 0.04))) for v in b] for b in boxes]
    moved = [[min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])] for b in moved]
    return f"The {rng.choice(['finding', 'opacity', 'region'])} is located at {format_boxes(moved)}."


def make_steps(n_steps: int, seed: int, terse: bool = False) -> list[tuple[list[str], dict]]:
    """``n_steps`` GRPO-step batches ``(completions[32], columns)`` in TRL's layout.

    By default the phantom "radiologist" mentions (negates) nearly every absent finding, giving
    ~250-character references (96-400); ``terse`` uses the demo's default style (~130 characters).
    """
    rng = random.Random(seed)
    cfg = phantom.PhantomConfig() if terse else phantom.PhantomConfig(p_mention_min=0.9, p_mention_max=1.0)
    cases = phantom.generate(seed, "grpo", n_steps * PROMPTS_PER_STEP + 8, cfg)
    steps = []
    for s in range(n_steps):
        comps: list[str] = []
        cols: dict[str, list] = {k: [] for k in ("task", "reference_report", "reference_boxes", "box_format", "thinking")}
        for p in range(PROMPTS_PER_STEP):
            rec = cases[s * PROMPTS_PER_STEP + p].record
            other = cases[rng.randrange(len(cases))].record
            task = "report" if p < PROMPTS_PER_STEP // 2 else "grounding"
            boxes = [b["box"] for b in rec["boxes"] if b["kind"] == "finding"][:3]
            for _ in range(G):
                if task == "report":
                    comps.append(_perturb(rec["findings_text"], other["findings_text"], rng))
                else:
                    comps.append(_jitter(boxes, rng))
                cols["task"].append(task)
                cols["reference_report"].append(rec["findings_text"] if task == "report" else "")
                cols["reference_boxes"].append(boxes if task == "grounding" else [])
                cols["box_format"].append("norm")
                cols["thinking"].append(False)
        steps.append((comps, cols))
    return steps


def _time(fn: Callable[[], object]) -> float:
    # CPU time of this process: the rewards are single-threaded and in-process, and CPU time is
    # stable when other jobs share the 2 cores (wall time is not).
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def bench_rewards(steps: list[tuple[list[str], dict]], funcs: dict[str, Callable]) -> None:
    report_rows = sum(t == "report" for t in steps[0][1]["task"])
    print("(think_format scores 0 rows: the demo steps are non-thinking)")
    print(f"\nper GRPO step ({PROMPTS_PER_STEP} prompts x G={G} = {len(steps[0][0])} completions, "
          f"{report_rows} report), median over {len(steps)} steps; per completion = step / scored rows")
    print(f"{'reward (CPU)':<14} {'rows':>4} {'cold ms/step':>13} {'train ms/step':>14} {'warm ms/step':>13} "
          f"{'cold us/compl':>14} {'warm us/compl':>14}")
    for name, fn in funcs.items():
        try:
            fn(*steps[0][:1], **steps[0][1])
        except BackendUnavailable as exc:
            print(f"{name:<14} unavailable: {exc}")
            continue
        cold, train, warm = [], [], []
        for comps, cols in steps:
            clinical.clear_cache()
            cold.append(_time(lambda: fn(comps, **cols)))  # noqa: B023 - called immediately
            warm.append(_time(lambda: fn(comps, **cols)))  # noqa: B023
        for comps, cols in steps:
            clinical.clear_cache()
            clinical.annotate(cols["reference_report"])
            train.append(_time(lambda: fn(comps, **cols)))  # noqa: B023
        rows = sum(v is not None for v in fn(steps[0][0], **steps[0][1]))
        c, t, w = (statistics.median(x) * 1e3 for x in (cold, train, warm))
        per = max(rows, 1)
        print(f"{name:<14} {rows:>4} {c:>13.2f} {t:>14.2f} {w:>13.2f} {c * 1e3 / per:>14.0f} {w * 1e3 / per:>14.0f}")


def bench_combo(steps: list[tuple[list[str], dict]], names: list[str]) -> None:
    funcs, _ = build_reward_funcs(names, None)
    times = []
    for comps, cols in steps:
        clinical.clear_cache()
        clinical.annotate(cols["reference_report"])
        times.append(sum(_time(lambda f=f: f(comps, **cols)) for f in funcs))  # noqa: B023
    print(f"\nfull reward set {names}: {statistics.median(times) * 1e3:.1f} ms/step (train-cache regime)")


def bench_metrics(seed: int, terse: bool, n: int = 500) -> None:
    steps = make_steps(max(1, n // 16), seed + 1, terse)
    preds = [c for comps, cols in steps for c, t in zip(comps, cols["task"]) if t == "report"][:n]
    refs = [r for _, cols in steps for r, t in zip(cols["reference_report"], cols["task"]) if t == "report"][:n]
    gpreds = [c for comps, cols in steps for c, t in zip(comps, cols["task"]) if t == "grounding"][:n]
    gts = [b for _, cols in steps for b, t in zip(cols["reference_boxes"], cols["task"]) if t == "grounding"][:n]
    clinical.clear_cache()
    t_rep = _time(lambda: metrics.score_reports(preds, refs))
    t_gr = _time(lambda: metrics.score_grounding(gpreds, gts))
    df = metrics.score_reports(preds, refs)
    t_sum = _time(lambda: metrics.summarise(df, n_boot=1000))
    print(f"\nmetrics: score_reports {len(preds)} rows {t_rep:.2f} s ({t_rep / len(preds) * 1e3:.2f} ms/row, cold cache); "
          f"score_grounding {len(gpreds)} rows {t_gr:.2f} s ({t_gr / len(gpreds) * 1e3:.2f} ms/row); "
          f"summarise {len(df.columns)} columns x 1000 resamples {t_sum:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--terse", action="store_true", help="the demo's default (shorter) phantom report style")
    args = ap.parse_args()
    steps = make_steps(args.steps, args.seed, args.terse)
    lens = [len(c) for comps, cols in steps for c, t in zip(comps, cols["task"]) if t == "report"]
    ref_lens = [len(r) for _, cols in steps for r in cols["reference_report"] if r]
    print(f"report completions: mean {np.mean(lens):.0f} chars (range {min(lens)}-{max(lens)}); "
          f"references mean {np.mean(ref_lens):.0f} chars")
    # bench_rewards calls each reward once before timing, so imports (nltk for ROUGE, ...) are not timed
    bench_rewards(steps, REWARDS)
    for names in (["f1radgraph", "length_guard", "box_soft_f1"],
                  ["radcliq_lite", "chexpert_f1", "bleu", "rouge_l", "box_soft_f1", "box_iou"]):
        try:
            bench_combo(steps, names)
        except BackendUnavailable as exc:
            print(f"\nfull reward set {names}: unavailable: {exc}")
    try:
        bench_metrics(args.seed, args.terse)
    except BackendUnavailable as exc:
        print(f"\nmetrics: unavailable: {exc}")


if __name__ == "__main__":
    main()
