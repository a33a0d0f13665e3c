import pytest

from components.datasets import Example, Reject, SourceError
from components.datasets.visdial import VisDialAdapter

QUESTIONS = ["does it have a doorknob", "do you see a fence around the bear", "is it sunny?", "what color is the door"]
# 100+ distinct answers so every round can carry 100 options
ANSWERS = ["no, there is just green field in foreground", "countryside house", "yes", "red"] + [
    f"filler {i}" for i in range(100)
]


def _options(answer):
    """100 option indices with `answer` at position 5."""
    others = [i for i in range(len(ANSWERS)) if i != answer][:99]
    return others[:5] + [answer] + others[5:]


def _round(q, a):
    return {"question": q, "answer": a, "answer_options": _options(a), "gt_index": 5}


def _val(dialogs):
    data = {"questions": QUESTIONS, "answers": ANSWERS, "dialogs": dialogs}
    return {"data": data, "split": "val2018", "version": "1.0"}


GOOD = {"image_id": 185565, "caption": " a house in a field ", "dialog": [_round(0, 0), _round(1, 1), _round(2, 2)]}


def _read(tree, split="val"):
    return list(VisDialAdapter(tree.root).read("visdial", split))


def test_spec_is_held_out_ranking_on_val():
    s = VisDialAdapter.spec("visdial")
    assert (s.category, s.role, s.splits, s.eval_split, s.task, s.template_set) == (
        "conversational_qa", "held_out", ("val",), "val", "rank_choices", "conversational_qa")


def test_one_example_per_round_with_history(raw_tree):
    raw_tree.write_json("visdial_1.0_val.json", _val([GOOD]))
    items = _read(raw_tree)
    assert [i.key for i in items] == ["185565_r1", "185565_r2", "185565_r3"]
    first, second, third = items
    assert first.source == "visdial_1.0_val.json#185565_r1"
    assert first.image == raw_tree.path("VisualDialog_val2018/VisualDialog_val2018_000000185565.jpg")
    assert first.slots == {"caption": "a house in a field", "history": "", "question": "does it have a doorknob?"}
    assert first.target == "no, there is just green field in foreground" and first.answers == [first.target]
    assert len(first.choices) == 100 and first.label_index == 5 and first.choices[5] == first.target
    assert first.choices[0] == "countryside house"
    assert second.slots["history"] == "Q: does it have a doorknob? A: no, there is just green field in foreground"
    assert second.slots["question"] == "do you see a fence around the bear?"
    # a question already ending with "?" gets no second one
    assert third.slots["question"] == "is it sunny?"
    assert third.slots["history"].endswith("Q: do you see a fence around the bear? A: countryside house")


def test_test_split_has_one_unanswered_round(raw_tree):
    dialog = {"image_id": 568676, "caption": "a group of people on a beach", "round_id": 3,
              "dialog": [{"question": 0, "answer": 2}, {"question": 3, "answer": 3},
                         {"question": 1, "answer_options": _options(1)}]}
    raw_tree.write_json("visdial_1.0_test.json", {"data": {"questions": QUESTIONS, "answers": ANSWERS,
                                                           "dialogs": [dialog]}, "split": "test2018", "version": "1.0"})
    (item,) = _read(raw_tree, "test")
    assert item.key == "568676_r3"
    assert item.image == raw_tree.path("VisualDialog_test2018/VisualDialog_test2018_000000568676.jpg")
    assert (item.target, item.answers, item.label_index) == ("", [], -1)
    assert len(item.choices) == 100
    assert item.slots["history"] == "Q: does it have a doorknob? A: yes Q: what color is the door? A: red"


def test_train_images_come_from_both_coco_folders(raw_tree):
    raw_tree.write_json("visdial_1.0_train.json", {"data": {"questions": QUESTIONS, "answers": ANSWERS, "dialogs": [
        {**GOOD, "image_id": 378466, "dialog": [_round(0, 0)]},
        {**GOOD, "image_id": 42, "dialog": [_round(0, 0)]},
    ]}, "split": "train2018", "version": "1.0"})
    raw_tree.write_bytes("val2014/COCO_val2014_000000000042.jpg", b"jpeg")
    first, second = _read(raw_tree, "train")
    assert first.image == raw_tree.path("train2014/COCO_train2014_000000378466.jpg")
    assert second.image == raw_tree.path("val2014/COCO_val2014_000000000042.jpg")


def test_out_of_range_pool_index_rejects_its_round_and_later_history(raw_tree):
    bad_option = _round(1, 1)
    bad_option["answer_options"][7] = 5000
    dialogs = [
        {**GOOD, "image_id": 1, "dialog": [_round(0, 0), bad_option]},        # options only: round 2 alone
        {**GOOD, "image_id": 2, "dialog": [{**_round(0, 0), "answer": 999}, _round(1, 1)]},  # answer: round 1 + history
        {**GOOD, "image_id": 3, "dialog": [{**_round(0, 0), "gt_index": 6}]},  # gt_index not at the answer
        {"caption": "no image id", "dialog": [_round(0, 0)]},
        {**GOOD, "image_id": 4, "dialog": [{**_round(0, 0), "question": "0"}]},
    ]
    raw_tree.write_json("visdial_1.0_val.json", _val(dialogs))
    items = _read(raw_tree)
    assert isinstance(items[0], Example) and items[0].key == "1_r1"
    rejects = {i.key: i for i in items if isinstance(i, Reject)}
    assert set(rejects) == {"1_r2", "2_r1", "2_r2", "3_r1", "dialog3", "4_r1"}
    assert "answer_options[7]" in rejects["1_r2"].reason and "5000" in rejects["1_r2"].reason
    assert "answer index 999" in rejects["2_r1"].reason
    assert rejects["2_r2"].reason.startswith("history round 1")
    assert "gt_index" in rejects["3_r1"].reason
    assert "image_id" in rejects["dialog3"].reason and rejects["dialog3"].source == "visdial_1.0_val.json#dialog3"
    assert "question" in rejects["4_r1"].reason and "str" in rejects["4_r1"].reason
    assert rejects["1_r2"].source == "visdial_1.0_val.json#1_r2"


def test_missing_file_names_the_path(raw_tree):
    raw_tree.write_json("visdial_1.0_train.json", _val([GOOD]))
    with pytest.raises(SourceError, match="visdial_1.0_val.json"):
        _read(raw_tree)


def test_file_without_pools_names_the_path(raw_tree):
    raw_tree.write_json("visdial_1.0_val.json", {"data": {"dialogs": []}})
    with pytest.raises(SourceError, match="visdial_1.0_val.json.*questions"):
        _read(raw_tree)
