"""The sample world's tiny towers: the LLM learns to answer from slot vectors, the ViT to label its cells."""

import random

import numpy as np
import pytest
import torch

from components.imaging import PixelSpec
from components.model import TinyModelConfig, build_tiny
from components.sample_world import ocrvqa as ocrvqa_world
from components.sample_world import scene as scenes
from components.tiny_lm import (
    TASK_WEIGHTS, _batch, cell_of, pretrain_reader, reading_accuracy, reading_examples, slot_embeddings, slot_words,
    token_mean_loss, vocabulary_texts,
)
from components.tiny_vision import COLOR_CLASSES, WHAT_CLASSES, patch_labels, pretrain_vision, scene_batch

SMALL = dict(hidden_size=32, num_heads=2, vocab_size=300)


def test_each_shape_sits_in_the_cell_of_its_centre_and_the_rest_is_background():
    rng = random.Random(3)
    for _ in range(50):
        scene = scenes.random_scene(rng, 1, 4, words=["stop"] if rng.random() < 0.3 else None)
        cells = slot_words(scene, 4)
        assert len(cells) == 16
        # the sample world keeps shape centres apart: no two share a cell, none is lost
        assert len({cell_of(s.x, s.y, 4) for s in scene.shapes}) == len(scene.shapes)
        for s in scene.shapes:
            assert cells[cell_of(s.x, s.y, 4)] == (s.size, s.color, s.shape)
        rest = [c for i, c in enumerate(cells) if i not in {cell_of(s.x, s.y, 4) for s in scene.shapes}]
        assert set(rest) <= {(scene.background, "background"), ("white", "writing")}
        assert (("white", "writing") in cells) == bool(scene.words)


def test_cell_of_is_row_major_and_clamps_the_edge():
    assert cell_of(0.0, 0.0, 4) == 0 and cell_of(0.99, 0.0, 4) == 3 and cell_of(0.0, 0.3, 4) == 4
    assert cell_of(1.0, 1.0, 4) == 15


def test_examples_cover_every_task_and_answers_follow_from_the_slots():
    examples = reading_examples(300, seed=1)
    assert len(examples) == 300 and all(len(s) == 16 and i and t for s, i, t in examples)
    for cells, instruction, target in examples:
        if "What color is the background?" in instruction and " " not in target and "Q: " not in instruction:
            assert (target, "background") in cells or target in {c[0] for c in cells}
        if "How many circles are there?" in instruction and target.isdigit():
            assert sum(c[-1] == "circle" for c in cells) == int(target)
    assert sum("OCR tokens" in i for _, i, _ in examples) > 10  # reading_qa templates
    assert sum("(a)" in i for _, i, _ in examples) > 10  # multiple choice
    assert reading_examples(50, seed=7) == reading_examples(50, seed=7)


def test_task_weights_name_real_template_sets():
    from components.templates import TemplateBank

    assert set(TASK_WEIGHTS) - {"llava_conversation", "llava_detail", "llava_reasoning"} <= set(TemplateBank().sets)


def test_every_held_in_task_of_the_training_stream_is_pre_trained():
    """The reader knows every category of the held-in training data (what the Q-Former is trained on)."""
    from components.datasets import registry, spec

    categories = {spec(name).category for name in registry() if spec(name).role == "held_in"}
    known = {t.split(".")[0] for t in TASK_WEIGHTS} | {"llava_instruct"}
    assert categories <= known, categories - known


def test_llava_and_textcaps_examples_describe_the_slots():
    from components.sample_world.llava_instruct import DETAIL_PROMPTS

    for cells, instruction, target in reading_examples(30, seed=4, tasks={"llava_detail": 1.0}):
        assert instruction in DETAIL_PROMPTS
        for size, color, shape in (c for c in cells if len(c) == 3):
            assert f"A {size} {color} {shape} is" in target
    for cells, instruction, target in reading_examples(30, seed=4, tasks={"llava_reasoning": 1.0}):
        assert instruction.endswith("?") and len(target.split()) > 5
    for cells, instruction, target in reading_examples(30, seed=4, tasks={"captioning_reading": 1.0}):
        assert ("white", "writing") in cells and "OCR tokens: " in instruction
        words = instruction.split("OCR tokens: ")[1].split(".")[0].split(", ")
        assert all(w.lower() in target.lower() for w in words)  # every TextCaps caption quotes the writing


def test_question_generation_gives_the_answer_and_expects_the_question():
    for _, instruction, target in reading_examples(50, seed=3, tasks={"question_generation": 1.0}):
        assert target.endswith("?") and target not in instruction


@pytest.fixture(scope="module", params=["t5", "opt", "llama"])
def tiny(request):
    torch.manual_seed(0)
    return build_tiny(list(vocabulary_texts(400)), TinyModelConfig(llm_family=request.param, **SMALL))


def test_a_slot_is_the_sum_of_its_word_embeddings(tiny):
    model, processor = tiny
    lm, tok = model.language_model, processor.tokenizer
    vecs = slot_embeddings(lm, tok, [[("small", "red", "circle"), ("gray", "background")]])
    embed = lm.get_input_embeddings()
    expected = embed(torch.tensor(tok("small red circle", add_special_tokens=False)["input_ids"])).sum(0)
    assert vecs.shape == (1, 2, lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.d_model)
    assert torch.allclose(vecs[0, 0], expected, atol=1e-6)


def test_batch_layout_puts_slots_first_and_the_loss_on_targets_only(tiny):
    model, processor = tiny
    lm, tok = model.language_model, processor.tokenizer
    decoder_only = model.config.use_decoder_only_language_model
    examples = reading_examples(3, seed=5)
    batch = _batch(lm, tok, examples, decoder_only)
    assert batch["inputs_embeds"].shape[:2] == batch["attention_mask"].shape
    assert (batch["attention_mask"][:, :16] == 1).all()
    target_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1 for _, _, t in examples)
    assert int((batch["labels"] != -100).sum()) == target_tokens
    cut = _batch(lm, tok, examples, decoder_only, max_target_tokens=3)  # as the training collator cuts
    kept = sum(min(len(tok(t, add_special_tokens=False)["input_ids"]), 2) + 1 for _, _, t in examples)
    assert int((cut["labels"] != -100).sum()) == kept < target_tokens
    prompts = _batch(lm, tok, examples, decoder_only, with_targets=False)
    if decoder_only:  # left-padded: every prompt ends at the last position
        assert (prompts["attention_mask"][:, -1] == 1).all()


def test_the_split_loss_equals_the_loss_of_the_whole_batch(tiny):
    model, processor = tiny
    lm, tok, dec = model.language_model, processor.tokenizer, model.config.use_decoder_only_language_model
    examples = reading_examples(24, seed=2)
    lengths = {len(t.split()) > 2 for _, _, t in examples}
    assert lengths == {True, False}  # both sub-batches are used
    with torch.no_grad():
        whole = lm(**_batch(lm, tok, examples, dec, max_target_tokens=24)).loss
        assert torch.allclose(token_mean_loss(lm, tok, examples, dec, 24), whole, atol=1e-5)


def test_pretraining_reduces_the_reading_loss(tiny):
    model, processor = tiny
    lm, tok, dec = model.language_model, processor.tokenizer, model.config.use_decoder_only_language_model
    losses = pretrain_reader(lm, tok, dec, steps=60, batch_size=16, warmup_steps=10, max_target_tokens=24,
                             tasks={"image_qa": 1.0, "image_captioning": 0.2})
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert not lm.training  # left in eval mode for freezing
    assert 0.0 <= reading_accuracy(lm, tok, dec, n=20) <= 1.0


def test_reading_accuracy_counts_exact_matches():
    """A model that always answers 'yes' scores exactly the share of 'yes' targets."""
    model, processor = build_tiny(list(vocabulary_texts(200)), TinyModelConfig(**SMALL))
    tok = processor.tokenizer
    yes = tok("yes")["input_ids"]

    class AlwaysYes(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.language_model

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def generate(self, inputs_embeds, **kwargs):
            return torch.tensor([yes] * inputs_embeds.shape[0])

    tasks = {"image_qa": 1.0}
    expected = sum(t.lower() == "yes" for _, _, t in reading_examples(100, 12345, tasks)) / 100
    assert 0 < expected < 1
    assert reading_accuracy(AlwaysYes(), tok, False, n=100, tasks=tasks) == pytest.approx(expected)


def test_query_tokens_start_distinct():
    model, _ = build_tiny(list(vocabulary_texts(100)), TinyModelConfig(**SMALL))
    q = model.query_tokens[0]
    assert q.std() > 0.005 and torch.cdist(q, q).fill_diagonal_(1.0).min() > 0  # zeros would make every query the same


def test_tiny_config_needs_one_query_per_cell():
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="num_query_tokens"):
        TinyModelConfig(num_query_tokens=8).validate()


# ---- the tiny ViT ----


def test_patch_labels_follow_the_slots():
    rng = random.Random(0)
    scene = scenes.random_scene(rng, 2, 4)
    labels = patch_labels(scene, 4)
    assert labels.shape == (16, 3)
    for s in scene.shapes:
        color, what, _ = labels[cell_of(s.x, s.y, 4)]
        assert COLOR_CLASSES[color] == s.color and WHAT_CLASSES[what] == s.shape
    assert (np.array([WHAT_CLASSES[w] for w in labels[:, 1]]) == "background").sum() == 16 - len(scene.shapes)


def test_vision_pretraining_learns_to_label_cells():
    model, processor = build_tiny(list(vocabulary_texts(100)), TinyModelConfig(**SMALL))
    spec = PixelSpec.from_processor(processor)
    pixels, labels = scene_batch(random.Random(1), 4, spec, 16)
    assert pixels.shape == (4, 3, 64, 64) and labels.shape == (4, 16, 3)
    losses = pretrain_vision(model.vision_model, spec, 16, steps=60, batch_size=16)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert not model.vision_model.training


def test_book_covers_show_the_genre_emblem_the_genre_answers_follow():
    examples = reading_examples(200, 3, {"reading_qa": 1.0})
    genres = [(cells, answer) for cells, instruction, answer in examples if "genre of this book" in instruction]
    assert len(genres) > 10
    for cells, answer in genres:
        # the bottom-right cell of the 4 x 4 grid, where the cover draws the emblem: its genre's word
        assert cells[15] == (ocrvqa_world.GENRES[answer], "emblem")
        assert set(cells[:15]) == {("beige", "writing")}
    # the yes/no genre questions ask with the word the emblem's slot holds exactly when the answer is yes
    yes_no = [(cells, instruction, answer) for cells, instruction, answer in examples if " book?" in instruction
              and "Is this" in instruction]
    assert {answer for _, _, answer in yes_no} == {"Yes", "No"}
    for cells, instruction, answer in yes_no:
        assert (f" {cells[15][0]} book?" in instruction) == (answer == "Yes")


def test_vision_pretraining_images_include_covers_labelled_as_the_llm_reads_them():
    _, processor = build_tiny(list(vocabulary_texts(100)), TinyModelConfig(**SMALL))
    _, labels = scene_batch(random.Random(2), 60, PixelSpec.from_processor(processor), 16)
    covers = [lab for lab in labels.numpy() if (np.array(WHAT_CLASSES)[lab[:15, 1]] == "writing").all()]
    assert 1 <= len(covers) <= 20
    for lab in covers:
        assert set(np.array(COLOR_CLASSES)[lab[:15, 0]]) == {"beige"}
        assert WHAT_CLASSES[lab[15, 1]] == "emblem"
        assert COLOR_CLASSES[lab[15, 0]] in ocrvqa_world.GENRES.values()


def test_pre_training_stops_within_a_step_when_asked_from_another_thread():
    """`stoppable`: the job's main thread ends the assembly thread's pre-training (see
    pipelines.train._initial_model_while_ray_starts) at the next step, not minutes later."""
    import threading

    from components.tiny_lm import PretrainingStopped, fit, stoppable

    weight = torch.nn.Parameter(torch.zeros(3))
    stop, steps = threading.Event(), []

    def step_loss(step):
        steps.append(step)
        if step == 4:
            threading.Thread(target=stop.set).start()  # another thread asks, mid-run
            while not stop.is_set():
                pass
        return ((weight - 1.0) ** 2).sum()

    assert len(fit([weight], step_loss, steps=10, lr=0.1, warmup_steps=1)) == 10  # not stoppable: runs through
    steps.clear()
    stop.clear()
    with stoppable(stop), pytest.raises(PretrainingStopped, match="pre-training at step 5 of 1000"):
        fit([weight], step_loss, steps=1000, lr=0.1, warmup_steps=1, tag="tiny-lm")
    assert steps == [0, 1, 2, 3, 4]
    fit([weight], lambda _: ((weight - 1.0) ** 2).sum(), steps=3, lr=0.1, warmup_steps=1)  # outside the block: runs


def test_making_the_pre_training_examples_stops_when_asked():
    """The default reader pre-training makes 192,000 examples up front (seconds): a stop asked
    meanwhile ends that too, and the examples are the same whether stoppable or not."""
    import threading

    from components.tiny_lm import PretrainingStopped, reading_examples, stoppable

    stop = threading.Event()
    with stoppable(stop):
        examples = reading_examples(5000, seed=3)
    assert [e[1:] for e in examples] == [e[1:] for e in reading_examples(5000, seed=3)]
    stop.set()
    with stoppable(stop), pytest.raises(PretrainingStopped, match=r"making pre-training examples \(0 of 5000\)"):
        reading_examples(5000, seed=3)
