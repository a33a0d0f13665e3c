import pytest

from components.datasets import Example, Reject, SourceError
from components.datasets.scienceqa import ScienceQAAdapter


def _problem(**fields):
    base = {"question": "Which of these states is farthest north?",
            "choices": ["West Virginia", "Louisiana", "Arizona", "Oklahoma"], "answer": 0, "hint": "",
            "image": "image.png", "task": "closed choice", "grade": "grade2", "subject": "social science",
            "topic": "geography", "category": "Geography", "skill": "Read a map: cardinal directions",
            "lecture": "Maps have four cardinal directions.", "solution": "", "split": "test"}
    return {**base, **fields}


PROBLEMS = {
    "1": _problem(),
    # text-only (real pid 4 style): not part of the image subset
    "4": _problem(question="Which figure of speech is used in this text?\nSing, O goddess, the anger of Achilles",
                  choices=["chiasmus", "apostrophe"], answer=1, image=None, subject="language science"),
    "7": _problem(question="Which animal's mouth is also adapted for bottom feeding?",
                  choices=["discus", "armored catfish"], answer=1,
                  hint="Sturgeons eat invertebrates, plants, and small fish.\nFigure: sturgeon. ",
                  solution="Look at the picture of the sturgeon."),
    "8": _problem(question="Is the red circle north of the blue square?", choices=["no", "yes"], answer=1,
                  task="yes or no"),
    "12": _problem(split="train"),
}
PID_SPLITS = {"train": ["12"], "val": [], "test": ["1", "4", "7", "8"], "minitest": ["1"], "trainval": ["12"]}


@pytest.fixture
def tree(raw_tree):
    raw_tree.write_json("problems.json", PROBLEMS)
    raw_tree.write_json("pid_splits.json", PID_SPLITS)
    return raw_tree


def _read(tree, split="test"):
    return list(ScienceQAAdapter(tree.root).read("scienceqa", split))


def test_spec_is_held_out_science_ranking():
    s = ScienceQAAdapter.spec("scienceqa")
    assert (s.category, s.role, s.splits, s.eval_split, s.task, s.template_set) == (
        "knowledge_qa", "held_out", ("test",), "test", "rank_choices", "knowledge_qa.science")


def test_maps_image_problem(tree):
    first = _read(tree)[0]
    assert first.key == "1" and first.source == "problems.json#1"
    assert first.image == tree.path("images/test/1/image.png")
    assert first.choices == ["West Virginia", "Louisiana", "Arizona", "Oklahoma"]
    assert (first.target, first.answers, first.label_index) == ("West Virginia", ["West Virginia"], 0)
    assert first.slots == {
        "context": "",  # an empty hint is legal
        "question": "Which of these states is farthest north?",
        "options": "(a) West Virginia (b) Louisiana (c) Arizona (d) Oklahoma",
    }


def test_text_only_problems_are_skipped_not_rejected(tree):
    items = _read(tree)
    assert [i.key for i in items] == ["1", "7", "8"]
    assert all(isinstance(i, Example) for i in items)


def test_hint_becomes_context_with_its_newlines(tree):
    seven = _read(tree)[1]
    assert seven.slots["context"] == "Sturgeons eat invertebrates, plants, and small fish.\nFigure: sturgeon."
    assert seven.target == "armored catfish" and seven.label_index == 1


def test_yes_or_no_problem_keeps_the_release_choice_order(tree):
    eight = _read(tree)[2]
    assert eight.choices == ["no", "yes"] and eight.target == "yes" and eight.label_index == 1


def test_train_split_uses_its_image_folder(tree):
    (item,) = _read(tree, "train")
    assert item.image == tree.path("images/train/12/image.png")


def test_malformed_problems_are_rejected_with_reason(raw_tree):
    raw_tree.write_json("problems.json", {
        "1": _problem(),
        "2": _problem(choices="West Virginia, Louisiana"),
        "3": _problem(answer=4),
        "5": _problem(answer="0"),
        "6": {k: v for k, v in _problem().items() if k != "image"},
        "9": _problem(split="val"),
        "10": _problem(hint=3),
    })
    raw_tree.write_json("pid_splits.json", {"test": ["1", "2", "3", "5", "6", "9", "10", "11"]})
    items = list(ScienceQAAdapter(raw_tree.root).read("scienceqa", "test"))
    assert isinstance(items[0], Example)
    rejects = {r.key: r for r in items[1:]}
    assert all(isinstance(r, Reject) for r in rejects.values())
    assert "choices" in rejects["2"].reason
    assert "outside" in rejects["3"].reason
    assert "answer" in rejects["5"].reason and "str" in rejects["5"].reason
    assert "image" in rejects["6"].reason
    assert "split" in rejects["9"].reason
    assert "hint" in rejects["10"].reason
    assert "absent" in rejects["11"].reason and rejects["11"].source == "problems.json#11"


def test_missing_problems_file_names_the_path(raw_tree):
    raw_tree.write_json("pid_splits.json", PID_SPLITS)
    with pytest.raises(SourceError, match="problems.json"):
        list(ScienceQAAdapter(raw_tree.root).read("scienceqa", "test"))


def test_missing_pid_splits_file_names_the_path(raw_tree):
    raw_tree.write_json("problems.json", PROBLEMS)
    with pytest.raises(SourceError, match="pid_splits.json"):
        list(ScienceQAAdapter(raw_tree.root).read("scienceqa", "test"))
