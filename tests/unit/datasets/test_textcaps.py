import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.textcaps import TextCapsAdapter

# modelled on the real first train row (image 011e7e629fb9ae7b)
REFERENCES = [
    "Five Listerine Zero mouthwash bottles on a store shelf",
    "Many bottles of Listerine Zero are placed together.",
    "Listerine Zero mouthwash is less intense with zero alcohol.",
    "Several bottles of Listerine Zero sit on display on a shelf",
    "Listerine zero bottles which is less intense and zero alcohol.",
]


def _image_fields(image_id, split):
    prefix = "test" if split == "test" else "train"
    return {
        "image_id": image_id, "image_classes": ["Personal care", "Perfume"],
        "flickr_original_url": "https://example.invalid/o.jpg", "flickr_300k_url": "https://example.invalid/s.jpg",
        "image_width": 1024, "image_height": 702, "set_name": split, "image_name": image_id,
        "image_path": f"{prefix}/{image_id}.jpg",
    }


def _row(image_id, split, caption_id, caption, references):
    return {
        **_image_fields(image_id, split),
        "caption_id": caption_id, "caption_str": caption,
        "caption_tokens": ["<s>", *caption.lower().split(), "</s>"],
        "reference_strs": references, "reference_tokens": [["<s>", "</s>"] for _ in references],
    }


def _file(split, rows):
    # dataset_version is a number in the release
    return {"dataset_type": split, "dataset_name": "textcaps", "dataset_version": 0.1, "data": rows}


@pytest.fixture
def textcaps(raw_tree):
    broken = _row("0a1b2c3d4e5f6071", "train", 100000002, "x", ["x"])
    del broken["caption_str"]
    raw_tree.write_json("TextCaps_0.1_train.json", _file("train", [
        _row("011e7e629fb9ae7b", "train", 100000000, REFERENCES[0], REFERENCES),
        _row("011e7e629fb9ae7b", "train", 100000001, REFERENCES[1] + " ", REFERENCES),
        broken,
    ]))
    raw_tree.write_json("TextCaps_0.1_val.json", _file("val", [
        _row("003a8ae2ef43b901", "val", 200000000, "A camera that says Dakota.", ["A camera that says Dakota."]),
    ]))
    raw_tree.write_json("TextCaps_0.1_test.json", _file("test", [
        _image_fields("0f0e0d0c0b0a0908", "test"),
        _image_fields("0f0e0d0c0b0a0908", "test"),   # a repeated image row gives one example
        _image_fields("1111222233334444", "test"),
    ]))
    return TextCapsAdapter(raw_tree.root)


def test_spec():
    (spec,) = TextCapsAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.splits, spec.eval_split, spec.task, spec.template_set) == (
        "textcaps", "captioning_reading", HELD_IN, ("train", "val"), None, "generate", "captioning_reading"
    )


def test_one_example_per_caption_row(textcaps, raw_tree):
    good = [i for i in textcaps.read("textcaps", "train") if isinstance(i, Example)]
    assert [e.key for e in good] == ["100000000", "100000001"]
    first, second = good
    assert first.source == "TextCaps_0.1_train.json#100000000"
    assert first.target == "Five Listerine Zero mouthwash bottles on a store shelf"
    assert first.answers == REFERENCES
    assert second.target == "Many bottles of Listerine Zero are placed together."
    # image_path says "train/..." but the picture is in train_images/
    assert first.image == raw_tree.path("train_images/011e7e629fb9ae7b.jpg")
    # no OCR file: the slot is present and empty
    assert first.slots == {"ocr": ""}


def test_val_pictures_live_in_train_images(textcaps, raw_tree):
    (val,) = list(textcaps.read("textcaps", "val"))
    assert val.key == "200000000" and val.image == raw_tree.path("train_images/003a8ae2ef43b901.jpg")
    assert val.target == "A camera that says Dakota." and val.answers == ["A camera that says Dakota."]


def test_malformed_row_becomes_a_reject(textcaps):
    rejects = [i for i in textcaps.read("textcaps", "train") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "100000002" and "caption_str" in rejects[0].reason
    assert rejects[0].source == "TextCaps_0.1_train.json#100000002"


def test_test_split_has_no_captions(textcaps, raw_tree):
    items = list(textcaps.read("textcaps", "test"))
    assert [(i.key, i.target, i.answers) for i in items] == [("0f0e0d0c0b0a0908", "", []), ("1111222233334444", "", [])]
    assert items[0].image == raw_tree.path("test_images/0f0e0d0c0b0a0908.jpg")


def test_ocr_tokens_come_from_the_rosetta_file(textcaps, raw_tree):
    raw_tree.write_json("TextVQA_Rosetta_OCR_v0.2_train.json", {"data": [
        {"image_id": "011e7e629fb9ae7b", "ocr_tokens": ["LISTERINE", "ZERO", " "]},
        {"image_id": "0a1b2c3d4e5f6071", "ocr_tokens": []},
    ]})
    good = [i for i in textcaps.read("textcaps", "train") if isinstance(i, Example)]
    assert good[0].slots == {"ocr": "LISTERINE, ZERO"}
    raw_tree.write_json("TextVQA_Rosetta_OCR_v0.2_test.json", {"data": [{"image_id": "1111222233334444", "ocr_tokens": ["exit"]}]})
    test = list(textcaps.read("textcaps", "test"))
    assert [t.slots["ocr"] for t in test] == ["", "exit"]


def test_malformed_ocr_entry_rejects_that_images_captions(textcaps, raw_tree):
    raw_tree.write_json("TextVQA_Rosetta_OCR_v0.2_train.json",
                        {"data": [{"image_id": "011e7e629fb9ae7b", "ocr_tokens": "LISTERINE"}]})
    rejects = [i for i in textcaps.read("textcaps", "train") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["100000000", "100000001", "100000002"]
    assert "ocr_tokens" in rejects[0].reason


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("README.txt", "the annotation file is not here")
    with pytest.raises(SourceError, match="TextCaps_0.1_val.json"):
        list(TextCapsAdapter(raw_tree.root).read("textcaps", "val"))
