"""InstructBLIP model assembly on transformers' own classes (work in progress for issue 4).

What is here:
- `build_tiny(texts, cfg)`: a tiny InstructBLIP (ViT, Q-Former, and a T5 or OPT language
  model) built from configs, with both tokenizers trained locally on `texts` (no hub), so the
  sample world can run anywhere. The processor is transformers' `InstructBlipProcessor`.
- `load_pretrained(path)`: an InstructBLIP checkpoint (HF id, local path) and its processor.
- `set_trainable(model)`: the paper's trainable set (Q-Former with its text embeddings,
  query tokens, language projection, the LayerNorm after the ViT); everything else frozen.

Not yet here (issue 4): BLIP-2 + BERT initialisation, pre-training the tiny LLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from components.config import ConfigError, doc

LLM_FAMILIES = ("t5", "opt")


@dataclass
class TinyModelConfig:
    """Sizes of the tiny model used on the sample world."""

    llm_family: str = doc("t5 (encoder-decoder, like FlanT5) or opt (decoder-only, like OPT/Vicuna).", "t5")
    hidden_size: int = doc("Width of the ViT, Q-Former and LLM.", 64)
    num_layers: int = doc("Layers of each of the three towers.", 2)
    num_heads: int = doc("Attention heads.", 4)
    num_query_tokens: int = doc("Learnable queries (the paper uses 32).", 8)
    image_size: int = doc("Input resolution of the ViT.", 64)
    patch_size: int = doc("ViT patch size.", 8)
    vocab_size: int = doc("Target vocabulary size of each locally trained tokenizer.", 1000)

    def validate(self) -> None:
        if self.llm_family not in LLM_FAMILIES:
            raise ConfigError(f"model.tiny.llm_family must be one of {LLM_FAMILIES}, got {self.llm_family!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError("model.tiny.hidden_size must be a multiple of num_heads")
        if self.image_size % self.patch_size:
            raise ConfigError("model.tiny.image_size must be a multiple of patch_size")


def _wordpiece(texts: Iterable[str], vocab_size: int, special: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=special[2] if len(special) > 2 else special[0]))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    return tok


def build_tokenizers(texts: list[str], vocab_size: int):
    """Train the LLM tokenizer and the Q-Former (BERT-style) tokenizer on `texts`, locally.

    Returns:
        (llm_tokenizer, qformer_tokenizer), both `PreTrainedTokenizerFast`. The LLM tokenizer
        appends </s> (as T5's does); the Q-Former tokenizer wraps text in [CLS] ... [SEP].
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    llm = _wordpiece(texts, vocab_size, ["<pad>", "</s>", "<unk>"])
    llm.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", llm.token_to_id("</s>"))])
    llm_tok = PreTrainedTokenizerFast(tokenizer_object=llm, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    qf = _wordpiece(texts, vocab_size, ["[PAD]", "[CLS]", "[UNK]", "[SEP]"])
    qf.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", qf.token_to_id("[CLS]")), ("[SEP]", qf.token_to_id("[SEP]"))]
    )
    qf_tok = PreTrainedTokenizerFast(
        tokenizer_object=qf, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )
    return llm_tok, qf_tok


def build_tiny(texts: list[str], cfg: TinyModelConfig):
    """A randomly initialised tiny InstructBLIP and its processor.

    The vision tower uses initializer_range 0.02: transformers' default for it (1e-10)
    makes a random ViT output almost nothing.

    Returns:
        (InstructBlipForConditionalGeneration, InstructBlipProcessor)
    """
    from transformers import (
        BlipImageProcessor,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        OPTConfig,
        T5Config,
    )

    cfg.validate()
    llm_tok, qf_tok = build_tokenizers(texts, cfg.vocab_size)
    image_processor = BlipImageProcessor(size={"height": cfg.image_size, "width": cfg.image_size})
    # the processor adds the <image> placeholder token to the LLM tokenizer
    processor = InstructBlipProcessor(
        image_processor=image_processor, tokenizer=llm_tok, qformer_tokenizer=qf_tok, num_query_tokens=cfg.num_query_tokens
    )
    h, layers, heads = cfg.hidden_size, cfg.num_layers, cfg.num_heads
    if cfg.llm_family == "t5":
        text_config = T5Config(
            vocab_size=len(llm_tok), d_model=h, d_kv=h // heads, d_ff=4 * h, num_layers=layers,
            num_decoder_layers=layers, num_heads=heads, pad_token_id=llm_tok.pad_token_id,
            eos_token_id=llm_tok.eos_token_id, decoder_start_token_id=llm_tok.pad_token_id,
        )
    else:
        text_config = OPTConfig(
            vocab_size=len(llm_tok), hidden_size=h, ffn_dim=4 * h, num_hidden_layers=layers, num_attention_heads=heads,
            word_embed_proj_dim=h, max_position_embeddings=512, pad_token_id=llm_tok.pad_token_id,
            bos_token_id=llm_tok.eos_token_id, eos_token_id=llm_tok.eos_token_id,
        )
    config = InstructBlipConfig(
        vision_config=dict(
            hidden_size=h, intermediate_size=4 * h, num_hidden_layers=layers, num_attention_heads=heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size, initializer_range=0.02,
        ),
        qformer_config=dict(
            vocab_size=len(qf_tok), hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * h, encoder_hidden_size=h, pad_token_id=qf_tok.pad_token_id,
        ),
        text_config=text_config.to_dict(),
        num_query_tokens=cfg.num_query_tokens,
        image_token_index=llm_tok.convert_tokens_to_ids("<image>"),
    )
    return InstructBlipForConditionalGeneration(config), processor


def load_pretrained(path: str):
    """An InstructBLIP checkpoint (HF id or local directory) and its processor."""
    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    return InstructBlipForConditionalGeneration.from_pretrained(path), InstructBlipProcessor.from_pretrained(path)


TRAINABLE_PREFIXES = ("qformer.", "query_tokens", "language_projection.", "vision_model.post_layernorm.")


def set_trainable(model) -> tuple[int, int]:
    """Freeze everything but the paper's trainable set; return (trainable, total) parameter counts.

    Trainable: the Q-Former (including its text embeddings), the query tokens, the language
    projection, and the LayerNorm after the ViT. Frozen: the ViT and the LLM.
    """
    trainable = total = 0
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(TRAINABLE_PREFIXES)
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    return trainable, total
