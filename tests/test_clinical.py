"""radlab.clinical: the offline RadGraph-style annotator and CheXpert labels derived from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radlab.clinical import annotate, cache_info, chexpert_labels, chexpert_labels_from_text, clear_cache, tokenize
from radlab.clinical.agreement import agreement
from radlab.data.schema import CHEXPERT14

DEV = Path(__file__).resolve().parents[1].parent / "shared" / "radgraph_dev" / "reports_radgraph_xl.json"

PRESENT = "Observation::definitely present"
ABSENT = "Observation::definitely absent"
UNCERTAIN = "Observation::uncertain"
ANAT = "Anatomy::definitely present"


def _one(text: Any) -> dict[str, Any]:
    return annotate([text])[0]


def _ents(text: str) -> dict[str, dict[str, Any]]:
    """lower-case tokens → entity (last one wins)."""
    return {e["tokens"].lower(): e for e in _one(text)["entities"].values()}


def _rel(ann: dict[str, Any], src: str, rel: str, tgt: str) -> bool:
    ents = ann["entities"]
    return any(
        e["tokens"].lower() == src and r == rel and ents[t]["tokens"].lower() == tgt
        for e in ents.values()
        for r, t in e["relations"]
    )


def _check_format(ann: dict[str, Any]) -> None:
    toks = ann["text"].split()
    ids = list(ann["entities"])
    assert ids == [str(i) for i in range(1, len(ids) + 1)]
    for e in ann["entities"].values():
        assert set(e) == {"tokens", "label", "start_ix", "end_ix", "relations"}
        assert 0 <= e["start_ix"] <= e["end_ix"] < len(toks)
        assert e["tokens"] == " ".join(toks[e["start_ix"] : e["end_ix"] + 1])
        assert e["label"] in {PRESENT, ABSENT, UNCERTAIN, ANAT}
        for r, t in e["relations"]:
            assert r in {"modify", "located_at", "suggestive_of"}
            assert ann["entities"][t] is not e, "self relation"
            assert isinstance(t, str) and t in ann["entities"]


# --- format and tokenisation ---------------------------------------------------------------


def test_format_matches_radgraph_output() -> None:
    ann = _one("1. Mild left basal atelectasis; no pneumonia.")
    assert ann["text"] == "1 . Mild left basal atelectasis ; no pneumonia ."
    assert ann["data_source"] is None and ann["data_split"] == "inference"
    _check_format(ann)
    ents = _ents("1. Mild left basal atelectasis; no pneumonia.")
    assert ents["mild"]["label"] == PRESENT and ents["left basal"]["label"] == ANAT
    assert ents["atelectasis"]["label"] == PRESENT
    assert ents["pneumonia"]["label"] == ABSENT
    assert _rel(ann, "mild", "modify", "atelectasis")
    assert _rel(ann, "atelectasis", "located_at", "left basal")


def test_tokenize_like_radgraph_xl() -> None:
    assert tokenize("Right-sided PICC (tip at 5.6 cm).") == [
        "Right", "-", "sided", "PICC", "(", "tip", "at", "5", ".", "6", "cm", ")", "."
    ]  # fmt: skip
    # expected strings produced by radgraph.utils.radgraph_xl_preprocess_report (radgraph 0.1.18);
    # the dev-set test below checks all 300 real reports against RadGraph-XL's own "text"
    for s, want in [
        ("a.b,c", "a . b , c"),
        ("50%.", "50 % ."),
        ("x).", "x ) ."),
        ("dose (5%).", "dose ( 5 % ) ."),
        ('said "no".\nNext', 'said " no ". Next'),
        ("ünïcödé — dash", "ünïcödé — dash"),
        ("tab\tsep  ___ , x", "tab sep ___ , x"),
    ]:
        assert " ".join(tokenize(s)) == want, s


# --- certainty -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, word, label",
    [
        ("There is a small right pleural effusion.", "effusion", PRESENT),
        ("No pleural effusion.", "effusion", ABSENT),
        ("No pneumothorax.", "pneumothorax", ABSENT),
        ("Without evidence of pneumothorax.", "pneumothorax", ABSENT),
        ("Pneumothorax is not seen.", "pneumothorax", ABSENT),
        ("No focal consolidation.", "consolidation", ABSENT),
        ("No focal consolidation.", "focal", ABSENT),
        ("Possible right lower lobe pneumonia.", "pneumonia", UNCERTAIN),
        ("Opacity may represent atelectasis.", "atelectasis", UNCERTAIN),
        ("Opacity may represent atelectasis.", "opacity", PRESENT),
        ("Pneumonia cannot be excluded.", "pneumonia", UNCERTAIN),
        ("Findings likely reflect pulmonary edema.", "edema", UNCERTAIN),
        # scope ends at "but" and at the sentence end
        ("No pneumothorax, but a small effusion is present.", "effusion", PRESENT),
        ("No pneumothorax. Small left pleural effusion.", "effusion", PRESENT),
        ("No pneumothorax, pleural effusion or consolidation.", "consolidation", ABSENT),
    ],
)
def test_certainty(text: str, word: str, label: str) -> None:
    assert _ents(text)[word]["label"] == label


def test_anatomy_is_always_present() -> None:
    for e in _one("No pleural effusion. Possible left lower lobe pneumonia.")["entities"].values():
        if e["label"].startswith("Anatomy"):
            assert e["label"] == ANAT


# --- modifiers and locations ------------------------------------------------------------------


def test_modifiers_and_locations() -> None:
    ann = _one("Moderate left pleural effusion. Heart size is normal. The cardiac silhouette is enlarged.")
    assert _rel(ann, "moderate", "modify", "effusion")
    assert _rel(ann, "left", "modify", "pleural")
    assert _rel(ann, "effusion", "located_at", "pleural")
    assert _rel(ann, "size", "modify", "heart")
    assert _rel(ann, "normal", "located_at", "heart")
    assert _rel(ann, "silhouette", "modify", "cardiac")
    assert _rel(ann, "enlarged", "located_at", "cardiac")
    ann = _one("Patchy opacity at the left lung base. Effusions are unchanged.")
    assert _rel(ann, "opacity", "located_at", "lung")
    assert _rel(ann, "base", "modify", "lung")
    assert _rel(ann, "left", "modify", "lung")
    assert _rel(ann, "unchanged", "modify", "effusions")
    # RadGraph-XL keeps "right lung" whole as a location much more often than "left lung"
    ann = _one("Patchy opacity at the right lung base.")
    assert _rel(ann, "opacity", "located_at", "right lung")
    assert _rel(ann, "base", "modify", "right lung")
    ann = _one("Right base opacity may represent pneumonia.")
    assert _rel(ann, "opacity", "suggestive_of", "pneumonia")
    ann = _one("The tip of the endotracheal tube is 4 cm above the carina.")
    assert _rel(ann, "tip", "modify", "tube")


def test_location_and_attachment_conventions() -> None:
    # a laterality right before a finding or device is its location ("right PICC line")
    ann = _one("Right PICC line ends in the mid SVC. Small left effusion.")
    assert _rel(ann, "picc line", "located_at", "right")
    assert _rel(ann, "picc line", "located_at", "svc")
    assert _rel(ann, "effusion", "located_at", "left")
    assert not _ents("Small left effusion.")["left"]["relations"]
    # adjectives before a "left greater than right" comparison modify the finding after it
    ann = _one("Stable moderate left greater than right bilateral pleural effusions.")
    for word in ("stable", "moderate", "greater"):
        assert _rel(ann, word, "modify", "effusions"), word
    # "stable chest radiograph": the study itself is the finding, located at the chest
    assert _rel(_one("Stable chest radiograph."), "radiograph", "located_at", "chest")
    assert "radiograph" not in _ents("Compared to the prior chest radiograph, no change.")
    # "size of <finding>" is not the anatomy "size" of "heart size"
    assert "size" not in _ents("The size of the pneumothorax is unchanged.")
    assert _ents("Heart size is normal.")["size"]["label"] == ANAT
    # whole location phrases: sentence-initial lobes, the cavoatrial junction, numbered ribs
    assert _ents("Left lower lobe is clear.")["left lower lobe"]["label"] == ANAT
    # before a finding a lobe name stays whole ("right lower lobe nodule"), a side + base is split
    ann = _one("Left lower lobe nodule.")
    assert _rel(ann, "nodule", "located_at", "left lower lobe")
    # ... except before an airspace process filling the lobe (lexicon.LOBE_SPLIT_FINDINGS)
    ann = _one("Left lower lobe consolidation.")
    assert "left lower lobe" not in _ents("Left lower lobe consolidation.")
    assert _rel(ann, "consolidation", "located_at", "lobe")
    assert _rel(ann, "left", "modify", "lobe") and _rel(ann, "lower", "modify", "lobe")
    assert "left base" not in _ents("Mild left base atelectasis.")
    # a compared side at the end of a clause gets no relation
    assert not _ents("Bilateral pleural effusions, more prominent on the right.")["right"]["relations"]
    assert _rel(_one("Opacities at the bases, especially on the right."), "right", "modify", "bases")
    assert "cavoatrial junction" in _ents("Right IJ catheter ends at the cavoatrial junction.")
    assert "right posterior eighth rib" in _ents("Fracture of the right posterior eighth rib.")
    # a bare alternative shares the location, except findings with a place of their own
    assert _rel(_one("Bibasilar atelectasis or pneumonia."), "pneumonia", "located_at", "bibasilar")
    assert not _ents("No pleural effusion or pneumothorax.")["pneumothorax"]["relations"]
    # predicates: coordinated ones share the subject; a new clause is not walked into
    ann = _one("The aorta is calcified and tortuous.")
    assert _rel(ann, "calcified", "located_at", "aorta") and _rel(ann, "tortuous", "located_at", "aorta")
    ann = _one("Heart is enlarged and lungs are clear.")
    assert _rel(ann, "clear", "located_at", "lungs") and not _rel(ann, "clear", "modify", "enlarged")
    ann = _one("Moderate pulmonary edema and small effusion have increased.")
    assert _rel(ann, "increased", "modify", "edema") and _rel(ann, "increased", "modify", "effusion")
    # noun phrases across a range and a coordination of adjectives
    assert _rel(_one("Unchanged mild-to-moderate cardiomegaly."), "unchanged", "modify", "cardiomegaly")
    ann = _one("Unchanged monitoring and support devices.")
    assert _rel(ann, "monitoring", "modify", "devices") and _rel(ann, "unchanged", "modify", "devices")
    # "cardiopulmonary findings" is a finding; a laterality reaches over one unknown descriptor
    ents = _ents("No acute cardiopulmonary findings.")
    assert ents["findings"]["label"] == ABSENT
    assert _rel(_one("No acute cardiopulmonary findings."), "findings", "located_at", "cardiopulmonary")
    ann = _one("Opacity in the right anteromedial hemithorax.")
    assert _rel(ann, "right", "modify", "hemithorax") and _rel(ann, "opacity", "located_at", "hemithorax")
    # "early" and "is probably" do not hedge (RadGraph-XL keeps these definite)
    assert _ents("Early right middle lobe pneumonia.")["pneumonia"]["label"] == PRESENT
    assert _ents("Small right pleural effusion is probably new.")["effusion"]["label"] == PRESENT


# --- phantom report vocabulary ----------------------------------------------------------------

PHANTOM: list[tuple[str, dict[str, int]]] = [
    ("Cardiomegaly.", {"Cardiomegaly": 1}),
    ("The heart is enlarged.", {"Cardiomegaly": 1}),
    ("Heart size is normal.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("Small left pleural effusion.", {"Pleural Effusion": 1}),
    ("Moderate right pleural effusion.", {"Pleural Effusion": 1}),
    ("Large left pleural effusion.", {"Pleural Effusion": 1}),
    ("No pleural effusion.", {"Pleural Effusion": 0, "No Finding": 1}),
    ("Left apical pneumothorax.", {"Pneumothorax": 1}),
    ("Right apical pneumothorax.", {"Pneumothorax": 1}),
    ("No pneumothorax.", {"Pneumothorax": 0, "No Finding": 1}),
    ("Consolidation in the right lower lobe.", {"Consolidation": 1}),
    ("Consolidation in the right lower zone.", {"Consolidation": 1}),
    ("Patchy opacity in the left mid zone.", {"Lung Opacity": 1}),
    ("Nodule in the left upper lobe.", {"Lung Lesion": 1}),
    ("Nodule in the left upper zone.", {"Lung Lesion": 1}),
    ("Right perihilar mass.", {"Lung Lesion": 1}),
    ("Plate-like atelectasis at the left base.", {"Atelectasis": 1}),
    ("Bibasilar atelectasis.", {"Atelectasis": 1}),
    ("Pulmonary edema.", {"Edema": 1}),
    ("Vascular congestion.", {"Edema": 1}),
    ("Endotracheal tube in place.", {"Support Devices": 1, "No Finding": 1}),
    ("Enteric tube in the stomach.", {"Support Devices": 1, "No Finding": 1}),
    ("Central venous catheter tip in the SVC.", {"Support Devices": 1, "No Finding": 1}),
    ("Left-sided pacemaker.", {"Support Devices": 1, "No Finding": 1}),
    ("Blunting of the left costophrenic angle.", {"Pleural Effusion": 1}),
    ("Possible right lower lobe pneumonia.", {"Pneumonia": -1}),
    ("Opacity at the right base may represent atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("No acute cardiopulmonary process.", {"No Finding": 1}),
    ("Lungs are clear.", {"No Finding": 1}),
    ("No focal consolidation.", {"Consolidation": 0, "No Finding": 1}),
]


# More phrasings of the same findings (certainty and negation variants)
PHANTOM += [
    ("The cardiac silhouette is enlarged.", {"Cardiomegaly": 1}),
    ("The heart is mildly enlarged.", {"Cardiomegaly": 1}),
    ("There is a small left pleural effusion.", {"Pleural Effusion": 1}),
    ("Small pleural effusions are present bilaterally.", {"Pleural Effusion": 1}),
    ("Large left pneumothorax is present.", {"Pneumothorax": 1}),
    ("Right lower lobe consolidation.", {"Consolidation": 1}),
    ("An ill-defined opacity is seen in the left upper lobe.", {"Lung Opacity": 1}),
    ("8 mm nodule in the left lower lobe.", {"Lung Lesion": 1}),
    ("Linear atelectasis at the left lung base.", {"Atelectasis": 1}),
    ("Mild interstitial pulmonary edema.", {"Edema": 1}),
    ("Endotracheal tube tip is 4 cm above the carina.", {"Support Devices": 1, "No Finding": 1}),
    ("Enteric tube courses below the diaphragm with the tip in the stomach.", {"Support Devices": 1, "No Finding": 1}),
    ("A right internal jugular line ends in the SVC.", {"Support Devices": 1, "No Finding": 1}),
    ("Mild cardiomegaly cannot be excluded.", {"Cardiomegaly": -1}),
    ("Findings may represent a small right pleural effusion.", {"Pleural Effusion": -1}),
    ("A small right pneumothorax cannot be excluded.", {"Pneumothorax": -1}),
    ("Findings in the left lower lobe may represent consolidation.", {"Consolidation": -1}),
    ("Possible ill-defined mass in the right upper lobe.", {"Lung Lesion": -1}),
    ("Possible subtle right basilar atelectasis.", {"Atelectasis": -1}),
    ("The heart is normal in size.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("No evidence of pleural effusion.", {"Pleural Effusion": 0, "No Finding": 1}),
    ("No pneumothorax or pleural effusion.", {"Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
    ("There is no pulmonary nodule or mass.", {"Lung Lesion": 0, "No Finding": 1}),
    ("No evidence of pulmonary edema.", {"Edema": 0, "No Finding": 1}),
    ("The lungs are well expanded and clear.", {"No Finding": 1}),
]


@pytest.mark.parametrize("text, expected", PHANTOM)
def test_phantom_vocabulary_chexpert(text: str, expected: dict[str, int]) -> None:
    labels = chexpert_labels_from_text([text])[0]
    assert set(labels) == set(CHEXPERT14)
    assert {k: v for k, v in labels.items() if v is not None} == expected


def test_phantom_vocabulary_entities() -> None:
    ents = _ents("Small right pleural effusion and left apical pneumothorax.")
    assert ents["small"]["label"] == PRESENT and ents["right"]["label"] == ANAT
    assert ents["apical"]["label"] == ANAT and ents["pneumothorax"]["label"] == PRESENT
    for text, anat in [
        ("Opacity in the right upper zone.", "zone"),
        ("Opacity in the left mid zone.", "zone"),
        ("Opacity at the left apex.", "left apex"),
        ("Opacity at the right base.", "right base"),
        ("Bibasilar atelectasis.", "bibasilar"),
        ("Perihilar opacity.", "perihilar"),
    ]:
        ann = _one(text)
        assert any(e["tokens"].lower() == anat and e["label"] == ANAT for e in ann["entities"].values()), text
        obs = [
            e
            for e in ann["entities"].values()
            if e["label"] == PRESENT and e["tokens"].lower() in ("opacity", "atelectasis")
        ]
        assert obs and obs[0]["relations"], text  # located somewhere
    for device in ["Endotracheal tube", "Enteric tube", "Central venous catheter", "Pacemaker"]:
        labels = [e["label"] for e in _one(device + " in place.")["entities"].values()]
        assert PRESENT in labels, device
    ann = _one("The lungs are clear. Heart size is normal. Mild pulmonary edema and vascular congestion.")
    assert _rel(ann, "clear", "located_at", "lungs")
    assert _rel(ann, "edema", "located_at", "pulmonary")
    assert _ents("Vascular congestion.")["congestion"]["label"] == PRESENT


# --- robustness ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 3, 4.5, b"\x00\xff binary", ["list"], {"a": 1}, object()])
def test_non_str_is_empty(bad: Any) -> None:
    ann = _one(bad)
    assert ann["text"] == "" and ann["entities"] == {}


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "\n\n",
        ".",
        "\x00\x01\x02\ufffd\ud800",
        "😀 " * 50,
        "Kein Pleuraerguss. 无气胸。",
        "no " * 500,
        "-" * 999,
    ],
)
def test_junk_never_raises(text: str) -> None:
    ann = _one(text)
    _check_format(ann)


_WORDS = [
    "no", "not", "possible", "may", "represent", "cannot", "be", "excluded", "or", "and", ",", ".", ";", "-",
    "left", "right", "lower", "lobe", "lung", "base", "pleural", "effusion", "pneumothorax", "tube", "tip",
    "of", "the", "in", "at", "is", "unchanged", "mild", "heart", "size", "normal", "below", "above", "to",
    "consistent", "with", "if", "any", "but", "greater", "than", "volume", "loss", "interstitial", "pulmonary",
]  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_WORDS), max_size=40) | st.text(max_size=200))
def test_random_input_gives_valid_annotations(words: list[str] | str) -> None:
    text = words if isinstance(words, str) else " ".join(words)
    ann = _one(text)
    _check_format(ann)
    assert ann == _one(text)  # deterministic (and served from the cache the second time)


def test_huge_input_is_capped() -> None:
    from radlab.clinical.annotator import MAX_CHARS

    ann = _one("Small left pleural effusion. " * 20_000)
    _check_format(ann)
    assert len(ann["text"]) <= MAX_CHARS * 2
    assert ann["entities"]


def test_single_string_and_generator_inputs() -> None:
    assert len(annotate("No pneumothorax.")) == 1
    assert len(annotate(t for t in ["a", "b"])) == 2
    assert annotate(None) == [] and annotate(5) == []


def test_deterministic_and_cache_safe() -> None:
    text = "Moderate right pleural effusion, unchanged. No pneumothorax."
    clear_cache()
    first = annotate([text])[0]
    snapshot = json.dumps(first, sort_keys=True)
    first["entities"]["1"]["label"] = "corrupted"
    first["entities"]["1"]["relations"].append(["modify", "99"])
    first["entities"].clear()
    first["text"] = "x"
    again = annotate([text, text])
    assert json.dumps(again[0], sort_keys=True) == snapshot
    assert again[0] is not again[1] and again[0]["entities"] is not again[1]["entities"]
    assert cache_info().hits >= 2
    clear_cache()
    assert json.dumps(annotate([text])[0], sort_keys=True) == snapshot


def test_chexpert_malformed_and_empty() -> None:
    assert all(v is None for v in chexpert_labels({}).values())
    assert all(v is None for v in chexpert_labels(_one("")).values())
    assert all(v is None for v in chexpert_labels({"entities": "junk"}).values())  # type: ignore[dict-item]
    labels = chexpert_labels(_one("Cardiomegaly. Possible pneumonia. No effusion. ET tube in place."))
    assert labels["Cardiomegaly"] == 1 and labels["Pneumonia"] == -1 and labels["Pleural Effusion"] == 0
    assert labels["Support Devices"] == 1 and labels["No Finding"] is None
    # positive beats uncertain beats negative
    labels = chexpert_labels(_one("No pneumothorax. Possible small left apical pneumothorax."))
    assert labels["Pneumothorax"] == -1


@pytest.mark.parametrize(
    "text",
    [
        "Recommend repeat CXR or abdominal films for further evaluation of the distal tip.",
        "Consider repositioning the Dobhoff tube.",
        "2. Followup radiographs with nipple markers could be considered.",
        "Follow - up radiographs are recommended to show resolution of the pneumonia.",
        "Alternatively, CT of the chest could also be performed to characterize the right lower lobe nodule.",
        "If symptoms refer to the thoracic spine, further imaging assessment could be given consideration.",
        "Repeat imaging after diuresis is recommended to evaluate for concomitant pneumonia.",
    ],
)
def test_recommendation_sentences_are_not_annotated(text: str) -> None:
    # RadGraph-XL leaves recommendations unannotated; the findings they name are not reported
    assert _one(text)["entities"] == {}


def test_recommendation_rule_keeps_findings_and_other_sentences() -> None:
    # a finding that is the subject keeps its entities even when the sentence recommends a study
    ents = _ents("Possible rib fractures for which evaluation with a chest CT is recommended.")
    assert ents["fractures"]["label"] == UNCERTAIN
    # "repeat"/"if"/"alternatively" without a recommending predicate are ordinary sentences
    assert "opacity" in _ents("Alternatively, given recent oral contrast, opacity may represent aspirated contrast.")
    assert "picc line" in _ents("Repeat PA radiograph demonstrates the PICC line in the mid SVC.")
    # only the recommendation sentence loses its entities
    ann = _one("Small left pleural effusion. Recommend follow - up radiographs.")
    assert {e["tokens"] for e in ann["entities"].values()} == {"Small", "left", "pleural", "effusion"}


def test_coordinated_organs_do_not_modify_each_other() -> None:
    ann = _one("Leads terminate in the right atrium and right ventricle.")
    assert _rel(ann, "right", "modify", "atrium") and _rel(ann, "right", "modify", "ventricle")
    assert not _rel(ann, "atrium", "modify", "ventricle")
    # a lone adjective before the "or" still modifies the shared organ word
    assert _rel(_one("Pulmonary or mediastinal vascular engorgement."), "pulmonary", "modify", "vascular")


def test_pearson_over_all_pairs() -> None:
    from radlab.clinical.agreement import f1radgraph_pearson_all

    texts = [
        "No pleural effusion.",
        "Small left pleural effusion.",
        "Moderate pulmonary edema and small bilateral pleural effusions.",
        "Right lower lobe pneumonia.",
        "No pneumothorax. Heart size is normal.",
        "Mild pulmonary edema.",
    ]
    refs = annotate(texts)
    r, lo, hi = f1radgraph_pearson_all(refs, refs, n_boot=200)
    assert r == pytest.approx(1.0) and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)
    # a hypothesis that annotates one report as another agrees less; the CI brackets the estimate
    wrong = [refs[0], refs[0], *refs[2:]]
    r2, lo2, hi2 = f1radgraph_pearson_all(wrong, refs, n_boot=200)
    assert r2 < 0.99 and lo2 <= r2 <= hi2
    with pytest.raises(ValueError, match="5 hypotheses but 6 references"):
        f1radgraph_pearson_all(refs[:5], refs)


# --- agreement with RadGraph-XL on the dev set ------------------------------------------------


@pytest.mark.skipif(not DEV.is_file(), reason=f"dev annotations absent: {DEV}")
def test_dev_agreement_floors() -> None:
    data = json.loads(DEV.read_text())
    hyps = annotate([d["report"] for d in data])
    refs = [d["radgraph_xl"] for d in data]
    assert all(h["text"] == r["text"] for h, r in zip(hyps, refs))
    for h in hyps:
        _check_format(h)
    a = agreement(hyps, refs)
    assert a["entity"]["f1"] >= 0.78, a
    assert a["entity_tokens"]["f1"] >= 0.78, a
    assert a["relation"]["f1"] >= 0.58, a


@pytest.mark.skipif(not DEV.is_file(), reason=f"dev annotations absent: {DEV}")
def test_learned_lexicon_is_in_sync_with_learner() -> None:
    from radlab.clinical.learn import learn_phrases, learn_words
    from radlab.clinical.lexicon_learned import LEARNED_PHRASES, LEARNED_WORDS

    refs = [d["radgraph_xl"] for d in json.loads(DEV.read_text())]
    assert learn_words(refs) == LEARNED_WORDS, "regenerate radlab/clinical/lexicon_learned.py"
    assert learn_phrases(refs) == LEARNED_PHRASES, "regenerate radlab/clinical/lexicon_learned.py"
