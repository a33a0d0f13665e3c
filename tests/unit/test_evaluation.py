"""The evaluator: generation matches HF's, ranking picks the most likely candidate, video concatenates frames."""

import io
import math

import pytest
import torch
from PIL import Image

from components.evaluation import (
    EvalConfig,
    Evaluator,
    dataset_score,
    metric_for,
    predict_rows,
    results_table,
    yes_probability,
)
from components.inference import Answerer
from components.model import TinyModelConfig, build_tiny
from components.training import Collator

TEXTS = ["what color is the circle?", "red", "how many squares are there?", "two blue squares", "yes no true false"] * 20


def _png(color, side=40):
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=["t5", "opt", "llama"])
def tiny(request):
    torch.manual_seed(0)
    model, processor = build_tiny(TEXTS, TinyModelConfig(llm_family=request.param, hidden_size=32, num_heads=2, vocab_size=200))
    model.eval()
    collate = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index)
    return model, processor, collate


def _pixels(ev, images):
    return torch.stack([ev.pixels({"image": img}) for img in images])


def test_image_generation_equals_hf_generate(tiny):
    model, _, collate = tiny
    ev = Evaluator(model, collate)
    images = [_png((200, 0, 0)), _png((0, 0, 200)), _png((0, 150, 0))]
    instructions = ["what color is the circle?", "how many squares are there?", "red"]
    ours = ev.generate(_pixels(ev, images), instructions,
                       EvalConfig().short_answer.__class__(num_beams=1, max_new_tokens=6, min_new_tokens=0, length_penalty=1.0))
    theirs = Answerer(model, collate).answer(images, instructions, max_new_tokens=6)
    assert ours == theirs


def test_candidate_scores_are_the_training_loss(tiny):
    """The log-likelihood of a candidate equals -(token-mean training loss) x its token count."""
    model, _, collate = tiny
    ev = Evaluator(model, collate, score_batch_size=3)  # forces several chunks
    images = [_png((200, 0, 0)), _png((0, 0, 200))]
    instructions = ["what color is the circle?", "how many squares are there?"]
    candidates = [["red", "two blue squares"], ["two blue squares", "red", "yes"]]
    scores = ev.score(_pixels(ev, images), instructions, candidates)
    assert [len(s) for s in scores] == [2, 3]
    for r in range(2):
        for c, cand in enumerate(candidates[r]):
            batch = collate({"image": [images[r]], "instruction": [instructions[r]], "target": [cand]})
            with torch.no_grad():
                loss = model(**batch).loss.item()
            n = int((batch["labels"] != -100).sum())
            assert scores[r][c] == pytest.approx(-loss * n, rel=1e-4, abs=1e-4)
    mean = ev.score(_pixels(ev, images), instructions, candidates, length_normalized=True)
    assert mean[0][1] == pytest.approx(scores[0][1] / len(collate._ids("two blue squares", 100, False) + [0]), rel=1e-4)


def test_ranking_picks_the_highest_likelihood_candidate(tiny):
    model, _, collate = tiny
    ev = Evaluator(model, collate)
    row = {"sample_id": "s1", "dataset": "iconqa", "task": "rank_choices", "category": "visual_reasoning",
           "image": _png((200, 0, 0)), "instruction": "what color is the circle?",
           "choices": ["red", "two blue squares", "yes", "no"], "label_index": 0}
    (pred,) = predict_rows(ev, [row], EvalConfig())
    scores = ev.score(_pixels(ev, [row["image"]]), [row["instruction"]], [row["choices"]])[0]
    assert pred.scores == pytest.approx(scores)
    assert pred.prediction == row["choices"][max(range(4), key=scores.__getitem__)]
    # the winner changes when the candidates do: drop it and the runner-up wins
    best = scores.index(max(scores))
    rest = [c for k, c in enumerate(row["choices"]) if k != best]
    (pred2,) = predict_rows(ev, [dict(row, choices=rest)], EvalConfig())
    second = max((s, c) for k, (s, c) in enumerate(zip(scores, row["choices"])) if k != best)[1]
    assert pred2.prediction == second


def test_binary_rows_use_both_verbalisers(tiny):
    model, _, collate = tiny
    ev = Evaluator(model, collate)
    row = {"sample_id": "b1", "dataset": "vsr", "task": "binary", "category": "visual_reasoning",
           "image": _png((0, 0, 200)), "instruction": "the circle is red. true?", "choices": ["yes", "no"], "label_index": 1}
    (pred,) = predict_rows(ev, [row], EvalConfig())
    assert len(pred.scores) == 4  # yes, true, no, false
    y = math.log(math.exp(pred.scores[0]) + math.exp(pred.scores[1]))
    n = math.log(math.exp(pred.scores[2]) + math.exp(pred.scores[3]))
    assert pred.prob_yes == pytest.approx(1 / (1 + math.exp(n - y)), rel=1e-5)
    assert pred.prediction == ("yes" if pred.prob_yes >= 0.5 else "no")
    assert yes_probability([0.0, -1000.0, -1000.0, -1000.0], 2) == pytest.approx(1.0)


def test_video_concatenates_the_frames_query_outputs(tiny):
    model, _, collate = tiny
    ev = Evaluator(model, collate)
    frames = [_png((200, 0, 0)), _png((0, 0, 200)), _png((0, 150, 0)), _png((90, 90, 90))]
    pixels = ev.pixels({"frames": frames}).unsqueeze(0)
    enc = ev.encode(pixels, ["what color is the circle?"])
    q = collate.num_query_tokens
    slots = enc["input_ids"][0] == collate.image_token_id
    assert int(slots.sum()) == 4 * q
    placed = enc["inputs_embeds"][0][slots].reshape(4, q, -1)
    qf = collate.qformer_inputs(["what color is the circle?"])
    with torch.no_grad():
        for f in range(4):  # each frame's own features, in order
            own = model.get_image_features(pixels[0, f : f + 1], qformer_input_ids=qf["qformer_input_ids"],
                                           qformer_attention_mask=qf["qformer_attention_mask"], return_dict=True).pooler_output[0]
            assert torch.allclose(placed[f], own, atol=1e-5)
    assert not torch.allclose(placed[0], placed[1])
    row = {"sample_id": "v1", "dataset": "msvd_qa", "task": "rank_choices", "category": "video_qa", "image": b"",
           "frames": frames, "instruction": "what is moving?", "choices": ["red", "yes"], "label_index": 0}
    (pred,) = predict_rows(ev, [row], EvalConfig())
    assert pred.prediction in ("red", "yes") and not pred.error


def test_a_corrupt_image_fails_only_its_row(tiny):
    model, _, collate = tiny
    ev = Evaluator(model, collate)
    good = {"sample_id": "g", "dataset": "gqa", "task": "generate", "category": "visual_reasoning",
            "image": _png((200, 0, 0)), "instruction": "what color is the circle?"}
    bad = dict(good, sample_id="x", image=b"not an image")
    preds = predict_rows(ev, [bad, good], EvalConfig())
    assert "x" in preds[0].sample_id and "decodable" in preds[0].error
    assert preds[1].error == "" and isinstance(preds[1].prediction, str)


def test_dataset_scores_in_the_papers_units():
    acc = [{"sample_id": str(i), "prediction": p, "answers": [g], "choices": [], "label_index": -1}
           for i, (p, g) in enumerate([("Left", "left"), ("two", "2"), ("red", "blue"), ("a cat", "cat")])]
    assert dataset_score("accuracy", acc) == pytest.approx(75.0)
    ranked = [{"sample_id": "a", "scores": [0.1, 0.9, 0.3], "label_index": 1},
              {"sample_id": "b", "scores": [0.5, 0.2, 0.3], "label_index": 2}]
    assert dataset_score("mrr", ranked) == pytest.approx(100 * (1 + 1 / 2) / 2)
    memes = [{"sample_id": str(i), "prob_yes": p, "choices": ["yes", "no"], "label_index": 0 if y else 1}
             for i, (p, y) in enumerate([(0.9, 1), (0.4, 1), (0.6, 0), (0.1, 0)])]
    assert dataset_score("auc", memes) == pytest.approx(75.0)  # 3 of the 4 (yes, no) pairs ordered right
    failed = [dict(acc[0], error="MediaError: bad")] + acc[1:]
    assert dataset_score("accuracy", failed) == pytest.approx(200 / 3)  # failed rows are not scored
    with pytest.raises(ValueError, match="no answered rows"):
        dataset_score("accuracy", [dict(acc[0], error="x")])


def test_metric_choice_and_table():
    assert metric_for("nocaps", "generate", "image_captioning") == "cider"
    assert metric_for("hateful_memes", "binary", "image_classification") == "auc"
    assert metric_for("my_captions", "generate", "image_captioning") == "cider"
    assert metric_for("my_vqa", "generate", "image_qa") == "vqa_accuracy"
    table = results_table({"gqa": {"metric": "accuracy", "value": 41.234, "scored": 10, "failed": 1},
                           "mine": {"metric": "accuracy", "value": float("nan"), "scored": 0, "failed": 3}})
    assert "| gqa | accuracy | 41.2 | 48.4 | 10 | 1 |" in table
    assert "| mine | accuracy | n/a | - | 0 | 3 |" in table
