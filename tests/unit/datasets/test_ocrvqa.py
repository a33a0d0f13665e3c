import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.ocrvqa import OCRVQAAdapter

# the release's record "761183272"
REAL = {
    "imageURL": "http://ecx.images-amazon.com/images/I/61Y5cOdHJbL.jpg",
    "questions": [
        "Who wrote this book?",
        "What is the title of this book?",
        "What is the genre of this book?",
        "Is this a games related book?",
        "What is the year printed on this calendar?",
    ],
    "answers": ["Sandra Boynton", "Mom's Family Wall Calendar 2016", "Calendars", "No", "2016"],
    "title": "Mom's Family Wall Calendar 2016",
    "authorName": "Sandra Boynton",
    "genre": "Calendars",
    "split": 1,
}


@pytest.fixture
def ocrvqa(raw_tree):
    raw_tree.write_json(
        "dataset.json",
        {
            "761183272": REAL,
            "043935806X": {**REAL, "imageURL": "http://ecx.images-amazon.com/images/I/51abc.png",
                           "questions": ["Is this a historical book?"], "answers": ["Yes"], "split": 2},
            "0000000000": {**REAL, "answers": REAL["answers"][:4]},
            "B00AAAAAAA": {**REAL, "split": "train"},
            "1111111111": {**REAL, "questions": ["Who wrote this book?", "Is this a romantic book?"],
                           "answers": ["Ann Lee", ""], "split": 3},
        },
    )
    return OCRVQAAdapter(raw_tree.root)


def test_spec_is_held_in_reading_qa():
    (spec,) = OCRVQAAdapter.datasets
    assert (spec.name, spec.category, spec.role, spec.template_set, spec.splits, spec.task) == (
        "ocrvqa", "reading_qa", HELD_IN, "reading_qa", ("train", "val"), "generate")


def test_one_example_per_question_of_a_book(ocrvqa, raw_tree):
    examples = [i for i in ocrvqa.read("ocrvqa", "train") if isinstance(i, Example)]
    assert [e.key for e in examples] == [f"761183272_{i}" for i in range(5)]
    first = examples[0]
    assert first.source == "dataset.json#761183272_0"
    assert first.image == raw_tree.path("images/761183272.jpg")
    assert first.slots == {"ocr": "", "question": "Who wrote this book?"}
    assert first.target == "Sandra Boynton" and first.answers == ["Sandra Boynton"]
    assert [e.target for e in examples[1:]] == ["Mom's Family Wall Calendar 2016", "Calendars", "No", "2016"]


def test_string_ids_keep_leading_zeros_and_x_and_the_url_extension(ocrvqa, raw_tree):
    (item,) = ocrvqa.read("ocrvqa", "val")
    assert item.key == "043935806X_0"
    assert item.image == raw_tree.path("images/043935806X.png")
    assert item.target == "Yes"  # yes/no answers keep their capital


def test_mismatched_lists_reject_the_whole_book(ocrvqa):
    rejects = [i for i in ocrvqa.read("ocrvqa", "train") if isinstance(i, Reject)]
    mismatch = [r for r in rejects if r.key == "0000000000"]
    assert len(mismatch) == 1
    assert mismatch[0].source == "dataset.json#0000000000"
    assert mismatch[0].reason == "5 questions but 4 answers"


def test_book_without_a_split_code_is_reported_once(ocrvqa):
    train_rejects = [i for i in ocrvqa.read("ocrvqa", "train") if isinstance(i, Reject)]
    assert [r.key for r in train_rejects] == ["0000000000", "B00AAAAAAA"]
    assert "split" in train_rejects[1].reason
    assert not [i for i in ocrvqa.read("ocrvqa", "val") if isinstance(i, Reject)]


def test_test_split_and_an_empty_answer(ocrvqa):
    first, second = ocrvqa.read("ocrvqa", "test")
    assert isinstance(first, Example) and first.key == "1111111111_0" and first.target == "Ann Lee"
    assert isinstance(second, Reject) and second.key == "1111111111_1" and "empty" in second.reason


def test_missing_dataset_file_names_the_path(raw_tree):
    raw_tree.write_json("loadDataset.json", {})
    with pytest.raises(SourceError, match="dataset.json"):
        list(OCRVQAAdapter(raw_tree.root).read("ocrvqa", "train"))


def test_an_unhashable_split_value_is_a_reject_not_a_crash(raw_tree):
    raw_tree.write_json("dataset.json", {"0123456789": {**REAL, "split": [1]}})
    (item,) = OCRVQAAdapter(raw_tree.root).read("ocrvqa", "train")
    assert isinstance(item, Reject) and item.key == "0123456789" and "split" in item.reason
