"""Procedural phantom chest X-rays with reports, CheXpert labels, boxes and grounding phrases.

The only route to a good score on phantom data is reading the pixels (design:
``shared/notes/data_formats.md`` §4.2, sized for a CPU demo):

* **Deterministic.** Every case is a pure function of ``(seed, pool, index)``: independent numpy
  ``Generator(PCG64)`` streams for the patient's anatomy, the study's findings, the acquisition
  (window/gamma/noise) and the report wording are seeded from a BLAKE2 hash of that key plus a
  stream name, so changing e.g. a report template never moves a pixel.
* **Frame.** Normalised image coordinates ``x`` to the image right, ``y`` down; a PA frontal view,
  so the *patient's right is the image left*.  The gastric bubble sits under the patient's left
  hemidiaphragm (image right), which is also the lower dome.
* **Independence.** Findings are drawn independently (``prevalence`` each), laterality and zone
  uniformly; per-image random window, gamma, blur and noise keep global intensity free of labels.
* **Evidence-driven hedging.** Each finding draws a visibility (size or contrast); only a draw in
  a band just above the detection threshold is rendered faintly *and* reported with a hedge
  ("possible ...", "... cannot be excluded", "may represent ...") and labelled ``-1``.
* **Mentions.** An absent finding is negated with probability ``p_mention`` (a per-report
  "radiologist style" drawn from ``[p_mention_min, p_mention_max]``), otherwise not mentioned
  (label ``None``), so negation tuples do not dominate the report reward.
* **Text layout.** Sentence groups (devices, lungs, pleura, heart) follow one of several plausible
  orders; every sentence comes from a paraphrase pool in which some templates are *held out*:
  they appear only in the ``test`` pool (``TEST_POOLS``).

Findings rendered (kind -> names): cardiomegaly (CTR 0.55-0.70; 0.50-0.53 hedged), pleural
effusion (per side or bilateral; fluid layer on the hemidiaphragm erasing the CP angle),
pneumothorax (per side; avascular dark rim with a visceral pleural line), airspace
(consolidation with air bronchograms | hazy lung opacity, by lobe), lesion (nodule 0.05-0.075 |
mass 0.09-0.14 of the width, by lobe), atelectasis (basal plate-like bands, per side or
bibasilar), pulmonary edema (perihilar haze + Kerley lines) and support devices (endotracheal
tube, enteric tube, central venous catheter).  CheXpert labels come from what the report says;
Enlarged Cardiomediastinum, Fracture, Pleural Other and Pneumonia are never mentioned (None).

Layout: :mod:`.sampling` (configuration, seeding, patient anatomy, the study's findings),
:mod:`.render` (the image, finding and anatomy boxes), :mod:`.report` (the report text and its
CheXpert labels), :mod:`.cases` (records, :func:`generate_case`, minimal pairs).  The shortcut
baselines (text-only prior, shuffled images) work on any source and live in :mod:`radlab.shortcuts`.

Public API (shapes in the docstrings): :class:`PhantomConfig`, :func:`case_key`, :func:`generate_case`,
:func:`generate`, :func:`render_case`, :func:`minimal_pairs`, :data:`FINDING_KINDS`, :data:`ANATOMY_REGIONS`.
"""

from radlab.data.phantom.cases import (
    Case,
    MinimalPair,
    finding_region,
    generate,
    generate_case,
    minimal_pairs,
    render_case,
)
from radlab.data.phantom.render import Rendered, anatomy_boxes, render
from radlab.data.phantom.report import CHEXPERT_OF, NEG, NORMAL_IMPRESSION, POS, UNC, Statement, compose_report
from radlab.data.phantom.sampling import (
    ANATOMY_REGIONS,
    FINDING_KINDS,
    FINDING_NAMES,
    GENERATOR_VERSION,
    POOL_SPLIT,
    SOURCE,
    TEST_POOLS,
    Finding,
    Patient,
    PhantomConfig,
    Study,
    case_key,
    rng_for,
    sample_acquisition,
    sample_patient,
    sample_study,
)

__all__ = [
    "ANATOMY_REGIONS", "CHEXPERT_OF", "FINDING_KINDS", "FINDING_NAMES", "GENERATOR_VERSION", "NEG", "NORMAL_IMPRESSION",
    "POOL_SPLIT", "POS", "SOURCE", "TEST_POOLS", "UNC", "Case", "Finding", "MinimalPair", "Patient", "PhantomConfig",
    "Rendered", "Statement", "Study", "anatomy_boxes", "case_key", "compose_report", "finding_region", "generate",
    "generate_case", "minimal_pairs", "render", "render_case", "rng_for", "sample_acquisition", "sample_patient",
    "sample_study",
]
