import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.ivqa import IVQAAdapter

HEADER = "video_id,start,end,question,answer1,answer2,answer3,answer4,answer5,type\n"


@pytest.fixture
def ivqa(raw_tree):
    raw_tree.write_text("test.csv", HEADER + (
        "AbCdEfGhIjK,12,32,what is the man cutting,onion,onion,onions,onion,garlic,0\n"
        "ZyXwVuTsRqP,40,58,what tool is used,scissors,knife,knife,,knife,0\n"
        '-aB3_dE9fGh,5,9,"what is he holding, in his hand",cup,mug,mug,cup,cup,0\n'
        "QwErTyUiOpA,1,2,what is cut\n"
        "QwErTyUiOpB,1,2,what is cut,a,a,a,a,a,0,surplus\n"
        "QwErTyUiOpC,1,2,what is cut,,,,,,0\n"
    ))
    return IVQAAdapter(raw_tree.root)


def _good(adapter):
    return [i for i in adapter.read("ivqa", "test") if isinstance(i, Example)]


def test_spec_is_held_out_open_ended():
    (spec,) = IVQAAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.template_set) == ("ivqa", "video_qa", HELD_OUT, "video_qa")
    assert (spec.splits, spec.eval_split, spec.task) == (("test",), "test", "generate")


def test_field_mapping(ivqa, raw_tree):
    first = _good(ivqa)[0]
    assert first.key == "row0" and first.source == "test.csv#row0"
    assert first.video == raw_tree.path("videos/AbCdEfGhIjK_12_32.mp4") and first.image is None
    assert first.slots == {"question": "what is the man cutting"}
    assert first.choices == [] and first.label_index == -1


def test_five_answer_columns_target_is_most_common(ivqa):
    first, second, third = _good(ivqa)
    assert first.answers == ["onion", "onion", "onions", "onion", "garlic"] and first.target == "onion"
    # an empty answer cell is left out of the references
    assert second.answers == ["scissors", "knife", "knife", "knife"] and second.target == "knife"
    # a quoted question with a comma, and a YouTube id starting with "-"
    assert third.slots["question"] == "what is he holding, in his hand"
    assert third.video.endswith("videos/-aB3_dE9fGh_5_9.mp4") and third.target == "cup"


def test_malformed_rows_are_rejected_with_reason(ivqa):
    rejects = [i for i in ivqa.read("ivqa", "test") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["row3", "row4", "row5"]
    assert "answer1" in rejects[0].reason
    assert "more cell" in rejects[1].reason
    assert "answers are empty" in rejects[2].reason
    assert rejects[0].source == "test.csv#row3"


def test_columns_are_read_by_name_not_position(raw_tree):
    raw_tree.write_text("val.csv", (
        "type,answer5,answer4,answer3,answer2,answer1,question,end,start,video_id\n"
        "0,b,a,a,a,a,what is it,20,10,AbCdEfGhIjK\n"
    ))
    (item,) = IVQAAdapter(raw_tree.root).read("ivqa", "val")
    assert item.video.endswith("videos/AbCdEfGhIjK_10_20.mp4")
    assert item.target == "a" and item.answers == ["a", "a", "a", "a", "b"]


def test_release_copy_without_start_end_uses_bare_video_id(raw_tree):
    raw_tree.write_text("train.csv", "video_id,question,answer1,answer2,answer3,answer4,answer5,type\n"
                                     "AbCdEfGhIjK,what is it,a,a,a,a,a,0\n")
    (item,) = IVQAAdapter(raw_tree.root).read("ivqa", "train")
    assert item.video == raw_tree.path("videos/AbCdEfGhIjK.mp4")


def test_header_without_answer_columns_is_a_source_error(raw_tree):
    raw_tree.write_text("test.csv", "video_id,question,answer\nAbCdEfGhIjK,what,a\n")
    with pytest.raises(SourceError, match="answer1"):
        list(IVQAAdapter(raw_tree.root).read("ivqa", "test"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("train.csv", HEADER)
    with pytest.raises(SourceError, match=r"test\.csv"):
        list(IVQAAdapter(raw_tree.root).read("ivqa", "test"))
