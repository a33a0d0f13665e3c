"""InstructBLIP from BLIP-2 + BERT: tiny checkpoints built from configs and saved locally (no hub)."""

import copy
import re

import pytest
import torch
from PIL import Image
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertModel,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipImageProcessorPil,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    LlamaConfig,
    OPTConfig,
    T5Config,
)

from components.blip2_init import WeightMappingError, from_blip2, weight_plan
from components.model import build_tokenizers

TEXTS = ["what color is the circle?", "red", "how many squares are there?",
         "two blue squares on a gray background"] * 20
HIDDEN, QUERIES = 32, 4


def _blip2(llm_tok, family: str, image_token_index):
    if family == "llama":  # as Vicuna: no pad id, untied output layer
        text_config = LlamaConfig(
            vocab_size=len(llm_tok), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, bos_token_id=llm_tok.bos_token_id,
            eos_token_id=llm_tok.eos_token_id, tie_word_embeddings=False,
        )
    elif family == "opt":
        text_config = OPTConfig(
            vocab_size=len(llm_tok), hidden_size=HIDDEN, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            word_embed_proj_dim=HIDDEN, pad_token_id=llm_tok.pad_token_id, bos_token_id=llm_tok.eos_token_id,
            eos_token_id=llm_tok.eos_token_id,
        )
    else:
        text_config = T5Config(
            vocab_size=len(llm_tok), d_model=HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            pad_token_id=llm_tok.pad_token_id, eos_token_id=llm_tok.eos_token_id,
            decoder_start_token_id=llm_tok.pad_token_id, tie_word_embeddings=False,
        )
    config = Blip2Config(
        # initializer_range 0.02: the vision default (1e-10) makes a random ViT output nothing
        vision_config=dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, initializer_range=0.02),
        qformer_config=dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
        text_config=text_config.to_dict(), num_query_tokens=QUERIES, image_token_index=image_token_index,
    )
    return Blip2ForConditionalGeneration(config).eval()


def _bert(qf_tok, hidden: int, with_mlm_head: bool):
    config = BertConfig(vocab_size=len(qf_tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, pad_token_id=qf_tok.pad_token_id)
    return BertForMaskedLM(config) if with_mlm_head else BertModel(config)


# opt and llama: saved like current HF checkpoints (tokenizer has <image>, config.image_token_index
# set), BERT without head; llama's tokenizer puts <s> first and has no pad token, as LLaMA/Vicuna's.
# t5: like older ones (no <image>, so it is added and the LLM embeddings grow), BERT saved as
# BertForMaskedLM, untied lm_head as in FlanT5.
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    checkpoints = {}
    for family in ("opt", "t5", "llama"):
        root = tmp_path_factory.mktemp(family)
        llm_tok, qf_tok = build_tokenizers(TEXTS, 200, family)
        image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
        if family != "t5":
            # Blip2Processor adds <image> to llm_tok
            processor = Blip2Processor(image_processor=image_processor, tokenizer=llm_tok, num_query_tokens=QUERIES)
            processor.save_pretrained(root / "blip2")
            blip2 = _blip2(llm_tok, family, llm_tok.convert_tokens_to_ids("<image>"))
        else:
            image_processor.save_pretrained(root / "blip2")
            llm_tok.save_pretrained(root / "blip2")
            blip2 = _blip2(llm_tok, family, None)
        blip2.save_pretrained(root / "blip2")
        bert = _bert(qf_tok, HIDDEN, with_mlm_head=family == "t5")
        bert.save_pretrained(root / "bert")
        qf_tok.save_pretrained(root / "bert")
        checkpoints[family] = dict(family=family, root=root, blip2=blip2, qformer_tokenizer=qf_tok,
                                   bert=bert.bert if family == "t5" else bert)
    return checkpoints


@pytest.fixture(scope="module", params=["opt", "t5", "llama"])
def converted(request, saved):
    checkpoint = saved[request.param]
    model, processor = from_blip2(str(checkpoint["root"] / "blip2"), str(checkpoint["root"] / "bert"))
    return dict(checkpoint, model=model.eval(), processor=processor)


def _batch(processor):
    if processor.tokenizer.pad_token is None:  # the HF processor pads only with a pad token: a copy gets <unk>
        processor = copy.deepcopy(processor)
        processor.tokenizer.pad_token = processor.tokenizer.unk_token
    images = [Image.new("RGB", (40, 40), (200, 10, 10)), Image.new("RGB", (40, 40), (10, 10, 200))]
    return processor(images=images, text=["what color is the circle?", "how many squares are there?"],
                     return_tensors="pt", padding=True)


def test_every_tensor_equals_its_source(converted):
    model, blip2, bert = converted["model"], converted["blip2"], converted["bert"]
    blip2_sd, bert_sd = blip2.state_dict(), bert.state_dict()
    checked = set()
    for key, value in model.state_dict().items():
        text_ffn = re.match(r"qformer\.encoder\.layer\.(\d+)\.((intermediate|output)\..+)$", key)
        if key.startswith("qformer.embeddings.layernorm."):
            source = blip2_sd[key.replace("embeddings.layernorm", "layernorm")]
        elif key.startswith("qformer.embeddings."):  # word / position embeddings
            source = bert_sd[key.removeprefix("qformer.")]
        elif text_ffn:  # HF BLIP-2 has no text feed-forward: BERT's layer N gives it
            source = bert_sd[f"encoder.layer.{text_ffn[1]}.{text_ffn[2]}"]
        else:
            source = blip2_sd[key]
        if source.shape != value.shape:
            # the t5 case added <image>: the old rows are copied, the new row is fresh
            assert converted["family"] == "t5" and value.shape[0] == source.shape[0] + 1
            value = value[: source.shape[0]]
        assert torch.equal(value, source), key
        checked.add(key.split(".")[0])
    assert checked == {"vision_model", "query_tokens", "qformer", "language_projection", "language_model"}


def test_image_token_matches_config(converted):
    model, processor = converted["model"], converted["processor"]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_index == image_id
    assert image_id < model.get_input_embeddings().num_embeddings == model.config.text_config.vocab_size
    assert model.config.qformer_config.vocab_size == converted["bert"].config.vocab_size
    inputs = _batch(processor)
    assert (inputs["input_ids"] == image_id).sum(dim=1).tolist() == [QUERIES, QUERIES]


def test_empty_instruction_reproduces_blip2(converted):
    # With no instruction text the InstructBLIP Q-Former sees only the queries, as BLIP-2's does,
    # so the logits must match BLIP-2's exactly: this checks the mapping, not just the copies.
    model, processor = converted["model"], converted["processor"]
    blip2 = Blip2ForConditionalGeneration.from_pretrained(converted["root"] / "blip2").eval()  # mutated below
    inputs = _batch(processor)
    extra = {"decoder_input_ids": torch.zeros(2, 3, dtype=torch.long)} if converted["family"] == "t5" else {}
    with torch.no_grad():
        ours = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                     attention_mask=inputs["attention_mask"], qformer_input_ids=inputs["qformer_input_ids"][:, :0],
                     qformer_attention_mask=inputs["qformer_attention_mask"][:, :0], **extra).logits
        if converted["family"] == "t5":
            # BLIP-2 lacks the added <image> row and id: give it InstructBLIP's embeddings
            blip2.resize_token_embeddings(model.get_input_embeddings().num_embeddings)
            blip2.get_input_embeddings().weight.copy_(model.get_input_embeddings().weight)
            blip2.config.image_token_index = model.config.image_token_index
        theirs = blip2(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                       attention_mask=inputs["attention_mask"], **extra).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_forward_with_labels_gives_finite_loss(converted):
    model, processor = converted["model"], converted["processor"]
    inputs = _batch(processor)
    tok = processor.tokenizer
    if model.config.use_decoder_only_language_model:
        labels = inputs["input_ids"].clone()
        labels[(inputs["attention_mask"] == 0) | (labels == model.config.image_token_index)] = -100
    else:
        labels = tok(["red", "two"], return_tensors="pt", padding=True).input_ids
        labels[labels == tok.pad_token_id] = -100
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)


def test_training_batches_of_the_converted_model_give_a_loss(converted):
    """The job's own collation (prompt layout, padding, labels) on the converted model, every family;
    LLaMA's tokenizer keeps having no pad token (the Collator pads with <unk>)."""
    import io

    from components.inference import collator_for

    model, processor = converted["model"], converted["processor"]
    pngs = []
    for color in ((200, 10, 10), (10, 10, 200)):
        buf = io.BytesIO()
        Image.new("RGB", (40, 40), color).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    collate = collator_for(model, processor)
    batch = collate({"image": pngs, "instruction": ["what color is the circle?", "red"], "target": ["red", "two"]})
    if converted["family"] == "llama":
        assert processor.tokenizer.pad_token is None and collate.pad_id == processor.tokenizer.unk_token_id
    assert torch.isfinite(model(**batch).loss)


def test_save_and_load_round_trips(converted):
    model, processor, out = converted["model"], converted["processor"], converted["root"] / "instructblip"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    loaded = InstructBlipForConditionalGeneration.from_pretrained(out)
    loaded_processor = InstructBlipProcessor.from_pretrained(out)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert loaded.config.image_token_index == model.config.image_token_index
    before, after = _batch(processor), _batch(loaded_processor)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_hidden_size_mismatch_names_both_keys(saved):
    root, qf_tok = saved["opt"]["root"], saved["opt"]["qformer_tokenizer"]
    _bert(qf_tok, 48, with_mlm_head=False).save_pretrained(root / "bert48")
    qf_tok.save_pretrained(root / "bert48")
    with pytest.raises(WeightMappingError) as err:
        from_blip2(str(root / "blip2"), str(root / "bert48"))
    vocab = len(qf_tok)
    word = "word_embeddings.weight"
    assert f"qformer.embeddings.{word} ({vocab}, 32) <- bert:embeddings.{word} ({vocab}, 48)" in str(err.value)
    assert "bert:encoder.layer.0.intermediate.dense.weight (64, 48)" in str(err.value)


def test_plan_maps_text_ffn_and_reports_unset_and_unused_weights():
    target = {"qformer.embeddings.layernorm.weight": (4,), "qformer.encoder.layer.0.intermediate.dense.weight": (8, 4),
              "qformer.embeddings.word_embeddings.weight": (10, 4)}
    blip2 = {"qformer.layernorm.weight": (4,), "qformer.encoder.layer.0.intermediate_query.dense.weight": (8, 4)}
    bert = {"embeddings.word_embeddings.weight": (10, 4), "encoder.layer.0.intermediate.dense.weight": (8, 4)}
    plan = weight_plan(target, blip2, bert, text_ffn_source="query")
    assert plan["qformer.encoder.layer.0.intermediate.dense.weight"] == (
        "blip2", "qformer.encoder.layer.0.intermediate_query.dense.weight")
    with pytest.raises(WeightMappingError) as err:  # from BERT, the query feed-forward goes unused
        weight_plan(target, blip2, bert, text_ffn_source="bert")
    assert "unused BLIP-2 weight: qformer.encoder.layer.0.intermediate_query.dense.weight (8, 4)" in str(err.value)
    with pytest.raises(WeightMappingError) as err:
        weight_plan({**target, "language_projection.weight": (6, 4)}, blip2, bert, text_ffn_source="query")
    assert "unset: language_projection.weight (6, 4) (no blip2:language_projection.weight)" in str(err.value)
