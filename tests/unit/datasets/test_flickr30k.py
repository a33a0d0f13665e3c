import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.flickr30k import Flickr30kAdapter

# the real first record of dataset_flickr30k.json (tokens shortened)
REAL_CAPTIONS = [
    "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
    "Two young, White males are outside near many bushes.",
    "Two men in green shirts are standing in a yard.",
    "A man in a blue shirt standing in a garden.",
    "Two friends enjoy time spent together.",
]


def _record(imgid, filename, split, captions, first_sentid):
    sentences = [
        {"tokens": c.lower().split()[:3], "raw": c, "imgid": imgid, "sentid": first_sentid + i} for i, c in enumerate(captions)
    ]
    return {"sentids": [s["sentid"] for s in sentences], "imgid": imgid, "sentences": sentences, "split": split, "filename": filename}


@pytest.fixture
def flickr(raw_tree):
    mangled = _record(3, "1001.jpg", "test", ["x"], 20)
    mangled["sentences"] = {"raw": "not a list"}
    no_file = _record(4, "1002.jpg", "test", ["A boat."], 30)
    del no_file["filename"]
    images = [
        _record(0, "1000092795.jpg", "train", REAL_CAPTIONS, 0),
        _record(1, "1000268201.jpg", "test", [c + " " for c in ("A child in a pink dress.", "A girl going into a building.")], 5),
        _record(2, "1000344755.jpg", "val", ["Someone in a blue shirt and hat."], 10),
        mangled,
        no_file,
    ]
    raw_tree.write_json("dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
    return Flickr30kAdapter(raw_tree.root)


def test_spec_is_held_out_on_the_karpathy_test_split():
    (spec,) = Flickr30kAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.splits, spec.eval_split, spec.task, spec.template_set) == (
        "flickr30k", "image_captioning", HELD_OUT, ("test",), "test", "generate", "image_captioning"
    )


def test_one_example_per_image_with_all_captions(flickr, raw_tree):
    (train,) = [i for i in flickr.read("flickr30k", "train") if isinstance(i, Example)]
    assert train.key == "0" and train.source == "dataset_flickr30k.json#0"
    assert train.target == REAL_CAPTIONS[0]
    assert train.answers == REAL_CAPTIONS
    # no "filepath" key in this file: pictures always live in flickr30k-images/
    assert train.image == raw_tree.path("flickr30k-images/1000092795.jpg")


def test_test_split_strips_captions(flickr, raw_tree):
    (test,) = [i for i in flickr.read("flickr30k", "test") if isinstance(i, Example)]
    assert test.key == "1"
    assert test.answers == ["A child in a pink dress.", "A girl going into a building."]
    assert test.target == "A child in a pink dress."
    assert test.image == raw_tree.path("flickr30k-images/1000268201.jpg")


def test_val_split(flickr):
    (val,) = [i for i in flickr.read("flickr30k", "val") if isinstance(i, Example)]
    assert val.key == "2" and val.answers == ["Someone in a blue shirt and hat."]


def test_malformed_records_become_rejects(flickr):
    rejects = {r.key: r for r in flickr.read("flickr30k", "test") if isinstance(r, Reject)}
    assert sorted(rejects) == ["3", "4"]
    assert "sentences" in rejects["3"].reason and rejects["3"].source == "dataset_flickr30k.json#3"
    assert "filename" in rejects["4"].reason


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("README.txt", "the annotation file is not here")
    with pytest.raises(SourceError, match="dataset_flickr30k.json"):
        list(Flickr30kAdapter(raw_tree.root).read("flickr30k", "test"))
