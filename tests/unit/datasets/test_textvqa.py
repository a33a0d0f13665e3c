import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.textvqa import TextVQAAdapter

HEADER = {"dataset_name": "textvqa", "dataset_version": "0.5.1"}
REAL_TRAIN = {
    "question": "what is the brand of phone?", "image_id": "0054c91397f2fe05",
    "image_classes": ["Belt", "Headphones", "Goggles", "Scale"],
    "flickr_original_url": "https://farm6.staticflickr.com/2891/9134076951_f65b421097_o.jpg",
    "flickr_300k_url": "https://c4.staticflickr.com/3/2891/9134076951_f65b421097_z.jpg",
    "image_width": 1024, "image_height": 730,
    "answers": ["nokia", "nokia", "nokia", "nokia", "toshiba", "nokia", "nokia", "nokia", "nokia", "nokia"],
    "question_tokens": ["what", "is", "the", "brand", "of", "phone"], "question_id": 0, "set_name": "train",
}
REAL_VAL = {
    "question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
    "image_classes": ["Cassette deck", "Printer"], "flickr_original_url": "", "flickr_300k_url": "",
    "image_width": 1024, "image_height": 664,
    "answers": ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
                "dakota digital", "dakota digital", "dakota", "dakota"],
    "question_tokens": ["what", "is", "the", "brand", "of", "this", "camera"], "question_id": 34602, "set_name": "val",
}


@pytest.fixture
def textvqa(raw_tree):
    raw_tree.write_json("TextVQA_0.5.1_val.json", {**HEADER, "dataset_type": "val", "data": [
        REAL_VAL,
        {**REAL_VAL, "question_id": 34603, "image_id": "1111aaaa2222bbbb", "question": "what does it say?",
         "answers": ["stop"] * 10},
        {**REAL_VAL, "question_id": 34604, "image_id": 42},
    ]})
    raw_tree.write_json("TextVQA_Rosetta_OCR_v0.2_val.json", {**HEADER, "dataset_type": "val", "data": [
        {"image_id": "003a8ae2ef43b901", "ocr_tokens": ["DAKOTA", "DIGITAL", " "],
         "ocr_info": [{"word": "DAKOTA", "bounding_box": {"top_left_x": 0.1, "top_left_y": 0.2, "width": 0.3,
                                                           "height": 0.1, "rotation": 0, "roll": 0, "pitch": 0, "yaw": 0}}]},
        {"image_id": "1111aaaa2222bbbb", "ocr_tokens": "not a list"},
    ]})
    return TextVQAAdapter(raw_tree.root)


def test_spec_is_held_out_reading_qa_on_val():
    spec = TextVQAAdapter.spec("textvqa")
    assert (spec.category, spec.role, spec.splits, spec.eval_split) == ("reading_qa", HELD_OUT, ("val",), "val")
    assert (spec.template_set, spec.task) == ("reading_qa", "generate")


def test_maps_the_real_val_record_with_its_ocr_tokens(textvqa, raw_tree):
    first = next(iter(textvqa.read("textvqa", "val")))
    assert isinstance(first, Example)
    assert first.key == "34602"
    assert first.source == "TextVQA_0.5.1_val.json#34602"
    # val images live in train_images/
    assert first.image == raw_tree.path("train_images/003a8ae2ef43b901.jpg")
    assert first.slots == {"ocr": "DAKOTA, DIGITAL", "question": "what is the brand of this camera?"}
    assert first.target == "dakota"
    assert first.answers == REAL_VAL["answers"]


def test_an_unusable_ocr_entry_leaves_ocr_empty(textvqa):
    second = list(textvqa.read("textvqa", "val"))[1]
    assert second.slots == {"ocr": "", "question": "what does it say?"} and second.target == "stop"


def test_malformed_record_is_rejected_with_reason(textvqa):
    rejects = [i for i in textvqa.read("textvqa", "val") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "34604" and "image_id" in rejects[0].reason
    assert rejects[0].source == "TextVQA_0.5.1_val.json#34604"


def test_without_the_ocr_file_ocr_is_empty(raw_tree):
    raw_tree.write_json("TextVQA_0.5.1_train.json", {**HEADER, "dataset_type": "train", "data": [REAL_TRAIN]})
    (item,) = TextVQAAdapter(raw_tree.root).read("textvqa", "train")
    assert item.slots == {"ocr": "", "question": "what is the brand of phone?"}
    assert item.target == "nokia" and item.answers.count("toshiba") == 1
    assert item.image == raw_tree.path("train_images/0054c91397f2fe05.jpg")


def test_test_split_has_no_answers_and_its_own_image_folder(raw_tree):
    record = {k: v for k, v in REAL_TRAIN.items() if k != "answers"}
    raw_tree.write_json("TextVQA_0.5.1_test.json", {**HEADER, "dataset_type": "test", "data": [
        {**record, "question_id": 39602, "image_id": "abcdef0123456789", "set_name": "test"}]})
    (item,) = TextVQAAdapter(raw_tree.root).read("textvqa", "test")
    assert isinstance(item, Example)
    assert item.target == "" and item.answers == []
    assert item.image == raw_tree.path("test_images/abcdef0123456789.jpg")


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_json("TextVQA_Rosetta_OCR_v0.2_val.json", {"data": []})
    with pytest.raises(SourceError, match="TextVQA_0.5.1_val.json"):
        list(TextVQAAdapter(raw_tree.root).read("textvqa", "val"))
