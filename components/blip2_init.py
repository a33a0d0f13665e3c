"""InstructBLIP initialised from a pre-trained BLIP-2 checkpoint plus BERT, as the paper does.

InstructBLIP's Q-Former also reads the instruction text, so it needs parts that an HF
`Blip2ForConditionalGeneration` checkpoint does not have: word and position embeddings, and
(per layer) the feed-forward block that text tokens go through. LAVIS's BLIP-2 OPT/FlanT5 models
delete exactly these (lavis/models/blip2_models/blip2_t5.py sets them to None), so the HF
conversions never had them. LAVIS builds every Q-Former from bert-base-uncased before loading a
checkpoint over it, so those parts come from BERT here by default. Everything else is copied from
BLIP-2 under the same name, except one rename:

    InstructBLIP key                               <- source
    vision_model.*, query_tokens, language_projection.*, language_model.*,
    qformer.encoder.layer.N.{attention,crossattention,intermediate_query,output_query}.*
                                                   <- BLIP-2, same key
    qformer.embeddings.layernorm.*                 <- BLIP-2 qformer.layernorm.*
    qformer.embeddings.{word,position}_embeddings.weight
                                                   <- BERT embeddings.{word,position}_embeddings.weight
    qformer.encoder.layer.N.{intermediate,output}.*
                                                   <- BLIP-2 same key when present, else by
                                                      text_ffn_source: BERT encoder.layer.N.{...}.*
                                                      or BLIP-2 ...layer.N.{...}_query.*

BERT weights left out on purpose: token_type_embeddings (InstructBLIP's Q-Former, like LAVIS's,
has no token types), embeddings.LayerNorm (BLIP-2's trained qformer.layernorm replaces it), the
attention layers (BLIP-2's trained ones replace them), the pooler and any MLM head.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping

TEXT_FFN_SOURCES = ("bert", "query")

# Config fields that describe a saved file or a task head, not the architecture: never carried over.
_BOOKKEEPING_FIELDS = frozenset(
    {"transformers_version", "architectures", "dtype", "id2label", "label2id", "problem_type",
     "output_hidden_states", "return_dict", "is_encoder_decoder"}
)
_TEXT_FFN_KEY = re.compile(r"^qformer\.encoder\.layer\.(\d+)\.(intermediate|output)\.(.+)$")


class WeightMappingError(ValueError):
    """BLIP-2 + BERT weights do not fill InstructBLIP exactly (unset, unused or mis-shaped tensors)."""


def from_blip2(blip2_path: str, bert_path: str, torch_dtype=None, text_ffn_source: str = "bert"):
    """Build an InstructBLIP model and processor from a BLIP-2 checkpoint and a BERT model.

    Args:
        blip2_path: HF hub id or local directory of a `Blip2ForConditionalGeneration` checkpoint
            with its `Blip2Processor` (OPT or FlanT5 language model).
        bert_path: HF hub id or local directory of a BERT model (`BertModel` or
            `BertForMaskedLM`, e.g. bert-base-uncased) with its tokenizer; it gives the Q-Former's
            word and position embeddings and tokenizer. Its hidden size must equal the Q-Former's.
        torch_dtype: dtype to load both checkpoints in and to build the result in; None loads
            the checkpoints as saved and builds the result in the language model's dtype.
        text_ffn_source: where the Q-Former's text feed-forward blocks come from when the BLIP-2
            checkpoint lacks them (as HF's OPT/FlanT5 BLIP-2 checkpoints do): "bert" (BERT's layer
            N, where LAVIS starts them) or "query" (BLIP-2's trained query feed-forward of layer
            N). The paper does not say which InstructBLIP started from; "bert" is our default.

    Returns:
        (InstructBlipForConditionalGeneration, InstructBlipProcessor). The LLM tokenizer holds
        the image placeholder token and `model.config.image_token_index` is its id; the
        language model's embeddings grow when the token had to be added.

    Raises:
        WeightMappingError: an InstructBLIP tensor has no source, a BLIP-2 tensor is unused, or
            source and target shapes differ (e.g. BERT hidden size != Q-Former hidden size).
        ValueError: bad `text_ffn_source`; the BERT tokenizer has ids beyond BERT's vocabulary;
            BLIP-2's config.image_token_index disagrees with its tokenizer.
    """
    import torch
    from transformers import (
        AutoTokenizer,
        BertModel,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
    )

    from components.model import place_image_token

    if text_ffn_source not in TEXT_FFN_SOURCES:
        raise ValueError(f"text_ffn_source must be one of {TEXT_FFN_SOURCES}, got {text_ffn_source!r}")
    load_kwargs = {} if torch_dtype is None else {"dtype": torch_dtype}
    blip2 = Blip2ForConditionalGeneration.from_pretrained(blip2_path, **load_kwargs)
    # Blip2Processor adds the <image> placeholder to the LLM tokenizer when it is missing
    blip2_processor = Blip2Processor.from_pretrained(blip2_path)
    # BertModel also loads BertForMaskedLM checkpoints (it drops the "bert." prefix and the head)
    bert = BertModel.from_pretrained(bert_path, **load_kwargs)
    qformer_tokenizer = AutoTokenizer.from_pretrained(bert_path)
    if len(qformer_tokenizer) > bert.config.vocab_size:
        raise ValueError(
            f"the BERT tokenizer at {bert_path} has {len(qformer_tokenizer)} tokens but BERT's word "
            f"embeddings only {bert.config.vocab_size} rows; the extra ids would have no embedding"
        )

    llm_tokenizer = blip2_processor.tokenizer
    image_token_index = place_image_token(blip2, blip2_processor, f"BLIP-2 at {blip2_path}")

    pad_token_id = qformer_tokenizer.pad_token_id
    config = instructblip_config(
        blip2.config, bert.config, image_token_index,
        qformer_pad_token_id=bert.config.pad_token_id if pad_token_id is None else pad_token_id,
    )
    # one dtype for the whole result (InstructBLIP, unlike BLIP-2, keeps no Q-Former in fp32)
    dtype = torch_dtype if torch_dtype is not None else blip2.language_model.dtype
    model = InstructBlipForConditionalGeneration._from_config(config, dtype=dtype)

    blip2_weights, bert_weights = blip2.state_dict(), bert.state_dict()
    target = model.state_dict()
    plan = weight_plan(
        {k: tuple(v.shape) for k, v in target.items()},
        {k: tuple(v.shape) for k, v in blip2_weights.items()},
        {k: tuple(v.shape) for k, v in bert_weights.items()},
        text_ffn_source,
    )
    sources = {"blip2": blip2_weights, "bert": bert_weights}
    with torch.no_grad():
        # state_dict tensors share storage with the parameters and buffers; tied weights appear
        # under each name and receive the same (tied) source tensor each time
        for key, (source, source_key) in plan.items():
            target[key].copy_(sources[source][source_key])

    processor = InstructBlipProcessor(
        image_processor=blip2_processor.image_processor,
        tokenizer=llm_tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=config.num_query_tokens,
    )
    return model, processor


def instructblip_config(blip2_config, bert_config, image_token_index: int, qformer_pad_token_id: int):
    """An `InstructBlipConfig` with BLIP-2's architecture and BERT's text-embedding sizes.

    Args:
        blip2_config: the `Blip2Config` (vision, Q-Former and text configs, num_query_tokens).
        bert_config: the `BertConfig`: vocab_size and max_position_embeddings of the Q-Former.
        image_token_index: id of the image placeholder in the LLM tokenizer.
        qformer_pad_token_id: pad id of the Q-Former (BERT) tokenizer.

    Returns:
        InstructBlipConfig.
    """
    from transformers import InstructBlipConfig, InstructBlipQFormerConfig, InstructBlipVisionConfig

    qformer = _architecture_fields(InstructBlipQFormerConfig, blip2_config.qformer_config)
    qformer.update(
        vocab_size=bert_config.vocab_size,
        max_position_embeddings=bert_config.max_position_embeddings,
        pad_token_id=qformer_pad_token_id,
    )
    return InstructBlipConfig(
        vision_config=_architecture_fields(InstructBlipVisionConfig, blip2_config.vision_config),
        qformer_config=qformer,
        # same class on both sides (OPTConfig, T5Config, ...), so it is carried over whole
        text_config=blip2_config.text_config.to_dict(),
        num_query_tokens=blip2_config.num_query_tokens,
        image_token_index=image_token_index,
        initializer_factor=blip2_config.initializer_factor,
        initializer_range=blip2_config.initializer_range,
    )


def _architecture_fields(target_cls, source_config) -> dict:
    # Only the target's declared fields: copying to_dict() whole would carry BLIP-2's model_type
    # (and use_qformer_text_input) into the InstructBLIP sub-config as stray attributes.
    return {
        f.name: getattr(source_config, f.name)
        for f in dataclasses.fields(target_cls)
        if f.name not in _BOOKKEEPING_FIELDS
    }


def weight_plan(
    target_shapes: Mapping[str, tuple],
    blip2_shapes: Mapping[str, tuple],
    bert_shapes: Mapping[str, tuple],
    text_ffn_source: str = "bert",
) -> dict[str, tuple[str, str]]:
    """Where each InstructBLIP tensor comes from: {target key: ("blip2" | "bert", source key)}.

    Args:
        target_shapes: InstructBLIP state_dict key -> shape.
        blip2_shapes: BLIP-2 state_dict key -> shape.
        bert_shapes: BertModel state_dict key -> shape.
        text_ffn_source: "bert" or "query"; see `from_blip2`.

    Returns:
        The plan, one entry per target key.

    Raises:
        WeightMappingError: listing every target key without a source, every BLIP-2 key no
            target uses, and every shape mismatch (both keys and shapes).
    """
    plan = {key: _source_of(key, blip2_shapes, text_ffn_source) for key in target_shapes}
    shapes = {"blip2": blip2_shapes, "bert": bert_shapes}
    problems = []
    for key, (source, source_key) in plan.items():
        if source_key not in shapes[source]:
            problems.append(f"unset: {key} {tuple(target_shapes[key])} (no {source}:{source_key})")
        elif tuple(shapes[source][source_key]) != tuple(target_shapes[key]):
            problems.append(
                f"shape mismatch: {key} {tuple(target_shapes[key])} <- "
                f"{source}:{source_key} {tuple(shapes[source][source_key])}"
            )
    used = {source_key for source, source_key in plan.values() if source == "blip2"}
    problems += [f"unused BLIP-2 weight: {key} {tuple(blip2_shapes[key])}" for key in blip2_shapes if key not in used]
    if problems:
        raise WeightMappingError(
            f"cannot initialise InstructBLIP from BLIP-2 + BERT ({len(problems)} problems):\n  " + "\n  ".join(problems)
        )
    return plan


def _source_of(key: str, blip2_shapes: Mapping[str, tuple], text_ffn_source: str) -> tuple[str, str]:
    if key.startswith("qformer.embeddings.layernorm."):
        # BLIP-2 applies this LayerNorm to the queries alone; InstructBLIP to [queries; text]
        return "blip2", "qformer.layernorm." + key.rsplit(".", 1)[1]
    if key.startswith(("qformer.embeddings.word_embeddings.", "qformer.embeddings.position_embeddings.")):
        return "bert", key[len("qformer."):]
    text_ffn = _TEXT_FFN_KEY.match(key)
    if text_ffn and key not in blip2_shapes:
        layer, block, rest = text_ffn.groups()
        if text_ffn_source == "bert":
            return "bert", f"encoder.layer.{layer}.{block}.{rest}"
        return "blip2", f"qformer.encoder.layer.{layer}.{block}_query.{rest}"
    return "blip2", key
