"""Rule- and lexicon-based RadGraph-style annotator (offline stand-in for RadGraph-XL).

``annotate(texts)`` returns, per text, a dict in RadGraph's own output format::

    {"text": "Mild left basal atelectasis ; no pneumonia .",      # tokens joined by " "
     "entities": {"1": {"tokens": "Mild", "label": "Observation::definitely present",
                        "start_ix": 0, "end_ix": 0, "relations": [["modify", "3"]]},
                  "2": {"tokens": "left basal", "label": "Anatomy::definitely present",
                        "start_ix": 1, "end_ix": 2, "relations": []},
                  "3": {"tokens": "atelectasis", "label": "Observation::definitely present",
                        "start_ix": 3, "end_ix": 3, "relations": [["located_at", "2"]]},
                  "4": {"tokens": "pneumonia", "label": "Observation::definitely absent",
                        "start_ix": 6, "end_ix": 6, "relations": []}},
     "data_source": None, "data_split": "inference"}

Entity ids are strings "1".."n" in order of ``start_ix``; ``start_ix``/``end_ix`` are inclusive
token indices into ``text.split()``; relations are ``modify``, ``located_at``, ``suggestive_of``.
The output can be fed straight to ``radgraph.rewards.compute_reward``.

Pipeline (deterministic, pure Python, one pass per sentence):

1. tokenise exactly as RadGraph-XL's preprocessing (``wordpunct`` plus its fix-ups); sentences
   that recommend a study ("Recommend repeat CXR for evaluation of the tip", "CT could be performed
   to characterise the nodule") get no entities, as in RadGraph-XL (``_is_recommendation``);
2. find entities: multi-token phrases (longest match), hyphenated compounds ("left - sided",
   "plate - like"; ranges such as "mild - to - moderate" stay split), then single words from
   :mod:`radlab.clinical.lexicon` (curated) and :mod:`radlab.clinical.lexicon_learned`, with a few
   context rules ("AP chest" is not anatomy, "low" in "low SVC" is, "size" in "the size of the
   pneumothorax" is not, "stable chest radiograph" is a finding at the chest); "left lower lobe" /
   "left base" / "right lung" / "the right posterior eighth rib" become one entity as a location
   ("in the left lower lobe", "Left lower lobe is clear"); "left base" / "right lung" stay split
   before a finding ("left base atelectasis"), a lobe name stays whole there too ("left lower lobe
   nodule"; see ``_merge_locations``) unless the finding is an airspace process that fills the lobe
   ("right lower lobe pneumonia", :data:`radlab.clinical.lexicon.LOBE_SPLIT_FINDINGS`);
3. certainty (observations only; anatomy is always "definitely present", as in RadGraph-XL):
   NegEx-style pre/post negation and uncertainty cues, scope ended by sentence punctuation or
   "but"/"however"/"although"/", and the ..."; commas end a post-cue's backward scope; negation
   wins over a later hedge ("no findings concerning for pneumonia"); findings joined by "or" are
   uncertain; status words ("unchanged") are never hedged;
4. relations: anatomy runs get a head ("lung" in "left lung base", "cardiac" in "cardiac
   silhouette") that the other words ``modify``; orphan lateralities ("right greater than left,
   pleural effusions") modify the nearby anatomy, except a compared side at the end of a clause
   ("more prominent on the right"); in a noun phrase, modifiers ``modify`` the head
   finding; the finding is ``located_at`` the anatomy in its phrase or introduced after it by a
   preposition ("at the bases", "tube ends 4 cm above the carina"), or at a laterality right
   before it ("right PICC line", "left effusion"); a bare alternative shares the location
   ("bibasilar atelectasis or pneumonia"); adjectives before "left greater than right" modify the
   finding after the comparison; status words after a copula
   ``modify`` the finding or are ``located_at`` the anatomy of their subject ("heart size is
   normal", "the aorta is calcified and tortuous"), modifying every coordinated finding
   ("edema and effusion have increased"); "may represent" / "consistent with"-type cues give
   ``suggestive_of``.

Results are memoised per text in a bounded LRU cache; the cache stores immutable tuples and every
call builds fresh dicts, so callers may mutate what they receive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from radlab.clinical import lexicon as L

#: Longest input (characters) that is annotated; longer texts are cut.  Real reports are a few
#: hundred to a few thousand characters; the cap bounds time and memory on junk input.
MAX_CHARS = 20_000

#: Longest "sentence" (tokens) analysed as one unit; longer runs without punctuation are cut.
MAX_SENT_TOKENS = 200

LABEL_ANAT = "Anatomy::definitely present"
LABEL_PRESENT = "Observation::definitely present"
LABEL_ABSENT = "Observation::definitely absent"
LABEL_UNCERTAIN = "Observation::uncertain"

_WORDPUNCT = re.compile(r"\w+|[^\w\s]+")
_WS = re.compile(r"\s+")

# Token classes (see lexicon module docstring).
A_HEAD, A_PRE, A_PART, O_HEAD, O_PRE, O_POST, O_PART, O_ATTR = "AH", "AP", "AT", "OH", "OP", "OS", "OT", "OA"

_OBS_PARTS = frozenset({"changes"})
_LOCATION_PARTS = frozenset({"base", "bases", "apex", "apices", "junction", "wall", "walls"})
# Device attributes that modify the device they belong to ("tip of the tube").
_OBS_ATTRS = frozenset({"tip", "end", "distal end", "course", "position", "placement", "placements"})
_POST_PHRASES = frozenset({"in place", "decreased in extent", "small in size", "adequately placed"})
_DEVICES = frozenset(
    "tube tubes line lines catheter catheters tip picc leads lead pacemaker pacer wires stent drain drains sheath port".split()
)
_GLUE = frozenset({"-", "to", "/"})
_COORD = frozenset({",", "and", "or"})
_CLAUSE_START = frozenset({"the", "there", "a", "an"})
# Words allowed between a subject and its status word ("the heart size is normal").
_COPULA = frozenset(
    "is are was were be been has have had remain remains remained appear appears appeared seem seems "
    "now still again overall otherwise also essentially somewhat slightly not likely probably all ,".split()
)
_COPULA_VERB = _COPULA | {"persists", "persist", "seen", "noted", "present", "identified"}
_CHEST_NEXT = frozenset({"tube", "tubes", "wall", "walls", "cage"})
_PATIENT_POSE = frozenset({"patient", "supine", "upright", "erect", "semi", "semiupright", "recumbent"})
_POSITION_ADJ = frozenset({"low", "distal", "proximal", "high"})
_LEVEL_ALL = frozenset({"lower", "upper", "mid", "middle"})
_LEVEL_CONT = frozenset({"and", "or", ",", "to", "-", "/"})
_SENT_END = frozenset({".", ";", "!", "?", ":"})


@dataclass(frozen=True)
class Lexicon:
    """Word classes and phrases the annotator matches (see :mod:`radlab.clinical.lexicon`).

    ``words`` maps a lower-case token to a class code; ``phrases`` maps a token tuple to "A"/"O".
    """

    words: dict[str, str]
    phrases: dict[tuple[str, ...], str]
    max_phrase: int = 1
    phrase_first: frozenset[str] = frozenset()


def build_lexicon(
    extra_words: dict[str, str] | None = None,
    extra_phrases: dict[tuple[str, ...], str] | None = None,
    *,
    use_learned: bool = True,
) -> Lexicon:
    """Build a :class:`Lexicon`: the curated lexicon, then ``extra_words`` / ``extra_phrases``,
    then (``use_learned``) the frozen learned words of :mod:`radlab.clinical.lexicon_learned`.
    Earlier sources win.  Cross-validation passes ``use_learned=False`` plus words learned on the
    training folds."""
    words: dict[str, str] = {}
    # A word in several groups keeps the first class: anatomy, then status words ("enlarged" is a
    # status, not a finding), then findings, then modifiers.
    for group, code in (
        (L.ANAT_PRE, A_PRE),
        (L.ANAT_PART, A_PART),
        (L.ANAT_HEAD, A_HEAD),
        (L.OBS_POST, O_POST),
        (L.OBS_HEAD, O_HEAD),
        (L.OBS_PRE, O_PRE),
    ):
        for w in group:
            words.setdefault(w, code)
    for w in _OBS_PARTS:
        words[w] = O_PART
    for w in _OBS_ATTRS:
        words[w] = O_ATTR
    for w, c in (extra_words or {}).items():
        words.setdefault(w, c)
    if use_learned:
        from radlab.clinical.lexicon_learned import LEARNED_PHRASES, LEARNED_WORDS

        for w, c in LEARNED_WORDS.items():
            words.setdefault(w, c)
    phrases = dict(L.PHRASES)
    for p, c in (extra_phrases or {}).items():
        phrases.setdefault(p, c)
    if use_learned:
        for p, c in LEARNED_PHRASES.items():
            phrases.setdefault(p, c)
    return Lexicon(words, phrases, max(len(p) for p in phrases), frozenset(p[0] for p in phrases))


DEFAULT_LEXICON = build_lexicon()


def tokenize(text: str) -> list[str]:
    """Tokenise like RadGraph-XL (``radgraph.utils.radgraph_xl_preprocess_report``)."""
    text = text.replace("\\n", "  ").replace("\\f", "  ").replace("\\u2122", "      ")
    text = text.replace("\n", " ").replace('\\"', "``")
    joined = " ".join(_WORDPUNCT.findall(_WS.sub(" ", text)))
    for a, b in ((").", ") ."), ("%.", "% ."), (".'", ". '"), ("%,", "% ,"), ("%)", "% )")):
        joined = joined.replace(a, b)
    return joined.split()


CueIndex = dict[str, tuple[tuple[tuple[str, ...], str], ...]]


def _cue_index(groups: list[tuple[tuple[tuple[str, ...], ...], str]]) -> CueIndex:
    """Cues grouped by first token, longest first (ties: earlier group wins), so matching is one
    dict lookup per token."""
    idx: dict[str, list[tuple[int, int, tuple[str, ...], str]]] = {}
    for g_i, (cues, kind) in enumerate(groups):
        for cue in cues:
            idx.setdefault(cue[0], []).append((-len(cue), g_i, cue, kind))
    return {k: tuple((c, kind) for _, _, c, kind in sorted(v)) for k, v in idx.items()}


_CERT_INDEX = _cue_index(
    [(L.UNC_POST, "unc_post"), (L.NEG_POST, "neg_post"), (L.UNC_PRE, "unc_pre"), (L.NEG_PRE, "neg_pre")]
)
_SUGGEST_INDEX = _cue_index([(L.SUGGEST_CUES, "suggest")])
_CERT_FIRST = frozenset(_CERT_INDEX)
_SUGGEST_FIRST = frozenset(_SUGGEST_INDEX)
_ALTERNATIVES = frozenset({"or", "versus", "vs"})


def _cue_at(low: list[str], i: int, index: CueIndex) -> tuple[int, str]:
    """(length, kind) of the longest cue starting at token ``i``; (0, "") if none."""
    for cue, kind in index.get(low[i], ()):
        n = len(cue)
        if n == 1 or tuple(low[i : i + n]) == cue:
            return n, kind
    return 0, ""


_ANAT_CLASSES = frozenset({A_HEAD, A_PRE, A_PART})


class _Ent:
    """A mutable entity under construction (token span, class code, label, relations)."""

    __slots__ = ("start", "end", "cls", "label", "rels", "is_anat")

    def __init__(self, start: int, end: int, cls: str) -> None:
        self.start = start
        self.end = end
        self.cls = cls  # class code (see lexicon docstring); fixed once created
        self.is_anat = cls in _ANAT_CLASSES
        self.label = LABEL_ANAT
        self.rels: list[tuple[str, int]] = []  # (relation, target entity index)


def _find_entities(low: list[str], lex: Lexicon) -> list[_Ent]:
    """Entity spans and classes, left to right, non-overlapping."""
    ents: list[_Ent] = []
    n = len(low)
    i = 0
    words = lex.words
    while i < n:
        # 1. multi-token phrase, longest first
        matched = 0
        for k in range(min(lex.max_phrase, n - i), 1, -1) if low[i] in lex.phrase_first else ():
            c = lex.phrases.get(tuple(low[i : i + k]))
            if c is not None:
                phrase = " ".join(low[i : i + k])
                cls = (
                    A_HEAD
                    if c == "A"
                    else O_ATTR
                    if phrase in _OBS_ATTRS
                    else O_POST
                    if phrase in _POST_PHRASES
                    else O_HEAD
                )
                ents.append(_Ent(i, i + k - 1, cls))
                matched = k
                break
        if matched:
            i += matched
            continue
        w = low[i]
        # 2. hyphenated compound "w - w (- w)": one entity when a part is a known word
        if i + 2 < n and low[i + 1] == "-" and w.isalpha() and low[i + 2].isalnum():
            j = i + 2
            while j + 2 < n and low[j + 1] == "-" and low[j + 2].isalnum():
                j += 2
            parts = low[i : j + 1 : 2]
            known = [p in words or p in L.HYPHEN_OBS_PARTS for p in parts]
            if "to" in parts:
                # a hyphenated range "mild - to - moderate": RadGraph-XL keeps only its upper end
                if words.get(parts[-1]) is not None:
                    ents.append(_Ent(j, j, words[parts[-1]]))
                i = j + 1
                continue
            if any(known):
                anat = parts[-1] in L.HYPHEN_ANAT_TAILS or all(words.get(p, "")[:1] == "A" for p in parts)
                ents.append(_Ent(i, j, A_HEAD if anat else O_PRE))
                i = j + 1
                continue
        c = words.get(w)
        if c is None and w in ("findings", "finding") and ents and ents[-1].end == i - 1 and ents[-1].is_anat:
            c = O_HEAD  # "no acute cardiopulmonary findings", "the lung findings are unchanged"
        if c is None:
            if w == "both" and i + 1 < n and words.get(low[i + 1], "")[:1] == "A":
                ents.append(_Ent(i, i, A_PRE))  # "both lung bases": "both" modifies the anatomy
            i += 1
            continue
        nxt = low[i + 1] if i + 1 < n else ""
        if w == "chest" and nxt == "radiograph" and i and words.get(low[i - 1]) == O_POST:
            # "stable / unchanged chest radiograph": the whole study is the finding
            ents.append(_Ent(i, i, A_HEAD))
            ents.append(_Ent(i + 1, i + 1, O_HEAD))
            i += 2
            continue
        if w == "chest" and not (nxt in _CHEST_NEXT or (ents and ents[-1].end == i - 1 and ents[-1].is_anat)):
            # "chest" is anatomy in "right chest", "chest wall/tube", not in "AP chest", "chest CT"
            i += 1
            continue
        prev = low[i - 1] if i else ""
        if w == "lateral" and (
            prev in ("and", "pa", "frontal", "a", "the") or nxt in L.CHEST_NON_ANATOMY_NEXT or nxt == "chest"
        ):
            i += 1  # "PA and lateral chest radiographs": the view, not anatomy
            continue
        if w == "course" and prev in ("to", "of"):
            i += 1  # "seen to course below the diaphragm", "of course": not the device's course
            continue
        if (w == "placement" and nxt == "of") or (w in ("position", "positioning") and prev in _PATIENT_POSE):
            i += 1  # "placement of a tube", "patient position": not findings
            continue
        if w == "size" and nxt == "of":
            k = i + 3 if i + 2 < n and low[i + 2] in ("the", "a", "an") else i + 2
            if k < n and words.get(low[k], "")[:1] != "A":
                i += 1  # "the size of the pneumothorax": not the anatomy "size" of "heart size"
                continue
        if w in _LAT and i >= 2 and low[i - 2] == "to" and prev in ("the", "her", "his"):
            i += 1  # "rotated to the right": a direction, not anatomy
            continue
        nxt_anat = words.get(nxt, "")[:1] == "A"
        if w in ("low", "lower") and nxt == "lung" and i + 2 < n and low[i + 2] in ("volumes", "volume"):
            c = O_POST  # "low lung volumes": the adjective is the finding
        elif w in _POSITION_ADJ and nxt_anat:
            c = A_PRE  # "distal stomach", "low SVC": a position, not a finding
        elif c == A_PRE and w in _LEVEL_ALL and not nxt_anat and nxt not in _LEVEL_CONT:
            c = O_POST  # "lung volumes are lower"
        ents.append(_Ent(i, i, c))
        i += 1
    return ents


_LAT = frozenset({"left", "right"})
_NOT_SKIPPED = (
    L.LOCATION_PREPS
    | _CLAUSE_START
    | frozenset("and or but with without is are was were than side sided greater more less".split())
)
# findings with a place of their own ("pleural effusion or pneumothorax": not "pleural" pneumothorax)
_OWN_PLACE = frozenset({"pneumothorax", "pneumothoraces", "effusion", "effusions", "pneumomediastinum"})
_COMPARATIVES = frozenset({"greater", "more", "less", "worse", "larger", "smaller"})
_ABOVE_BELOW = frozenset({"above", "below"})
# words before an orphan side that make it the term of a comparison ("effusions, more prominent
# on the right", "left greater than right"): RadGraph-XL gives such a side no relation
_COMPARE_CUES = frozenset({"more", "greater", "worse", "less", "than", "prominent"})
# tokens allowed between an orphan laterality and the anatomy it modifies
# ("right greater than left , pleural effusions", "large right and small left pleural effusions")
_ORPHAN_GLUE = frozenset({"and", "or", ",", "greater", "than", "more", "less", "-", "to", "/"})
_LEVEL = frozenset({"upper", "lower", "mid"})
_ORDINALS = frozenset("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split())
_LOBE_LIKE = frozenset({"lobe", "lung"})
_END_ONLY = frozenset({"base", "apex", "side"})
# laterality + word pairs kept whole as a location even without a level word: RadGraph-XL keeps
# "right lung" whole in about a third of its uses ("the right lung is clear"), "left lung" almost
# never; splitting "right lung" makes ("right", has-relation) a spurious unit shared by many reports
_LAT_PAIRS = frozenset({("right", "lung")})
_PREP_BEFORE = frozenset({"the", "of", "in", "at", "within", "involving", "both"})


def _merge_locations(low: list[str], ents: list[_Ent]) -> list[_Ent]:
    """Merge "left lower lobe" / "left base" / "right lung" into one entity when it is a location
    noun phrase, and "the right posterior eighth rib" (a numbered rib) likewise.

    RadGraph-XL keeps such phrases whole as a location ("opacity in the left lower lobe", "Left
    lower lobe is clear") and often splits them when they modify a finding ("left base
    atelectasis").  A lobe name (side + level + lobe/lung) is kept whole before a finding as well:
    RadGraph-XL splits it there only in about two thirds of the cases ("right lower lobe nodule" is
    whole, "right lower lobe pneumonia" split), and a wrong split costs more F1-RadGraph agreement
    than a wrong whole span, because "right" / "lower" with a relation and a bare "lobe" are units
    shared by many reports (cross-validated Pearson 0.890 → 0.894 over all report pairs), while
    a wrong "right lower lobe" is a unit of its own.  The exception is a lobe name right before an
    airspace process that fills the lobe (``lexicon.LOBE_SPLIT_FINDINGS``: "right lower lobe
    pneumonia / atelectasis / consolidation"), which RadGraph-XL splits about four times in five
    (cross-validated Pearson 0.8935 → 0.8953 over all report pairs; adding "opacity", split only
    2:1, lowered it again).
    """
    out: list[_Ent] = []
    i = 0
    n = len(ents)
    while i < n:
        en = ents[i]
        k = 0
        if en.cls == A_PRE and low[en.start] in _LAT and en.start == en.end:
            nxt = [ents[j] for j in range(i + 1, min(i + 3, n))]
            words = [low[x.start] if x.start == x.end else "" for x in nxt]
            adjacent = [x.start == en.start + 1 + m for m, x in enumerate(nxt)]
            if len(nxt) >= 2 and adjacent[0] and adjacent[1] and words[0] in _LEVEL and words[1] in _LOBE_LIKE:
                k = 2
                after = ents[i + 3] if i + 3 < n else None
                if (
                    after is not None
                    and after.start == ents[i + 2].end + 1
                    and low[after.start] in L.LOBE_SPLIT_FINDINGS
                ):
                    k = 0  # "right lower lobe pneumonia": split (see lexicon.LOBE_SPLIT_FINDINGS)
            elif nxt and adjacent[0] and (words[0] in _END_ONLY or (low[en.start], words[0]) in _LAT_PAIRS):
                k = 1
            if k == 1:
                after = ents[i + k + 1] if i + k + 1 < n else None
                if after is not None and after.start == ents[i + k].end + 1 and not after.is_anat:
                    k = 0  # "left base atelectasis": modifies a finding, keep split
        if not k and en.cls == A_PRE and en.start > 0 and low[en.start - 1] in _PREP_BEFORE:
            # "the right posterior eighth rib": a rib named by side, aspect and number is one entity
            j = i
            while j + 1 < n and ents[j + 1].start == ents[j].end + 1 and ents[j + 1].cls == A_PRE:
                j += 1
            if (
                j + 1 < n
                and ents[j + 1].start == ents[j].end + 1
                and low[ents[j + 1].start] in ("rib", "ribs")
                and any(low[ents[m].start] in _ORDINALS for m in range(i, j + 1))
                and j > i
            ):
                k = j + 1 - i
        if k:
            out.append(_Ent(en.start, ents[i + k].end, A_HEAD))
            i += k + 1
        else:
            out.append(en)
            i += 1
    return out


def _sentences(low: list[str]) -> list[tuple[int, int]]:
    """[start, end) token ranges of sentences (split on . ; ! ? :, keeping decimals together)."""
    out: list[tuple[int, int]] = []
    s = 0
    n = len(low)
    for i, t in enumerate(low):
        if i - s >= MAX_SENT_TOKENS:  # run-on junk: bound the per-sentence (quadratic) work
            out.append((s, i))
            s = i
        if t in _SENT_END:
            if t == "." and 0 < i < n - 1 and low[i - 1].isdigit() and low[i + 1].isdigit():
                continue  # "5 . 6 cm"
            if t == ":" and 0 < i < n - 1 and low[i - 1].isdigit() and low[i + 1].isdigit():
                continue  # "17 : 00"
            out.append((s, i + 1))
            s = i + 1
    if s < n:
        out.append((s, n))
    return out


# Recommendation sentences ("Recommend repeat CXR for further evaluation of the distal tip",
# "CT of the chest could be performed for further characterization of the nodule"): RadGraph-XL
# leaves them unannotated (this rule matches 25 sentences of the dev reports; RadGraph-XL has 0
# entities in all 25).  A sentence opening with a recommendation word is one; a sentence with a
# recommending predicate is one only when its subject is the study or a condition, not a finding
# ("Possible rib fractures for which evaluation with a chest CT is recommended" keeps its findings).
_REC_START = frozenset({"recommend", "recommended", "consider", "considering", "suggest", "followup", "please"})
_REC_OPENERS = frozenset(
    "if however alternatively repeat attention correlation clinical as ct chest pa dedicated short further "
    "imaging evaluation films radiographs radiograph views postdiuresis followup".split()
)
_REC_PRED = re.compile(
    r"\b(?:(?:is|are) (?:also |highly |strongly )?recommended"
    r"|(?:may|could|should|might|can|would) (?:also )?be (?:considered|performed|obtained|helpful|useful)"
    r"|given consideration|advised|due to have|would (?:allow|help))\b"
)
_REC_CUES = frozenset("recommended considered performed obtained helpful useful consideration advised due allow help".split())
_LEAD_SKIP = frozenset({"a", "an", "the", ",", ".", ")", "(", "-"})


def _is_recommendation(low: list[str], s: int, e: int) -> bool:
    """Is sentence [s, e) a recommendation (see ``_REC_START``)?"""
    i = s
    while i < e and (low[i] in _LEAD_SKIP or low[i].isdigit()):
        i += 1  # list numbering "2 .", articles
    if i >= e:
        return False
    first = low[i]
    if first in _REC_START or (first == "follow" and i + 1 < e and low[i + 1] in ("up", "-")):
        return True
    if first not in _REC_OPENERS or _REC_CUES.isdisjoint(low[i:e]):
        return False
    return _REC_PRED.search(" ".join(low[i:e])) is not None


def _certainty(low: list[str], s: int, e: int, ents: list[_Ent], idx: list[int]) -> None:
    """Set observation labels in sentence [s, e) from NegEx-style cues."""
    sent = low[s:e]
    if all(ents[k].is_anat for k in idx) or (_CERT_FIRST.isdisjoint(sent) and _ALTERNATIVES.isdisjoint(sent)):
        return  # fast path (C-level set checks): nothing to label
    # cue scan: (position, length, kind) with kind in neg_pre/neg_post/unc_pre/unc_post
    cues: list[tuple[int, int, str]] = []
    ends: list[int] = []
    i = s if not _CERT_FIRST.isdisjoint(sent) else e
    while i < e:
        best, kind = _cue_at(low, i, _CERT_INDEX) if low[i] in _CERT_INDEX else (0, "")
        if best:
            cues.append((i, best, kind))
            i += best
            continue
        if low[i] in L.SCOPE_END or (low[i] == "and" and i + 1 < e and low[i + 1] in _CLAUSE_START):
            ends.append(i)  # "..., and the lower lungs are clear" starts a new clause
        i += 1
    if cues:
        for k in idx:
            ent = ents[k]
            if ent.is_anat:
                continue
            label = None
            negated = False
            for pos, _length, kind in cues:
                if kind.endswith("pre") and pos < ent.start:
                    if any(pos < b < ent.start for b in ends):
                        continue
                    if kind == "neg_pre":
                        label, negated = LABEL_ABSENT, True
                    elif not negated:  # "no findings concerning for pneumonia": negation wins
                        label = LABEL_UNCERTAIN
                elif kind.endswith("post") and pos > ent.end:
                    # commas end a post-cue's backward scope ("opacity suggests effusion,
                    # consolidation cannot be excluded")
                    if any(ent.end < b < pos for b in ends) or (
                        "," in low[ent.end + 1 : pos] and low[pos : pos + _length] != ["if", "any"]
                    ):
                        continue
                    label = LABEL_ABSENT if kind == "neg_post" else LABEL_UNCERTAIN
                    break
            if label == LABEL_UNCERTAIN and ent.cls == O_POST:
                label = None  # status words ("unchanged", "stable") are never hedged in RadGraph-XL
            if label:
                ent.label = label
    # "atelectasis or pneumonia": alternatives are uncertain (unless negated: "no X or Y")
    if len(idx) < 2:
        return
    for i in range(s, e) if not _ALTERNATIVES.isdisjoint(sent) else ():
        if low[i] not in _ALTERNATIVES:
            continue
        left = [k for k in idx if ents[k].end < i]
        right = [k for k in idx if ents[k].start > i]
        side: list[int] = []
        pos = i
        for k in reversed(left):  # entities adjacent to "or" on the left, back to a gap
            if ents[k].end != pos - 1:
                break
            side.append(k)
            pos = ents[k].start
        pos = i
        for k in right:
            if ents[k].start != pos + 1:
                break
            side.append(k)
            pos = ents[k].end
        if any(not ents[k].is_anat for k in side if ents[k].end < i) and any(
            not ents[k].is_anat for k in side if ents[k].start > i
        ):
            for k in side:
                if ents[k].label == LABEL_PRESENT:
                    ents[k].label = LABEL_UNCERTAIN


def _anat_run_head(run: list[int], ents: list[_Ent]) -> int:
    """Index (into ``ents``) of the head of an anatomy run; see lexicon docstring."""
    cand = [k for k in run if ents[k].cls == A_HEAD]
    if cand:
        # "cardiac silhouette" → cardiac; "pulmonary vascular" → vascular: last organ word that is
        # not separated from the run start by a part word
        head = cand[0]
        for k in cand[1:]:
            if any(ents[m].cls == A_PART for m in run if ents[head].start < ents[m].start < ents[k].start):
                break
            head = k
        return head
    parts = [k for k in run if ents[k].cls == A_PART]
    return parts[0] if parts else run[-1]


def _rel(ent: _Ent, kind: str, target: int) -> None:
    if (kind, target) not in ent.rels:
        ent.rels.append((kind, target))


class _Sentence:
    """One sentence's entities and what the relation passes build, in pass order.

    ``low``: lower-cased tokens of the report; ``[s, e)``: the sentence's token span; ``ents``: all
    entities of the report; ``idx``: this sentence's entity indices.  ``runs``: anatomy runs
    (adjacent anatomy entities), ``heads_of_run`` their heads, ``run_head`` / ``run_of``: entity ->
    its run's head / run index, ``absorbed``: runs that only modify another run (never a location);
    ``by_start``: token -> the entity starting there; ``nps``: noun phrases (entity index lists),
    ``heads``: each phrase's head (-1: none), ``of_link``: phrase -> the phrase an "X of Y" attribute
    links it to.
    """

    __slots__ = ("low", "s", "e", "ents", "idx", "runs", "run_head", "run_of", "heads_of_run", "absorbed",
                 "by_start", "nps", "heads", "of_link")

    def __init__(self, low: list[str], s: int, e: int, ents: list[_Ent], idx: list[int]) -> None:
        self.low, self.s, self.e, self.ents, self.idx = low, s, e, ents, idx
        self.runs: list[list[int]] = []
        self.run_head: dict[int, int] = {}
        self.run_of: dict[int, int] = {}
        self.heads_of_run: list[int] = []
        self.absorbed: set[int] = set()
        self.by_start = {ents[k].start: k for k in idx}
        self.nps: list[list[int]] = []
        self.heads: list[int] = []
        self.of_link: dict[int, int] = {}

    def gap(self, a: int, b: int) -> list[str]:
        """Tokens strictly between entity a and entity b."""
        return self.low[self.ents[a].end + 1 : self.ents[b].start]


def _anatomy_runs(st: _Sentence) -> None:
    """Anatomy runs (adjacent anatomy entities), each with a head; the rest of a run modifies it."""
    ents, idx, runs, run_head, run_of, heads_of_run = st.ents, st.idx, st.runs, st.run_head, st.run_of, st.heads_of_run
    for k in idx:
        if ents[k].is_anat:
            if runs and ents[runs[-1][-1]].end + 1 == ents[k].start:
                runs[-1].append(k)
            else:
                runs.append([k])
    for r_i, run in enumerate(runs):
        h = _anat_run_head(run, ents)
        heads_of_run.append(h)
        for k in run:
            run_head[k] = h
            run_of[k] = r_i
            if k != h:
                _rel(ents[k], "modify", h)


def _part_words_modify_organ(st: _Sentence) -> None:
    """A run of part words right after an organ ("the heart is normal size") modifies that organ
    and is absorbed (never a location)."""
    low, ents, runs, heads_of_run, absorbed, by_start = st.low, st.ents, st.runs, st.heads_of_run, st.absorbed, st.by_start
    for r_i in range(1, len(runs)):
        nxt_ent = by_start.get(ents[runs[r_i][-1]].end + 1)
        if (
            all(ents[k].cls == A_PART and low[ents[k].start] not in _LOCATION_PARTS for k in runs[r_i])
            and (nxt_ent is None or ents[nxt_ent].is_anat)
            and ents[runs[r_i][0]].start - ents[runs[r_i - 1][-1]].end <= 4
        ):
            # "the heart is normal size": "size" modifies the organ named just before it (not
            # "parenchymal opacity", where the part word is the finding's location, nor "at the
            # bases", a location in its own right)
            _rel(ents[heads_of_run[r_i]], "modify", heads_of_run[r_i - 1])
            absorbed.add(r_i)


def _position_words(st: _Sentence) -> None:
    """Position words: "below the diaphragm" modifies the anatomy after it; an orphan side word
    ("right greater than left, pleural effusions") modifies the anatomy phrase close by."""
    low, s, ents, idx, runs, heads_of_run = st.low, st.s, st.ents, st.idx, st.runs, st.heads_of_run
    absorbed, by_start, gap = st.absorbed, st.by_start, st.gap
    ent_tok = {t for k in idx for t in range(ents[k].start, ents[k].end + 1)}
    for r_i, run in enumerate(runs):
        if all(ents[k].cls == A_PRE and low[ents[k].start] in _ABOVE_BELOW for k in run):
            # "below the diaphragm": the position word modifies the anatomy right after it
            if r_i + 1 < len(runs) and gap(run[-1], runs[r_i + 1][0]) in ([], ["the"]):
                for k in run:
                    _rel(ents[k], "modify", heads_of_run[r_i + 1])
                absorbed.add(r_i)
            continue
        if all(ents[k].cls == A_PRE for k in run):
            nxt_k = by_start.get(ents[run[-1]].end + 1)
            if (
                nxt_k is not None
                and not ents[nxt_k].is_anat
                and low[ents[nxt_k].start] not in _COMPARATIVES
                and low[ents[run[-1]].start] in _LAT
            ):
                continue  # "right PICC line", "left effusion": the location of the finding it precedes
            # an orphan position word ("large right and small left pleural effusions", "right greater
            # than left, pleural effusions") modifies the next anatomy phrase close by, else the
            # previous one ("the bases, especially on the right")
            fwd = [
                r
                for r in range(r_i + 1, len(runs))
                if ents[runs[r][0]].start - ents[run[-1]].end <= 8
                and not all(ents[k].cls == A_PRE for k in runs[r])  # not another orphan
                and all(
                    t in ent_tok or low[t] in _ORPHAN_GLUE for t in range(ents[run[-1]].end + 1, ents[runs[r][0]].start)
                )
            ][:1]
            e_end = ents[run[-1]].end
            if (
                not fwd
                and r_i + 1 < len(runs)
                and ents[runs[r_i + 1][0]].start == e_end + 2
                and low[e_end + 1].isalpha()
                and low[e_end + 1] not in _NOT_SKIPPED
                and low[ents[run[-1]].start] in _LAT
            ):
                fwd = [r_i + 1]  # "right paramedian mediastinum": over one unknown descriptor
            back = [
                r
                for r in range(r_i)
                if ents[run[0]].start - ents[runs[r][-1]].end <= 8
                and r not in absorbed
                and not all(ents[k].cls == A_PRE for k in runs[r])
                and (
                    low[ents[run[0]].start - 1] == "the"
                    or all(
                        t in ent_tok or low[t] in _ORPHAN_GLUE
                        for t in range(ents[runs[r][-1]].end + 1, ents[run[0]].start)
                    )
                )
            ]
            if any(t in _COMPARE_CUES for t in low[max(s, ents[run[0]].start - 4) : ents[run[0]].start]):
                back = []  # "effusions, more prominent on the right": compared, not a location
            tgt = fwd[0] if fwd else back[-1] if back else -1
            if tgt >= 0:
                for k in run:
                    _rel(ents[k], "modify", heads_of_run[tgt])
                absorbed.add(r_i)


def _coordinated_anatomy(st: _Sentence) -> None:
    """Coordinated anatomy: "mediastinal and hilar contours" (the part word modifies every organ),
    "pulmonary or mediastinal vascular engorgement", "base of the right lung"."""
    low, ents, runs, heads_of_run, absorbed, gap = st.low, st.ents, st.runs, st.heads_of_run, st.absorbed, st.gap
    for r_i in range(1, len(runs)):
        prev, run = runs[r_i - 1], runs[r_i]
        g = gap(prev[-1], run[0])
        if g and all(t in _COORD for t in g):
            # "mediastinal and hilar contours": the part word modifies every coordinated organ
            parts = [k for k in run if ents[k].cls == A_PART and ents[k].start > ents[heads_of_run[r_i]].start]
            j = r_i - 1
            while parts and j >= 0:
                if any(ents[k].cls == A_PART for k in runs[j]):
                    break
                for p in parts:
                    _rel(ents[p], "modify", heads_of_run[j])
                gj = gap(runs[j - 1][-1], runs[j][0]) if j > 0 else ["."]
                if not (gj and all(t in _COORD for t in gj)):
                    break
                j -= 1
        if (
            g
            and all(t in _COORD for t in g)
            and len(run) >= 2
            and len(prev) == 1
            and not any(ents[k].cls == A_PART for k in run + prev)
        ):
            # "pulmonary or mediastinal vascular engorgement": the first adjective modifies "vascular"
            # (a whole phrase before the "and" is an organ of its own: "right atrium and right ventricle")
            _rel(ents[heads_of_run[r_i - 1]], "modify", heads_of_run[r_i])
            absorbed.add(r_i - 1)
        elif g in (["of"], ["of", "the"]) and low[ents[prev[-1]].end] in L.ANAT_PART:
            # "upper margin of the clavicles", "base of the right lung"
            _rel(ents[heads_of_run[r_i - 1]], "modify", heads_of_run[r_i])


def _noun_phrases(st: _Sentence) -> None:
    """Noun phrases: entities joined by glue tokens ("-", "to", "/"), coordinated anatomy, or
    "mild - to - moderate"."""
    ents, idx, nps, gap = st.ents, st.idx, st.nps, st.gap
    for k in idx:
        if nps:
            last = nps[-1][-1]
            g = gap(last, k)
            if (
                all(t in _GLUE for t in g)
                or (ents[last].is_anat and ents[k].is_anat and all(t in _COORD for t in g))
                or (len(g) == 4 and g[1:] == ["-", "to", "-"] and g[0] in L.OBS_PRE)  # "mild - to - moderate"
            ):
                nps[-1].append(k)
                continue
        nps.append([k])


def _phrase_heads(st: _Sentence) -> None:
    """Each noun phrase's head (the finding or device it names; -1: none); its other observation
    words modify the head."""
    low, ents, nps, heads, gap = st.low, st.ents, st.nps, st.heads, st.gap
    for n_i, np_ in enumerate(nps):
        obs = [k for k in np_ if not ents[k].is_anat]
        if not obs:
            heads.append(-1)
            continue
        if (
            n_i + 1 < len(nps)
            and all(ents[k].cls in (O_PRE, O_POST) for k in obs)
            and (
                (
                    (ents[np_[-1]].is_anat or low[ents[np_[-1]].start] in _COMPARATIVES)
                    and gap(np_[-1], nps[n_i + 1][0]) in (["than"], [","], ["and"])
                )
                # "unchanged monitoring and support devices"
                or (gap(np_[-1], nps[n_i + 1][0]) == ["and"] and ents[nps[n_i + 1][0]].cls == O_PRE)
            )
        ):
            # "stable moderate left greater than right bilateral pleural effusions": adjectives
            # before a comparison modify the finding after it
            nxt_core = [k for k in nps[n_i + 1] if ents[k].cls == O_HEAD]
            if nxt_core:
                for k in obs:
                    _rel(ents[k], "modify", nxt_core[-1])
                heads.append(-1)
                continue
        # head: the last finding/device ("mild atelectatic changes" → atelectatic: a part word
        # right after a finding is not a head); with none, the first status word ("decreased
        # substantially"), else the last word
        core = [
            k
            for n_k, k in enumerate(obs)
            if ents[k].cls == O_HEAD
            or (ents[k].cls == O_PART and not (n_k > 0 and ents[obs[n_k - 1]].end + 1 == ents[k].start))
            or (n_k + 1 < len(obs) and ents[obs[n_k + 1]].cls == O_PART and ents[k].end + 1 == ents[obs[n_k + 1]].start)
        ] or [k for k in obs if ents[k].cls == O_ATTR]  # "Dobbhoff tube position" → tube
        status = [k for k in obs if ents[k].cls == O_POST]
        h = core[-1] if core else status[0] if status else obs[-1]
        heads.append(h)
        for k in obs:
            if k != h:
                _rel(ents[k], "modify", h)


def _device_attributes(st: _Sentence) -> None:
    """Device attributes: "tip of the endotracheal tube" (the attribute modifies the device)."""
    ents, nps, heads, of_link, gap = st.ents, st.nps, st.heads, st.of_link, st.gap
    for n_i in range(len(nps) - 1):
        h, h2 = heads[n_i], heads[n_i + 1]
        if (
            h >= 0
            and h2 >= 0
            and ents[h].cls == O_ATTR
            and gap(nps[n_i][-1], nps[n_i + 1][0]) in (["of"], ["of", "the"])
        ):
            _rel(ents[h], "modify", h2)
            of_link[n_i] = n_i + 1


def _subject_walk(st: _Sentence, n_i: int, h: int) -> bool:
    """Status word after its subject ("heart size is normal", "effusions are unchanged",
    "mildly enlarged heart, mediastinal and hilar contours are unchanged"): located_at every
    anatomy of the (coordinated) subject, or modify the finding it describes."""
    ents, runs, run_of, heads_of_run, absorbed, nps = st.ents, st.runs, st.run_of, st.heads_of_run, st.absorbed, st.nps
    heads, gap = st.heads, st.gap
    j = n_i - 1
    if j < 0 or not all(t in _COPULA for t in gap(nps[j][-1], nps[n_i][0])):
        return False
    done = False
    while j >= 0:
        runs_j = sorted({run_of[k] for k in nps[j] if ents[k].is_anat} - absorbed)
        hj = heads[j]
        if hj >= 0 and not (runs_j and ents[hj].end < ents[runs[runs_j[0]][0]].start):
            # a finding ("moderate pulmonary edema and small effusion have increased")
            _rel(ents[h], "modify", hj)
        else:
            # anatomy, possibly after an adjective ("mildly enlarged heart, mediastinal and
            # hilar contours are unchanged")
            for r in runs_j:
                _rel(ents[h], "located_at", heads_of_run[r])
        done = True
        gj = gap(nps[j - 1][-1], nps[j][0]) if j > 0 else ["."]
        if not (gj and all(t in _COORD for t in gj)) or (hj >= 0 and gj == [","]):
            break
        hp = heads[j - 1]
        if hp >= 0 and ents[hp].cls in (O_POST, O_PRE) and not any(ents[k].is_anat for k in nps[j - 1]):
            break  # "heart is enlarged and lungs are clear": a previous clause's predicate
        j -= 1
    return done


def _look_right(st: _Sentence, n_i: int, h: int, device: bool) -> list[int]:
    """Anatomy named after the finding: "at the bases", "in the right lower lobe", also past a
    status word ("atelectasis persists at the left base") and over a coordinated list ("at the
    right base, right lower chest wall, and right lung apex")."""
    low, ents, run_head, run_of, absorbed, nps = st.low, st.ents, st.run_head, st.run_of, st.absorbed, st.nps
    of_link, gap = st.of_link, st.gap
    j = of_link.get(n_i, n_i) + 1
    while (
        j < len(nps)
        and all(ents[k].cls in (O_POST, O_PRE) for k in nps[j])
        and all(t in _COPULA_VERB for t in gap(nps[j - 1][-1], nps[j][0]))
    ):
        j += 1
    if j >= len(nps) or not ents[nps[j][0]].is_anat:
        return []
    g = gap(nps[j - 1][-1], nps[j][0])
    limit = 9 if device else 4  # "tube ends 4 cm above the carina"
    if low[ents[nps[j][0]].start] in _ABOVE_BELOW and len(nps[j]) == 1 and j + 1 < len(nps):
        # "passes below the diaphragm": "below" is itself an anatomy modifier
        g = [*g, "below"]
        if ents[nps[j + 1][0]].is_anat:
            j += 1
    if not (0 < len(g) <= limit and any(t in L.LOCATION_PREPS and t != "the" for t in g)):
        return []
    first = run_head[nps[j][0]]
    if run_of[first] in absorbed:
        # an absorbed position word ("in the right anteromedial hemithorax"): use its anatomy
        first = next((t for r, t in ents[first].rels if r == "modify" and ents[t].is_anat), first)
    out = [first]
    while (
        j + 1 < len(nps)
        and ents[nps[j + 1][0]].is_anat
        and all(t in _COORD for t in gap(nps[j][-1], nps[j + 1][0]))
    ):
        j += 1
        out.append(run_head[nps[j][0]])
    return out


def _locations_and_status(st: _Sentence) -> None:
    """Where each phrase head is (located_at its anatomy, before or after it) and what a status word
    describes ("atelectasis is unchanged", "heart size is normal", "the aorta is calcified")."""
    low, ents, runs, run_head, run_of, heads_of_run = st.low, st.ents, st.runs, st.run_head, st.run_of, st.heads_of_run
    absorbed, nps, heads, of_link, gap = st.absorbed, st.nps, st.heads, st.of_link, st.gap
    for n_i, np_ in enumerate(nps):
        h = heads[n_i]
        if h < 0 or n_i in of_link.values() and (n_i - 1) in of_link:
            continue
        anat_runs = sorted({run_of[k] for k in np_ if ents[k].is_anat} - absorbed)
        before = [heads_of_run[r] for r in anat_runs if ents[runs[r][-1]].end < ents[h].start]
        # "enlarged heart, mediastinal and hilar contours": every coordinated anatomy after it
        targets = before or [heads_of_run[r] for r in anat_runs]
        if before and low[ents[h].start - 1] in ("volume", "volumes"):
            # "left lower lobe volume loss": RadGraph-XL locates the loss at "volume"
            targets = [k for k in np_ if ents[k].end == ents[h].start - 1] or targets
        if before and low[ents[before[-1]].start] == "pulmonary":
            inter = before[-1] - 1  # "interstitial pulmonary edema" is located at "interstitial"
            if (
                inter in run_head
                and low[ents[inter].start] == "interstitial"
                and ents[inter].end + 1 == ents[before[-1]].start
            ):
                targets = [inter]
        device = low[ents[h].end] in _DEVICES
        if device and targets and all(ents[k].cls == A_PRE for r in anat_runs for k in runs[r]):
            # "Right PICC line ends in the SVC": located at "right" and where it ends
            targets = targets + _look_right(st, n_i, h, device)
        status = ents[h].cls in (O_POST, O_PRE) and not anat_runs
        if (
            not status
            and not anat_runs
            and len(np_) == 1
            and low[ents[h].start] in L.OBS_PRE
            and n_i > 0
            and heads[n_i - 1] < 0
            and all(t in _COPULA for t in gap(nps[n_i - 1][-1], np_[0]))
        ):
            status = True  # "the aorta is calcified": a predicate adjective, like "enlarged"
        if (
            status
            and n_i > 0
            and heads[n_i - 1] >= 0
            and gap(nps[n_i - 1][-1], np_[0]) in (["and"], [","], [",", "and"])
            and len(nps[n_i - 1]) == 1
            and (ents[heads[n_i - 1]].cls in (O_POST, O_PRE) or low[ents[heads[n_i - 1]].start] in L.OBS_PRE)
            and any(r == "located_at" and ents[t].is_anat and t < heads[n_i - 1] for r, t in ents[heads[n_i - 1]].rels)
        ):
            # "the aorta is calcified and tortuous": coordinated predicates share the subject
            for r, t in list(ents[heads[n_i - 1]].rels):
                if r == "located_at" and ents[t].is_anat and t < heads[n_i - 1]:
                    _rel(ents[h], "located_at", t)
            continue
        if status and n_i > 0 and heads[n_i - 1] >= 0 and not ents[heads[n_i - 1]].is_anat:
            if all(t in _COPULA for t in gap(nps[n_i - 1][-1], np_[0])):
                # "atelectasis is unchanged at the left base": the status word describes the finding,
                # and every finding coordinated with it ("edema and effusion have increased")
                _rel(ents[h], "modify", heads[n_i - 1])
                j = n_i - 1
                while (
                    j > 0
                    and heads[j - 1] >= 0
                    and ents[heads[j - 1]].cls == O_HEAD
                    and gap(nps[j - 1][-1], nps[j][0]) in (["and"], [","], [",", "and"], ["or"])
                ):
                    _rel(ents[h], "modify", heads[j - 1])
                    j -= 1
                continue
        if status and _subject_walk(st, n_i, h):
            continue
        if not targets:
            targets = _look_right(st, n_i, h, device)
            if targets:
                # "masses and nodules throughout both lungs": coordinated findings share it
                j = n_i
                while j > 0 and heads[j - 1] >= 0 and all(t in _COORD for t in gap(nps[j - 1][-1], nps[j][0])):
                    hj = heads[j - 1]
                    if ents[hj].is_anat or ents[hj].cls != O_HEAD or any(r == "located_at" for r, _ in ents[hj].rels):
                        break
                    for t in targets:
                        _rel(ents[hj], "located_at", t)
                    j -= 1
        if targets:
            for t in targets:
                _rel(ents[h], "located_at", t)
            continue
        if ents[h].cls == O_ATTR and n_i not in of_link:
            # "the tube is in standard position": the attribute modifies the device before it
            prev = [heads[j] for j in range(n_i) if heads[j] >= 0 and ents[heads[j]].cls == O_HEAD]
            if prev:
                _rel(ents[h], "modify", prev[-1])


def _shared_alternatives(st: _Sentence) -> None:
    """"bibasilar atelectasis or pneumonia": a bare alternative shares the location."""
    low, ents, nps, heads, gap = st.low, st.ents, st.nps, st.heads, st.gap
    for n_i in range(1, len(nps)):
        h, hp = heads[n_i], heads[n_i - 1]
        if (
            h >= 0
            and hp >= 0
            and len(nps[n_i]) == 1
            and ents[h].cls == O_HEAD
            and not ents[h].rels
            and low[ents[h].end] not in _OWN_PLACE
            and gap(nps[n_i - 1][-1], nps[n_i][0]) == ["or"]
        ):
            for r, t in list(ents[hp].rels):
                if r == "located_at" and ents[t].end < ents[hp].start and t in nps[n_i - 1]:
                    _rel(ents[h], "located_at", t)


def _fallback_modifiers(st: _Sentence) -> None:
    """Fallback: RadGraph-XL links every modifier/status word to something; an unlinked one modifies
    the next finding close by, else the previous one."""
    ents, nps, heads = st.ents, st.nps, st.heads
    for n_i in range(len(nps)):
        h = heads[n_i]
        if h < 0 or ents[h].rels or ents[h].cls not in (O_POST, O_PRE):
            continue
        nxt = [
            heads[j]
            for j in range(n_i + 1, len(nps))
            if heads[j] >= 0 and ents[heads[j]].cls == O_HEAD and ents[heads[j]].start - ents[h].end <= 4
        ]
        prv = [heads[j] for j in range(n_i) if heads[j] >= 0 and ents[heads[j]].cls == O_HEAD]
        tgt = nxt[0] if nxt else prv[-1] if prv else -1
        if tgt >= 0:
            _rel(ents[h], "modify", tgt)


def _suggestive_of(st: _Sentence) -> None:
    """"... suggestive of ...": the finding before the cue is suggestive_of every finding after it."""
    low, s, e, ents, heads = st.low, st.s, st.e, st.ents, st.heads
    i = s if not _SUGGEST_FIRST.isdisjoint(low[s:e]) else e
    while i < e:
        m = _cue_at(low, i, _SUGGEST_INDEX)[0] if low[i] in _SUGGEST_INDEX else 0
        if not m:
            i += 1
            continue
        before = [h for h in heads if h >= 0 and ents[h].end < i and ents[h].cls in (O_HEAD, O_PART)]
        after = [h for h in heads if h >= 0 and ents[h].start >= i + m and ents[h].cls in (O_HEAD, O_PART, O_PRE)]
        if before and after:
            src = before[-1]  # the finding right before the cue (status words are never a source)
            for t in after:
                _rel(ents[src], "suggestive_of", t)
            break
        i += m


# The relation passes, in order: each reads what the earlier ones built (see :class:`_Sentence`).
_RELATION_PASSES = (
    _anatomy_runs,
    _part_words_modify_organ,
    _position_words,
    _coordinated_anatomy,
    _noun_phrases,
    _phrase_heads,
    _device_attributes,
    _locations_and_status,
    _shared_alternatives,
    _fallback_modifiers,
    _suggestive_of,
)


def _relations(low: list[str], s: int, e: int, ents: list[_Ent], idx: list[int]) -> None:
    """Add relations for the entities ``idx`` (indices into ``ents``) of sentence [s, e)."""
    if len(idx) < 2:
        return  # a relation needs two entities
    st = _Sentence(low, s, e, ents, idx)
    for relation_pass in _RELATION_PASSES:
        relation_pass(st)


Frozen = tuple[str, tuple[tuple[str, str, int, int, tuple[tuple[str, str], ...]], ...]]


def _annotate_tokens(toks: list[str], lex: Lexicon) -> Frozen:
    low = [t.lower() for t in toks]
    ents = _merge_locations(low, _find_entities(low, lex))
    for ent in ents:
        if not ent.is_anat:
            ent.label = LABEL_PRESENT
    sents = _sentences(low)
    rec = [(s, e) for s, e in sents if _is_recommendation(low, s, e)]
    if rec:
        ents = [en for en in ents if not any(s <= en.start < e for s, e in rec)]
    # entity indices per sentence
    k = 0
    for s, e in sents:
        idx = []
        while k < len(ents) and ents[k].start < e:
            if ents[k].start >= s:
                idx.append(k)
            k += 1
        _certainty(low, s, e, ents, idx)
        _relations(low, s, e, ents, idx)
    frozen = tuple(
        (
            " ".join(toks[en.start : en.end + 1]),
            en.label,
            en.start,
            en.end,
            tuple((r, str(t + 1)) for r, t in en.rels),
        )
        for en in ents
    )
    return " ".join(toks), frozen


def _annotate_one(text: str, lex: Lexicon) -> Frozen:
    return _annotate_tokens(tokenize(text[:MAX_CHARS]), lex)


#: Texts up to this length are memoised (bounded memory: 4096 entries of at most a few kB).
CACHE_MAX_CHARS = 8_000


@lru_cache(maxsize=4096)
def _annotate_cached(text: str) -> Frozen:
    return _annotate_one(text, DEFAULT_LEXICON)


def _thaw(fr: Frozen) -> dict[str, Any]:
    text, ents = fr
    return {
        "text": text,
        "entities": {
            str(i + 1): {
                "tokens": tok,
                "label": lab,
                "start_ix": s,
                "end_ix": e,
                "relations": [[r, t] for r, t in rels],
            }
            for i, (tok, lab, s, e, rels) in enumerate(ents)
        },
        "data_source": None,
        "data_split": "inference",
    }


def _clean(text: Any) -> str:
    """Coerce any input to a safe ``str`` (non-str → "", invalid surrogates replaced)."""
    if not isinstance(text, str):
        return ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_CHARS]


def annotate(texts: Any, *, lexicon: Lexicon | None = None) -> list[dict[str, Any]]:
    """Annotate reports; one RadGraph-format dict per input (see module docstring).

    ``texts``: a list of strings (a single ``str`` is treated as a one-element list); any element
    that is not a ``str`` is annotated as "".  ``lexicon``: a non-default :class:`Lexicon`
    (uncached; used by cross-validation).  Never raises on text content.
    """
    if isinstance(texts, str):
        texts = [texts]
    try:
        items = list(texts)
    except TypeError:
        items = []
    out = []
    for t in items:
        t = _clean(t)
        try:
            if lexicon is not None:
                fr = _annotate_one(t, lexicon)
            else:
                fr = _annotate_cached(t) if len(t) <= CACHE_MAX_CHARS else _annotate_one(t, DEFAULT_LEXICON)
        except Exception:  # a bug must not take down a training step; score as empty
            fr = (" ".join(tokenize(t)), ())
        out.append(_thaw(fr))
    return out


def clear_cache() -> None:
    """Empty the per-text memo (benchmarks time a cold cache)."""
    _annotate_cached.cache_clear()


def cache_info() -> Any:
    """``functools`` cache statistics of the per-text memo."""
    return _annotate_cached.cache_info()


__all__ = ["annotate", "tokenize", "clear_cache", "cache_info", "build_lexicon", "Lexicon", "MAX_CHARS"]
