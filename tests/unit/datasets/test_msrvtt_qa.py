import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.msrvtt_qa import MSRVTTQAAdapter


@pytest.fixture
def msrvtt(raw_tree):
    raw_tree.write_json("train_qa.json", [
        {"answer": "couch", "category_id": 0, "id": 0, "question": "what are people sitting on?", "video_id": 0},
        {"answer": "man", "category_id": 0, "id": 1, "question": "who is singing?", "video_id": 0},
    ])
    # ids continue after the train file's, as in the release
    raw_tree.write_json("val_qa.json", [
        {"answer": "couch", "category_id": 14, "id": 2, "question": "what are three people sitting on?", "video_id": 6513},
        {"answer": "dog", "category_id": 14, "id": 3, "question": "what is running?", "video_id": 6514},
        {"category_id": 14, "id": 4, "question": "what is red?", "video_id": 6514},
        {"answer": "man", "category_id": 14, "id": 5, "question": "who talks?", "video_id": 6514.0},
    ])
    return MSRVTTQAAdapter(raw_tree.root)


def test_spec_is_held_out_vocabulary_ranking():
    (spec,) = MSRVTTQAAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.template_set) == ("msrvtt_qa", "video_qa", HELD_OUT, "video_qa")
    assert (spec.splits, spec.eval_split, spec.task) == (("test",), "test", "rank_choices")


def test_field_mapping_video_id_names_the_file(msrvtt, raw_tree):
    first = next(iter(msrvtt.read("msrvtt_qa", "val")))
    assert isinstance(first, Example)
    assert first.key == "2" and first.source == "val_qa.json#2"
    assert first.video == raw_tree.path("video/video6513.mp4") and first.image is None
    assert first.slots == {"question": "what are three people sitting on?"}
    assert first.target == "couch" and first.answers == ["couch"]
    assert first.choices == ["couch", "man"] and first.label_index == 0


def test_answer_outside_train_vocabulary_gets_label_minus_one(msrvtt):
    good = [i for i in msrvtt.read("msrvtt_qa", "val") if isinstance(i, Example)]
    assert [(e.target, e.label_index) for e in good] == [("couch", 0), ("dog", -1)]


def test_malformed_records_are_rejected_with_reason(msrvtt):
    rejects = [i for i in msrvtt.read("msrvtt_qa", "val") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["4", "5"]
    assert "answer" in rejects[0].reason
    assert "video_id" in rejects[1].reason and "float" in rejects[1].reason


def test_unknown_split_is_an_error(msrvtt):
    with pytest.raises(ValueError, match="dev"):
        list(msrvtt.read("msrvtt_qa", "dev"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json("train_qa.json", [])
    with pytest.raises(SourceError, match=r"test_qa\.json"):
        list(MSRVTTQAAdapter(raw_tree.root).read("msrvtt_qa", "test"))


def test_missing_train_file_names_it_since_the_vocabulary_needs_it(raw_tree):
    raw_tree.write_json("test_qa.json", [])
    with pytest.raises(SourceError, match=r"train_qa\.json"):
        list(MSRVTTQAAdapter(raw_tree.root).read("msrvtt_qa", "test"))
