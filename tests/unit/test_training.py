"""Schedule and collation: label masking for both LLM families, truncation, the ablation switch."""

import io
import math

import pytest
import torch
from PIL import Image

from components.model import TinyModelConfig, build_tiny
from components.training import IGNORE_INDEX, Collator, ScheduleConfig, loss_terms, lr_at, make_scheduler, padding_id

TEXTS = ["what color is the circle?", "red", "how many squares are there?", "two blue squares"] * 20


def _png(color):
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, format="PNG")
    return buf.getvalue()


ROWS = {
    "image": [_png((200, 0, 0)), _png((0, 0, 200))],
    "instruction": ["what color is the circle?", "how many squares are there?"],
    "target": ["red", "two blue squares"],
}


@pytest.fixture(scope="module", params=["t5", "opt", "llama"])
def tiny(request):
    torch.manual_seed(0)
    model, processor = build_tiny(TEXTS, TinyModelConfig(llm_family=request.param, hidden_size=32, num_heads=2, vocab_size=200))
    collate = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index)
    return model, processor, collate


def test_schedule_warms_up_from_1e8_then_cosine_to_zero():
    cfg = ScheduleConfig(lr=1e-5, warmup_start_lr=1e-8, warmup_steps=100, total_steps=1100)
    assert lr_at(0, cfg) == pytest.approx(1e-8)
    assert lr_at(50, cfg) == pytest.approx(1e-8 + (1e-5 - 1e-8) / 2)
    assert lr_at(100, cfg) == pytest.approx(1e-5)
    assert lr_at(600, cfg) == pytest.approx(0.5e-5)
    assert lr_at(1100, cfg) == pytest.approx(0.0, abs=1e-15)
    warm = [lr_at(s, cfg) for s in range(101)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    decay = [lr_at(s, cfg) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_scheduler_drives_the_optimizer():
    cfg = ScheduleConfig(lr=1e-3, warmup_steps=10, total_steps=20)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=123.0, betas=(0.9, 0.999), weight_decay=0.05)
    sched = make_scheduler(opt, cfg)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(1e-8) and seen[10] == pytest.approx(1e-3)
    assert seen[15] == pytest.approx(lr_at(15, cfg))


def test_loss_only_on_target_tokens(tiny):
    model, processor, collate = tiny
    batch = collate(ROWS)
    tok = processor.tokenizer
    for i, target_text in enumerate(ROWS["target"]):
        target = tok(target_text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels = batch["labels"][i]
        assert [t for t in labels.tolist() if t != IGNORE_INDEX] == target
        if model.config.use_decoder_only_language_model:
            ids = batch["input_ids"][i]
            kept = labels != IGNORE_INDEX
            # target tokens sit at the end of the real sequence; queries and instruction are masked
            assert torch.equal(ids[kept], labels[kept])
            assert (labels[: processor.num_query_tokens] == IGNORE_INDEX).all()
            n_real = int(batch["attention_mask"][i].sum())
            assert (labels[n_real:] == IGNORE_INDEX).all() and (labels[n_real - len(target): n_real] != IGNORE_INDEX).all()
        else:
            assert (batch["input_ids"][i][: processor.num_query_tokens] == model.config.image_token_index).all()
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_validation_loss_does_not_depend_on_how_rows_are_batched(tiny):
    model, _, collate = tiny
    rows = {k: v * 2 for k, v in ROWS.items()}  # 4 rows: short and long targets
    with torch.no_grad():
        whole = float(model(**collate(rows)).loss)
        parts = [{k: v[:1] for k, v in rows.items()}, {k: v[1:] for k, v in rows.items()}]  # 1 + 3 rows
        terms = [loss_terms(model(**b).loss, b["labels"]) for b in map(collate, parts)]
        batch_means = [float(model(**collate(p)).loss) for p in parts]
    assert float(sum(w for w, _ in terms)) / sum(n for _, n in terms) == pytest.approx(whole, rel=1e-5)
    row_weighted = (batch_means[0] * 1 + batch_means[1] * 3) / 4  # what validation used to report
    assert row_weighted != pytest.approx(whole, rel=1e-5)


def test_llama_style_prompt_reads_bos_once_and_pads_with_unk(tiny):
    """A LLaMA/Vicuna tokenizer puts <s> in front of text and has no pad token: the prompt is
    [queries] <s> [instruction] (one <s>, not one per tokenizer call), and padding uses <unk>."""
    model, processor, collate = tiny
    tok = processor.tokenizer
    if tok.bos_token_id is None:
        assert collate.pad_id == tok.pad_token_id
        return
    assert tok.pad_token_id is None and collate.pad_id == tok.unk_token_id
    batch = collate(ROWS)
    q = processor.num_query_tokens
    instruction = tok(ROWS["instruction"][0], add_special_tokens=False)["input_ids"]
    target = tok(ROWS["target"][0], add_special_tokens=False)["input_ids"]
    ids = batch["input_ids"][0].tolist()
    assert ids[: q + 1 + len(instruction) + len(target) + 1] == (
        [model.config.image_token_index] * q + [tok.bos_token_id] + instruction + target + [tok.eos_token_id])
    assert ids.count(tok.bos_token_id) == 1
    short = int(batch["attention_mask"][0].sum())  # the first row is the shorter one: padded on the right
    assert short < batch["input_ids"].shape[1] and set(ids[short:]) == {tok.unk_token_id}
    # generation: the shorter prompt is padded on the left
    prompts = collate.prompts({"image": ROWS["image"], "instruction": ["what color is the circle?", "red"]})
    pad = int((prompts["attention_mask"][1] == 0).sum())
    instruction = tok("red", add_special_tokens=False)["input_ids"]
    assert pad > 0 and prompts["input_ids"][1, :pad].tolist() == [tok.unk_token_id] * pad
    assert prompts["input_ids"][1, -len(instruction) - 1:].tolist() == [tok.bos_token_id] + instruction


def test_padding_id_falls_back_to_unk_then_eos():
    class Tok:
        def __init__(self, pad=None, unk=None, eos=None):
            self.pad_token_id, self.unk_token_id, self.eos_token_id = pad, unk, eos

    assert padding_id(Tok(pad=0, unk=3, eos=2)) == 0
    assert padding_id(Tok(unk=3, eos=2)) == 3
    assert padding_id(Tok(eos=2)) == 2
    with pytest.raises(ValueError, match="no pad, unknown or end-of-sequence token"):
        padding_id(Tok())


def test_instruction_is_left_truncated(tiny):
    model, processor, _ = tiny
    collate = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index,
                       max_instruction_tokens=3)
    batch = collate({"image": ROWS["image"][:1], "instruction": ["how many squares are there?"], "target": ["red"]})
    tok = processor.tokenizer
    end = tok("how many squares are there?", add_special_tokens=False)["input_ids"][-3:]
    start = processor.num_query_tokens + len(collate._bos)  # decoder-only LLMs with a BOS read it first
    ids = batch["input_ids"][0].tolist()[start: start + 3]
    assert ids == end


def test_ablation_hides_the_instruction_from_the_qformer_only(tiny):
    model, processor, collate = tiny
    off = Collator(processor, model.config.use_decoder_only_language_model, model.config.image_token_index,
                   instruction_aware=False)
    a, b = collate(ROWS), off(ROWS)
    special = set(processor.qformer_tokenizer.all_special_ids)
    assert set(b["qformer_input_ids"].flatten().tolist()) <= special
    assert len(set(a["qformer_input_ids"].flatten().tolist()) - special) > 0
    assert torch.equal(a["input_ids"], b["input_ids"])  # the LLM still reads the instruction
