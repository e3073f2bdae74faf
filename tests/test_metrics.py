"""radlab.metrics: per-sample report and grounding metrics, corpus CheXpert F1, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from radlab import metrics as M
from radlab.data.schema import CHEXPERT5, CHEXPERT14
from radlab.formats import box_iou
from radlab.metrics import bootstrap as B
from radlab.rewards import REWARDS

REF = "Heart size is normal. There is a small left pleural effusion. No pneumothorax."
FIG1_GT = [0.38, 0.47, 0.76, 0.62]
FIG1_PRED = [0.35, 0.51, 0.75, 0.64]

# ------------------------------------------------------------------ boxes


def test_iou_matrix_matches_formats_box_iou():
    rng = np.random.default_rng(0)
    a = np.sort(rng.random((7, 4)).reshape(7, 2, 2), axis=1).transpose(0, 2, 1).reshape(7, 4)
    b = np.sort(rng.random((5, 4)).reshape(5, 2, 2), axis=1).transpose(0, 2, 1).reshape(5, 4)
    a[0] = [0.2, 0.2, 0.2, 0.5]  # degenerate
    m = M.iou_matrix(a, b)
    for i in range(7):
        for j in range(5):
            assert m[i, j] == pytest.approx(box_iou(a[i], b[j]))


def test_soft_f1_follows_the_code_not_figure1():
    # Figure 1's boxes by hand: intersection 0.37 x 0.11 = 0.0407, union 0.052 + 0.057 - 0.0407 = 0.0683.
    iou = 0.0407 / 0.0683
    assert box_iou(FIG1_PRED, FIG1_GT) == pytest.approx(iou)
    # The code: one matched box has P = 1, R = IoU, F1 = 2 IoU / (1 + IoU) = 0.7468; the figure prints
    # 0.6 (the IoU, as if P = TP_mass / n_pred), which this definition does not give.
    assert M.soft_f1([FIG1_PRED], [FIG1_GT]) == pytest.approx(0.74679, abs=1e-4)
    assert M.soft_f1([FIG1_PRED], [FIG1_GT]) != pytest.approx(iou, abs=1e-2)
    far = [0.0, 0.0, 0.1, 0.1]
    # An extra box that overlaps nothing is a false positive: P = IoU / (IoU + 1) = 0.3734, R = IoU -> 0.4591.
    assert M.soft_f1([FIG1_PRED, far], [FIG1_GT]) == pytest.approx(0.45911, abs=1e-4)
    # A missed second reference box halves the recall: P = 1, R = IoU / 2 -> 0.4591 as well.
    assert M.soft_f1([FIG1_PRED], [FIG1_GT, far]) == pytest.approx(0.45911, abs=1e-4)
    # Order does not matter (Hungarian matching), and touching is not overlapping (IoU 0 is no match).
    assert M.soft_f1([far, FIG1_PRED], [FIG1_GT]) == pytest.approx(0.45911, abs=1e-4)
    assert M.soft_f1([[0.1, 0.0, 0.2, 0.1]], [far]) == 0.0


def test_ap_voc_output_order_and_duplicates():
    gt = [[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]
    assert M.ap_voc(gt, gt) == pytest.approx(1.0)
    # FP first, then both TPs: precision 0, 1/2, 2/3 at recall 0, .5, 1 -> envelope 2/3 -> AP 2/3
    fp = [0.0, 0.9, 0.05, 1.0]
    assert M.ap_voc([fp, *gt], gt) == pytest.approx(2 / 3)
    # TPs first, then FP: AP 1
    assert M.ap_voc([*gt, fp], gt) == pytest.approx(1.0)
    # a duplicate of an already matched GT is an FP; the second GT is never found -> AP 0.5
    assert M.ap_voc([gt[0], gt[0]], gt) == pytest.approx(0.5)
    # the paper matches to the best GT overall: a box overlapping both GTs but best for the taken one is an FP;
    # matching among unmatched GTs only lets it claim the second one
    g2 = [[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3]]
    assert M.ap_voc([g2[0], g2[0]], g2) == pytest.approx(0.5)
    assert M.ap_voc([g2[0], g2[0]], g2, unmatched_only=True) == pytest.approx(1.0)
    # below the threshold
    assert M.ap_voc([FIG1_PRED], [FIG1_GT], threshold=0.6) == 0.0
    assert M.ap_voc([FIG1_PRED], [FIG1_GT], threshold=0.5) == 1.0


def test_empty_cases_and_no_finding_fix():
    gt = [[0.1, 0.1, 0.3, 0.3]]
    for fn in (M.soft_f1, M.matched_iou, M.acc_at, M.ap_voc, M.ap_coco):
        assert fn([], []) == 1.0, fn  # correct "no finding"
        assert fn([], [], answered=False) == 0.0, fn
        assert fn([], gt) == 0.0, fn
        assert fn(gt, []) == 0.0, fn


def test_acc50_and_mean_iou():
    gt = [[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]
    assert M.acc_at([gt[0]], gt) == 0.5
    assert M.acc_at([FIG1_PRED], [FIG1_GT]) == 1.0
    assert M.matched_iou([gt[0]], gt) == pytest.approx(0.5)
    assert M.matched_iou([FIG1_PRED, [0, 0, 1, 1]], [FIG1_GT]) == pytest.approx(box_iou(FIG1_PRED, FIG1_GT))


def test_ap_coco_per_sample():
    # IoU 0.596 is a TP at thresholds 0.50 and 0.55 only: AP@[.5:.95] = 2/10
    assert M.ap_coco([FIG1_PRED], [FIG1_GT]) == pytest.approx(0.2, abs=1e-6)
    assert M.ap_coco([FIG1_GT], [FIG1_GT]) == pytest.approx(1.0)
    # output order is the ranking: an FP ranked after the TP costs nothing, before it costs precision
    fp = [0.0, 0.0, 0.05, 0.05]
    assert M.ap_coco([FIG1_GT, fp], [FIG1_GT]) == pytest.approx(1.0)
    assert M.ap_coco([fp, FIG1_GT], [FIG1_GT]) < 1.0


def test_score_grounding_frame():
    preds = [
        "The cardiomegaly is at [0.35, 0.51, 0.75, 0.64].",
        "[0.84, 0.34, 0.91, 0.50]",
        "No finding.",
        "<think>x</think>[380, 470, 760, 620]",
        "",
    ]
    gts = [[FIG1_GT], [FIG1_GT], [], [FIG1_GT], [FIG1_GT]]
    df = M.score_grounding(preds, gts, ["norm", "norm", "norm", "qwen1000", "norm"], thinking=[False] * 3 + [True, False])
    assert list(df.columns[:6]) == list(M.GROUNDING_METRICS)
    assert df.loc[0, "map50"] == 1.0 and df.loc[0, "map50_95"] == pytest.approx(0.2)
    assert df.loc[0, "box_soft_f1"] == pytest.approx(0.747, abs=1e-3)
    assert df.loc[1, ["map50", "mean_iou", "acc50", "box_soft_f1"]].tolist() == [0.0] * 4
    assert df.loc[2, ["map50", "map50_95", "mean_iou", "acc50", "box_soft_f1"]].tolist() == [1.0] * 5
    assert df.loc[3, "mean_iou"] == pytest.approx(1.0)
    assert df.loc[4, "answered"] == False  # noqa: E712
    assert df["n_gt"].tolist() == [1, 1, 0, 1, 1]
    # the reward and the metric agree
    kw = {"task": ["grounding"] * 5, "reference_boxes": gts, "box_format": ["norm"] * 3 + ["qwen1000", "norm"],
          "thinking": [False] * 3 + [True, False]}
    assert REWARDS["box_soft_f1"](preds, **kw) == pytest.approx(df["box_soft_f1"].tolist())
    assert REWARDS["box_iou"](preds, **kw) == pytest.approx(df["mean_iou"].tolist())


# ------------------------------------------------------------------ text metrics


def test_rouge_and_bleu():
    assert M.rouge_l_scores([REF], [REF])[0] == pytest.approx(1.0)
    assert M.bleu4_scores([REF], [REF])[0] == pytest.approx(1.0)
    assert M.bleu4_scores(["", "x"], [REF, ""]).tolist() == [0.0, 0.0]
    # stemming: "effusions" matches "effusion"
    assert M.rouge_l_scores(["pleural effusions"], ["pleural effusion"])[0] == pytest.approx(1.0)


def test_radcliq_formula():
    # at the training means every z-term is 0 and RadCliQ is the bias
    assert M.radcliq_v1(M.RADCLIQ_V1_MEAN[None])[0] == pytest.approx(M.RADCLIQ_V1_BIAS)
    x = M.RADCLIQ_V1_MEAN.copy()
    x[0] = 1.0
    assert M.radcliq_v1(x[None])[0] == pytest.approx(-0.377083683 * (1 - 0.53792312) / 0.30282584, rel=1e-6)


def test_radcliq_radgraph_component_matches_radeval_definition():
    hyp = {"entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "relations": [["located_at", "2"]]},
                        "2": {"tokens": "pleural", "label": "ANAT-DP", "relations": []}}}
    ref = {"entities": {"1": {"tokens": "effusion", "label": "OBS-DP", "relations": []},
                        "2": {"tokens": "pleural", "label": "ANAT-DP", "relations": []}}}
    # entity F1 = 1, relation F1 = 0 (ref has no relation) -> 0.5
    assert M.radcliq_radgraph_component(hyp, ref) == pytest.approx(0.5)
    assert M.radcliq_radgraph_component(hyp, hyp) == pytest.approx(1.0)
    assert M.radcliq_radgraph_component({"entities": {}}, ref) == 0.0


def test_label_f1_per_sample():
    pred = np.array([[1, 0, 1], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    ref = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0]])
    assert M.label_f1(pred, ref).tolist() == pytest.approx([2 / 3, 1.0, 0.0, 1.0])


def test_chexpert_binarisation_uncertain_is_positive():
    labels = dict.fromkeys(CHEXPERT14)
    labels.update({"Edema": 1, "Atelectasis": -1, "Pneumothorax": 0})
    vec = M.chexpert_binary(labels)
    assert vec[CHEXPERT14.index("Edema")] == 1 and vec[CHEXPERT14.index("Atelectasis")] == 1
    assert vec[CHEXPERT14.index("Pneumothorax")] == 0 and vec.sum() == 2


def test_score_reports_frame_and_reward_agreement():
    preds = [REF, "Heart size is normal. No pleural effusion. No pneumothorax.", "", "<think>x</think>" + REF]
    refs = [REF] * 4
    df = M.score_reports(preds, refs, thinking=[False, False, False, True], ids=list("abcd"))
    assert df["id"].tolist() == list("abcd")
    for col in M.REPORT_METRICS:
        assert col in df.columns
    assert df.loc[0, "f1radgraph_partial"] == pytest.approx(1.0)
    assert df.loc[3, "rouge_l"] == pytest.approx(1.0)
    assert df.loc[2, ["rouge_l", "bleu4", "f1radgraph_complete", "chexpert_f1"]].tolist() == [0.0] * 4
    assert df.loc[2, "mean_chars"] == 0 and not df.loc[2, "answered"]
    assert df[[M.CHEXPERT_PRED_PREFIX + k for k in CHEXPERT14]].to_numpy().dtype == np.int8
    kw = {"task": ["report"] * 4, "reference_report": refs, "thinking": [False, False, False, True]}
    for reward, metric in (("f1radgraph", "f1radgraph_partial"), ("rouge_l", "rouge_l"), ("bleu", "bleu4"),
                           ("chexpert_f1", "chexpert_f1")):
        assert REWARDS[reward](preds, **kw) == pytest.approx(df[metric].tolist()), reward
    assert REWARDS["radcliq_lite"](preds, **kw) == pytest.approx((-df["radcliq_lite"]).tolist())


# ------------------------------------------------------------------ corpus CheXpert F1 and bootstrap


def _corpus_f1_loop(pred: np.ndarray, ref: np.ndarray, cols: list[int]) -> tuple[float, float]:
    """Plain-loop micro/macro F1 (sklearn semantics, zero_division=0) for checking the vectorised code."""
    f1s = []
    TP = FP = FN = 0
    for c in cols:
        tp = int(((pred[:, c] == 1) & (ref[:, c] == 1)).sum())
        fp = int(((pred[:, c] == 1) & (ref[:, c] == 0)).sum())
        fn = int(((pred[:, c] == 0) & (ref[:, c] == 1)).sum())
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0)
    micro = 2 * TP / (2 * TP + FP + FN) if (2 * TP + FP + FN) else 0.0
    return micro, float(np.mean(f1s))


def _label_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ref = (rng.random((n, 14)) < 0.2).astype(np.int8)
    flip = rng.random((n, 14)) < 0.15
    pred = np.where(flip, 1 - ref, ref).astype(np.int8)
    df = pd.DataFrame({"rouge_l": rng.random(n)})
    for k, name in enumerate(CHEXPERT14):
        df[M.CHEXPERT_PRED_PREFIX + name] = pred[:, k]
        df[M.CHEXPERT_REF_PREFIX + name] = ref[:, k]
    return df


def test_corpus_chexpert_f1_matches_loop():
    df = _label_frame(200)
    pred = df[[M.CHEXPERT_PRED_PREFIX + k for k in CHEXPERT14]].to_numpy()
    ref = df[[M.CHEXPERT_REF_PREFIX + k for k in CHEXPERT14]].to_numpy()
    s = M.summarise(df, n_boot=200).set_index("metric")
    micro14, macro14 = _corpus_f1_loop(pred, ref, list(range(14)))
    micro5, macro5 = _corpus_f1_loop(pred, ref, [CHEXPERT14.index(k) for k in CHEXPERT5])
    assert s.loc["chexpert_f1_micro14", "value"] == pytest.approx(micro14)
    assert s.loc["chexpert_f1_macro14", "value"] == pytest.approx(macro14)
    assert s.loc["chexpert_f1_micro5", "value"] == pytest.approx(micro5)
    assert s.loc["chexpert_f1_macro5", "value"] == pytest.approx(macro5)
    for m in M.CORPUS_METRICS:
        assert s.loc[m, "ci_low"] <= s.loc[m, "value"] <= s.loc[m, "ci_high"]
        assert s.loc[m, "n"] == 200


def test_bootstrap_recomputes_corpus_metric_per_resample():
    """The vectorised corpus bootstrap equals recomputing the corpus F1 on explicitly resampled rows."""
    df = _label_frame(60, seed=3)
    pred = df[[M.CHEXPERT_PRED_PREFIX + k for k in CHEXPERT14]].to_numpy()
    ref = df[[M.CHEXPERT_REF_PREFIX + k for k in CHEXPERT14]].to_numpy()
    stats, _, n = B._statistics(df, ["chexpert_f1_macro14"])
    boot = B._run_bootstrap(stats["chexpert_f1_macro14"], n, 50, seed=7)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, n, size=(50, n))
    explicit = [_corpus_f1_loop(pred[i], ref[i], list(range(14)))[1] for i in idx]
    assert boot == pytest.approx(explicit)


def test_summarise_means_seeded_and_nan_rows():
    x = np.array([0.0, 1.0, 1.0, 0.0, np.nan, 1.0])
    s1 = M.summarise({"acc": x}, n_boot=500, seed=1)
    s2 = M.summarise({"acc": x}, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(s1, s2)
    row = s1.iloc[0]
    assert row["metric"] == "acc" and row["n"] == 5
    assert row["value"] == pytest.approx(0.6)
    assert 0.0 <= row["ci_low"] <= 0.6 <= row["ci_high"] <= 1.0
    # the percentile CI matches a plain-loop bootstrap with the same draws
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 6, size=(500, 6))
    means = [np.nanmean(x[i]) for i in idx]
    lo, hi = np.nanquantile(means, [0.025, 0.975])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi))


def test_summarise_default_columns_of_a_report_frame():
    df = M.score_reports([REF, "No pneumothorax."], [REF, REF])
    s = M.summarise(df, n_boot=50)
    assert set(s["metric"]) == set(M.REPORT_METRICS) | set(M.CORPUS_METRICS)
    assert list(s.columns) == ["metric", "value", "ci_low", "ci_high", "n"]
    assert s["value"].map(math.isfinite).all()


def test_paired_bootstrap_arrays_and_frames():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = a - 0.1 + rng.normal(0, 0.01, 300)
    res = M.paired_bootstrap(a, b, n_boot=500)
    assert res["diff"] == pytest.approx(0.1, abs=0.01)
    assert res["ci_low"] < res["diff"] < res["ci_high"] and res["ci_low"] > 0.05
    assert res["n"] == 300
    same = M.paired_bootstrap(a, a)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    fa, fb = _label_frame(100, seed=1), _label_frame(100, seed=2)
    out = M.paired_bootstrap(fa, fb, n_boot=100).set_index("metric")
    sa = M.summarise(fa, n_boot=10).set_index("metric")
    sb = M.summarise(fb, n_boot=10).set_index("metric")
    for m in ["rouge_l", *M.CORPUS_METRICS]:
        assert out.loc[m, "diff"] == pytest.approx(sa.loc[m, "value"] - sb.loc[m, "value"])
        assert out.loc[m, "ci_low"] <= out.loc[m, "diff"] <= out.loc[m, "ci_high"]
    with pytest.raises(ValueError):
        M.paired_bootstrap([1.0, 2.0], [1.0])


def test_bootstrap_large_n_is_chunked_and_deterministic():
    x = np.random.default_rng(0).random(5000)
    stat = B._mean_stat(x)
    small = B._run_bootstrap(stat, 5000, 40, seed=0, chunk=5000 * 7)  # 6 blocks
    big = B._run_bootstrap(stat, 5000, 40, seed=0)
    assert small == pytest.approx(big)


# --- replicates: the two-level bootstrap ------------------------------------------------------


def _replicate_diffs(offsets: list[float], n: int = 400, sd: float = 0.3, seed: int = 1) -> list[np.ndarray]:
    """Per-item paired differences of len(offsets) replicates: the same item noise around each offset."""
    noise = np.random.default_rng(seed).normal(0.0, sd, size=n)
    return [off + noise for off in offsets]


def _two_level(diffs: list[np.ndarray], **kw: object) -> dict:
    return B.two_level_bootstrap([B._mean_stat(d) for d in diffs], [d.size for d in diffs], 2000, 0, **kw)


def test_two_level_bootstrap_widens_with_between_seed_spread():
    spread = _two_level(_replicate_diffs([0.00, 0.06, 0.12]))
    items_only = _two_level(_replicate_diffs([0.00, 0.06, 0.12]), resample_replicates=False)
    assert spread["value"] == pytest.approx(0.06 + _replicate_diffs([0.0])[0].mean())
    assert np.allclose(spread["per_replicate"] - spread["per_replicate"][0], [0.0, 0.06, 0.12])
    width = spread["ci_high"] - spread["ci_low"]
    # Items only: the mean of three replicates, each ±1.96 * 0.3 / sqrt(400) / sqrt(3) ≈ ±0.017.
    assert 0.025 < items_only["ci_high"] - items_only["ci_low"] < 0.045
    # Resampling replicates adds the spread of their means (0, 0.06, 0.12): far wider.
    assert width > 2.5 * (items_only["ci_high"] - items_only["ci_low"])
    assert spread["ci_low"] < spread["value"] < spread["ci_high"] and spread["boot"].shape == (2000,)


def test_two_level_bootstrap_without_spread_matches_items_only():
    same = _replicate_diffs([0.05, 0.05, 0.05])
    two = _two_level(same)
    one = _two_level(same, resample_replicates=False)
    assert two["value"] == pytest.approx(one["value"])
    assert two["ci_high"] - two["ci_low"] == pytest.approx(one["ci_high"] - one["ci_low"], rel=0.15)
    assert two["ci_low"] == pytest.approx(one["ci_low"], abs=0.005)
    # Deterministic under its seed; a different seed gives other resamples.
    assert _two_level(same)["ci_low"] == two["ci_low"]
    assert B.two_level_bootstrap([B._mean_stat(d) for d in same], [400] * 3, 2000, 7)["ci_low"] != two["ci_low"]


def test_two_level_bootstrap_edge_cases():
    one = _two_level(_replicate_diffs([0.1]))
    items = B.paired_bootstrap(_replicate_diffs([0.1])[0], np.zeros(400), 2000, 0)
    assert one["value"] == pytest.approx(items["diff"])  # one replicate: an items-only interval
    assert one["ci_high"] - one["ci_low"] == pytest.approx(items["ci_high"] - items["ci_low"], rel=0.15)
    # Replicates of different sizes, and one with no applicable item (NaN) left out of the mean.
    mixed = _two_level([np.full(10, 1.0), np.full(30, 3.0), np.full(5, np.nan)])
    assert mixed["value"] == pytest.approx(2.0) and np.isnan(mixed["per_replicate"][2])
    assert 1.0 <= mixed["ci_low"] <= mixed["ci_high"] <= 3.0
    with pytest.raises(ValueError, match="2 statistics for 1 sizes"):
        B.two_level_bootstrap([B._mean_stat(np.ones(3))] * 2, [3], 10)
    with pytest.raises(ValueError, match="0 statistics"):
        B.two_level_bootstrap([], [], 10)


def test_agreeing_counts_replicates_with_the_pooled_sign():
    assert B.agreeing([0.02, 0.01, -0.003], 0.009) == 2
    assert B.agreeing([-0.02, -0.01, 0.003], -0.009) == 2
    assert B.agreeing([0.02, np.nan], 0.02) == 1
    assert B.agreeing([0.0, 0.0], 0.0) == 2 and B.agreeing([0.1], float("nan")) == 0


def test_pooled_paired_bootstrap_on_frames():
    rng = np.random.default_rng(3)

    def frame(ids: list[str], score: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"id": ids, "rouge_l": score})

    ids = [f"i{k}" for k in range(200)]
    base = rng.uniform(0, 1, 200)
    # Replicate r: a = base + gain_r, b = base (ids shuffled on one side: pairing is by id).
    gains = [0.10, 0.05, -0.02]
    pairs = [(frame(ids, base + g), frame(ids[::-1], base[::-1])) for g in gains]
    out = M.pooled_paired_bootstrap(pairs, 500, 0, metrics=["rouge_l"])
    (row,) = out.to_dict("records")
    assert list(out.columns) == M.POOLED_COLUMNS
    assert row["diff"] == pytest.approx(np.mean(gains)) and row["replicate_diffs"] == pytest.approx(tuple(gains))
    assert (row["n"], row["n_replicates"], row["n_agree"]) == (200, 3, 2)
    # No item noise (a - b is constant within a replicate): the CI is the spread of the three seeds alone.
    assert min(gains) - 1e-9 <= row["ci_low"] < 0.0 and 0.08 < row["ci_high"] <= max(gains) + 1e-9
    # One replicate: paired_bootstrap's numbers, with the replicate columns.
    single = M.pooled_paired_bootstrap(pairs[:1], 500, 0, metrics=["rouge_l"]).iloc[0]
    ref = M.paired_bootstrap(pairs[0][0], pairs[0][1], 500, 0, metrics=["rouge_l"]).iloc[0]
    assert (single["diff"], single["ci_low"], single["ci_high"]) == (ref["diff"], ref["ci_low"], ref["ci_high"])
    assert (single["n_replicates"], single["n_agree"], single["replicate_diffs"]) == (1, 1, (pytest.approx(0.10),))
    with pytest.raises(ValueError, match="no replicate pairs"):
        M.pooled_paired_bootstrap([], 10)
    with pytest.raises(ValueError, match="same unique ids"):
        M.pooled_paired_bootstrap([pairs[0], (frame(ids, base), frame(ids[:-1] + ["x"], base))], 10)
