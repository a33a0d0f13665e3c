"""The tiny LLM learns to answer held-in-style prompts from a scene description (both families), text only."""

import random

import pytest
import torch

from components.model import TinyModelConfig, build_tiny
from components.sample_world import scene as scenes
from components.tiny_lm import TASK_WEIGHTS, describe, pretrain_reader, reading_accuracy, reading_examples, vocabulary_texts


def test_description_states_every_fact_questions_ask_about():
    rng = random.Random(3)
    for _ in range(30):
        scene = scenes.random_scene(rng, 1, 4, words=["stop"] if rng.random() < 0.3 else None)
        text = describe(scene)
        assert text.startswith(f"{scene.background} background")
        for s in scene.shapes:
            assert f"{s.size} {s.color} {s.shape}" in text
        # one entry per shape, so the LLM can count them
        assert text.count(";") == len(scene.shapes) + bool(scene.words)
        assert ("word stop" in text) == bool(scene.words)


def test_examples_cover_every_task_and_answers_follow_from_the_description():
    pairs = reading_examples(300, seed=1)
    assert len(pairs) == 300 and all(context and answer for context, answer in pairs)
    for context, answer in pairs:
        if "What color is the background?" in context and " Q: " not in context and " " not in answer:  # not a conversation turn
            assert context.startswith(f"{answer} background")
        if "Who wrote this book?" in context:
            assert f"by {answer};" in context
        if "Choices:" in context or "(a)" in context:  # multiple choice: the answer is one of the options
            assert f") {answer}" in context
    # every task of the mix shows up (the templates of each set differ)
    assert sum("OCR tokens" in c for c, _ in pairs) > 10
    assert sum("(a)" in c for c, _ in pairs) > 10
    only_captions = reading_examples(20, seed=1, tasks={"image_captioning": 1.0})
    assert all(any(w in answer for w in ("background", "shape", "circle", "square", "triangle")) for _, answer in only_captions)
    assert reading_examples(50, seed=7) == reading_examples(50, seed=7)


def test_task_weights_name_real_template_sets():
    from components.templates import TemplateBank

    assert set(TASK_WEIGHTS) - {"llava_conversation"} <= set(TemplateBank().sets)


def test_conversation_turns_carry_earlier_turns_as_context():
    pairs = reading_examples(200, seed=2, tasks={"llava_conversation": 1.0})
    with_history = [(c, a) for c, a in pairs if " Q: " in c]
    assert with_history and all("\n" in c and a.endswith(".") for c, a in with_history)


def test_question_generation_gives_the_answer_and_expects_the_question():
    for context, target in reading_examples(50, seed=3, tasks={"question_generation": 1.0}):
        assert target.endswith("?") and target not in context


@pytest.mark.parametrize("family", ["t5", "opt"])
def test_pretraining_reduces_the_reading_loss(family):
    torch.manual_seed(0)
    model, processor = build_tiny(list(vocabulary_texts(400)), TinyModelConfig(llm_family=family, hidden_size=32, num_heads=2, vocab_size=300))
    lm, tok, dec = model.language_model, processor.tokenizer, model.config.use_decoder_only_language_model
    losses = pretrain_reader(lm, tok, dec, steps=80, batch_size=16, warmup_steps=10)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)  # long caption targets make 80 steps a short run
    assert not lm.training  # left in eval mode for freezing
    assert 0.0 <= reading_accuracy(lm, tok, dec, n=20) <= 1.0


def test_reading_accuracy_counts_exact_matches():
    """A model that always answers 'yes' scores exactly the share of 'yes' targets."""

    class AlwaysYes(torch.nn.Module):
        def __init__(self, yes_ids):
            super().__init__()
            self.yes_ids = yes_ids

        def generate(self, input_ids, **kwargs):
            return torch.tensor([self.yes_ids] * input_ids.shape[0])

    model, processor = build_tiny(list(vocabulary_texts(200)), TinyModelConfig(hidden_size=32, num_heads=2, vocab_size=300))
    tok = processor.tokenizer
    tasks = {"image_qa": 1.0}
    expected = sum(answer.lower() == "yes" for _, answer in reading_examples(100, 12345, tasks)) / 100
    assert 0 < expected < 1
    stub = AlwaysYes(tok("yes")["input_ids"])
    assert reading_accuracy(stub, tok, False, n=100, tasks=tasks) == pytest.approx(expected)
