import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.aokvqa import AOKVQAAdapter

# train_dataset[0] of the release
REAL_TRAIN = {
    "split": "train",
    "image_id": 299207,
    "question_id": "22MexNkBPpdZGX6sxbxVBH",
    "question": "What is the man by the bags awaiting?",
    "choices": ["skateboarder", "train", "delivery", "cab"],
    "correct_choice_idx": 3,
    "direct_answers": ["ride", "ride", "bus", "taxi", "travelling", "traffic", "taxi", "cab", "cab", "his ride"],
    "difficult_direct_answer": False,
    "rationales": [
        "A train would not be on the street, he would not have luggage waiting for a delivery, and the "
        "skateboarder is there and not paying attention to him so a cab is the only possible answer.",
        "He has bags as if he is going someone, and he is on a road waiting for vehicle that can only be moved "
        "on the road and is big enough to hold the bags.",
        "He looks to be waiting for a paid ride to pick him up.",
    ],
}
REAL_VAL = {
    "split": "val", "image_id": 461751, "question_id": "22jbM6gDxdaMaunuzgrsBB",
    "question": "What is in the motorcyclist's mouth?", "choices": ["toothpick", "food", "popsicle stick", "cigarette"],
    "correct_choice_idx": 3, "direct_answers": ["cigarette"] * 10, "difficult_direct_answer": False,
    "rationales": ["He's smoking while riding.", "The motorcyclist has a lit cigarette in his mouth while he rides on "
                   "the street.", "The man is smoking."],
}


@pytest.fixture
def aokvqa(raw_tree):
    raw_tree.write_json(
        "aokvqa_v1p0_train.json",
        [
            REAL_TRAIN,
            {**REAL_TRAIN, "question_id": "22aaaaaaaaaaaaaaaaaaaa", "correct_choice_idx": 4},
            {**REAL_TRAIN, "question_id": "22bbbbbbbbbbbbbbbbbbbb", "choices": "cab"},
            {**REAL_TRAIN, "question_id": "22cccccccccccccccccccc", "correct_choice_idx": "3"},
        ],
    )
    return AOKVQAAdapter(raw_tree.root)


def test_specs_are_held_in_multiple_choice_and_question_generation():
    qa, qg = AOKVQAAdapter.datasets
    assert (qa.name, qa.category, qa.role, qa.template_set, qa.splits, qa.task) == (
        "aokvqa", "knowledge_qa", HELD_IN, "knowledge_qa.multiple_choice", ("train", "val"), "generate")
    assert (qg.name, qg.category, qg.role, qg.template_set, qg.splits) == (
        "aokvqa_qg", "question_generation", HELD_IN, "question_generation", ("train", "val"))


def test_maps_the_real_train_record(aokvqa, raw_tree):
    first = next(iter(aokvqa.read("aokvqa", "train")))
    assert isinstance(first, Example)
    assert first.key == "22MexNkBPpdZGX6sxbxVBH"
    assert first.source == "aokvqa_v1p0_train.json#22MexNkBPpdZGX6sxbxVBH"
    # COCO 2017 naming: no COCO_ prefix
    assert first.image == raw_tree.path("train2017/000000299207.jpg")
    assert first.slots == {
        "question": "What is the man by the bags awaiting?",
        "options": "(a) skateboarder (b) train (c) delivery (d) cab",
    }
    assert first.target == "cab"
    assert first.choices == ["skateboarder", "train", "delivery", "cab"]
    assert first.label_index == 3
    assert first.answers == REAL_TRAIN["direct_answers"]


def test_malformed_records_are_rejected_with_reasons(aokvqa):
    rejects = [i for i in aokvqa.read("aokvqa", "train") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["22aaaaaaaaaaaaaaaaaaaa", "22bbbbbbbbbbbbbbbbbbbb", "22cccccccccccccccccccc"]
    assert "outside the 4 choices" in rejects[0].reason
    assert "choices" in rejects[1].reason
    assert "correct_choice_idx" in rejects[2].reason and "str" in rejects[2].reason


def test_val_uses_val2017_images(raw_tree):
    raw_tree.write_json("aokvqa_v1p0_val.json", [REAL_VAL])
    (item,) = AOKVQAAdapter(raw_tree.root).read("aokvqa", "val")
    assert item.image == raw_tree.path("val2017/000000461751.jpg")
    assert item.target == "cigarette" and item.label_index == 3


def test_test_split_has_choices_but_no_answers(raw_tree):
    raw_tree.write_json("aokvqa_v1p0_test.json", [
        {"split": "test", "image_id": 123456, "question_id": "22zzzzzzzzzzzzzzzzzzzz", "question": "What is it for?",
         "choices": ["a", "b", "c", "d"], "difficult_direct_answer": False}])
    (item,) = AOKVQAAdapter(raw_tree.root).read("aokvqa", "test")
    assert isinstance(item, Example)
    assert item.image == raw_tree.path("test2017/000000123456.jpg")
    assert item.target == "" and item.answers == [] and item.label_index == -1
    assert item.choices == ["a", "b", "c", "d"] and item.slots["options"] == "(a) a (b) b (c) c (d) d"


def test_question_generation_takes_the_correct_choice_as_answer(aokvqa):
    qg = next(iter(aokvqa.read("aokvqa_qg", "train")))
    assert qg.slots == {"answer": "cab"}
    assert qg.target == "What is the man by the bags awaiting?"
    assert qg.choices == [] and qg.label_index == -1


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json("aokvqa_v1p0_train.json", [])
    with pytest.raises(SourceError, match="aokvqa_v1p0_val.json"):
        list(AOKVQAAdapter(raw_tree.root).read("aokvqa", "val"))
