"""InstructBLIP model assembly on transformers' own classes.

Three sources of a model, chosen by `ModelSourceConfig.source`:
- `instructblip`: an InstructBLIP checkpoint (HF id, local path or fsspec URI) to continue tuning
  (`load_pretrained`);
- `blip2`: a BLIP-2 checkpoint plus a BERT model for the Q-Former's text embeddings, the paper's
  starting point (`components.blip2_init.from_blip2`);
- `tiny`: a tiny InstructBLIP for the sample world (`build_tiny`): ViT, Q-Former and a T5 or OPT
  LLM built from configs, both tokenizers trained locally (no hub) on the sample world's text, the
  ViT and the LLM pre-trained briefly (`components.tiny_vision`, `components.tiny_lm`) before they
  are frozen; built once per configuration and cached like a hub download (`components.tiny_cache`).

`set_trainable(model)` applies the paper's trainable set; `export_model` writes a directory that
`from_pretrained` loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from components.config import ConfigError, doc

LLM_FAMILIES = ("t5", "opt", "llama")


@dataclass
class TinyModelConfig:
    """Sizes of the tiny model used on the sample world."""

    llm_family: str = doc(
        "t5 (encoder-decoder, like FlanT5), opt (decoder-only, like OPT) or llama (decoder-only, like Vicuna: "
        "LLaMA architecture, a tokenizer that adds <s> and has no pad token).", "t5")
    hidden_size: int = doc("Width of the ViT, Q-Former and LLM.", 64)
    num_layers: int = doc("Layers of each of the three towers.", 2)
    num_heads: int = doc("Attention heads.", 4)
    num_query_tokens: int = doc(
        "Learnable queries (the paper uses 32). Must be (image_size / patch_size)^2: the tiny LLM reads one "
        "slot per patch-grid cell (components/tiny_lm.py).", 16)
    image_size: int = doc("Input resolution of the ViT.", 64)
    patch_size: int = doc("ViT patch size (64 / 16 = a 4 x 4 grid, the sample world's layout grid: one shape per cell).", 16)
    vocab_size: int = doc("Target vocabulary size of each locally trained tokenizer.", 1000)

    def validate(self) -> None:
        if self.llm_family not in LLM_FAMILIES:
            raise ConfigError(f"model.tiny.llm_family must be one of {LLM_FAMILIES}, got {self.llm_family!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError("model.tiny.hidden_size must be a multiple of num_heads")
        if self.image_size % self.patch_size:
            raise ConfigError("model.tiny.image_size must be a multiple of patch_size")
        if self.num_query_tokens != self.grid**2:
            raise ConfigError(
                f"model.tiny.num_query_tokens must be (image_size / patch_size)^2 = {self.grid**2} "
                f"(one query per cell of the patch grid), got {self.num_query_tokens}"
            )

    @property
    def grid(self) -> int:
        """Cells per side of the ViT's patch grid."""
        return self.image_size // self.patch_size


def _wordpiece(texts: Iterable[str], vocab_size: int, special: list[str]):
    """A WordPiece tokenizer whose vocabulary is a pure function of `texts`: the special tokens, every
    character seen (alone and as a "##" continuation, so a new word of seen characters is never
    unknown), then whole words by falling frequency (ties alphabetical) up to `vocab_size`.

    tokenizers' WordPieceTrainer breaks frequency ties in hash order, which differs per process: two
    runs with the same seed got different vocabularies (116 of 1,000 ids differed in issue 4) and so
    different tiny models.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        counts.update(word for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    vocab = list(dict.fromkeys([*special, *chars, *("##" + c for c in chars)]))
    known = set(vocab)
    words = [w for w in sorted(counts, key=lambda w: (-counts[w], w)) if w not in known]
    vocab += words[: max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)},
                                     unk_token=special[2] if len(special) > 2 else special[0]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    tok.decoder = decoders.WordPiece()
    return tok


def build_tokenizers(texts: list[str], vocab_size: int, llm_family: str = "t5"):
    """Train the LLM tokenizer and the Q-Former (BERT-style) tokenizer on `texts`, locally.

    Returns:
        (llm_tokenizer, qformer_tokenizer), both `PreTrainedTokenizerFast`. The LLM tokenizer
        appends </s> (as T5's does) or, for `llm_family="llama"`, puts <s> in front and has no pad
        token (as LLaMA/Vicuna's do); the Q-Former tokenizer wraps text in [CLS] ... [SEP].
    """
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if llm_family == "llama":
        llm = _wordpiece(texts, vocab_size, ["<unk>", "<s>", "</s>"])
        llm.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", llm.token_to_id("<s>"))])
        llm_tok = PreTrainedTokenizerFast(tokenizer_object=llm, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    else:
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
        BlipImageProcessorPil,
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        LlamaConfig,
        OPTConfig,
        T5Config,
    )

    cfg.validate()
    llm_tok, qf_tok = build_tokenizers(texts, cfg.vocab_size, cfg.llm_family)
    image_processor = BlipImageProcessorPil(size={"height": cfg.image_size, "width": cfg.image_size})
    # the processor adds the <image> placeholder token to the LLM tokenizer
    processor = InstructBlipProcessor(
        image_processor=image_processor, tokenizer=llm_tok, qformer_tokenizer=qf_tok, num_query_tokens=cfg.num_query_tokens
    )
    h, layers, heads = cfg.hidden_size, cfg.num_layers, cfg.num_heads
    if cfg.llm_family == "t5":
        text_config = T5Config(
            vocab_size=len(llm_tok), d_model=h, d_kv=h // heads, d_ff=4 * h, num_layers=layers,
            num_decoder_layers=layers, num_heads=heads, pad_token_id=llm_tok.pad_token_id,
            eos_token_id=llm_tok.eos_token_id, decoder_start_token_id=llm_tok.pad_token_id, dropout_rate=0.0,
        )
    elif cfg.llm_family == "llama":  # untied output layer and no pad id, as in Vicuna's checkpoints
        text_config = LlamaConfig(
            vocab_size=len(llm_tok), hidden_size=h, intermediate_size=4 * h, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
            bos_token_id=llm_tok.bos_token_id, eos_token_id=llm_tok.eos_token_id, tie_word_embeddings=False,
        )
    else:
        text_config = OPTConfig(
            vocab_size=len(llm_tok), hidden_size=h, ffn_dim=4 * h, num_hidden_layers=layers, num_attention_heads=heads,
            word_embed_proj_dim=h, max_position_embeddings=512, pad_token_id=llm_tok.pad_token_id,
            bos_token_id=llm_tok.eos_token_id, eos_token_id=llm_tok.eos_token_id, dropout=0.0,
        )
    config = InstructBlipConfig(
        vision_config=dict(
            hidden_size=h, intermediate_size=4 * h, num_hidden_layers=layers, num_attention_heads=heads,
            image_size=cfg.image_size, patch_size=cfg.patch_size, initializer_range=0.02,
        ),
        qformer_config=dict(
            vocab_size=len(qf_tok), hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=4 * h, encoder_hidden_size=h, pad_token_id=qf_tok.pad_token_id,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            cross_attention_frequency=1,  # every layer looks at the image (the paper's 12-layer one: every 2nd)
        ),
        text_config=text_config.to_dict(),
        num_query_tokens=cfg.num_query_tokens,
        image_token_index=llm_tok.convert_tokens_to_ids("<image>"),
    )
    model = InstructBlipForConditionalGeneration(config)
    _init_tiny_qformer(model, h)
    return model, processor


def _init_tiny_qformer(model, hidden: int) -> None:
    """Initialise the tiny Q-Former so that it can learn in a few hundred steps.

    Measured in issue 4 (a Q-Former regressing per-cell targets from the tiny ViT's features):
    - transformers leaves the query tokens at zero: identical queries get identical gradients
      and stay identical (one vector num_query_tokens times), and the LayerNorm of an all-zero
      input has gradients near 1/sqrt(eps) = 1e6.
    - with BERT's N(0, 0.02) weights, AdamW at the tiny model's learning rate (1e-3..2e-3) moves
      every weight by about its own size within ten steps, in directions shared by all queries:
      the query outputs collapsed to one vector (spread across queries 0.98 -> 0.002 within 50
      steps) and object-level information never got through.
    Weights N(0, 1/sqrt(hidden)) and queries N(0, 1) (LayerNorm rescales them anyway) keep the
    queries apart; on the same probe the Q-Former then got 0.32 of object cells exactly right
    after 600 steps, where a plain attention layer with learned queries got 0.30 after 300.
    """
    import torch

    with torch.no_grad():
        model.query_tokens.normal_(0.0, 1.0)
        for name, param in model.qformer.named_parameters():
            if param.ndim == 2 and "embeddings" not in name:
                param.normal_(0.0, hidden**-0.5)


def match_soft_prompt_scale(model, tokenizer, grid: int, seed: int = 0) -> float:
    """Initialise the tiny model's language projection so that the soft prompt starts at the size
    of what the pre-trained LLM reads there (`components.tiny_lm` slot vectors); returns that size.

    The projection maps LayerNorm-ed Q-Former outputs (norm about sqrt(hidden)); with weights
    N(0, s^2) its outputs have norm about s * hidden. transformers' N(0, 0.02) gives about 1.3 at
    hidden 64 while the LLM's slot vectors have norm 10-20: the LLM barely notices such a prompt,
    and AdamW needs most of a short run to grow the weights. Measured in issue 4 (tests/integration/
    test_learning.py's setting, 200 steps): +4 points without this, +12 with it.
    """
    import random

    import torch

    from components import tiny_lm
    from components.sample_world import scene as scenes

    rng = random.Random(seed)
    slots = [tiny_lm.slot_words(scenes.random_scene(rng, 1, 4), grid) for _ in range(64)]
    with torch.no_grad():
        norm = float(tiny_lm.slot_embeddings(model.language_model, tokenizer, slots).norm(dim=-1).mean())
        projection = model.language_projection
        projection.weight.normal_(0.0, norm / projection.in_features ** 0.5 / projection.out_features ** 0.5)
        projection.bias.zero_()
    return norm


@dataclass
class ModelSourceConfig:
    """Where the model to tune comes from."""

    source: str = doc("tiny (sample world), instructblip (continue tuning a checkpoint) or blip2 (the paper's start).", "tiny")
    path: str = doc("instructblip: the checkpoint; blip2: the BLIP-2 checkpoint. HF id, local path or fsspec URI.", "")
    bert: str = doc("blip2 only: the BERT model whose embeddings become the Q-Former's text embeddings.", "bert-base-uncased")
    tiny: TinyModelConfig = doc("Sizes of the tiny model (source=tiny).", default_factory=TinyModelConfig)
    vision_steps: int = doc("source=tiny: pre-training steps of the tiny ViT on drawn scenes before it is frozen.", 300)
    reader_steps: int = doc("source=tiny: text-only pre-training steps of the tiny LLM before it is frozen.", 1500)
    reader_batch_size: int = doc("source=tiny: batch size of that pre-training.", 128)
    reader_lr: float = doc("source=tiny: learning rate of that pre-training.", 5e-3)
    tiny_cache: str = doc(
        "source=tiny: folder caching the pre-trained tiny model per configuration ('' = $IBLIP_CACHE_DIR, "
        "else ~/.cache/instructblip; 'off' = pre-train on every run). Like a hub download: built once.", "",
    )

    def validate(self) -> None:
        sources = ("tiny", "instructblip", "blip2")
        if self.source not in sources:
            raise ConfigError(f"model.source must be one of {sources}, got {self.source!r}")
        if self.source != "tiny" and not self.path:
            raise ConfigError(f"model.path is required for model.source={self.source}")
        if self.source == "blip2" and not self.bert:
            raise ConfigError("model.bert is required for model.source=blip2")
        if self.source == "tiny":
            self.tiny.validate()
            if "://" in self.tiny_cache:
                raise ConfigError(f"model.tiny_cache must be a local folder (or 'off'), got {self.tiny_cache!r}")
            if self.reader_steps < 0 or self.vision_steps < 0 or self.reader_batch_size < 1 or self.reader_lr <= 0:
                raise ConfigError(
                    "model.reader_steps and vision_steps must be >= 0, reader_batch_size >= 1, reader_lr > 0"
                )


def assemble(cfg: ModelSourceConfig, seed: int = 0, log=print, max_target_tokens: int = 0):
    """The model to tune and its processor, from the configured source.

    Args:
        cfg: the model source.
        seed: source=tiny: initialisation and pre-training seed.
        log: progress lines go here.
        max_target_tokens: source=tiny: the tiny LLM's pre-training cuts its targets to this many
            tokens (0 = no cut); pass the training's own cut (`train_data.max_target_tokens`), so the
            Q-Former is never asked to make the LLM write text it never learned to write.
    Returns:
        (InstructBlipForConditionalGeneration, InstructBlipProcessor), nothing frozen yet.
        source=tiny comes from the tiny-model cache (`components.tiny_cache`), built on first use.
    """
    cfg.validate()
    if cfg.source == "instructblip":
        return load_pretrained(cfg.path)
    if cfg.source == "blip2":
        from components.blip2_init import from_blip2

        return from_blip2(cfg.path, cfg.bert)
    from components import tiny_cache

    if cfg.tiny_cache == tiny_cache.OFF:
        return pretrained_tiny(cfg, seed, log, max_target_tokens)
    return load_pretrained(tiny_cache.tiny_model_dir(cfg, seed, max_target_tokens, log))


def pretrained_tiny(cfg: ModelSourceConfig, seed: int = 0, log=print, max_target_tokens: int = 0):
    """A new tiny model: tokenizers trained on the sample world's text, the ViT and the LLM
    pre-trained (`vision_steps`, `reader_steps`), the Q-Former and soft prompt initialised.
    Minutes on a laptop CPU; `assemble` caches the result."""
    import torch

    from components import tiny_lm, tiny_vision
    from components.imaging import PixelSpec

    torch.manual_seed(seed)
    model, processor = build_tiny(list(tiny_lm.vocabulary_texts(seed=seed)), cfg.tiny)
    if cfg.vision_steps:
        log(f"[model] pre-training the tiny ViT to see the sample world: {cfg.vision_steps} steps")
        tiny_vision.pretrain_vision(model.vision_model, PixelSpec.from_processor(processor), cfg.tiny.patch_size,
                                    steps=cfg.vision_steps, seed=seed, log=log)
    if cfg.reader_steps:
        log(f"[model] pre-training the tiny {cfg.tiny.llm_family} LLM to read: {cfg.reader_steps} steps")
        tiny_lm.pretrain_reader(
            model.language_model, processor.tokenizer, model.config.use_decoder_only_language_model,
            steps=cfg.reader_steps, batch_size=cfg.reader_batch_size, lr=cfg.reader_lr, seed=seed, log=log,
            grid=cfg.tiny.grid, max_target_tokens=max_target_tokens,
        )
        norm = match_soft_prompt_scale(model, processor.tokenizer, cfg.tiny.grid, seed)
        log(f"[model] soft prompt initialised at the LLM's slot-vector norm {norm:.1f}")
    return model, processor


def is_local(fs) -> bool:
    """True for fsspec's local filesystem."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def local_path(path: str) -> str | None:
    """The local filesystem path a model path names (a plain path or a file:// URI), None for a
    remote URI (s3://, gs://, ...)."""
    if "://" in path and not path.startswith("file://"):
        return None
    return path.removeprefix("file://")


# what `from_pretrained` needs besides config.json: weights (whole or sharded) and the processor's settings
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
# a Hugging Face model id: "name" or "namespace/name"
_HF_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model_path(uri: str, what: str = "model", on_cluster: bool = False, log=print) -> None:
    """Fail before any work on a model path that `load_pretrained` could not load. `what`: the setting
    named in messages ("model", "model.path").

    A local path must be a directory with config.json, weights and the processor's settings (a
    directory holding less failed in every replica, actor or worker; a missing one reached
    `from_pretrained`, which took it for a hub id: "Repo id must be in the form 'repo_name' or
    'namespace/repo_name'"). Anything else must read as a Hugging Face id, which `check_hub_model`
    then looks up. Remote fsspec URIs are left to the load (it has their credentials).

    Raises:
        ValueError: naming `what`, the path and what is wrong with it.
    """
    import os

    path = local_path(uri)  # as `load_pretrained` will read it
    if path is None:
        return
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ValueError(f"{what} {uri!r} is a directory without config.json: not an exported model "
                             "(`iblip train` exports to <storage>/<run>/model)")
        for kind, names in (("weights", WEIGHT_FILES), ("processor", PROCESSOR_FILES)):
            if not any(os.path.isfile(os.path.join(path, name)) for name in names):
                raise ValueError(f"{what} {uri!r} has config.json but no {kind} ({' or '.join(names)}): an "
                                 "incomplete copy or export of a model")
        return
    if os.path.exists(path):
        raise ValueError(f"{what} {uri!r} is a file: give the exported model's directory")
    if uri.startswith(("/", ".", "~", "file://")) or not _HF_ID.fullmatch(uri):
        raise ValueError(f"{what} {uri!r} is neither an existing directory nor a Hugging Face model id "
                         "(name or namespace/name)")
    check_hub_model(uri, what, on_cluster, log)


def check_hub_model(repo_id: str, what: str = "model", on_cluster: bool = False, log=print) -> None:
    """A Hugging Face id that the local Hugging Face cache holds, or the hub has a config.json for.

    Asked once, without retries: `from_pretrained` retries an unreachable hub for about 25 s per file
    and then fails in every replica, actor or worker (measured: `iblip serve` of a mistyped id ended
    after 1 min 37 s with a 373-line log, `iblip train` after 3 min 40 s with a traceback). On a
    cluster (`on_cluster`) the nodes that load the model may reach a hub this process cannot, or hold
    it in their own caches: an unreachable hub is then a warning through `log`. The hub's own answers
    (no such repository, gated, no config.json) are errors anywhere.

    Raises:
        ValueError: naming `what`, the id and the reason, with the fix.
    """
    from huggingface_hub import constants, errors, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    where = f"the Hugging Face hub ({constants.ENDPOINT})"
    if constants.HF_HUB_OFFLINE:
        problem = "is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    else:
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=10)
            return
        except errors.GatedRepoError:
            raise ValueError(f"{what} {repo_id!r} is gated on {where}: accept its terms on the model's page and "
                             "give this machine a token with access (HF_TOKEN or `hf auth login`)") from None
        except errors.RepositoryNotFoundError:
            raise ValueError(f"{what} {repo_id!r}: {where} has no such model (a typo? a private model needs a "
                             "token: HF_TOKEN or `hf auth login`)") from None
        except errors.EntryNotFoundError:
            raise ValueError(f"{what} {repo_id!r} on {where} has no config.json: not a transformers "
                             "model") from None
        # no network, a refused connection, a timeout, a 5xx: the HTTP library's errors (not OSErrors) change
        # with huggingface_hub's releases (httpx, then httpx2), so any failure of this one request counts
        except Exception as exc:  # noqa: BLE001 - reported with its type
            problem = (f"cannot be looked up on {where} ({type(exc).__name__}: {exc}) and is not in the local "
                       "Hugging Face cache")
    message = f"{what} {repo_id!r} {problem}"
    if on_cluster:
        log(f"warning: {message}; the cluster's nodes load it themselves and may succeed")
        return
    raise ValueError(f"{message}. Check the network (or HF_ENDPOINT), download it while online, or give an "
                     "exported directory")


def _local_copy(uri: str) -> tuple[str, bool]:
    """A local directory for `uri`: itself when local, else a temporary download (flag: is a temp copy)."""
    import os
    import tempfile

    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    if is_local(fs):
        return path, False
    tmp = tempfile.mkdtemp(prefix="iblip-model-")
    fs.get(path.rstrip("/") + "/", tmp + os.sep, recursive=True)
    return tmp, True


def place_image_token(model, processor, what: str = "the checkpoint") -> int:
    """Make the model and its processor agree on the LLM's image placeholder token; returns its id.

    transformers' processors put `num_query_tokens` image tokens into the prompt, whose embeddings the
    model replaces with the projected query outputs. Checkpoints saved before that (older BLIP-2 and
    InstructBLIP uploads) have no `config.image_token_index` and a processor without
    `num_query_tokens`; loading adds the token to the tokenizer. Here it gets an embedding row (its
    value never matters: it is always overwritten), the config its id, the processor its query count.
    `model` is a BLIP-2 or InstructBLIP model, `processor` the matching processor.

    Raises:
        ValueError: the config and the tokenizer disagree on the token's id, or the processor and the
            config on the number of query tokens.
    """
    token = getattr(processor.image_token, "content", processor.image_token)  # AddedToken when just added
    token_id = processor.tokenizer.convert_tokens_to_ids(token)
    configured = model.config.image_token_index
    if configured is not None and configured != token_id:
        raise ValueError(
            f"{what}: config.image_token_index is {configured} but its tokenizer maps {token!r} to {token_id}")
    if token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(processor.tokenizer))
    model.config.image_token_index = token_id
    queries = model.config.num_query_tokens
    if getattr(processor, "num_query_tokens", None) is None:
        processor.num_query_tokens = queries
    elif processor.num_query_tokens != queries:
        raise ValueError(f"{what}: the processor puts {processor.num_query_tokens} image tokens in a prompt "
                         f"but the model has {queries} query tokens")
    return token_id


def load_pretrained(path: str, torch_dtype=None):
    """An InstructBLIP checkpoint and its processor: HF id, local directory or fsspec URI (s3://, gs://...).

    A URI with a scheme other than file:// is copied to a temporary local directory first. A checkpoint
    saved before transformers' image placeholder tokens gets one (`place_image_token`).
    """
    import shutil

    from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

    local, temporary = local_path(path), False
    if local is None:
        local, temporary = _local_copy(path)
    try:
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        model = InstructBlipForConditionalGeneration.from_pretrained(local, **kwargs)
        processor = InstructBlipProcessor.from_pretrained(local)
        place_image_token(model, processor, path)  # a no-op but for checkpoints from before image tokens
        return model, processor
    finally:
        if temporary:
            shutil.rmtree(local, ignore_errors=True)


def export_model(model, processor, uri: str, extra_files: dict[str, str] | None = None) -> None:
    """Write a directory that `InstructBlipForConditionalGeneration/InstructBlipProcessor.from_pretrained` load.

    Weights are safetensors. `uri` may be a local path or any fsspec URI (written locally, then
    uploaded). `extra_files` (name -> text) are written next to them.
    """
    import os
    import shutil
    import tempfile

    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    local_fs = is_local(fs)
    target = path if local_fs else tempfile.mkdtemp(prefix="iblip-export-")
    try:
        os.makedirs(target, exist_ok=True)
        model.save_pretrained(target, safe_serialization=True)
        processor.save_pretrained(target)
        for name, text in (extra_files or {}).items():
            with open(os.path.join(target, name), "w") as f:
                f.write(text)
        if not local_fs:
            fs.put(target.rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
    finally:  # the local staging copy of a remote export, also when saving or uploading failed
        if not local_fs:
            shutil.rmtree(target, ignore_errors=True)


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


def checkpoint_llm_activations(model) -> None:
    """Recompute the frozen LLM's activations in the backward pass instead of keeping them.

    The LLM is frozen but the loss's gradient still flows back through every one of its layers to
    the soft prompt, so training keeps all of its activations; for a 7B/13B LLM with long targets
    they are most of a GPU's memory after the weights. With this, each LLM layer keeps only its
    input and is run again in the backward pass: the same gradients, more compute per step.
    Non-reentrant checkpointing, which needs no input that requires grad.
    """
    model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
