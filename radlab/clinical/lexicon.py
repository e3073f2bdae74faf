"""Curated lexicon of the offline RadGraph-style annotator (:mod:`radlab.clinical.annotator`).

Pure Python data (no YAML, so it ships without package-data configuration).  Entries are
lower-case RadGraph-XL tokens (``wordpunct`` tokenisation: "right-sided" is ``right - sided``).
The terms are general chest-radiograph vocabulary (anatomy, findings, devices, CheXpert/NegEx-style
cue phrases), checked for coverage against public report text; the span and relation conventions
(what RadGraph-XL keeps as one entity, which word heads an anatomy phrase) were read off RadGraph-XL
output.  Words learned automatically from reference annotations live in
:mod:`radlab.clinical.lexicon_learned`; curated entries take precedence.

Token classes (a word in several sets takes the first class in this order: ANAT_PRE, ANAT_PART,
ANAT_HEAD, OBS_POST, OBS_HEAD, OBS_PRE)::

    ANAT_HEAD   anatomy nouns/adjectives that head an anatomy phrase ("lung", "pleural")
    ANAT_PRE    anatomy pre-modifiers that ``modify`` the phrase head ("left", "lower")
    ANAT_PART   anatomy "part" words that ``modify`` back to the organ ("silhouette" in
                "cardiac silhouette", "size" in "heart size", "base" in "lung base")
    OBS_HEAD    findings and devices ("effusion", "tube")
    OBS_PRE     observation modifiers that ``modify`` the head finding ("mild", "small")
    OBS_POST    status words that ``modify`` the finding they follow ("unchanged", "stable"), or,
                after an anatomy subject, are ``located_at`` it ("heart size is normal")

``PHRASES`` lists multi-token spans that RadGraph-XL keeps as a single entity, with their class
("A" anatomy, "O" observation).
"""

from __future__ import annotations

ANAT_PRE: frozenset[str] = frozenset(
    """
    left right bilateral lower upper mid middle internal external anterior posterior medial superior
    inferior lateral below first second third fourth fifth sixth seventh eighth ninth tenth eleventh
    twelfth ascending descending
    """.split()
)

ANAT_PART: frozenset[str] = frozenset(
    """
    silhouette silhouettes size contour contours volume volumes base bases apex apices wall walls
    junction angle angles parenchyma parenchymal margin margins border borders surface surfaces
    structures structure space spaces
    """.split()
)

ANAT_HEAD: frozenset[str] = frozenset(
    """
    lung lungs pulmonary pleural pleura lobe lobes lobar lingula lingular segment segmental
    subsegmental hemithorax hemithoraces chest thorax thoracic thoracolumbar heart cardiac
    cardiomediastinal mediastinal mediastinum hilar hilum hila hilus perihilar suprahilar infrahilar
    paratracheal retrocardiac basal basilar bibasilar apical zone zones field fields costophrenic
    cardiophrenic hemidiaphragm hemidiaphragms diaphragm diaphragmatic peridiaphragmatic subpulmonic
    subdiaphragmatic vascular vasculature vascularity vessels vessel venous vein veins artery
    arteries arterial aorta aortic arch knob valve atrium atrial ventricle ventricular pericardial
    svc ivc cavoatrial vena cava jugular subclavian brachiocephalic innominate axillary azygos
    carina trachea tracheal bronchus bronchi bronchial bronchovascular airway airways esophagus
    esophageal gastroesophageal stomach gastric duodenum pylorus abdomen abdominal epigastric
    quadrant liver hepatic spleen bowel colon rib ribs clavicle clavicles scapula scapulae sternum
    sternal spine spinal vertebral vertebra vertebrae humerus humeral shoulder shoulders
    glenohumeral osseous bony skeletal soft tissue tissues subcutaneous skin breast breasts nipple
    nipples axilla neck cervical interstitial interstitium alveolar parenchymal airspace fissure
    fissures pectoral intrafissural cardiopulmonary cardiovascular pleuroparenchymal
    hemidiaphragmatic retrosternal subsegment mainstem medially laterally posteriorly anteriorly
    bilaterally peribronchial peripheral centrilobular lumbar thoracoabdominal upper-abdomen
    costovertebral ipsilateral contralateral midlung midlungs intraperitoneal midthoracic diaphragms
    endplate endplates disc discs pelvis sulcus sulci acromioclavicular epicardial coronary lymph
    node nodes bone bones hiatal cardio costochondral sternoclavicular paraspinal paravertebral
    retroperitoneal subphrenic parahilar paramediastinal azygoesophageal aortopulmonary bibasal
    biapical paramedian clavicular supraclavicular infraclavicular perithoracic hypochondriac
    """.split()
)

OBS_PRE: frozenset[str] = frozenset(
    """
    greater mild mildly moderate moderately severe severely small large larger smaller tiny minimal
    minimally trace slight subtle marked markedly extensive diffuse focal multifocal patchy streaky
    hazy linear nodular reticular reticulonodular interstitial confluent scattered acute chronic
    chronically new newly early old longstanding recurrent residual asymmetric asymmetrical
    symmetric bilateral layering loculated compressive subsegmental substantial substantially
    moderate-sized massive huge innumerable multiple numerous tortuous calcified dense widespread
    predominant predominantly mixed superimposed supervening overlying progressive increasing
    decreasing worsening improving little grossly minor borderline low standard transvenous dual
    nasogastric orogastric endotracheal tracheostomy enteric feeding pacing metastatic cavitary
    atelectatic consolidative infiltrative cardiogenic noncardiogenic postoperative surgical
    atherosclerotic degenerative healed healing displaced nondisplaced partially partial complete
    hyperinflated hyperexpanded emphysematous fibrotic inflammatory infectious top monitoring
    support congestive multilevel arthritic ectatic calcific irregular sclerotic tuberculous rounded
    bandlike atypical accentuated active pigtail
    """.split()
)

OBS_POST: frozenset[str] = frozenset(
    """
    coiled kinked unchanged stable improved improving worsened worsening increased decreased
    increase decrease resolving improvement progression regression normal unremarkable clear
    enlarged prominent prominence engorged engorgement elevated elevation low widened widening
    dilated tortuous intact similar smaller larger worse obscured shifted displaced limits
    satisfactory stably increasing decreasing expanded aerated blunted flattened hypoinflated
    """.split()
)

OBS_HEAD: frozenset[str] = frozenset(
    """
    effusion effusions edema pneumothorax pneumothoraces hydropneumothorax pneumomediastinum
    pneumoperitoneum pneumopericardium atelectasis atelectases consolidation consolidations opacity
    opacities opacification opacifications density densities infiltrate infiltrates pneumonia pna
    infection aspiration cardiomegaly enlargement congestion hypertension overload nodule nodules
    nodular nodularity mass masses lesion lesions tumor tumors neoplasm malignancy cancer carcinoma
    metastasis metastases granuloma granulomas calcification calcifications fracture fractures
    deformity deformities scoliosis kyphosis spondylosis emphysema copd hyperinflation
    hyperexpansion fibrosis scarring scar scars thickening fluid hemorrhage hematoma collapse
    abnormality abnormalities process disease change changes tube tubes line lines catheter
    catheters pacemaker pacer defibrillator icd leads lead wires clips clip stent stents drain
    drains sheath port hardware device devices prosthesis valve thoracotomy lobectomy pneumonectomy
    cabg surgery tip position placement placements course coiled kinked picc dobbhoff dobhoff ett et
    ng og ij swan ganz cardiomediastinal air gas lucency lucencies blunting haziness markings
    prominence engorgement tortuosity elongation calcified unfolding widening herniation hernia
    eventration bronchiectasis cyst cysts cavity cavitation cavities bulla bullae bleb blebs
    pneumatocele cardiomyopathy chf failure aneurysm dissection adenopathy lymphadenopathy
    hyperlucency volume-loss loss inflammation pleurisy empyema abscess osteopenia osteophytes
    arthritis dextroscoliosis levoscoliosis granulomatous sarcoidosis tuberculosis histoplasmosis
    aspergillosis bronchitis bronchiolitis ards contusion laceration rotation motion abnormal
    asymmetry asymmetric obscuration silhouetting crowding splinting excursion inspiration effort
    ventilation perfusion expansion reexpansion elevation shift mediastinal-shift gastric-distension
    distention distension dilatation hyperexpanded hyperinflated atherosclerosis seeds markers
    fiducial anchors cement fusion fusions hypoinflation postsurgical flattening ectasia injury
    sequela sequelae curvature cholecystectomy spurring irregularity pectus excavatum dislocation
    osteophyte generator plaque plaques thymoma lymphoma goiter sclerosis osteotomy
    """.split()
)

# Multi-token entities RadGraph-XL keeps whole.  Value: "A" anatomy, "O" observation.
PHRASES: dict[tuple[str, ...], str] = {
    tuple(k.split()): v
    for k, v in {
        "in place": "O",
        "ng tube": "O",
        "picc line": "O",
        "central line": "O",
        "pigtail catheter": "O",
        "swan - ganz catheter": "O",
        "side port": "O",
        "distal end": "O",
        "disease process": "O",
        "cavitary lesions": "O",
        "decreased in extent": "O",
        "small to moderate in size": "O",
        "small in size": "O",
        "very subtle": "O",
        "slight improvement": "O",
        "respiratory motion": "O",
        "adequately placed": "O",
        "tension physiology": "O",
        "thoracic aorta": "A",
        "left side": "A",
        "right side": "A",
        "left basal": "A",
        "right basal": "A",
        "left apex": "A",
        "right apex": "A",
        "left mid lung": "A",
        "right mid lung": "A",
        "left mid to lower lung": "A",
        "superior cavoatrial junction": "A",
        "inferior cavoatrial junction": "A",
        "cavoatrial junction": "A",
        "soft tissues": "A",
        "soft tissue": "A",
        "superior vena cava": "A",
        "internal jugular vein": "A",
        "right internal jugular vein": "A",
        "left internal jugular vein": "A",
        "inferior vena cava": "A",
        "upper margin": "A",
        "lower cervical spine": "A",
        "epigastric region": "A",
        "lower esophagus": "A",
        "cervical esophagus": "A",
        "ge junction": "A",
    }.items()
}

# Second parts of hyphenated compounds that make the compound an anatomy entity
# ("left - sided", "pleural - based").
HYPHEN_ANAT_TAILS: frozenset[str] = frozenset({"sided", "side", "based"})

# Hyphenated observation compounds common in reports (parts joined with "-").
HYPHEN_OBS_PARTS: frozenset[str] = frozenset(
    """
    pre existing ill defined well plate like post surgical operative procedural small moderate
    large to flame shaped space occupying age related dual lead re positioned mid lower upper
    ground glass non obstructive hyper inflated low lying air fluid
    """.split()
)

# NegEx-style cues.  Multi-word cues are matched on token sequences.
NEG_PRE: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in [
        "no",
        "without",
        "not",
        "negative for",
        "free of",
        "absence of",
        "no evidence of",
        "no signs of",
        "no longer",
        "neither",
        "nor",
        "removal of",
        "interval removal of",
        "resolution of",
        "clear of",
    ]
)
NEG_POST: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in [
        "is not seen",
        "are not seen",
        "is not present",
        "are not present",
        "is not identified",
        "are not identified",
        "is not appreciated",
        "are not appreciated",
        "is absent",
        "are absent",
        "has resolved",
        "have resolved",
        "not visualized",
        "is not evident",
        "are not evident",
        "has been removed",
        "have been removed",
        "resolved",
        "has substantially resolved",
        "have substantially resolved",
        "has largely resolved",
        "no longer seen",
        "no longer visualized",
        "no longer present",
        "no longer evident",
        "no longer identified",
        "no longer apparent",
        "no longer visible",
        "completely resolved",
        "not recurred",
        "has also been removed",
    ]
)
UNC_PRE: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in [
        "may",
        "might",
        "could",
        "likely",
        "possible",
        "possibly",
        "probable",
        "presumed",
        "presumably",
        "suspected",
        "suspicious",
        "suspicion",
        "concerning",
        "concern",
        "question of",
        "questionable",
        "represent",
        "reflect",
        "possibility",
        "differential",
        "versus",
        "vs",
        "worrisome",
        "equivocal",
        "cannot exclude",
        "can not exclude",
        "not exclude",
        "rule out",
        "evaluate for",
        "assess for",
        "perhaps",
        "developing",
        "suggestive of",
        "?",
        "not be mistaken for",
        "assessment for",
        "related to",
        "either",
        "probably",
        "thought to be",
        "compatible with",
        "potential",
        "suggestion of",
        "rather than",
    ]
)
UNC_POST: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in [
        "cannot be excluded",
        "can not be excluded",
        "cannot be ruled out",
        "not excluded",
        "be excluded",
        "is not excluded",
        "is possible",
        "are possible",
        "is suspected",
        "are suspected",
        "is questionable",
        "cannot be entirely excluded",
        "if",
        "are possibilities",
        "is a possibility",
        "are presumed",
        "is presumed",
        "in the differential",
        "difficult to exclude",
        "not be entirely excluded",
        "less likely",
        "is difficult to exclude",
        "could be present",
        "may be present",
        "might be present",
        "if any",
        "should be considered",
        "would have to be considered",
        "is of serious concern",
        "would not be appreciated",
        "cannot be detected",
        "until proved otherwise",
        "cannot be completely excluded",
        "not favored",
        "is not favored",
    ]
)
# Cues that end a NegEx scope (besides sentence and clause punctuation).
SCOPE_END: frozenset[str] = frozenset(
    """
    but however although though except aside apart which while whereas otherwise nevertheless
    yet despite since given ) with
    """.split()
)

# Phrases after a finding that introduce what it suggests ("opacity may represent pneumonia").
SUGGEST_CUES: tuple[tuple[str, ...], ...] = tuple(
    tuple(s.split())
    for s in [
        "may represent",
        "may reflect",
        "could represent",
        "could reflect",
        "likely represents",
        "likely reflects",
        "likely represent",
        "likely reflect",
        "represents",
        "represent",
        "reflects",
        "reflect",
        "reflecting",
        "representing",
        "suggestive of",
        "suggesting",
        "suggest",
        "suggests",
        "consistent with",
        "compatible with",
        "concerning for",
        "suspicious for",
        "worrisome for",
        "due to",
        "related to",
        "secondary to",
        "from",
        "indicating",
        "indicative of",
        "raising concern for",
        "could be",
        "may be",
        "likely",
        "probably",
        "which may",
        "which could",
        "attributable to",
        "thought to be",
        "raises the possibility of",
        "raises concern for",
        "suggestive for",
        "differential includes",
        "may well be",
        "could be due to",
        "may be due to",
    ]
)

# Words after which a following anatomy phrase is the finding's location.
LOCATION_PREPS: frozenset[str] = frozenset(
    "in at of within along involving over near throughout into to overlying projecting from the above below "
    "through beyond past across toward towards till until via".split()
)

# Tokens that never start or belong to an entity although they look like lexicon words in
# context-free matching (report boilerplate).
CHEST_NON_ANATOMY_NEXT: frozenset[str] = frozenset(
    "radiograph radiographs x film films ct study studies examination exam view views imaging".split()
)

# Findings before which a lobe name ("right lower lobe") is split into its words, each modifying
# "lobe", which is the finding's location: airspace processes that fill a lobe ("right lower lobe
# pneumonia / atelectasis / consolidation"), the way RadGraph-XL annotates them.  Before other
# findings ("left upper lobe nodule", a lesion within the lobe) the lobe name stays one entity.
LOBE_SPLIT_FINDINGS: frozenset[str] = frozenset(
    """
    pneumonia pneumonias atelectasis consolidation consolidations collapse
    """.split()
)
