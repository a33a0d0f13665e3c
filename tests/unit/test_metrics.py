"""Evaluation metrics against values worked out by hand from each metric's definition."""

import os
import shutil

import pytest
from pycocoevalcap.cider.cider import Cider

from components.metrics import (
    caption_tokenize,
    cider,
    exact_match_accuracy,
    gold_rank,
    ivqa_accuracy,
    mean_reciprocal_rank,
    roc_auc,
    vqa_accuracy,
    vqa_normalize,
)

# ------------------------------------------------------------------------------------------------
# VQA normalisation: each expected value follows the official rules step by step
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, expected",
    [
        # number words become digits, articles go, case folds
        ("Two", "2"),
        ("none", "0"),
        ("TEN dogs", "10 dogs"),
        ("the dog", "dog"),
        ("A Red Apple", "red apple"),
        ("an owl", "owl"),
        # a period survives only before a digit
        ("2.5", "2.5"),
        ("2.5.", "2.5"),
        ("yes.", "yes"),
        ("U.S.A.", "usa"),
        # a digit-comma-digit anywhere deletes every punctuation mark (no space left behind)
        ("1,000", "1000"),
        ("1,000 people, maybe", "1000 people maybe"),
        # a mark touching no space becomes a space ...
        ("black-and-white", "black and white"),
        ("cats,dogs", "cats dogs"),
        ("(red)", "red"),
        ("hello!", "hello"),
        # ... but one touching a space somewhere is deleted everywhere it occurs
        ("red-white -blue", "redwhite blue"),
        ("cats, dogs", "cats dogs"),
        # colons and apostrophes are not in the official set
        ("3:30", "3:30"),
        ("Don't", "don't"),
        # apostrophe-less contractions get their apostrophe back; real words are left alone
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("whats up", "what's up"),
        ("its", "its"),
        # newlines, tabs and runs of spaces
        ("  Yes\tsir\n", "yes sir"),
        ("Big   Dog", "big dog"),
    ],
)
def test_vqa_normalize_follows_the_official_rules(answer, expected):
    assert vqa_normalize(answer) == expected


# ------------------------------------------------------------------------------------------------
# VQA accuracy
# ------------------------------------------------------------------------------------------------


def _ten_answers(k):
    """10 human answers, k of them "cat" (the prediction) and the rest "dog"."""
    return ["cat"] * k + ["dog"] * (10 - k)


# With 10 answers of which k match: each of the k matching humans sees k-1 matches among the
# other 9, each of the 10-k others sees k; the score is the mean of min(1, seen / 3).
#   k=1: (1*min(1, 0/3) + 9*min(1, 1/3)) / 10 = (0 + 3) / 10     = 0.3
#   k=2: (2*min(1, 1/3) + 8*min(1, 2/3)) / 10 = (2/3 + 16/3) / 10 = 0.6
#   k=3: (3*min(1, 2/3) + 7*min(1, 3/3)) / 10 = (2 + 7) / 10     = 0.9
#   k=4: (4*min(1, 3/3) + 6*min(1, 4/3)) / 10 = (4 + 6) / 10     = 1.0
@pytest.mark.parametrize("k, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_with_ten_answers(k, expected):
    assert vqa_accuracy("Cat.", _ten_answers(k)) == pytest.approx(expected)


def test_vqa_accuracy_compares_normalised_strings():
    assert vqa_accuracy("Two", ["2", "2", "2", "two.", "3"]) == pytest.approx(1.0)
    assert vqa_accuracy("the red car", ["red car"] * 3 + ["blue car"] * 7) == pytest.approx(0.9)


@pytest.mark.parametrize(
    "answers, expected",
    [
        # N=1: exact match
        (["cat"], 1.0),
        (["dog"], 0.0),
        # N=2, divisor N-1=1: the matching human sees 0, the other sees 1 -> (0 + 1) / 2
        (["cat", "dog"], 0.5),
        (["cat", "cat"], 1.0),
        # N=3, divisor 2: two matching see 1 each (1/2), the other sees 2 (1) -> 2/3
        (["cat", "cat", "dog"], 2 / 3),
        # N=4 is the official rule (divisor 3): one match -> (0 + 3 * 1/3) / 4
        (["cat", "dog", "dog", "dog"], 0.25),
    ],
)
def test_vqa_accuracy_with_few_answers_is_the_agreeing_fraction(answers, expected):
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def test_vqa_accuracy_rejects_no_answers():
    with pytest.raises(ValueError, match="at least one human answer"):
        vqa_accuracy("cat", [])


# ------------------------------------------------------------------------------------------------
# iVQA and exact match
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers, expected",
    [
        (["dog", "dog", "bird", "fish", "cow"], 0.0),
        (["Cat", "dog", "bird", "fish", "cow"], 0.5),
        (["cat", "the cat", "bird", "fish", "cow"], 1.0),
        (["cat", "cat", "cat", "fish", "cow"], 1.0),
    ],
)
def test_ivqa_accuracy_is_matches_over_two_capped_at_one(answers, expected):
    assert ivqa_accuracy("cat", answers) == pytest.approx(expected)


def test_ivqa_accuracy_rejects_no_answers():
    with pytest.raises(ValueError, match="at least one annotator answer"):
        ivqa_accuracy("cat", [])


def test_exact_match_accuracy_counts_normalised_equal_pairs():
    predictions = ["Yes", "two", "the red car", "blue"]
    references = ["yes", "2", "red car", "green"]
    assert exact_match_accuracy(predictions, references) == pytest.approx(3 / 4)


def test_exact_match_accuracy_rejects_mismatched_or_empty_lists():
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        exact_match_accuracy(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one prediction"):
        exact_match_accuracy([], [])


# ------------------------------------------------------------------------------------------------
# Caption tokenisation and CIDEr
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A man's dog, running.", "a man 's dog running"),
        ("Two dogs don't like the snow!", "two dogs do n't like the snow"),
        ("A cat that cannot jump; it won't.", "a cat that can not jump it wo n't"),
        ('A sign that reads "STOP".', "a sign that reads stop"),
        ("The kids' toys -- all 1,000 of them...", "the kids toys all 1,000 of them"),
        ("A 2.5 ft. pole at 3:30 on Main St.", "a 2.5 ft. pole at 3:30 on main st."),
        ("They're at the U.S. Open, aren't they?", "they 're at the u.s. open are n't they"),
        ("A black-and-white photo w/ a dog/cat", "a black-and-white photo w / a dog/cat"),
        # as in the COCO eval, bracket tokens survive: its drop list spells them in upper case
        ("An elephant (big) stands", "an elephant -lrb- big -rrb- stands"),
        ("  A   toilet .\n", "a toilet"),
    ],
)
def test_caption_tokenize_matches_the_coco_eval_tokens(caption, expected):
    assert caption_tokenize(caption) == expected


PREDICTIONS = {
    "1": "A man riding a horse.",
    "2": "Two dogs play in the snow!",
    "3": "A plate of food, with a fork.",
    "4": "The cat's on the bed.",
}
REFERENCES = {
    "1": ["A man rides a brown horse.", "A person on horseback in a field", "Someone riding a horse, outdoors."],
    "2": ["Two dogs playing in the snow.", "A pair of dogs run through snow"],
    "3": [
        "A plate of food and a fork.",
        "Food on a white plate, next to a fork.",
        "A meal with rice; vegetables and meat.",
        "A dinner plate with food on it",
        "Lunch is served on a plate",
    ],
    "4": ["A cat lying on a bed.", "The cat's sleeping on the bed", "A cat is on a bed, resting."],
    # no prediction: must not take part (it would change the document frequencies)
    "5": ["A plate with a fork and a horse"],
}
# the same captions, tokenised by hand the way the COCO eval's PTBTokenizer step does
HAND_RES = {
    "1": ["a man riding a horse"],
    "2": ["two dogs play in the snow"],
    "3": ["a plate of food with a fork"],
    "4": ["the cat 's on the bed"],
}
HAND_GTS = {
    "1": ["a man rides a brown horse", "a person on horseback in a field", "someone riding a horse outdoors"],
    "2": ["two dogs playing in the snow", "a pair of dogs run through snow"],
    "3": [
        "a plate of food and a fork",
        "food on a white plate next to a fork",
        "a meal with rice vegetables and meat",
        "a dinner plate with food on it",
        "lunch is served on a plate",
    ],
    "4": ["a cat lying on a bed", "the cat 's sleeping on the bed", "a cat is on a bed resting"],
}


def test_cider_matches_the_coco_scorer_on_hand_tokenised_captions():
    direct, _ = Cider().compute_score(HAND_GTS, HAND_RES)
    assert direct > 0
    assert cider(PREDICTIONS, REFERENCES) == pytest.approx(100 * direct)


def test_cider_prefers_a_caption_that_repeats_its_references():
    references = {
        "a": ["a man riding a horse on a beach", "a man riding a horse on a beach"],
        "b": ["two dogs playing in the snow", "two dogs running in the snow"],
        "c": ["a plate of food with a fork", "a plate of food next to a fork"],
    }
    matching = {"a": "A man riding a horse on a beach.", "b": "two dogs in snow", "c": "a plate of food"}
    unrelated = dict(matching, a="A red double decker bus in the city.")
    assert cider(matching, references) > cider(unrelated, references) + 50


def test_cider_of_a_single_image_is_zero():
    # document frequencies come from the scored images only, so with one image every n-gram has
    # idf log(1) - log(1) = 0
    assert cider({"a": "a dog on a couch"}, {"a": ["a dog on a couch", "a dog on a sofa"]}) == 0.0


def test_cider_rejects_missing_ids_and_empty_input():
    with pytest.raises(ValueError, match=r"no references for 2 predicted image id\(s\): 'x', 'y'"):
        cider({"1": "a dog", "x": "a cat", "y": "a cow"}, {"1": ["a dog"]})
    with pytest.raises(ValueError, match="at least one prediction"):
        cider({}, {"1": ["a dog"]})
    with pytest.raises(ValueError, match="empty reference list for image id\\(s\\): '2'"):
        cider({"1": "a dog", "2": "a cat"}, {"1": ["a dog"], "2": []})


CAPTIONS_FOR_JAVA = [
    "A man's dog, running.",
    "Two people don't like the (red) car!",
    "The cat can't jump; it won't go -- really...",
    '"Hello," she said. It\'s a black-and-white photo w/ 1,000 dogs and 2.5 cats.',
    "A grey colour [bright] car at St. Mark's & Mr. Smith's house?",
    "They're here, we've been, I'd go, you'll see, I'm ok.",
    "A woman's bag: the kids' toys ... and the 'quoted' word.",
    "a man on a skate-board at 3:30 p.m. in the U.S.",
    "a street sign for Main St. with no. 5 on it",
    "Plan B. The letter a. next to it",
    "A plate of food...and a fork\u2026",
    "An image shows \u2014 an em dash \u2013 en dash.",
    "a kitchen with a stove; a fridge, and a sink !!",
    "A cake that says \u201chappy birthday!\u201d on it.",
    "A living room with a tv, a couch and a lamp.,",
    "The 1950's kitchen, 50% off $5 #1 items.",
]


@pytest.mark.skipif(shutil.which("java") is None, reason="the COCO eval's PTBTokenizer needs Java")
def test_caption_tokenize_agrees_with_the_coco_eval_tokenizer_when_java_is_there():
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar_dir = os.path.dirname(ptbtokenizer.__file__)
    if not os.access(jar_dir, os.W_OK):
        pytest.skip("the COCO eval's tokenizer writes a temporary file next to its jar")
    coco = ptbtokenizer.PTBTokenizer().tokenize({str(i): [{"caption": c}] for i, c in enumerate(CAPTIONS_FOR_JAVA)})
    for i, caption in enumerate(CAPTIONS_FOR_JAVA):
        assert caption_tokenize(caption) == coco[str(i)][0], caption


# ------------------------------------------------------------------------------------------------
# ROC AUC, ranks
# ------------------------------------------------------------------------------------------------


def test_roc_auc_counts_concordant_pairs_with_ties_as_half():
    scores = [0.9, 0.8, 0.8, 0.3, 0.1]
    labels = [1, 0, 1, 0, 1]
    # positives 0.9, 0.8, 0.1 against negatives 0.8, 0.3:
    #   0.9 beats both (2), 0.8 ties 0.8 (1/2) and beats 0.3 (1), 0.1 beats neither (0)
    #   -> 3.5 of 3 * 2 = 6 pairs
    assert roc_auc(scores, labels) == pytest.approx(3.5 / 6)
    assert roc_auc([0.1, 0.2, 0.7, 0.9], [0, 0, 1, 1]) == pytest.approx(1.0)


def test_roc_auc_rejects_one_class_mismatched_lengths_and_non_binary_labels():
    with pytest.raises(ValueError, match="only one class"):
        roc_auc([0.1, 0.5, 0.9], [1, 1, 1])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc([0.1, 0.5, 0.9], [0, 1])
    with pytest.raises(ValueError, match="must be 0 or 1"):
        roc_auc([0.1, 0.5, 0.9], [0, 1, 2])


@pytest.mark.parametrize(
    "scores, gold_index, expected",
    [
        ([0.1, 0.7, 0.3], 1, 1),
        ([0.1, 0.7, 0.3], 2, 2),
        ([0.1, 0.7, 0.3], 0, 3),
        # ties count against the gold candidate
        ([0.2, 0.9, 0.9, 0.1], 1, 2),
        ([0.2, 0.9, 0.9, 0.1], 2, 2),
        ([0.5, 0.5, 0.5, 0.5], 0, 4),
        ([0.5, 0.5, 0.5, 0.5], 3, 4),
        ([-1.0], 0, 1),
    ],
)
def test_gold_rank_breaks_ties_against_the_gold_candidate(scores, gold_index, expected):
    assert gold_rank(scores, gold_index) == expected


def test_gold_rank_rejects_bad_index_and_nan():
    with pytest.raises(ValueError, match="gold_index 3 is outside the 3 candidate scores"):
        gold_rank([0.1, 0.2, 0.3], 3)
    with pytest.raises(ValueError, match="gold_index -1"):
        gold_rank([0.1, 0.2, 0.3], -1)
    with pytest.raises(ValueError, match="NaN"):
        gold_rank([0.1, float("nan"), 0.3], 0)


def test_mean_reciprocal_rank():
    assert mean_reciprocal_rank([1, 2, 4]) == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    # a constant scorer over 4 candidates ranks every gold answer last
    constant = [gold_rank([0.0] * 4, g) for g in (0, 3)]
    assert mean_reciprocal_rank(constant) == pytest.approx(1 / 4)
    # tied ranks from gold_rank: [0.2, 0.9, 0.9, 0.1] with gold 1 ranks 2
    ranks = [1, gold_rank([0.2, 0.9, 0.9, 0.1], 1), 3, 3]
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 3) / 4)


def test_mean_reciprocal_rank_rejects_empty_and_non_positive_ranks():
    with pytest.raises(ValueError, match="at least one rank"):
        mean_reciprocal_rank([])
    with pytest.raises(ValueError, match="1-based"):
        mean_reciprocal_rank([1, 0, 2])
