"""The tiny LLM learns to read answers from its context (both families), text only."""

import pytest
import torch

from components.model import TinyModelConfig, build_tiny
from components.tiny_lm import pretrain_reader, reading_examples, vocabulary_texts


def test_reading_examples_are_answerable_from_context():
    for context, answer in reading_examples(50, seed=1):
        assert context.endswith("?") and answer
        if context.split(". ")[-1].startswith("What color is the background"):
            assert answer in context


@pytest.mark.parametrize("family", ["t5", "opt"])
def test_pretraining_reduces_the_reading_loss(family):
    torch.manual_seed(0)
    model, processor = build_tiny(list(vocabulary_texts(400)), TinyModelConfig(llm_family=family, hidden_size=32, num_heads=2, vocab_size=300))
    losses = pretrain_reader(model.language_model, processor.tokenizer, model.config.use_decoder_only_language_model,
                             steps=80, batch_size=16)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)
