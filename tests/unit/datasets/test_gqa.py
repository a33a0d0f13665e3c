import pytest

from components.datasets import HELD_OUT, Example, Reject, SourceError
from components.datasets.gqa import GQAAdapter

TESTDEV = "questions1.2/testdev_balanced_questions.json"

# the release's record 02930152, verbatim
REAL = {
    "semantic": [
        {"operation": "select", "dependencies": [], "argument": "sky (2486325)"},
        {"operation": "verify color", "dependencies": [0], "argument": "dark"},
    ],
    "entailed": ["02930160", "02930158", "02930159", "02930154", "02930155", "02930156", "02930153"],
    "equivalent": ["02930152"],
    "question": "Is the sky dark?",
    "imageId": "2354786",
    "isBalanced": True,
    "groups": {"global": None, "local": "06-sky_dark"},
    "answer": "yes",
    "semanticStr": "select: sky (2486325)->verify color: dark [0]",
    "annotations": {"answer": {}, "question": {"2": "2486325"}, "fullAnswer": {"2": "2486325"}},
    "types": {"detailed": "verifyAttr", "semantic": "attr", "structural": "verify"},
    "fullAnswer": "Yes, the sky is dark.",
}


@pytest.fixture
def gqa(raw_tree):
    raw_tree.write_json(
        TESTDEV,
        {
            "02930152": REAL,
            "20968379": {"question": "What is this bird called? ", "imageId": "n161313", "answer": "parrot",
                         "fullAnswer": "The bird is a parrot."},
            "00000007": {"question": "Is it red?", "imageId": 2405722, "answer": "no"},
            "00000008": {"question": "Who is it?", "imageId": "n1"},
        },
    )
    return GQAAdapter(raw_tree.root)


def test_spec_is_held_out_reasoning_on_testdev():
    spec = GQAAdapter.spec("gqa")
    assert (spec.category, spec.role, spec.splits, spec.eval_split) == ("visual_reasoning", HELD_OUT, ("test",), "test")
    assert (spec.template_set, spec.task) == ("visual_reasoning.open", "generate")


def test_maps_the_real_record_and_keeps_the_zero_padded_id(gqa, raw_tree):
    first = next(iter(gqa.read("gqa", "test")))
    assert isinstance(first, Example)
    assert first.key == "02930152"
    assert first.source == f"{TESTDEV}#02930152"
    assert first.image == raw_tree.path("images/2354786.jpg")
    assert first.slots == {"question": "Is the sky dark?"}
    assert first.target == "yes" and first.answers == ["yes"]
    assert first.choices == [] and first.label_index == -1


def test_n_style_image_ids_name_their_file(gqa, raw_tree):
    second = list(gqa.read("gqa", "test"))[1]
    assert second.image == raw_tree.path("images/n161313.jpg")
    assert second.slots == {"question": "What is this bird called?"} and second.target == "parrot"


def test_malformed_records_are_rejected_with_reason(gqa):
    rejects = [i for i in gqa.read("gqa", "test") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["00000007", "00000008"]
    assert "imageId" in rejects[0].reason and "int" in rejects[0].reason
    assert "answer" in rejects[1].reason
    assert rejects[0].source == f"{TESTDEV}#00000007"


def test_train_and_val_read_the_balanced_files(raw_tree):
    raw_tree.write_json("questions1.2/train_balanced_questions.json", {"02930152": REAL})
    raw_tree.write_json("questions1.2/val_balanced_questions.json", {"05515938": {**REAL, "imageId": "2405722"}})
    adapter = GQAAdapter(raw_tree.root)
    (train,) = adapter.read("gqa", "train")
    (val,) = adapter.read("gqa", "val")
    assert train.source == "questions1.2/train_balanced_questions.json#02930152"
    assert val.key == "05515938" and val.image == raw_tree.path("images/2405722.jpg")


def test_missing_questions_file_names_the_path(raw_tree):
    raw_tree.write_json("questions1.2/val_balanced_questions.json", {})
    with pytest.raises(SourceError, match="questions1.2/testdev_balanced_questions.json"):
        list(GQAAdapter(raw_tree.root).read("gqa", "test"))


def test_a_list_instead_of_the_keyed_object_is_a_source_error(raw_tree):
    raw_tree.write_json(TESTDEV, [REAL])
    with pytest.raises(SourceError, match="keyed by question id"):
        list(GQAAdapter(raw_tree.root).read("gqa", "test"))
