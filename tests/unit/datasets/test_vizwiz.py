import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.vizwiz import VizWizAdapter


def _answers(*texts, confidence="yes"):
    return [{"answer_confidence": confidence, "answer": t} for t in texts]


# val record 1 as the release has it (answer listed before answer_confidence)
REAL_VAL = {
    "image": "VizWiz_val_00000001.jpg",
    "question": "Can you tell me what this medicine is please?",
    "answers": [
        {"answer": "no", "answer_confidence": "yes"},
        {"answer": "unanswerable", "answer_confidence": "yes"},
        {"answer": "night time", "answer_confidence": "maybe"},
        {"answer": "unanswerable", "answer_confidence": "yes"},
        {"answer": "night time", "answer_confidence": "maybe"},
        {"answer": "night time cold medicine", "answer_confidence": "maybe"},
        {"answer": "night time", "answer_confidence": "maybe"},
        {"answer": "night time", "answer_confidence": "maybe"},
        {"answer": "night time", "answer_confidence": "maybe"},
        {"answer": "night time medicine", "answer_confidence": "yes"},
    ],
    "answer_type": "other",
    "answerable": 1,
}


@pytest.fixture
def vizwiz(raw_tree):
    raw_tree.write_json(
        "val.json",
        [
            REAL_VAL,
            {
                "image": "VizWiz_val_00000002.jpg",
                "question": " What is this? ",
                "answers": _answers(*["unanswerable"] * 9, "blurry"),
                "answer_type": "unanswerable",
                "answerable": 0,
            },
            {"image": "VizWiz_val_00000003.jpg", "question": "What color?", "answers": "red"},
        ],
    )
    return VizWizAdapter(raw_tree.root)


def test_spec_is_held_out_image_qa_on_val():
    spec = VizWizAdapter.spec("vizwiz")
    assert (spec.category, spec.role, spec.splits, spec.eval_split) == ("image_qa", HELD_OUT, ("val",), "val")
    assert (spec.template_set, spec.task) == ("image_qa", "generate")


def test_maps_fields_of_a_real_record(vizwiz, raw_tree):
    first = next(iter(vizwiz.read("vizwiz", "val")))
    assert isinstance(first, Example)
    assert first.key == "VizWiz_val_00000001"
    assert first.source == "val.json#VizWiz_val_00000001"
    assert first.image == raw_tree.path("val/VizWiz_val_00000001.jpg")
    assert first.slots == {"question": "Can you tell me what this medicine is please?"}
    assert first.target == "night time"
    assert first.answers == [a["answer"] for a in REAL_VAL["answers"]]
    assert first.choices == [] and first.label_index == -1


def test_unanswerable_question_targets_the_literal_answer(vizwiz):
    second = list(vizwiz.read("vizwiz", "val"))[1]
    assert second.target == "unanswerable"
    assert second.slots == {"question": "What is this?"}
    assert second.answers.count("unanswerable") == 9 and "blurry" in second.answers


def test_malformed_record_is_rejected_with_reason(vizwiz):
    rejects = [i for i in vizwiz.read("vizwiz", "val") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "VizWiz_val_00000003"
    assert rejects[0].source == "val.json#VizWiz_val_00000003"
    assert "answers" in rejects[0].reason


def test_empty_train_answers_stay_out_of_target_and_references(raw_tree):
    raw_tree.write_json(
        "train.json",
        [
            {"image": "VizWiz_train_00000000.jpg", "question": "What's the name of this product?",
             "answers": _answers("", "", *["basil leaves"] * 5, *["basil"] * 3), "answer_type": "other", "answerable": 1},
            {"image": "VizWiz_train_00000001.jpg", "question": "What is it?",
             "answers": _answers(*[""] * 10), "answer_type": "other", "answerable": 1},
        ],
    )
    first, second = VizWizAdapter(raw_tree.root).read("vizwiz", "train")
    assert first.target == "basil leaves"
    assert first.answers == ["basil leaves"] * 5 + ["basil"] * 3
    assert first.image == raw_tree.path("train/VizWiz_train_00000000.jpg")
    assert isinstance(second, Reject) and "non-empty answer" in second.reason


def test_test_split_has_only_image_and_question(raw_tree):
    raw_tree.write_json("test.json", [{"image": "VizWiz_test_00000000.jpg", "question": "Is it sunny?"}])
    (item,) = VizWizAdapter(raw_tree.root).read("vizwiz", "test")
    assert isinstance(item, Example)
    assert item.target == "" and item.answers == []
    assert item.image == raw_tree.path("test/VizWiz_test_00000000.jpg")


def test_annotations_folder_from_the_zip_is_accepted(raw_tree):
    raw_tree.write_json("Annotations/val.json", [REAL_VAL])
    (item,) = VizWizAdapter(raw_tree.root).read("vizwiz", "val")
    assert item.source == "Annotations/val.json#VizWiz_val_00000001"
    assert item.image == raw_tree.path("val/VizWiz_val_00000001.jpg")


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json("val.json", [])
    with pytest.raises(SourceError, match="train.json"):
        list(VizWizAdapter(raw_tree.root).read("vizwiz", "train"))


def test_unknown_split_is_an_error(vizwiz):
    with pytest.raises(ValueError, match="testdev"):
        list(vizwiz.read("vizwiz", "testdev"))
