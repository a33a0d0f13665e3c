from components.datasets import Example, Reject, SourceError
from components.datasets.vqav2 import VQAv2Adapter
import pytest


def _answers(a):
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]


@pytest.fixture
def vqav2(raw_tree):
    raw_tree.write_json(
        "v2_OpenEnded_mscoco_val2014_questions.json",
        {"task_type": "Open-Ended", "data_subtype": "val2014", "questions": [
            {"image_id": 458752, "question": "What is this photo taken looking through?", "question_id": 458752000},
            {"image_id": 458752, "question": "What position is this man playing?", "question_id": 458752001},
            {"image_id": 1, "question": "Broken?", "question_id": 1000},
        ]},
    )
    raw_tree.write_json(
        "v2_mscoco_val2014_annotations.json",
        {"annotations": [
            {"question_type": "what is this", "multiple_choice_answer": "net", "answers": _answers("net"),
             "image_id": 458752, "answer_type": "other", "question_id": 458752000},
            {"question_type": "what", "multiple_choice_answer": "pitcher", "answers": _answers("pitcher"),
             "image_id": 458752, "answer_type": "other", "question_id": 458752001},
            {"question_id": 1000, "image_id": 1, "answers": "not a list"},
        ]},
    )
    return VQAv2Adapter(raw_tree.root)


def test_joins_questions_and_annotations(vqav2, raw_tree):
    items = list(vqav2.read("vqav2", "val"))
    good = [i for i in items if isinstance(i, Example)]
    assert [e.target for e in good] == ["net", "pitcher"]
    assert good[0].slots == {"question": "What is this photo taken looking through?"}
    assert good[0].answers == ["net"] * 10
    assert good[0].image == raw_tree.path("val2014/COCO_val2014_000000458752.jpg")
    assert good[0].source == "v2_OpenEnded_mscoco_val2014_questions.json#458752000"


def test_malformed_record_is_rejected_with_reason(vqav2):
    rejects = [i for i in vqav2.read("vqav2", "val") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "1000" and "answers" in rejects[0].reason


def test_question_generation_swaps_answer_and_question(vqav2):
    qg = [i for i in vqav2.read("vqav2_qg", "val") if isinstance(i, Example)]
    assert qg[1].slots == {"answer": "pitcher"}
    assert qg[1].target == "What position is this man playing?"


def test_test_split_without_annotations(raw_tree):
    raw_tree.write_json("v2_OpenEnded_mscoco_test2015_questions.json",
                        {"questions": [{"image_id": 7, "question": "Why?", "question_id": 7000}]})
    items = list(VQAv2Adapter(raw_tree.root).read("vqav2", "test"))
    assert len(items) == 1 and items[0].target == "" and items[0].answers == []


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json("v2_OpenEnded_mscoco_train2014_questions.json", {"questions": []})
    with pytest.raises(SourceError, match="v2_mscoco_train2014_annotations.json"):
        list(VQAv2Adapter(raw_tree.root).read("vqav2", "train"))
