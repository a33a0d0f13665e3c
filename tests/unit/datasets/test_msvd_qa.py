import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.msvd_qa import MSVDQAAdapter, parse_youtube_mapping

MAPPING = "-4wsuPCjDBc_5_15 vid1\nKnGhJ8uMgrA_30_41 vid2\n"


@pytest.fixture
def msvd(raw_tree):
    raw_tree.write_json("train_qa.json", [
        {"answer": "animal", "id": 0, "question": "what is chewing on a nut?", "video_id": 2},
        {"answer": "man", "id": 1, "question": "who is playing a guitar?", "video_id": 2},
        {"answer": "animal ", "id": 2, "question": "what is eating?", "video_id": 2},
    ])
    raw_tree.write_json("test_qa.json", [
        {"answer": "animal", "id": 0, "question": "what is chewing on a nut?", "video_id": 1},
        {"answer": "guitar", "id": 1, "question": "what is the man playing?", "video_id": 2},
        {"answer": "man", "id": 2, "question": "who is walking?", "video_id": 7},
        {"answer": "man", "id": 3, "question": "who is talking?", "video_id": "vid1"},
    ])
    raw_tree.write_text("youtube_mapping.txt", MAPPING)
    return MSVDQAAdapter(raw_tree.root)


def test_spec_is_held_out_vocabulary_ranking():
    (spec,) = MSVDQAAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.template_set) == ("msvd_qa", "video_qa", HELD_OUT, "video_qa")
    assert (spec.splits, spec.eval_split, spec.task) == (("test",), "test", "rank_choices")


def test_field_mapping_through_youtube_mapping(msvd, raw_tree):
    first = next(iter(msvd.read("msvd_qa", "test")))
    assert isinstance(first, Example)
    assert first.key == "0" and first.source == "test_qa.json#0"
    # int video_id 1 -> clip name from youtube_mapping.txt (a name starting with "-")
    assert first.video == raw_tree.path("video/-4wsuPCjDBc_5_15.avi")
    assert first.image is None
    assert first.slots == {"question": "what is chewing on a nut?"}
    assert first.target == "animal" and first.answers == ["animal"]


def test_choices_are_the_sorted_train_vocabulary(msvd):
    good = [i for i in msvd.read("msvd_qa", "test") if isinstance(i, Example)]
    # "animal " in train is stripped and counted once
    assert good[0].choices == ["animal", "man"]
    assert good[0].label_index == 0


def test_answer_outside_vocabulary_is_still_an_example(msvd, raw_tree):
    good = [i for i in msvd.read("msvd_qa", "test") if isinstance(i, Example)]
    assert good[1].target == "guitar" and good[1].label_index == -1
    assert good[1].video == raw_tree.path("video/KnGhJ8uMgrA_30_41.avi")


def test_unknown_or_mistyped_video_id_is_rejected(msvd):
    rejects = [i for i in msvd.read("msvd_qa", "test") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["2", "3"]
    assert "video_id 7" in rejects[0].reason and "youtube_mapping.txt" in rejects[0].reason
    assert "video_id" in rejects[1].reason and "str" in rejects[1].reason
    assert rejects[1].source == "test_qa.json#3"


def test_train_split_builds_vocabulary_from_itself(msvd):
    items = list(msvd.read("msvd_qa", "train"))
    assert [i.label_index for i in items] == [0, 1, 0]


def test_mapping_parser_skips_malformed_lines():
    assert parse_youtube_mapping("a_1_2 vid3\nbroken line here\nb_4_5 video4\n\n") == {3: "a_1_2"}


def test_record_without_id_is_keyed_by_position(raw_tree):
    raw_tree.write_json("train_qa.json", [])
    raw_tree.write_json("val_qa.json", [{"answer": "man", "question": "who?", "video_id": 1}])
    raw_tree.write_text("youtube_mapping.txt", MAPPING)
    (item,) = MSVDQAAdapter(raw_tree.root).read("msvd_qa", "val")
    assert isinstance(item, Reject) and item.key == "index0" and "'id'" in item.reason


@pytest.mark.parametrize("missing", ["test_qa.json", "train_qa.json", "youtube_mapping.txt"])
def test_missing_file_names_the_path(raw_tree, missing):
    files = {"test_qa.json": [], "train_qa.json": []}
    for name, rows in files.items():
        if name != missing:
            raw_tree.write_json(name, rows)
    if missing != "youtube_mapping.txt":
        raw_tree.write_text("youtube_mapping.txt", MAPPING)
    with pytest.raises(SourceError, match=missing.replace(".", r"\.")):
        list(MSVDQAAdapter(raw_tree.root).read("msvd_qa", "test"))


def test_vocabulary_keeps_the_most_frequent_answers():
    from components.datasets.msvd_qa import answer_vocabulary

    records = [{"answer": a} for a in ["cat"] * 3 + ["dog"] * 2 + ["emu"] + [" cat "] + ["ant"]]
    assert answer_vocabulary(records, size=2) == ["cat", "dog"]
    assert answer_vocabulary(records) == ["ant", "cat", "dog", "emu"]
