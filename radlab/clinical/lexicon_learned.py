"""Lexicon entries learned by :mod:`radlab.clinical.learn` (generated; do not edit by hand).

Source: RadGraph-XL annotations of the radgraph dev reports published in the tests of the
Stanford-AIMI radgraph repository (MIT licence). Only single words / short phrases and their
class are kept, no report text. Regenerate with
``python -m radlab.clinical.learn ../shared/radgraph_dev/reports_radgraph_xl.json``."""

LEARNED_WORDS: dict[str, str] = {
    "aeration": "OH",
    "area": "OP",
    "bodies": "AH",
    "cage": "AH",
    "cementoplasty": "OH",
    "central": "AH",
    "complications": "OH",
    "compression": "OH",
    "consolidated": "OH",
    "dialysis": "OH",
    "diminished": "OH",
    "distal": "OP",
    "drainage": "OH",
    "edematous": "OH",
    "fat": "OH",
    "fullness": "OH",
    "generally": "OP",
    "height": "OH",
    "inflated": "OH",
    "intrathoracic": "AH",
    "midline": "AH",
    "obscuring": "OH",
    "pic": "OP",
    "pressure": "OH",
    "progressed": "OP",
    "replacement": "OH",
    "rightward": "OP",
    "rotated": "OH",
    "shadow": "OH",
    "tension": "OH",
    "visceral": "AH",
    "width": "OP",
}

LEARNED_PHRASES: dict[tuple[str, ...], str] = {
    ("aortic", "valve"): "A",
    ("right", "upper", "lobe"): "A",
}
