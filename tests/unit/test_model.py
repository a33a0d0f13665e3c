"""Tiny InstructBLIP assembly: both LLM families, the paper's trainable set, save/load."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from components.model import TRAINABLE_PREFIXES, TinyModelConfig, build_tiny, set_trainable

TEXTS = ["what color is the circle?", "red", "how many squares are there?", "two blue squares on a gray background"] * 20


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), color).save(buf, format="PNG")
    return buf.getvalue()


ROWS = {"image": [_png((200, 10, 10)), _png((10, 10, 200))],
        "instruction": ["what color is the circle?", "how many squares are there?"], "target": ["red", "2"]}


def _batch(model, processor, prompts_only: bool = False):
    """A batch as the job builds it (`Collator`: prompt layout, padding, labels on the targets only;
    `prompts_only`: generation inputs). The HF processor's own padding needs a pad token, which
    LLaMA-style tokenizers lack."""
    from components.inference import collator_for

    collate = collator_for(model, processor)
    return collate.prompts(ROWS) if prompts_only else collate(ROWS)


@pytest.fixture(scope="module", params=["t5", "opt", "llama"])
def tiny(request):
    torch.manual_seed(0)
    return build_tiny(TEXTS, TinyModelConfig(llm_family=request.param, hidden_size=32, num_heads=2, vocab_size=200))


def test_trainable_set_is_the_papers(tiny):
    model, _ = tiny
    trainable, total = set_trainable(model)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) and 0 < trainable < total
    assert all(n.startswith(TRAINABLE_PREFIXES) for n in names)
    assert "query_tokens" in names
    assert any(n.startswith("qformer.embeddings.word_embeddings") for n in names)  # instruction text embeddings
    assert any(n.startswith("language_projection.") for n in names)
    assert any(n.startswith("vision_model.post_layernorm.") for n in names)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("language_model.") for n in frozen)
    assert any(n.startswith("vision_model.encoder.") for n in frozen)
    assert not any(n.startswith(("language_model.", "vision_model.encoder.", "vision_model.embeddings.")) for n in names)


def test_a_step_moves_only_trainable_weights(tiny):
    model, processor = tiny
    set_trainable(model)
    inputs = _batch(model, processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = model(**inputs).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert "query_tokens" in changed and any(n.startswith("language_projection.") for n in changed)
    assert not any(n.startswith(("language_model.", "vision_model.encoder.")) for n in changed)


def test_llm_activation_checkpointing_gives_the_same_gradients(tiny):
    """`gradient_checkpointing=true` recomputes the frozen LLM's layers in the backward pass: the
    trainable weights get the same gradients (no dropout in the tiny model; up to float rounding)."""
    import copy

    from components.model import checkpoint_llm_activations

    model, processor = tiny
    set_trainable(model)
    inputs = _batch(model, processor)
    grads = []
    for checkpointed in (False, True):
        m = copy.deepcopy(model).train()
        if checkpointed:
            checkpoint_llm_activations(m)
            assert m.language_model.is_gradient_checkpointing
        m(**inputs).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and any(g.abs().sum() > 0 for g in grads[0].values())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")


def test_vision_tower_is_not_silent(tiny):
    model, processor = tiny
    pixels = _batch(model, processor)["pixel_values"]
    features = model.vision_model(pixel_values=pixels).last_hidden_state
    assert features.std() > 0.1  # transformers' default init (1e-10) would give ~0


def test_save_and_load_with_from_pretrained(tiny, tmp_path):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    model, processor = tiny
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = InstructBlipForConditionalGeneration.from_pretrained(tmp_path).eval()
    processor2 = InstructBlipProcessor.from_pretrained(tmp_path)
    inputs, inputs2 = _batch(model, processor, prompts_only=True), _batch(model2, processor2, prompts_only=True)
    assert torch.equal(inputs["input_ids"], inputs2["input_ids"])
    assert torch.equal(inputs["qformer_input_ids"], inputs2["qformer_input_ids"])
    with torch.no_grad():
        a = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        b = model2.generate(**inputs2, max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b)


def test_a_bf16_export_answers_in_fp32_on_cpu(tiny, tmp_path):
    """A bf16 training run exports bf16 weights; loaded for answering on CPU they become float32."""
    from components.inference import load_answerer
    from components.model import export_model, load_pretrained

    model, processor = tiny
    export_model(model.to(torch.bfloat16), processor, str(tmp_path / "bf16"))
    model.float()  # the fixture is shared
    assert next(load_pretrained(str(tmp_path / "bf16"))[0].parameters()).dtype == torch.bfloat16  # as saved
    assert next(load_pretrained(str(tmp_path / "bf16"), torch_dtype=torch.float32)[0].parameters()).dtype == torch.float32
    answerer = load_answerer(str(tmp_path / "bf16"))
    assert {p.dtype for p in answerer.model.parameters()} == {torch.float32}
    answers = answerer.answer_batch({"image": [_png((200, 10, 10))], "instruction": ["what color is the circle?"]},
                                    max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0], str)


def test_an_export_to_a_remote_uri_loads_back_and_leaves_no_local_staging(tiny, tmp_path, monkeypatch):
    import tempfile
    import uuid

    from components.model import export_model, load_pretrained

    model, processor = tiny
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uri = f"memory://export-{uuid.uuid4().hex}/model"  # an fsspec URI as s3:// or gs:// would be
    export_model(model, processor, uri, extra_files={"training_options.json": "{}"})
    loaded, _ = load_pretrained(uri)
    assert loaded.config.num_query_tokens == model.config.num_query_tokens
    with pytest.raises(FileNotFoundError):  # a failure while writing (here: a file in a folder that is not there)
        export_model(model, processor, uri + "-2", extra_files={"missing/file.json": "{}"})
    assert list(tmp_path.iterdir()) == []


def test_tiny_tokenizers_are_a_pure_function_of_the_text():
    """Same text, same vocabulary and ids (tokenizers' own trainer breaks ties in per-process hash
    order); frequent words are whole tokens and an unseen word of known characters falls back to pieces,
    not <unk>."""
    from components.model import build_tokenizers

    texts = ["What color is the circle?", "A red circle and a blue square.", "Is there a red square?"] * 3
    llm, qf = build_tokenizers(texts, 60)
    script = (
        "import json, sys; from components.model import build_tokenizers; "
        f"l, q = build_tokenizers({texts!r}, 60); print(json.dumps([l.get_vocab(), q.get_vocab()]))"
    )
    # another process: another hash seed
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=str(Path(__file__).parents[2]))
    assert json.loads(other.stdout.strip().splitlines()[-1]) == [llm.get_vocab(), qf.get_vocab()]
    assert llm.convert_ids_to_tokens(llm("red circle", add_special_tokens=False)["input_ids"]) == ["red", "circle"]
    unseen = llm("squared", add_special_tokens=False)["input_ids"]  # a new word of known characters
    assert len(unseen) > 1 and llm.unk_token_id not in unseen
    assert llm.decode(unseen) == "squared"


@pytest.fixture(scope="module")
def legacy_checkpoint(tmp_path_factory):
    """An InstructBLIP saved the way the first releases were: no `config.image_token_index`, no image
    token in the LLM tokenizer, no processor config (so no `num_query_tokens`)."""
    from transformers import BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration, T5Config

    from components.model import build_tokenizers

    out = tmp_path_factory.mktemp("legacy")
    llm_tok, qf_tok = build_tokenizers(TEXTS, 200)
    text = T5Config(vocab_size=len(llm_tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    pad_token_id=llm_tok.pad_token_id, eos_token_id=llm_tok.eos_token_id,
                    decoder_start_token_id=llm_tok.pad_token_id)
    config = InstructBlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, initializer_range=0.02),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=len(qf_tok), pad_token_id=qf_tok.pad_token_id),
        text_config=text.to_dict(), num_query_tokens=4)
    assert config.image_token_index is None
    torch.manual_seed(0)
    InstructBlipForConditionalGeneration(config).save_pretrained(out)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out)
    llm_tok.save_pretrained(out)
    qf_tok.save_pretrained(out / "qformer_tokenizer")
    return out, len(llm_tok)


def test_a_checkpoint_from_before_image_tokens_is_continued(legacy_checkpoint):
    """model.source=instructblip on such a checkpoint (and evaluation, serving: every load goes through
    `load_pretrained`): the image token gets an id in the config, an embedding row and its
    num_query_tokens slots in every prompt, and the job's batches train (before: a TypeError in
    collation, config.image_token_index being None)."""
    from components.config import from_dict
    from components.model import ModelSourceConfig, assemble

    path, vocab = legacy_checkpoint
    model, processor = assemble(from_dict(ModelSourceConfig, {"source": "instructblip", "path": str(path)}))
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert model.config.image_token_index == image_id == vocab  # the one token added
    assert model.get_input_embeddings().num_embeddings == vocab + 1 and processor.num_query_tokens == 4
    set_trainable(model)
    batch = _batch(model, processor)
    assert (batch["input_ids"] == image_id).sum(1).tolist() == [4, 4]
    assert torch.isfinite(model(**batch).loss)
    from components.inference import load_answerer

    answers = load_answerer(str(path)).answer(ROWS["image"], ROWS["instruction"], max_new_tokens=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_image_token_disagreements_are_named(legacy_checkpoint):
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    from components.model import place_image_token

    path, _ = legacy_checkpoint
    model = InstructBlipForConditionalGeneration.from_pretrained(path)
    processor = InstructBlipProcessor.from_pretrained(path)
    model.config.image_token_index = 7
    with pytest.raises(ValueError, match=r"ckpt: config.image_token_index is 7 but its tokenizer maps '<image>' to \d+"):
        place_image_token(model, processor, "ckpt")
    model.config.image_token_index = None
    processor.num_query_tokens = 32
    with pytest.raises(ValueError, match="ckpt: the processor puts 32 image tokens in a prompt but the model has 4"):
        place_image_token(model, processor, "ckpt")
