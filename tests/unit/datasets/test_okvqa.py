import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.okvqa import OKVQAAdapter, natural_target

QFILE = "OpenEnded_mscoco_train2014_questions.json"
AFILE = "mscoco_train2014_annotations.json"
LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}


def _answers(*pairs):
    """(raw_answer, answer) pairs -> the release's answer objects."""
    return [
        {"answer_id": i, "raw_answer": raw, "answer_confidence": "yes", "answer": answer}
        for i, (raw, answer) in enumerate(pairs, start=1)
    ]


@pytest.fixture
def okvqa(raw_tree):
    raw_tree.write_json(
        QFILE,
        {"license": LICENSE, "data_subtype": "train2014", "task_type": "Open-Ended", "questions": [
            {"image_id": 51606, "question": "What is the hairstyle of the blond called?", "question_id": 516065},
            {"image_id": 81721, "question": "What fruit is this?", "question_id": 817215},
            {"image_id": 480208, "question": "What sport is this?", "question_id": 4802085},
            {"image_id": 7, "question": "Broken?", "question_id": 70},
        ]},
    )
    raw_tree.write_json(
        AFILE,
        {"license": LICENSE, "data_subtype": "train2014",
         "question_types": {"four": "Sports and Recreation", "five": "Cooking and Food", "other": "Other"},
         "annotations": [
             {"image_id": 51606, "answer_type": "other", "question_type": "four", "question_id": 516065,
              "answers": _answers(*[("pony tail", "pony tail")] * 10)},
             # raw text differs from the processed (lemmatised) answer
             {"image_id": 81721, "answer_type": "other", "question_type": "five", "question_id": 817215,
              "answers": _answers(*[("bananas", "banana")] * 4, *[("banana", "banana")] * 3, *[("a banana", "banana")] * 2,
                                  ("apple", "apple"))},
             # v1.0 style: no raw_answer at all
             {"image_id": 480208, "answer_type": "other", "question_type": "four", "question_id": 4802085,
              "answers": [{"answer_id": i, "answer_confidence": "yes", "answer": "tennis"} for i in range(1, 11)]},
             {"image_id": 7, "answer_type": "other", "question_type": "other", "question_id": 70,
              "answers": [{"answer_id": 1, "raw_answer": "red", "answer_confidence": "yes"}]},
         ]},
    )
    return OKVQAAdapter(raw_tree.root)


def test_specs_are_held_in_knowledge_qa_and_question_generation():
    qa, qg = OKVQAAdapter.datasets
    assert (qa.name, qa.category, qa.role, qa.template_set, qa.splits) == (
        "okvqa", "knowledge_qa", HELD_IN, "knowledge_qa.open", ("train", "val"))
    assert (qg.name, qg.category, qg.role, qg.template_set, qg.splits) == (
        "okvqa_qg", "question_generation", HELD_IN, "question_generation", ("train", "val"))


def test_joins_questions_and_annotations_of_the_real_record(okvqa, raw_tree):
    first = next(iter(okvqa.read("okvqa", "train")))
    assert isinstance(first, Example)
    assert first.key == "516065"
    assert first.source == f"{QFILE}#516065"
    assert first.image == raw_tree.path("train2014/COCO_train2014_000000051606.jpg")
    assert first.slots == {"question": "What is the hairstyle of the blond called?"}
    assert first.target == "pony tail"
    assert first.answers == ["pony tail"] * 10


def test_target_is_the_raw_text_of_the_most_common_processed_answer(okvqa):
    second = list(okvqa.read("okvqa", "train"))[1]
    # no multiple_choice_answer: "banana" wins 9 to 1, and annotators mostly wrote "bananas"
    assert second.target == "bananas"
    assert second.answers == ["banana"] * 9 + ["apple"]


def test_answers_without_raw_answer_use_the_processed_text(okvqa):
    third = list(okvqa.read("okvqa", "train"))[2]
    assert third.target == "tennis" and third.answers == ["tennis"] * 10


def test_malformed_annotation_is_rejected_with_reason(okvqa):
    rejects = [i for i in okvqa.read("okvqa", "train") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "70" and "answer" in rejects[0].reason
    assert rejects[0].source == f"{QFILE}#70"


def test_question_without_annotation_is_rejected(raw_tree):
    raw_tree.write_json(QFILE, {"questions": [{"image_id": 1, "question": "Why?", "question_id": 10}]})
    raw_tree.write_json(AFILE, {"question_types": {}, "annotations": []})
    (item,) = OKVQAAdapter(raw_tree.root).read("okvqa", "train")
    assert isinstance(item, Reject) and "no annotation" in item.reason


def test_question_generation_swaps_answer_and_question(okvqa):
    qg = [i for i in okvqa.read("okvqa_qg", "train") if isinstance(i, Example)]
    assert qg[1].slots == {"answer": "bananas"}
    assert qg[1].target == "What fruit is this?"
    assert qg[1].image.endswith("train2014/COCO_train2014_000000081721.jpg")


def test_val_reads_the_val2014_files(raw_tree):
    raw_tree.write_json("OpenEnded_mscoco_val2014_questions.json",
                        {"questions": [{"image_id": 297147, "question": "What sport?", "question_id": 2971475}]})
    raw_tree.write_json("mscoco_val2014_annotations.json", {"annotations": [
        {"image_id": 297147, "question_id": 2971475, "question_type": "four", "answer_type": "other",
         "answers": _answers(*[("racing", "race")] * 10)}]})
    (item,) = OKVQAAdapter(raw_tree.root).read("okvqa", "val")
    assert item.image.endswith("val2014/COCO_val2014_000000297147.jpg")
    assert item.target == "racing" and item.answers == ["race"] * 10


def test_there_is_no_test_split(okvqa):
    with pytest.raises(ValueError, match="test"):
        list(okvqa.read("okvqa", "test"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json(QFILE, {"questions": []})
    with pytest.raises(SourceError, match=AFILE):
        list(OKVQAAdapter(raw_tree.root).read("okvqa", "train"))


def test_natural_target_falls_back_when_processed_answers_are_empty():
    assert natural_target(["", ""], ["Pony tail", "Pony tail"]) == "Pony tail"
    assert natural_target([], []) == ""
