import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.coco_caption import COCOCaptionAdapter


def _sentence(sentid, raw, imgid):
    return {"tokens": raw.lower().strip(" .").split(), "raw": raw, "imgid": imgid, "sentid": sentid}


def _image(imgid, cocoid, split, filepath, captions, first_sentid):
    sentences = [_sentence(first_sentid + i, raw, imgid) for i, raw in enumerate(captions)]
    return {
        "filepath": filepath,
        "sentids": [s["sentid"] for s in sentences],
        "filename": f"COCO_{filepath}_{cocoid:012d}.jpg",
        "imgid": imgid,
        "split": split,
        "sentences": sentences,
        "cocoid": cocoid,
    }


@pytest.fixture
def coco(raw_tree):
    # the first test image is the real first record of dataset_coco.json (two of its five captions)
    real = _image(
        0,
        391895,
        "test",
        "val2014",
        ["A man with a red helmet on a small moped on a dirt road. ", "Man riding a motor bike on a dirt road on the countryside."],
        770337,
    )
    real["sentences"][1]["sentid"] = real["sentids"][1] = 771687
    broken = _image(5, 600, "train", "train2014", ["A dog on a couch.", "A sleeping dog."], 900)
    del broken["sentences"][1]["raw"]
    no_split = _image(6, 700, "train", "train2014", ["A cat."], 950)
    del no_split["split"]
    images = [
        real,
        _image(1, 522418, "train", "train2014", ["A woman wearing a net on her head cutting a cake. ", "A woman cutting a cake."], 10),
        _image(2, 184613, "restval", "val2014", ["A child holding a flowered umbrella.\n"], 20),
        _image(3, 318219, "val", "val2014", ["A man sitting at a desk. ", "A computer on a desk.", "An office."], 30),
        broken,
        no_split,
    ]
    raw_tree.write_json("dataset_coco.json", {"images": images, "dataset": "coco"})
    return COCOCaptionAdapter(raw_tree.root)


def _examples(items):
    return [i for i in items if isinstance(i, Example)]


def test_spec():
    (spec,) = COCOCaptionAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.splits, spec.eval_split, spec.task, spec.template_set) == (
        "coco_caption", "image_captioning", HELD_IN, ("train", "val"), None, "generate", "image_captioning"
    )


def test_train_is_one_example_per_caption_with_stripped_text(coco, raw_tree):
    train = _examples(coco.read("coco_caption", "train"))
    first = train[0]
    assert first.key == "10"
    assert first.source == "dataset_coco.json#10"
    # the release's trailing space is gone
    assert first.target == "A woman wearing a net on her head cutting a cake."
    assert first.answers == ["A woman wearing a net on her head cutting a cake.", "A woman cutting a cake."]
    assert first.image == raw_tree.path("train2014/COCO_train2014_000000522418.jpg")
    assert first.slots == {} and first.choices == [] and first.label_index == -1
    assert train[1].key == "11" and train[1].target == "A woman cutting a cake."


def test_restval_goes_to_train_with_its_val2014_path(coco, raw_tree):
    train = {e.key: e for e in _examples(coco.read("coco_caption", "train"))}
    restval = train["20"]
    assert restval.target == "A child holding a flowered umbrella."
    assert restval.image == raw_tree.path("val2014/COCO_val2014_000000184613.jpg")
    assert sorted(train) == ["10", "11", "20", "900"]


def test_val_is_one_example_per_image(coco, raw_tree):
    (val,) = _examples(coco.read("coco_caption", "val"))
    assert val.key == "318219" and val.source == "dataset_coco.json#318219"
    assert val.target == "A man sitting at a desk."
    assert val.answers == ["A man sitting at a desk.", "A computer on a desk.", "An office."]
    assert val.image == raw_tree.path("val2014/COCO_val2014_000000318219.jpg")


def test_test_split_reads_the_real_first_record(coco, raw_tree):
    (test,) = _examples(coco.read("coco_caption", "test"))
    assert test.key == "391895"
    assert test.target == "A man with a red helmet on a small moped on a dirt road."
    assert test.answers[1] == "Man riding a motor bike on a dirt road on the countryside."
    assert test.image == raw_tree.path("val2014/COCO_val2014_000000391895.jpg")


def test_malformed_sentence_rejects_only_itself(coco):
    items = list(coco.read("coco_caption", "train"))
    rejects = [i for i in items if isinstance(i, Reject) and i.key == "901"]
    assert len(rejects) == 1
    assert "raw" in rejects[0].reason and rejects[0].source == "dataset_coco.json#901"
    assert [e.target for e in _examples(items) if e.key == "900"] == ["A dog on a couch."]


def test_record_without_split_is_rejected_in_every_split(coco):
    # train keys are sentids, so an image-level reject there is keyed "img<cocoid>"
    for split, key in (("train", "img700"), ("val", "700"), ("test", "700")):
        rejects = [i for i in coco.read("coco_caption", split) if isinstance(i, Reject) and i.key.endswith("700")]
        assert [(r.key, r.source) for r in rejects] == [(key, f"dataset_coco.json#{key}")]
        assert "split" in rejects[0].reason


def test_image_with_broken_sentences_is_rejected_in_val(raw_tree):
    image = _image(0, 5, "val", "val2014", ["ok"], 1)
    image["sentences"] = "none"
    raw_tree.write_json("dataset_coco.json", {"images": [image]})
    (item,) = COCOCaptionAdapter(raw_tree.root).read("coco_caption", "val")
    assert isinstance(item, Reject) and item.key == "5" and "sentences" in item.reason


def test_unknown_split_raises(coco):
    with pytest.raises(ValueError, match="restval"):
        list(coco.read("coco_caption", "restval"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("README.txt", "the annotation file is not here")
    with pytest.raises(SourceError, match="dataset_coco.json"):
        list(COCOCaptionAdapter(raw_tree.root).read("coco_caption", "train"))


def test_file_without_images_list_is_a_source_error(raw_tree):
    raw_tree.write_json("dataset_coco.json", {"dataset": "coco"})
    with pytest.raises(SourceError, match="images"):
        list(COCOCaptionAdapter(raw_tree.root).read("coco_caption", "val"))
