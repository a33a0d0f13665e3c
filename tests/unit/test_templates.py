"""The shipped instruction templates and their loader, renderer and chooser."""

import re
import uuid

import fsspec
import pytest

from components.datasets.base import Example, format_options
from components.templates import TemplateBank, choose, load_templates, placeholders, render

# Every shipped set and exactly the placeholders each of its templates uses.
EXPECTED_SETS = {
    "image_captioning": set(),
    "captioning_reading": {"ocr"},
    "visual_reasoning.open": {"question"},
    "visual_reasoning.statement": {"statement"},
    "visual_reasoning.multiple_choice": {"question", "options"},
    "image_qa": {"question"},
    "knowledge_qa.open": {"question"},
    "knowledge_qa.multiple_choice": {"question", "options"},
    "knowledge_qa.science": {"context", "question", "options"},
    "reading_qa": {"ocr", "question"},
    "question_generation": {"answer"},
    "video_qa": {"question"},
    "conversational_qa": {"caption", "history", "question"},
    "image_classification": {"text"},
}
SHORT_ANSWER_SETS = ("image_qa", "visual_reasoning.open", "knowledge_qa.open", "reading_qa", "video_qa")
SHORT_PHRASES = re.compile(r"\bshort\b|\bbriefly\b|a word or two|no more than three words", re.IGNORECASE)

SAMPLE_SLOTS = {
    "question": "What color is the bus?",
    "caption": "A red bus parked on a street.",
    "answer": "red",
    "statement": "The bus is in front of the building.",
    "ocr": "CITY, LINE, 42",
    "options": format_options(["red", "blue", "green"]),
    "history": "Is it daytime? yes.",
    "context": "Buses carry passengers.",
    "text": "when the bus is late again",
}


@pytest.fixture(scope="module")
def shipped():
    return load_templates()


def _write(text: str) -> str:
    uri = f"memory://templates-{uuid.uuid4().hex}/templates.yaml"
    with fsspec.open(uri, "w") as fh:
        fh.write(text)
    return uri


# -- the shipped data ------------------------------------------------------------------------
def test_every_expected_set_exists_with_10_to_15_templates(shipped):
    assert set(shipped) == set(EXPECTED_SETS)
    for name, templates in shipped.items():
        assert 10 <= len(templates) <= 15, f"{name} has {len(templates)} templates"


def test_every_template_uses_every_placeholder_of_its_set(shipped):
    for name, templates in shipped.items():
        for template in templates:
            assert placeholders(template) == EXPECTED_SETS[name], f"{name}: {template!r}"


def test_every_template_renders_completely(shipped):
    for name, templates in shipped.items():
        for template in templates:
            text = render(template, SAMPLE_SLOTS)
            assert "{" not in text and "}" not in text, f"{name}: {text!r}"
            assert "  " not in text and text == text.strip()
            for slot in EXPECTED_SETS[name]:
                assert SAMPLE_SLOTS[slot] in text


def test_short_answer_sets_ask_for_brevity_in_some_templates_only(shipped):
    for name in SHORT_ANSWER_SETS:
        short = [t for t in shipped[name] if SHORT_PHRASES.search(t)]
        assert 0 < len(short) < len(shipped[name]), f"{name}: {len(short)} of {len(shipped[name])} ask for brevity"


def test_ocr_and_history_sit_in_their_labels(shipped):
    for name, templates in shipped.items():
        for template in templates:
            if "{ocr}" in template:
                assert "OCR tokens: {ocr}" in template, template
            if "{history}" in template:
                assert "Dialog history: {history}" in template, template


# -- render ----------------------------------------------------------------------------------
def test_render_empty_slot_reads_none():
    assert render("Dialog history: {history} Question: {question}", {"history": "", "question": "Why?"}) == (
        "Dialog history: none Question: Why?"
    )
    assert render("Context: {context} Q", {"context": "   "}) == "Context: none Q"


def test_render_collapses_doubled_spaces():
    assert render("Question:  {question}  Answer:", {"question": "a  b"}) == "Question: a b Answer:"


def test_render_missing_slot_names_it():
    with pytest.raises(KeyError, match="options"):
        render("{question} Options: {options}", {"question": "Which?"})


def test_render_ignores_extra_slots():
    assert render("Short answer:", {"question": "unused"}) == "Short answer:"


# -- choose ----------------------------------------------------------------------------------
def test_choose_is_deterministic():
    templates = [f"t{i}" for i in range(12)]
    assert choose(templates, "vqav2/train/1", 0, 3) == choose(templates, "vqav2/train/1", 0, 3)


def test_choose_varies_across_seeds_and_records():
    templates = [f"t{i}" for i in range(12)]
    records = [f"vqav2/train/{i}" for i in range(50)]
    by_seed = [choose(templates, r, 0, 1) != choose(templates, r, 1, 1) for r in records]
    assert any(by_seed)
    firsts = {choose(templates, r, 0, 1)[0] for r in records}
    assert len(firsts) > 3  # spread over the set, not stuck on one template


def test_choose_gives_k_distinct_indices_and_clamps():
    templates = [f"t{i}" for i in range(12)]
    for r in range(20):
        picked = choose(templates, f"okvqa/train/{r}", 7, 5)
        assert len(picked) == len(set(picked)) == 5
        assert all(0 <= i < len(templates) for i in picked)
    assert sorted(choose(templates, "x", 0, 40)) == list(range(12))


def test_choose_rejects_bad_arguments():
    with pytest.raises(ValueError):
        choose([], "x", 0, 1)
    with pytest.raises(ValueError):
        choose(["t"], "x", 0, 0)


# -- TemplateBank ----------------------------------------------------------------------------
def test_bank_fills_chosen_templates(shipped):
    bank = TemplateBank()
    example = Example(key="1", source="q.json#1", slots={"question": "What color is the bus?"})
    pairs = bank.instructions(example, "image_qa", "vqav2/train/1", 0, 3)
    assert len(pairs) == 3
    indices = choose(shipped["image_qa"], "vqav2/train/1", 0, 3)
    assert [tid for tid, _ in pairs] == [f"image_qa/{i}" for i in indices]
    for (_, instruction), i in zip(pairs, indices):
        assert instruction == render(shipped["image_qa"][i], example.slots)
        assert "What color is the bus?" in instruction


def test_bank_without_set_uses_the_example_instruction():
    bank = TemplateBank()
    example = Example(key="1", source="a.json#1", instruction="Describe the image in detail.")
    assert bank.instructions(example, None, "llava/train/1", 0, 3) == [("none", "Describe the image in detail.")]
    with pytest.raises(ValueError):
        bank.instructions(Example(key="2", source="a.json#2"), None, "llava/train/2", 0, 1)


def test_bank_unknown_set_names_it_and_the_known_sets():
    with pytest.raises(KeyError, match="image_qa.nope") as err:
        TemplateBank().instructions(Example(key="1", source="s"), "image_qa.nope", "r", 0, 1)
    assert "knowledge_qa.open" in str(err.value)


def test_bank_missing_slot_raises():
    with pytest.raises(KeyError, match="question"):
        TemplateBank().instructions(Example(key="1", source="s"), "image_qa", "r", 0, 1)


# -- a user's own file -----------------------------------------------------------------------
def test_user_file_with_variants_loads_flat():
    uri = _write("image_qa:\n  - 'Q: {question} A:'\nknowledge_qa:\n  open:\n    - '{question} Answer briefly.'\n")
    assert load_templates(uri) == {"image_qa": ["Q: {question} A:"], "knowledge_qa.open": ["{question} Answer briefly."]}
    bank = TemplateBank(uri)
    example = Example(key="1", source="s", slots={"question": "Why?"})
    assert bank.instructions(example, "image_qa", "r", 0, 4) == [("image_qa/0", "Q: Why? A:")]


def test_user_file_unknown_category_is_named():
    with pytest.raises(ValueError, match="picture_qa"):
        load_templates(_write("picture_qa:\n  - 'Q: {question}'\n"))


def test_user_file_unknown_placeholder_is_named():
    with pytest.raises(ValueError, match="quesiton") as err:
        load_templates(_write("image_qa:\n  - 'Q: {question}'\n  - 'Q: {quesiton} A:'\n"))
    assert "image_qa" in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "image_qa: []\n",
        "image_qa:\n  - 42\n",
        "image_qa: 'Q: {question}'\n",
        "image_qa:\n  - 'Q: {}'\n",
        "image_qa:\n  - 'Q: {question!r}'\n",
        "image_qa:\n  - 'Q: {question'\n",
        "knowledge_qa: {}\n",
        "- 'Q: {question}'\n",
    ],
)
def test_user_file_malformed_is_rejected(text):
    with pytest.raises(ValueError):
        load_templates(_write(text))
