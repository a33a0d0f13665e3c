import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.nocaps import NoCapsAdapter

INFO = {"url": "http://nocaps.org", "date_created": "2018/11/06", "version": "0.1", "year": 2018}
# the real first val image of nocaps_val_4500_captions.json, plus its (inferred) domain
REAL_IMAGE = {
    "id": 0, "open_images_id": "0013ea2087020901", "height": 1024, "width": 732,
    "coco_url": "https://s3.amazonaws.com/nocaps/val/0013ea2087020901.jpg", "file_name": "0013ea2087020901.jpg",
    "license": 0, "date_captured": "2018-11-06 11:04:33", "domain": "in-domain",
}


def _image(image_id, oid, **extra):
    return {"id": image_id, "open_images_id": oid, "height": 10, "width": 10, "coco_url": "", "file_name": f"{oid}.jpg",
            "license": 0, "date_captured": "", **extra}


@pytest.fixture
def nocaps(raw_tree):
    captions = ["A baby is standing in front of a house. "] + [f"A small child outside, view {k}." for k in range(1, 10)]
    annotations = [{"image_id": 0, "id": k, "caption": c} for k, c in enumerate(captions)]
    annotations += [{"image_id": 1, "id": 10 + k, "caption": f"A red car number {k}"} for k in range(10)]
    annotations += [
        {"image_id": 1, "id": 99, "caption": 7},   # mistyped caption: rejected on its own
        {"image_id": 3, "id": 100, "caption": "A tower."},
    ]
    images = [
        REAL_IMAGE,
        _image(1, "00aa", domain="out-domain"),   # the website's example has no domain: both read the same
        _image(2, "00bb"),                        # no captions at all
        {"id": 3, "open_images_id": "00cc"},      # no file_name
    ]
    raw_tree.write_json("nocaps_val_4500_captions.json",
                        {"licenses": [], "info": INFO, "images": images, "annotations": annotations})
    raw_tree.write_json("nocaps_test_image_info.json",
                        {"licenses": [], "info": INFO, "images": [_image(0, "0a0b0c0d0e0f1011"), _image(1, "ffee")]})
    return NoCapsAdapter(raw_tree.root)


def test_spec_is_held_out_on_val():
    (spec,) = NoCapsAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.splits, spec.eval_split, spec.task, spec.template_set) == (
        "nocaps", "image_captioning", HELD_OUT, ("val",), "val", "generate", "image_captioning"
    )


def test_one_example_per_image_with_its_ten_references(nocaps, raw_tree):
    good = [i for i in nocaps.read("nocaps", "val") if isinstance(i, Example)]
    assert [e.key for e in good] == ["0", "1"]
    first = good[0]
    assert first.source == "nocaps_val_4500_captions.json#0"
    assert first.image == raw_tree.path("val/0013ea2087020901.jpg")
    assert first.target == "A baby is standing in front of a house."
    assert len(first.answers) == 10 and first.answers[9] == "A small child outside, view 9."
    assert good[1].answers == [f"A red car number {k}" for k in range(10)]


def test_bad_annotation_and_bad_images_become_rejects(nocaps):
    rejects = {r.key: r for r in nocaps.read("nocaps", "val") if isinstance(r, Reject)}
    assert sorted(rejects) == ["2", "3", "ann99"]
    assert "caption" in rejects["ann99"].reason and rejects["ann99"].source == "nocaps_val_4500_captions.json#ann99"
    assert "no captions" in rejects["2"].reason
    assert "file_name" in rejects["3"].reason


def test_test_split_has_no_annotations(nocaps, raw_tree):
    items = list(nocaps.read("nocaps", "test"))
    assert all(isinstance(i, Example) for i in items)
    assert [(e.key, e.target, e.answers) for e in items] == [("0", "", []), ("1", "", [])]
    assert items[0].image == raw_tree.path("test/0a0b0c0d0e0f1011.jpg")
    assert items[0].source == "nocaps_test_image_info.json#0"


def test_val_file_without_annotations_is_a_source_error(raw_tree):
    raw_tree.write_json("nocaps_val_4500_captions.json", {"images": [REAL_IMAGE]})
    with pytest.raises(SourceError, match="annotations"):
        list(NoCapsAdapter(raw_tree.root).read("nocaps", "val"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("README.txt", "the annotation file is not here")
    with pytest.raises(SourceError, match="nocaps_val_4500_captions.json"):
        list(NoCapsAdapter(raw_tree.root).read("nocaps", "val"))


def test_no_train_split(nocaps):
    with pytest.raises(ValueError, match="train"):
        list(nocaps.read("nocaps", "train"))
