import json

import pytest

from components.datasets import Example, Reject, SourceError
from components.datasets.vsr import VSRAdapter

# rows in the zero-shot split's key set (subj/obj, no reference_frame); validator ids as strings
ZS_TRUE = {"image": "000000017697.jpg", "image_link": "http://images.cocodataset.org/train2017/000000017697.jpg",
           "caption": " The car is behind the suitcase. ", "label": 1, "relation": "behind", "subj": "car",
           "obj": "suitcase", "annotator_id": 2, "vote_true_validator_id": "[18, 2]", "vote_false_validator_id": "[1]"}
ZS_FALSE = {"image": "000000199940.jpg", "image_link": "http://images.cocodataset.org/val2017/000000199940.jpg",
            "caption": "The cat is under the backpack.", "label": 0, "relation": "under", "subj": "cat",
            "obj": "backpack", "annotator_id": 1, "vote_true_validator_id": "[]",
            "vote_false_validator_id": "[2, 51, 26]"}
# README style: validator ids as real lists
ZS_LISTS = {**ZS_TRUE, "caption": "The car is near the suitcase.", "vote_true_validator_id": [2, 6],
            "vote_false_validator_id": []}
RANDOM_ROW = {"image": "000000296471.jpg", "image_link": "http://images.cocodataset.org/train2017/000000296471.jpg",
              "caption": "The cat is inside the refrigerator.", "label": 0, "relation": "inside", "annotator_id": 27,
              "vote_true_validator_id": "[]", "vote_false_validator_id": "[1, 2, 20]", "reference_frame": None}


def _jsonl(rows):
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


@pytest.fixture
def tree(raw_tree):
    raw_tree.write_text("splits/zeroshot/test.jsonl", _jsonl([ZS_TRUE, ZS_FALSE, ZS_LISTS]))
    raw_tree.write_text("splits/random/test.jsonl", _jsonl([RANDOM_ROW]))
    return raw_tree


def test_spec_is_held_out_binary_on_zeroshot_test():
    s = VSRAdapter.spec("vsr")
    assert (s.category, s.role, s.splits, s.eval_split, s.task, s.template_set) == (
        "visual_reasoning", "held_out", ("test",), "test", "binary", "visual_reasoning.statement")


def test_maps_statement_label_and_image(tree):
    items = list(VSRAdapter(tree.root).read("vsr", "test"))
    assert all(isinstance(i, Example) for i in items)
    true, false = items[0], items[1]
    assert true.key == "line1" and true.source == "splits/zeroshot/test.jsonl#line1"
    assert true.slots == {"statement": "The car is behind the suitcase."}
    assert (true.target, true.answers, true.choices, true.label_index) == ("yes", ["yes"], ["yes", "no"], 0)
    assert true.image == tree.path("images/000000017697.jpg")
    assert (false.target, false.label_index) == ("no", 1)


def test_val2017_image_is_read_from_the_flat_folder(tree):
    # image_link names val2017, but the release's images/ folder is flat
    items = list(VSRAdapter(tree.root).read("vsr", "test"))
    assert items[1].image == tree.path("images/000000199940.jpg")


def test_validator_ids_as_strings_or_lists_are_both_fine(tree):
    items = list(VSRAdapter(tree.root).read("vsr", "test"))
    assert items[2].slots["statement"] == "The car is near the suitcase." and items[2].label_index == 0


def test_reads_the_zeroshot_split_not_the_random_one(tree):
    statements = [e.slots["statement"] for e in VSRAdapter(tree.root).read("vsr", "test")]
    assert "The cat is inside the refrigerator." not in statements


def test_dev_file_is_our_val_split(raw_tree):
    raw_tree.write_text("splits/zeroshot/dev.jsonl", _jsonl([ZS_FALSE]))
    (item,) = VSRAdapter(raw_tree.root).read("vsr", "val")
    assert item.source == "splits/zeroshot/dev.jsonl#line1" and item.target == "no"


def test_malformed_rows_are_rejected_with_reason(raw_tree):
    rows = [ZS_TRUE, {**ZS_TRUE, "label": "1"}, {**ZS_TRUE, "label": 2}, "{not json", {"caption": "x", "label": 1}]
    raw_tree.write_text("splits/zeroshot/test.jsonl", _jsonl(rows))
    items = list(VSRAdapter(raw_tree.root).read("vsr", "test"))
    assert isinstance(items[0], Example)
    rejects = items[1:]
    assert all(isinstance(r, Reject) for r in rejects)
    assert [r.key for r in rejects] == ["line2", "line3", "line4", "line5"]
    assert "label" in rejects[0].reason and "str" in rejects[0].reason
    assert "0 or 1" in rejects[1].reason
    assert "JSON" in rejects[2].reason
    assert "image" in rejects[3].reason
    assert rejects[3].source == "splits/zeroshot/test.jsonl#line5"


def test_missing_split_file_names_the_path(raw_tree):
    raw_tree.write_text("splits/random/train.jsonl", _jsonl([RANDOM_ROW]))
    with pytest.raises(SourceError, match="splits/zeroshot/train.jsonl"):
        list(VSRAdapter(raw_tree.root).read("vsr", "train"))


def test_unknown_split_is_an_error(tree):
    with pytest.raises(ValueError, match="no split"):
        list(VSRAdapter(tree.root).read("vsr", "dev"))
