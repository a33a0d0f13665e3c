import pytest

from components.datasets import Example, Reject, SourceError
from components.datasets.hateful_memes import HatefulMemesAdapter

# verbatim release style: compact JSON, escaped slashes, key order id, img, label, text
DEV_SEEN = "\n".join([
    '{"id":42953,"img":"img\\/42953.png","label":0,"text":"its their character not their color that matters"}',
    '{"id":5349,"img":"img\\/05349.png","label":0,"text":"normal day in a islamic country"}',
    '{"id":70914,"img":"img\\/70914.png","label":1,"text":" tattoos are bad for your health "}',
    '{"id":11111,"img":"img\\/11111.png","text":"no label here"}',
    '{"id":22222,"img":"img\\/22222.png","label":"1","text":"label as text"}',
    '{"id":33333,"img":"img\\/33333.png","label":3,"text":"label out of range"}',
    '{"id":"44444","img":"img\\/44444.png","label":0,"text":"id as text"}',
    '{"id":55555,"img":"img\\/55555.png","label":0,"text":"cut off',
]) + "\n"
TEST_SEEN = '{"id":16395,"img":"img\\/16395.png","text":"handjobs sold seperately"}\n'


@pytest.fixture
def tree(raw_tree):
    raw_tree.write_text("dev_seen.jsonl", DEV_SEEN)
    raw_tree.write_text("test_seen.jsonl", TEST_SEEN)
    return raw_tree


def _read(tree, split="val"):
    return list(HatefulMemesAdapter(tree.root).read("hateful_memes", split))


def test_spec_is_held_out_binary_on_dev_seen():
    s = HatefulMemesAdapter.spec("hateful_memes")
    assert (s.category, s.role, s.splits, s.eval_split, s.task, s.template_set) == (
        "image_classification", "held_out", ("val",), "val", "binary", "image_classification")


def test_maps_text_label_and_escaped_image_path(tree):
    first, _, hateful = _read(tree)[:3]
    assert first.key == "42953" and first.source == "dev_seen.jsonl#42953"
    assert first.image == tree.path("img/42953.png")  # "img\/42953.png" in the file
    assert first.slots == {"text": "its their character not their color that matters"}
    assert (first.target, first.answers, first.choices, first.label_index) == ("no", ["no"], ["yes", "no"], 1)
    assert (hateful.target, hateful.label_index) == ("yes", 0)
    assert hateful.slots["text"] == "tattoos are bad for your health"


def test_unpadded_id_uses_the_padded_file_name(tree):
    small = _read(tree)[1]
    assert small.key == "5349" and small.image == tree.path("img/05349.png")


def test_test_file_has_no_labels(tree):
    (item,) = _read(tree, "test")
    assert isinstance(item, Example) and item.source == "test_seen.jsonl#16395"
    assert (item.target, item.answers, item.label_index) == ("", [], -1)
    assert item.choices == ["yes", "no"] and item.slots == {"text": "handjobs sold seperately"}


def test_malformed_rows_are_rejected_with_reason(tree):
    rejects = [i for i in _read(tree) if isinstance(i, Reject)]
    by_key = {r.key: r.reason for r in rejects}
    assert "missing field 'label'" in by_key["11111"]  # only test files may lack the label
    assert "str" in by_key["22222"]
    assert "0 or 1" in by_key["33333"]
    assert "id" in by_key["line7"]
    assert "JSON" in by_key["line8"]
    assert len(rejects) == 5


def test_missing_file_names_the_path(raw_tree):
    raw_tree.write_text("dev_unseen.jsonl", DEV_SEEN)
    with pytest.raises(SourceError, match="dev_seen.jsonl"):
        _read(raw_tree)
    with pytest.raises(SourceError, match="train.jsonl"):
        _read(raw_tree, "train")
