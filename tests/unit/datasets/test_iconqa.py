import pytest

from components.datasets import Example, Reject, SourceError
from components.datasets.iconqa import IconQAAdapter

# pid 7 is the real choose_txt record quoted by mmpretrain; the others follow the release's shapes
PROBLEMS = {
    "7": {"question": "How likely is it that you will pick a black one?",
          "choices": ["certain", "unlikely", "impossible", "probable"], "answer": 2,
          "ques_type": "choose_txt", "grade": "grade1", "label": "S2", "split": "test"},
    "9": {"question": "Count by twos. How many dots are there? ", "choices": [" 2", "4 ", "6"], "answer": 1,
          "ques_type": "choose_txt", "grade": "grade2", "label": "S5", "split": "test"},
    "4": {"question": "Which picture shows the pizza inside the oven?", "choices": ["choice_0.png", "choice_1.png"],
          "answer": 0, "ques_type": "choose_img", "grade": "prek", "label": "S1", "split": "test"},
    "20": {"question": "How many dots are there?", "choices": [], "answer": "8,488",
           "ques_type": "fill_in_blank", "grade": "grade1", "label": "S1", "split": "test"},
    "18": {"question": "Which is bigger?", "choices": ["a", "b"], "answer": "1",
           "ques_type": "choose_txt", "grade": "grade1", "label": "S3", "split": "test"},
    "30": {"question": "Which is bigger?", "choices": ["a", "b"], "answer": 2,
           "ques_type": "choose_txt", "grade": "grade1", "label": "S3", "split": "test"},
    "31": {"question": "Which is bigger?", "choices": ["a", "b"], "answer": True,
           "ques_type": "choose_txt", "grade": "grade1", "label": "S3", "split": "test"},
    "40": {"question": "Which is the same color?", "choices": ["red", "blue"], "answer": 0,
           "ques_type": "choose_txt", "grade": "grade1", "label": "S4", "split": "train"},
}
PID_SPLITS = {
    "choose_txt_test": ["7", "9"], "choose_img_test": ["4"], "fill_in_blank_test": ["20"],
    "choose_txt_train": ["40"], "choose_txt_val": [], "choose_txt_trainval": ["40"], "choose_txt_minitest": ["7"],
}


@pytest.fixture
def tree(raw_tree):
    raw_tree.write_json("iconqa_data/problems.json", PROBLEMS)
    raw_tree.write_json("iconqa_data/pid_splits.json", PID_SPLITS)
    return raw_tree


def _read(tree, split="test", pid_splits=None):
    if pid_splits is not None:
        tree.write_json("iconqa_data/pid_splits.json", pid_splits)
    return list(IconQAAdapter(tree.root).read("iconqa", split))


def test_spec_is_held_out_multiple_choice():
    s = IconQAAdapter.spec("iconqa")
    assert (s.category, s.role, s.splits, s.eval_split, s.task, s.template_set) == (
        "visual_reasoning", "held_out", ("test",), "test", "rank_choices", "visual_reasoning.multiple_choice")


def test_maps_choose_txt_problem(tree):
    first = _read(tree)[0]
    assert isinstance(first, Example)
    assert first.key == "7" and first.source == "iconqa_data/problems.json#7"
    assert first.image == tree.path("iconqa_data/iconqa/test/choose_txt/7/image.png")
    assert first.choices == ["certain", "unlikely", "impossible", "probable"]
    assert (first.target, first.answers, first.label_index) == ("impossible", ["impossible"], 2)
    assert first.slots == {
        "question": "How likely is it that you will pick a black one?",
        "options": "(a) certain (b) unlikely (c) impossible (d) probable",
    }


def test_counting_instruction_is_kept_and_texts_are_stripped(tree):
    second = _read(tree)[1]
    assert second.slots["question"] == "Count by twos. How many dots are there?"
    assert second.choices == ["2", "4", "6"] and second.target == "4"


def test_only_choose_txt_is_read_other_sub_tasks_are_not_rejects(tree):
    items = _read(tree)
    assert [i.key for i in items] == ["7", "9"]
    assert all(isinstance(i, Example) for i in items)


def test_train_split_reads_its_own_folder(tree):
    (item,) = _read(tree, "train")
    assert item.image == tree.path("iconqa_data/iconqa/train/choose_txt/40/image.png") and item.target == "red"


def test_malformed_problems_are_rejected_with_reason(tree):
    items = _read(tree, pid_splits={**PID_SPLITS, "choose_txt_test": ["18", "30", "31", "4", "99", "7", "7"]})
    rejects = {r.key: r.reason for r in items if isinstance(r, Reject)}
    assert "answer" in rejects["18"] and "str" in rejects["18"]  # fill_in_blank-style text answer
    assert "outside" in rejects["30"]
    assert "boolean" in rejects["31"]
    assert "choose_img" in rejects["4"]  # listed under choose_txt but is another sub-task
    assert "absent" in rejects["99"]
    assert [i.key for i in items if isinstance(i, Example)] == ["7"]
    assert sum(1 for i in items if isinstance(i, Reject) and i.key == "7") == 1  # listed twice
    assert all(isinstance(i, Reject) and i.source == f"iconqa_data/problems.json#{i.key}" for i in items[:5])


def test_missing_problems_file_names_the_path(raw_tree):
    raw_tree.write_json("iconqa_data/pid_splits.json", PID_SPLITS)
    with pytest.raises(SourceError, match="iconqa_data/problems.json"):
        list(IconQAAdapter(raw_tree.root).read("iconqa", "test"))


def test_missing_split_list_names_the_file(tree):
    with pytest.raises(SourceError, match="pid_splits.json.*choose_txt_val"):
        _read(tree, "val", pid_splits={"choose_txt_test": ["7"]})
