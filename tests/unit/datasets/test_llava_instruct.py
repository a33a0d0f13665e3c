import pytest

from components.datasets import HELD_IN, Example, Reject, SourceError
from components.datasets.base import RecordError
from components.datasets.llava_instruct import LLaVAInstructAdapter, conversation_examples

BUS = {
    "id": "000000033471",
    "image": "000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
        {"from": "human", "value": "Is the bus driving down the street or pulled off to the side?"},
        {"from": "gpt", "value": "The bus is driving down the street, which is crowded with people and other vehicles."},
    ],
}
CAT = {
    "id": "000000052846",
    "image": "000000052846.jpg",
    "conversations": [
        {"from": "human", "value": "Where is the cat positioned in the image?\n<image>"},
        {"from": "gpt", "value": "The cat is positioned on top of the back of the couch in the living room."},
    ],
}


@pytest.fixture
def llava(raw_tree):
    raw_tree.write_json("conversation_58k.json", [
        BUS,
        {**BUS, "conversations": BUS["conversations"][:2]},  # the same id again
        {"id": "000000000001", "image": "000000000001.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt"}]},
    ])
    raw_tree.write_json("detail_23k.json", [CAT])
    return LLaVAInstructAdapter(raw_tree.root)


def test_specs_are_three_held_in_template_free_subsets():
    specs = {s.name: s for s in LLaVAInstructAdapter.datasets}
    assert sorted(specs) == ["llava_conversation", "llava_detail", "llava_reasoning"]
    for spec in specs.values():
        assert (spec.category, spec.role, spec.template_set) == ("llava_instruct", HELD_IN, None)
        assert (spec.splits, spec.task, spec.eval_split) == (("train",), "generate", None)


def test_one_example_per_turn_pair_with_earlier_turns_as_context(llava, raw_tree):
    items = list(llava.read("llava_conversation", "train"))
    bus = [i for i in items if isinstance(i, Example) and i.key.startswith("0_")]
    assert [e.key for e in bus] == ["0_000000033471_t0", "0_000000033471_t1", "0_000000033471_t2"]
    # the "<image>" prefix is stripped from the first human turn
    assert bus[0].instruction == "What are the colors of the bus in the image?"
    assert bus[0].target == "The bus in the image is white and red."
    assert bus[0].answers == [bus[0].target]
    assert bus[1].instruction == (
        "Q: What are the colors of the bus in the image? A: The bus in the image is white and red.\n"
        "What feature can be seen on the back of the bus?"
    )
    assert bus[2].instruction.startswith("Q: What are the colors") and " Q: What feature" in bus[2].instruction
    assert bus[2].instruction.endswith("\nIs the bus driving down the street or pulled off to the side?")
    assert bus[0].image == raw_tree.path("train2017/000000033471.jpg")
    assert bus[0].source == "conversation_58k.json#0_000000033471"
    assert bus[0].slots == {} and bus[0].choices == []


def test_image_token_as_suffix_is_stripped(llava):
    (cat,) = llava.read("llava_detail", "train")
    assert cat.instruction == "Where is the cat positioned in the image?"
    assert cat.key == "0_000000052846_t0"


def test_repeated_ids_still_give_unique_keys(llava):
    keys = [i.key for i in llava.read("llava_conversation", "train")]
    assert len(keys) == len(set(keys))
    assert "1_000000033471_t0" in keys


def test_malformed_conversation_is_one_reject(llava):
    rejects = [i for i in llava.read("llava_conversation", "train") if isinstance(i, Reject)]
    assert len(rejects) == 1
    assert rejects[0].key == "2_000000000001" and "value" in rejects[0].reason
    assert rejects[0].source == "conversation_58k.json#2_000000000001"


@pytest.mark.parametrize(
    "turns, reason",
    [
        ([], "non-empty"),
        ("hello", "non-empty"),
        ([{"from": "gpt", "value": "hi"}, {"from": "human", "value": "hey"}], "expected 'human'"),
        ([{"from": "human", "value": "<image>\nWhat?"}], "no reply"),
        ([{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A bus."}], "empty"),
        ([{"from": "human", "value": "Why?"}, {"from": "gpt", "value": 3}], "'value'"),
    ],
)
def test_conversation_examples_raises_record_error(turns, reason):
    with pytest.raises(RecordError, match=reason):
        conversation_examples("k", "f.json#k", "img.jpg", turns)


def test_record_without_image_is_rejected(raw_tree):
    raw_tree.write_json("complex_reasoning_77k.json", [{"id": "7", "conversations": CAT["conversations"]}])
    (item,) = LLaVAInstructAdapter(raw_tree.root).read("llava_reasoning", "train")
    assert isinstance(item, Reject) and "image" in item.reason


def test_combined_file_is_not_read(raw_tree):
    raw_tree.write_json("llava_instruct_150k.json", [BUS, CAT])
    with pytest.raises(SourceError, match=r"complex_reasoning_77k\.json"):
        list(LLaVAInstructAdapter(raw_tree.root).read("llava_reasoning", "train"))


def test_only_a_train_split(llava):
    with pytest.raises(ValueError, match="train"):
        list(llava.read("llava_detail", "val"))
