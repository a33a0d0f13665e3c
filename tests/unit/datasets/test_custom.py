import json

import pytest

from components.datasets import HELD_IN, HELD_OUT, Example, Reject, SourceError, registry
from components.datasets.custom import CustomInstructionAdapter


def _jsonl(rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.fixture
def mine(raw_tree):
    raw_tree.write_text("ann/train.jsonl", _jsonl([
        {"id": "a1", "image": "imgs/cat.jpg", "instruction": " Describe the cat. ", "output": "A grey cat. "},
        {"image": "s3://bucket/dog.jpg", "instruction": "Which animal?", "output": "dog",
         "choices": ["cat", "dog"], "answers": ["dog", "puppy"]},
        {"image": "/data/bird.png", "instruction": "Pick one.", "output": "", "choices": ["bird", "fish"], "label_index": 0},
        {"video": "./clips/run.mp4", "instruction": "What happens?", "output": "A man runs."},
        '{"image": "x.jpg", "instruction": ',
        {"image": "x.jpg", "output": "no instruction"},
        {"instruction": "No media?", "output": "none"},
        {"image": "x.jpg", "instruction": "Pick.", "output": "cat", "choices": ["cat"], "label_index": 3},
        {"image": "x.jpg", "instruction": "Pick.", "output": "cat", "choices": ["cat", "dog"], "label_index": 1},
    ]))
    return CustomInstructionAdapter("my_set", {"train": raw_tree.path("ann/train.jsonl")}, "jsonl")


def test_spec_built_at_construction(mine):
    (spec,) = mine.datasets
    assert (spec.name, spec.category, spec.role, spec.template_set, spec.splits, spec.task) == (
        "my_set", "llava_instruct", HELD_IN, None, ("train",), "generate")
    assert mine.source == "custom:my_set"
    assert mine.spec("my_set") is spec
    with pytest.raises(KeyError):
        mine.spec("other")


def test_not_discovered_by_the_registry():
    assert all(cls.__name__ != "CustomInstructionAdapter" for cls in registry().values())


def test_jsonl_field_mapping(mine, raw_tree):
    first = next(iter(mine.read("my_set", "train")))
    assert isinstance(first, Example)
    assert first.key == "a1" and first.source == f"{raw_tree.path('ann/train.jsonl')}#a1"
    # a relative image path resolves under the annotation file's folder
    assert first.image == raw_tree.path("ann/imgs/cat.jpg") and first.video is None
    assert first.instruction == "Describe the cat." and first.target == "A grey cat."
    assert first.answers == ["A grey cat."] and first.slots == {}


def test_absolute_uris_choices_and_video(mine, raw_tree):
    good = [i for i in mine.read("my_set", "train") if isinstance(i, Example)]
    dog, bird, run = good[1:4]
    assert dog.key == "line2" and dog.image == "s3://bucket/dog.jpg"
    assert dog.choices == ["cat", "dog"] and dog.label_index == 1 and dog.answers == ["dog", "puppy"]
    assert bird.image == "/data/bird.png" and bird.target == "bird" and bird.label_index == 0
    assert run.video == raw_tree.path("ann/clips/run.mp4") and run.image is None


def test_bad_lines_become_rejects(mine, raw_tree):
    rejects = [i for i in mine.read("my_set", "train") if isinstance(i, Reject)]
    assert [r.key for r in rejects] == ["line5", "line6", "line7", "line8", "line9"]
    assert "bad JSON" in rejects[0].reason
    assert rejects[0].source == f"{raw_tree.path('ann/train.jsonl')}#line5"
    assert "instruction" in rejects[1].reason
    assert "neither 'image' nor 'video'" in rejects[2].reason
    assert "outside" in rejects[3].reason
    assert "is not choices[1]" in rejects[4].reason


def test_image_root_overrides_the_annotation_folder(raw_tree):
    raw_tree.write_text("train.jsonl", _jsonl([{"image": "cat.jpg", "instruction": "Hi?", "output": "Hello."}]))
    adapter = CustomInstructionAdapter(
        "mine", {"train": raw_tree.path("train.jsonl")}, "jsonl", image_root="s3://images/root/")
    (item,) = adapter.read("mine", "train")
    assert item.image == "s3://images/root/cat.jpg"


def test_llava_format_reuses_conversation_splitting(raw_tree):
    raw_tree.write_json("data/chat.json", [
        {"id": "u1", "image": "part-1/u1.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWrite a prompt for this image."},
            {"from": "gpt", "value": "A red bus on a street."},
            {"from": "human", "value": "Shorter?"},
            {"from": "gpt", "value": "Red bus."},
        ]},
        {"id": "u2", "image": "part-1/u2.jpg", "conversations": [{"from": "gpt", "value": "hi"}]},
    ])
    adapter = CustomInstructionAdapter(
        "chat", {"val": raw_tree.path("data/chat.json")}, "llava", category="image_qa", role=HELD_OUT)
    items = list(adapter.read("chat", "val"))
    first, second, bad = items
    assert first.instruction == "Write a prompt for this image." and first.target == "A red bus on a street."
    assert second.instruction == "Q: Write a prompt for this image. A: A red bus on a street.\nShorter?"
    assert first.image == raw_tree.path("data/part-1/u1.jpg")
    assert [first.key, second.key] == ["0_u1_t0", "0_u1_t1"]
    assert isinstance(bad, Reject) and bad.key == "1_u2"
    (spec,) = adapter.datasets
    assert (spec.category, spec.role, spec.eval_split, spec.splits) == ("image_qa", HELD_OUT, "val", ("val",))


def test_llava_file_that_is_not_an_array_is_a_source_error(raw_tree):
    raw_tree.write_json("chat.json", {"id": "u1"})
    adapter = CustomInstructionAdapter("chat", {"train": raw_tree.path("chat.json")}, "llava")
    with pytest.raises(SourceError, match=r"chat\.json"):
        list(adapter.read("chat", "train"))


def test_missing_annotation_file_names_the_path(raw_tree):
    raw_tree.write_text("somewhere/train.jsonl", "")
    uri = raw_tree.path("nowhere/train.jsonl")
    adapter = CustomInstructionAdapter("mine", {"train": uri}, "jsonl")
    with pytest.raises(SourceError, match="nowhere/train.jsonl"):
        list(adapter.read("mine", "train"))


def test_unknown_split_and_format_are_errors(mine):
    with pytest.raises(ValueError, match="test"):
        list(mine.read("my_set", "test"))
    with pytest.raises(ValueError, match="format"):
        CustomInstructionAdapter("x", {"train": "a.jsonl"}, "csv")
