"""Scores for the zero-shot evaluation of the InstructBLIP paper, one pure function per metric.

- VQA accuracy (VQAv2, OK-VQA, A-OKVQA, VizWiz, ...) and its answer normalisation,
- iVQA accuracy, exact-match accuracy (GQA and other single-answer sets),
- CIDEr for captioning (NoCaps, Flickr30K), with a Java-free copy of the COCO eval's tokeniser,
- ROC AUC (Hateful Memes), gold-answer rank and mean reciprocal rank (Visual Dialog).

Nothing here knows about Ray or MLflow; callers turn model outputs into strings and scores first.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

# ---------------------------------------------------------------------------------------------
# VQA answer normalisation (the visualqa.org evaluation rules)
# ---------------------------------------------------------------------------------------------

# The official evaluation's punctuation set. Apostrophes, colons, periods and a few others are not
# in it: apostrophes must survive for contractions, periods have their own rule below.
_VQA_PUNCTUATION = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# The official period rule was meant to keep periods inside numbers; its look-behind is malformed,
# so in effect a period survives exactly when a digit follows it ("2.5" stays, "5." loses it).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})


def _contraction_table() -> dict[str, str]:
    """Apostrophe-less spellings of common contractions mapped to their apostrophe forms.

    Spellings that are also ordinary words ("its", "wed", "ill", "well", "hell", "shell", "were",
    "lets", "id") are left out: rewriting them would corrupt correct answers. So are "im" and
    "ive": the official table spells those keys "Im"/"Ive", which never match lower-cased text.
    """
    forms = [
        # n't
        "ain't", "aren't", "can't", "couldn't", "didn't", "doesn't", "don't", "hadn't", "hasn't",
        "haven't", "isn't", "mightn't", "mustn't", "needn't", "shan't", "shouldn't", "wasn't",
        "weren't", "won't", "wouldn't", "couldn't've", "shouldn't've", "wouldn't've",
        # 've
        "could've", "might've", "must've", "should've", "would've", "they've", "we've", "you've",
        "who've",
        # 're, 'll, 'd
        "they're", "you're", "what're", "they'll", "you'll", "it'll", "that'll", "who'll",
        "what'll", "they'd", "you'd", "he'd", "it'd", "who'd", "where'd", "how'd",
        # 's
        "he's", "she's", "that's", "there's", "here's", "what's", "where's", "who's", "how's",
        "when's", "why's", "somebody's", "someone's", "something's",
        # others
        "o'clock", "ma'am", "y'all",
    ]
    return {form.replace("'", ""): form for form in forms}


_CONTRACTIONS = _contraction_table()


def vqa_normalize(answer: str) -> str:
    """An answer in the comparison form of the official VQA evaluation.

    Steps, in the official order:
    1. newlines and tabs become spaces; surrounding whitespace is stripped;
    2. each punctuation character of the official set is deleted when it touches a space somewhere
       in the answer (``"x -y"``), or when the answer holds a digit-comma-digit (so ``"1,000"``
       becomes ``"1000"``), and otherwise replaced by a space (``"black-and-white"`` becomes
       ``"black and white"``);
    3. periods are deleted unless a digit follows them (``"2.5"`` survives, ``"u.s."`` -> ``"us"``);
    4. lower-cased and split on whitespace; the words none/zero..ten become digits, the articles
       a/an/the are dropped, apostrophe-less contractions get their apostrophe back
       (``"dont"`` -> ``"don't"``); the words are joined by single spaces.
    """
    given = answer.replace("\n", " ").replace("\t", " ").strip()
    delete_all = _DIGIT_COMMA_DIGIT.search(given) is not None
    text = given
    for mark in _VQA_PUNCTUATION:
        if mark in text:
            # the official rule looks at the answer as given, not at the partly cleaned text
            touches_space = f"{mark} " in given or f" {mark}" in given
            text = text.replace(mark, "" if delete_all or touches_space else " ")
    text = _PERIOD_NOT_BEFORE_DIGIT.sub("", text)
    words = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


# ---------------------------------------------------------------------------------------------
# Answer accuracies
# ---------------------------------------------------------------------------------------------


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction against the N human answers to its question.

    The official score: leave each human out in turn, count how many of the other N-1 humans gave
    the prediction, score min(1, count / 3), and average over the N humans. If k humans gave the
    prediction, each of them sees k-1 matches among the others and each of the rest sees k. All
    strings are compared after `vqa_normalize` (the official script skips normalisation when all
    humans agree; normalising always only forgives case and punctuation differences).

    With fewer than 4 answers a full score would be out of reach (N=1 always scores 0), so the 3
    becomes N-1, and N=1 is plain exact match. The score then equals k/N, the fraction of humans
    who gave the prediction; from N=4 on the official rule applies unchanged.

    Raises:
        ValueError: `answers` is empty.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer, got an empty list")
    pred = vqa_normalize(prediction)
    n = len(answers)
    k = sum(vqa_normalize(a) == pred for a in answers)
    if n == 1:
        return float(k)
    needed = min(3, n - 1)
    return (k * min(1.0, (k - 1) / needed) + (n - k) * min(1.0, k / needed)) / n


def ivqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """iVQA accuracy ("Just Ask", Yang et al. 2021): min(1, matches / 2).

    `matches` is the number of annotator answers equal to the prediction, both after
    `vqa_normalize`; two agreeing annotators give full credit.

    Raises:
        ValueError: `answers` is empty.
    """
    if not answers:
        raise ValueError("ivqa_accuracy needs at least one annotator answer, got an empty list")
    pred = vqa_normalize(prediction)
    return min(1.0, sum(vqa_normalize(a) == pred for a in answers) / 2)


def exact_match_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their single gold answer after `vqa_normalize` (GQA style).

    Args:
        predictions: one answer per question.
        references: the gold answer of each question, in the same order.

    Raises:
        ValueError: the lists differ in length, or are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("exact_match_accuracy needs at least one prediction, got none")
    hits = sum(vqa_normalize(p) == vqa_normalize(r) for p, r in zip(predictions, references))
    return hits / len(predictions)


# ---------------------------------------------------------------------------------------------
# Captioning: the COCO eval's tokenisation and CIDEr
# ---------------------------------------------------------------------------------------------

# Tokens the COCO eval drops after tokenising. It compares them with the lower-cased tokenizer
# output, so its upper-case bracket names never match: "(red)" keeps "-lrb- red -rrb-" there, and
# here too, since the aim is the token stream the published numbers were computed on.
_COCO_DROPPED_TOKENS = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)
_UNICODE_PUNCTUATION = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": " ... ", "\u2013": " -- ", "\u2014": " -- "}
)
# split off wherever they occur
_ALWAYS_SPLIT = re.compile(r"(\.{3,}|-{2,}|[()\[\]{}+=*~|^\\])")
_BRACKET_NAMES = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# commas, semicolons and colons split a chunk, except between digits ("1,000", "3:30")
_SEPARATOR = re.compile(r"((?<!\d)[,;:]|[,;:](?!\d))")
_EXCLAIM_RUN = re.compile(r"[!?]+")
_TRAILING_EXCLAIM = re.compile(r"[!?]+$")
_DOTS = re.compile(r"\.{2,}")
_LEADING_MARKS = frozenset("$#%_>/")
_TRAILING_MARKS = frozenset("$%-/_<>")
# a word that starts with an apostrophe but is a token of its own: clitics, "'em", "'90s", "'tis"
_APOSTROPHE_WORD = re.compile(r"'(?:s|re|ve|ll|d|m|em|tis|twas|\d+s?)\b", re.IGNORECASE)
_CLITICS = ("n't", "'s", "'re", "'ve", "'ll", "'d", "'m")
_SPLIT_WORDS = {
    "cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"),
    "lemme": ("lem", "me"), "gimme": ("gim", "me"), "y'all": ("y'", "all"), "'tis": ("'t", "is"),
    "'twas": ("'t", "was"),
}
_UPPER_AMPERSAND = re.compile(r"[A-Z]+(?:&[A-Z]+)+")
# single letters and dotted acronyms ("b.", "u.s.", "p.m.") keep their final period
_ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])*")
# capitalised words the tokeniser takes as the start of a new sentence after "b." or "u.s."
_SENTENCE_OPENER = re.compile(
    r"(?:A|About|After|An|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many|More|Now|Once|One"
    r"|Other|Our|She|Since|So|Some|Such|That|The|Their|Then|There|These|They|This|We|What|When|While"
    r"|Yet|You)(?![A-Za-z])"
)
# abbreviations the tokeniser keeps whole wherever they appear (titles, months, days, US states,
# company suffixes, ...), lower-cased
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr drs prof sen rep lt col gen gov adm rev maj sgt capt st ste ave pres hon det mme "
    "jr sr bros blvd rd esq inc co cos corp pty ltd plc rt dept assn univ intl sys etc al vs "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri "
    "ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich minn mo mont neb nev okla "
    "penn tenn va vt wis wisc wyo ft mt sq".split()
)
# kept whole only when capitalised and not last (lower-case they are ordinary words)
_CAPITALISED_ABBREVIATIONS = frozenset("Miss Ark Del Ill La Mass Ore Pa Tex Wash".split())
# kept whole only before a number ("no. 5", "fig. 2")
_NUMBER_ABBREVIATIONS = frozenset("no nos art pp fig figs".split())


def _keeps_period(word: str, next_word: str | None) -> bool:
    """Whether the tokeniser leaves the final period of `word` attached (an abbreviation).

    `next_word` is the following whitespace-separated word of the caption, None at the end.
    """
    stem = word[:-1]
    if _ACRONYM.fullmatch(stem):
        # before a typical sentence opener a single letter's period ends the sentence ("plan b. The
        # dog"); an acronym keeps its period and gets a second one, which the eval drops anyway
        return len(stem) > 1 or next_word is None or not _SENTENCE_OPENER.match(next_word)
    if stem.lower() in _ABBREVIATIONS:
        return True
    if stem in _CAPITALISED_ABBREVIATIONS:
        return next_word is not None
    if stem.lower() in _NUMBER_ABBREVIATIONS:
        return next_word is not None and next_word[:1].isdigit()
    return False


def _core_tokens(core: str) -> list[str]:
    """Tokens of a piece whose surrounding punctuation is gone: '&', clitics, fused words."""
    if "&" in core and len(core) > 1 and not _UPPER_AMPERSAND.fullmatch(core):
        tokens: list[str] = []
        for i, part in enumerate(core.split("&")):
            tokens += (["&"] if i else []) + (_core_tokens(part) if part else [])
        return tokens
    suffixes: list[str] = []
    peeled = True
    while peeled:
        peeled = False
        for clitic in _CLITICS:
            if len(core) > len(clitic) and core.lower().endswith(clitic):
                suffixes.insert(0, core[-len(clitic) :])
                core = core[: -len(clitic)]
                peeled = True
                break
    return list(_SPLIT_WORDS.get(core.lower(), (core,))) + suffixes


def _piece_tokens(piece: str, next_word: str | None, glued: bool) -> list[str]:
    """PTB tokens of a piece of a caption word holding no separator, bracket or dash run.

    `next_word` is the caption's following word (None at the end). `glued` says a separator
    (",", ";", ":") follows the piece directly; the tokeniser leaves a period attached when a
    separator follows it without a space ("hat.," gives "hat." and ",").
    """
    if piece in _BRACKET_NAMES:
        return [_BRACKET_NAMES[piece]]
    if piece == '"':
        return ["``"]
    if len(piece) < 2 or _EXCLAIM_RUN.fullmatch(piece):
        return [piece]
    if _DOTS.fullmatch(piece):
        return ["..."]
    head: list[str] = []
    while len(piece) > 1:
        first = piece[0]
        if first in "!?":
            run = _EXCLAIM_RUN.match(piece)
            token, piece = run.group(), piece[run.end() :]
        elif first == '"':
            token, piece = "``", piece[1:]
        elif first == "'" and not _APOSTROPHE_WORD.match(piece):
            token, piece = "`", piece[1:]
        elif first in _LEADING_MARKS or (first in "-." and not piece[1].isdigit()):  # "-5", ".5" stay
            token, piece = first, piece[1:]
        else:
            break
        head.append(token)
    tail: list[str] = []
    while len(piece) > 1:
        last = piece[-1]
        if last in "!?":
            run = _TRAILING_EXCLAIM.search(piece)
            token, piece = run.group(), piece[: run.start()]
        elif last == '"':
            token, piece = "''", piece[:-1]
        elif last == "'" or last in _TRAILING_MARKS:
            token, piece = last, piece[:-1]
        elif last == "." and not (glued and not tail) and not _keeps_period(piece, next_word):
            token, piece = ".", piece[:-1]
        else:
            break
        tail.insert(0, token)
    if piece == '"':
        return head + ["``"] + tail
    return head + (_core_tokens(piece) if piece else []) + tail


def caption_tokenize(text: str) -> str:
    """A caption as the COCO caption evaluation sees it, without Java.

    The COCO eval runs Stanford CoreNLP 3.4.1's PTBTokenizer (``-preserveLines -lowerCase``) and
    drops the punctuation tokens '' ' `` ` . ? ! , : - -- ... ; from its output. This reproduces
    that for ordinary English captions: lower-cased, punctuation split off (except inside numbers
    such as "1,000", "2.5", "3:30" and abbreviations such as "st.", "u.s."), clitics split
    ("man's" -> "man 's", "don't" -> "do n't", "cannot" -> "can not"), then the dropped tokens
    removed. Like the original, brackets come out as "-lrb-"/"-rrb-" and stay, because the eval's
    drop list spells them in upper case. Rare constructions ("rock'n'roll", "10:30pm", "<b>") may
    come out differently, and so may a caption ending in a single letter and a period ("plan b."):
    the original then looks at the next caption in its input file, here nothing follows.

    Returns:
        the tokens joined by single spaces ("A man's dog, running." -> "a man 's dog running").
    """
    words = _ALWAYS_SPLIT.sub(r" \1 ", text.translate(_UNICODE_PUNCTUATION)).split()
    tokens: list[str] = []
    for i, word in enumerate(words):
        next_word = words[i + 1] if i + 1 < len(words) else None
        parts = _SEPARATOR.split(word)  # pieces at even positions, separators at odd ones
        for j, part in enumerate(parts):
            if j % 2:
                tokens.append(part)
            elif part:
                tokens.extend(_piece_tokens(part, next_word, glued=j + 1 < len(parts)))
    return " ".join(t for t in (tok.lower() for tok in tokens) if t not in _COCO_DROPPED_TOKENS)


def cider(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> float:
    """Corpus CIDEr of generated captions, times 100 (the scale papers report: 119.9, not 1.199).

    The score is what the COCO caption evaluation calls "CIDEr" (strictly CIDEr-D: 1- to 4-grams,
    TF-IDF weights, clipped counts, a Gaussian length penalty with sigma 6, times 10), computed by
    `pycocoevalcap`'s scorer on captions tokenised by `caption_tokenize`, averaged over images.
    Document frequencies come from the references of the scored images only (the images in
    `predictions`), as in the COCO eval; a corpus of a single image therefore scores 0.

    Args:
        predictions: image id -> generated caption.
        references: image id -> its human captions; ids without a prediction are ignored.

    Raises:
        ValueError: `predictions` is empty, an id in it has no references, or a reference list is
            empty.
    """
    from pycocoevalcap.cider.cider import Cider

    if not predictions:
        raise ValueError("cider needs at least one prediction, got none")
    missing = [k for k in predictions if k not in references]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ValueError(f"no references for {len(missing)} predicted image id(s): {shown}{more}")
    empty = [k for k in predictions if len(references[k]) == 0]
    if empty:
        raise ValueError(f"empty reference list for image id(s): {', '.join(repr(k) for k in empty[:10])}")
    res = {k: [caption_tokenize(c)] for k, c in predictions.items()}
    gts = {k: [caption_tokenize(r) for r in references[k]] for k in predictions}
    score, _ = Cider().compute_score(gts, res)
    return float(score) * 100.0


# ---------------------------------------------------------------------------------------------
# Classification and ranking
# ---------------------------------------------------------------------------------------------


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (1 = positive), via scikit-learn.

    Equals the probability that a random positive scores above a random negative, ties counting
    one half.

    Raises:
        ValueError: lengths differ, the lists are empty, a label is not 0/1, or only one class
            is present (the curve is undefined then).
    """
    from sklearn.metrics import roc_auc_score

    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if not labels:
        raise ValueError("roc_auc needs at least one scored example, got none")
    classes = set(int(label) for label in labels)
    if not classes <= {0, 1}:
        raise ValueError(f"roc_auc labels must be 0 or 1, got {sorted(classes)}")
    if len(classes) < 2:
        raise ValueError(f"roc_auc is undefined when labels hold only one class (all {classes.pop()})")
    return float(roc_auc_score(list(labels), list(scores)))


def gold_rank(scores: Sequence[float], gold_index: int) -> int:
    """1-based rank of the gold candidate among candidates sorted by score, highest first.

    Ties are broken against the gold candidate: rank = 1 + the number of other candidates scoring
    at least as high. A scorer that cannot tell candidates apart (constant scores, e.g. from a
    degenerate model) then gets the worst rank instead of a perfect one, so credit goes only to
    models that actually separate the gold answer.

    Raises:
        ValueError: `gold_index` is outside `scores`, or a score is NaN.
    """
    if not 0 <= gold_index < len(scores):
        raise ValueError(f"gold_index {gold_index} is outside the {len(scores)} candidate scores")
    if any(math.isnan(s) for s in scores):
        raise ValueError("gold_rank cannot rank NaN scores")
    gold = scores[gold_index]
    return 1 + sum(s >= gold for i, s in enumerate(scores) if i != gold_index)


def mean_reciprocal_rank(ranks: Sequence[int]) -> float:
    """Mean of 1/rank over questions (Visual Dialog's MRR); ranks are 1-based.

    Raises:
        ValueError: `ranks` is empty or holds a rank below 1.
    """
    if not ranks:
        raise ValueError("mean_reciprocal_rank needs at least one rank, got none")
    bad = [r for r in ranks if r < 1]
    if bad:
        raise ValueError(f"ranks are 1-based, got {bad[:10]}")
    return sum(1.0 / r for r in ranks) / len(ranks)
