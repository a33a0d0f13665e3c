"""Zero-shot evaluation: answering held-out rows with a trained model, and scoring them as the paper does.

Three ways to answer a prepared row (its `task` column, set by `iblip prepare`):
- `generate`: the model writes an answer (short-answer settings) or a caption (caption settings).
- `rank_choices`: vocabulary ranking; every candidate in `choices` is scored by its log-likelihood
  under the model given (image, instruction), the best one is the prediction.
- `binary`: the same ranking over the verbalisers {yes, true} versus {no, false}; the two classes'
  likelihoods give P(yes), which Hateful Memes' AUC uses.

Videos (rows with `frames` and no `image`): every frame goes through the ViT and the Q-Former with
the instruction, and the frames' query outputs are concatenated before the LLM (so 4 frames x 32
queries = 128 soft tokens for the paper's model). Images take the same path with one frame, which is
exactly what `InstructBlipForConditionalGeneration.generate` computes (tested).

Metrics per dataset (METHOD.md): `DATASET_METRICS`; the paper's InstructBLIP FlanT5-XL numbers:
`PAPER_FLANT5XL`. This module does not use Ray; `pipelines/evaluate.py` runs it in Ray Data actors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

from components import metrics
from components.config import ConfigError, doc
from components.imaging import MediaError, PixelSpec, to_pixels
from components.inference import strip_prompt
from components.preparation import RayConfig
from components.reading import DEFAULT_LOCAL_LIMIT_MB
from components.tracking import MLflowConfig
from components.training import IGNORE_INDEX, Collator, pad_sequences

# dataset -> (metric key, how the paper reports it)
DATASET_METRICS: dict[str, str] = {
    "nocaps": "cider",
    "flickr30k": "cider",
    "gqa": "accuracy",
    "vizwiz": "vqa_accuracy",
    "textvqa": "vqa_accuracy",
    "ivqa": "ivqa_accuracy",
    "vsr": "accuracy",
    "iconqa": "accuracy",
    "scienceqa": "accuracy",
    "msvd_qa": "accuracy",
    "msrvtt_qa": "accuracy",
    "visdial": "mrr",
    "hateful_memes": "auc",
}
# InstructBLIP (FlanT5-XL) zero-shot results from the paper (METHOD.md), in the paper's units
PAPER_FLANT5XL: dict[str, float] = {
    "nocaps": 119.9, "flickr30k": 84.5, "gqa": 48.4, "vsr": 64.8, "iconqa": 50.0, "textvqa": 46.6,
    "visdial": 46.6, "hateful_memes": 56.6, "vizwiz": 32.7, "scienceqa": 70.4, "msvd_qa": 43.4,
    "msrvtt_qa": 25.0, "ivqa": 53.1,
}
METRIC_NAMES = {"cider": "CIDEr", "accuracy": "accuracy", "vqa_accuracy": "VQA accuracy",
                "ivqa_accuracy": "iVQA accuracy", "mrr": "MRR", "auc": "AUC"}


@dataclass
class GenerationSettings:
    """Decoding settings of open-ended answers."""

    num_beams: int = doc("Beam size (1 = greedy).", 5)
    max_new_tokens: int = doc("Longest answer, in LLM tokens.", 10)
    min_new_tokens: int = doc("Shortest answer, in LLM tokens.", 1)
    length_penalty: float = doc("Beam-search length penalty (negative favours short answers).", -1.0)

    def validate(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                "generation settings need num_beams >= 1, max_new_tokens >= 1 and 0 <= min_new_tokens <= "
                f"max_new_tokens, got {self}")


@dataclass
class InferenceConfig:
    """The pool of model actors that runs the evaluation (Ray Data map_batches)."""

    actors: int = doc("Model actors (replicas of the model), each answering batches.", 2)
    cpus_per_actor: float = doc("Logical CPUs each actor holds.", 1.0)
    gpus_per_actor: float = doc("GPUs each actor holds (0 = CPU inference).", 0.0)
    batch_size: int = doc("Rows per batch handed to an actor.", 16)
    score_batch_size: int = doc("(row, candidate) pairs scored per forward pass in vocabulary ranking.", 256)
    torch_threads: int = doc("torch intra-op threads per CPU actor (0 = leave torch's default).", 1)

    def validate(self) -> None:
        if self.actors < 1 or self.batch_size < 1 or self.score_batch_size < 1:
            raise ConfigError("inference.actors, batch_size and score_batch_size must be >= 1")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ConfigError("inference.cpus_per_actor must be > 0 and gpus_per_actor >= 0")


@dataclass
class EvalConfig:
    """`iblip evaluate`: zero-shot evaluation on the held-out datasets of a prepared directory."""

    data: str = doc("URI of the `iblip prepare` output (holds manifest.json).", "")
    model: str = doc(
        "The model: an MLflow model URI (models:/name@alias, runs:/<id>/model), an exported directory "
        "(local or any fsspec URI) or a Hugging Face id.", "models:/instructblip@champion")
    datasets: list[str] = doc("Held-out datasets to evaluate (empty = every held-out dataset in the manifest).",
                              default_factory=list)
    max_samples: int = doc("At most this many rows per dataset, the first ones in file order (0 = all).", 0)
    run_name: str = doc("MLflow run name ('' = eval-<timestamp>).", "")
    out: str = doc("Where results.json, results.md and predictions.jsonl go ('' = work_dirs/eval/<run_name>).", "")
    short_answer: GenerationSettings = doc("Decoding of short answers (VQA-style datasets).",
                                           default_factory=GenerationSettings)
    caption: GenerationSettings = doc(
        "Decoding of captions (NoCaps, Flickr30K).",
        default_factory=lambda: GenerationSettings(num_beams=5, max_new_tokens=30, min_new_tokens=8, length_penalty=1.0))
    verbalizers: dict[str, list[str]] = doc(
        "Binary tasks: words scored for each class (the paper: yes/true and no/false).",
        default_factory=lambda: {"yes": ["yes", "true"], "no": ["no", "false"]})
    length_normalized: bool = doc(
        "Vocabulary ranking: compare candidates by mean instead of total token log-likelihood.", False)
    predictions_logged: int = doc("Sample predictions (with images) per dataset in the MLflow table.", 4)
    inference: InferenceConfig = doc("Model actors.", default_factory=InferenceConfig)
    local_read_limit_mb: float = doc(
        "Evaluation files totalling up to this many MB are read in the driver with pyarrow (fast start); "
        "larger ones with a distributed Ray Data read. 0 = always distributed.", DEFAULT_LOCAL_LIMIT_MB)
    mlflow: MLflowConfig = doc("MLflow tracking.", default_factory=lambda: MLflowConfig(experiment="instructblip-eval"))
    ray: RayConfig = doc("How to reach Ray.", default_factory=RayConfig)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data is required: the `iblip prepare` output (--data)")
        if not self.model:
            raise ConfigError("model is required (--model): models:/name@alias, runs:/..., a directory or an HF id")
        if self.max_samples < 0 or self.predictions_logged < 0 or self.local_read_limit_mb < 0:
            raise ConfigError("max_samples, predictions_logged and local_read_limit_mb must be >= 0")
        self.short_answer.validate()
        self.caption.validate()
        if set(self.verbalizers) != {"yes", "no"} or not all(self.verbalizers.values()):
            raise ConfigError(f"verbalizers must map 'yes' and 'no' to non-empty word lists, got {self.verbalizers}")
        self.inference.validate()
        self.mlflow.validate()


def metric_for(dataset: str, task: str, category: str) -> str:
    """The metric of a dataset: the paper's (DATASET_METRICS), else one that fits its task."""
    if dataset in DATASET_METRICS:
        return DATASET_METRICS[dataset]
    if task == "generate":
        return "cider" if category == "image_captioning" else "vqa_accuracy"
    return "accuracy"


# ---------------------------------------------------------------- answering with the model


@dataclass
class Prediction:
    """What the model said about one row."""

    sample_id: str
    dataset: str
    prediction: str = ""
    scores: list[float] = field(default_factory=list)  # rank_choices/binary: one per candidate
    prob_yes: float = float("nan")  # binary only
    error: str = ""  # why the row could not be answered (it is counted, not scored)


class Evaluator:
    """Generation and candidate scoring for image and video rows with an InstructBLIP model.

    Args:
        model: InstructBlipForConditionalGeneration (any device/dtype; inputs follow it).
        collator: the Collator it was trained with (prompt layout, tokenizers, instruction-awareness).
        score_batch_size: (row, candidate) pairs per forward pass when ranking.
    """

    def __init__(self, model, collator: Collator, score_batch_size: int = 256) -> None:
        self.model = model.eval()
        self.collator = collator
        self.tokenizer = collator.tokenizer
        self.spec: PixelSpec = collator.pixel_spec
        self.score_batch_size = score_batch_size
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype

    # -- inputs --------------------------------------------------------------------
    def pixels(self, row: Mapping[str, Any]) -> torch.Tensor:
        """(frames, 3, S, S) for a row: its image as one frame, or its video frames.

        Raises:
            MediaError: no media, or media that cannot be decoded.
        """
        image = row.get("image")
        media = [image] if image else list(row.get("frames") or [])
        if not media:
            raise MediaError(f"sample {row.get('sample_id')}: neither an image nor video frames")
        return torch.stack([self.frame(m) for m in media])

    def frame(self, data: bytes) -> torch.Tensor:
        """(3, S, S) for one encoded image. Raises MediaError when it cannot be decoded."""
        return torch.as_tensor(to_pixels(bytes(data), self.spec))

    def encode(self, pixels: torch.Tensor, instructions: Sequence[str],
               prompt_ids: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
        """The LLM's prompt for a batch: token ids, attention mask and embeddings with the visual tokens in.

        `pixels` is (batch, frames, 3, S, S); each frame goes through the ViT and the Q-Former (with
        the instruction), and the frames' projected query outputs fill the frames x num_query_tokens
        image-token slots of the prompt in order. `prompt_ids`: each row's `Collator.prompt_ids`,
        when the caller has them already.
        """
        model = self.model
        batch, frames = pixels.shape[:2]
        qf = self.collator.qformer_inputs([str(t) for t in instructions])
        features = model.get_image_features(
            pixels.flatten(0, 1).to(self.device, self.dtype),
            qformer_input_ids=qf["qformer_input_ids"].repeat_interleave(frames, 0).to(self.device),
            qformer_attention_mask=qf["qformer_attention_mask"].repeat_interleave(frames, 0).to(self.device),
            return_dict=True,
        ).pooler_output
        features = features.reshape(batch, frames * features.shape[1], -1)
        sequences = (list(prompt_ids) if prompt_ids is not None
                     else [self.collator.prompt_ids(str(t), frames=frames) for t in instructions])
        ids, mask = pad_sequences(sequences, self.collator.pad_id, left=self.collator.decoder_only)
        ids, mask = ids.to(self.device), mask.to(self.device)
        embeds = model.get_input_embeddings()(ids)
        slots = (ids == self.collator.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, features.to(embeds.dtype))
        return {"input_ids": ids, "attention_mask": mask, "inputs_embeds": embeds}

    # -- answering -----------------------------------------------------------------
    @torch.no_grad()
    def generate_ids(self, pixels: torch.Tensor, instructions: Sequence[str],
                     prompt_ids: Sequence[Sequence[int]] | None = None, **generate_kwargs) -> torch.Tensor:
        """The LLM's generated token ids (the answer only: a decoder-only prompt is stripped).

        `prompt_ids` as in `encode`; `generate_kwargs` go to `generate` (decoding settings,
        max_new_tokens, a streamer, ...).
        """
        enc = self.encode(pixels, instructions, prompt_ids)
        inputs = {"inputs_embeds": enc["inputs_embeds"], "attention_mask": enc["attention_mask"]}
        if self.collator.decoder_only:
            inputs["input_ids"] = enc["input_ids"]
        out = self.model.language_model.generate(
            **inputs, pad_token_id=self.collator.pad_id, eos_token_id=self.tokenizer.eos_token_id,
            **generate_kwargs,
        )
        return strip_prompt(out, enc["input_ids"]) if self.collator.decoder_only else out

    def generate(self, pixels: torch.Tensor, instructions: Sequence[str], settings: GenerationSettings) -> list[str]:
        """Decoded answers (beam search or greedy, never sampling)."""
        out = self.generate_ids(
            pixels, instructions, do_sample=False, num_beams=settings.num_beams, max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.min_new_tokens, length_penalty=settings.length_penalty,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    @torch.no_grad()
    def score(self, pixels: torch.Tensor, instructions: Sequence[str], candidates: Sequence[Sequence[str]],
              length_normalized: bool = False) -> list[list[float]]:
        """Log-likelihood of every candidate answer of every row (the target tokens and </s>).

        The visual features and (for T5) the encoder run once per row; the candidates are scored in
        chunks of `score_batch_size` pairs.
        """
        if len(candidates) != len(instructions):
            raise ValueError(f"{len(instructions)} rows but {len(candidates)} candidate lists")
        enc = self.encode(pixels, instructions)
        eos = self.tokenizer.eos_token_id
        pairs = [(i, c) for i, cands in enumerate(candidates) for c in cands]
        targets = {c: self.collator._ids(str(c), self.collator.max_target_tokens - 1, keep_end=False) + [eos]
                   for _, c in pairs}
        if not self.collator.decoder_only:
            encoder_out = self.model.language_model.get_encoder()(
                inputs_embeds=enc["inputs_embeds"], attention_mask=enc["attention_mask"], return_dict=True
            ).last_hidden_state
        flat: list[float] = []
        for start in range(0, len(pairs), self.score_batch_size):
            chunk = pairs[start : start + self.score_batch_size]
            rows = torch.tensor([i for i, _ in chunk], device=self.device)
            if self.collator.decoder_only:
                flat.extend(self._score_decoder_only(enc, rows, [targets[c] for _, c in chunk], length_normalized))
            else:
                labels, _ = pad_sequences([targets[c] for _, c in chunk], IGNORE_INDEX)
                labels = labels.to(self.device)
                logits = self.model.language_model(
                    encoder_outputs=(encoder_out[rows],), attention_mask=enc["attention_mask"][rows], labels=labels
                ).logits
                flat.extend(_sequence_logprob(logits, labels, length_normalized))
        out, k = [], 0
        for cands in candidates:
            out.append(flat[k : k + len(cands)])
            k += len(cands)
        return out

    def _score_decoder_only(self, enc, rows: torch.Tensor, targets: list[list[int]], length_normalized: bool) -> list[float]:
        """[prompt][candidate </s>] per pair, right-padded (natural positions), scored on the candidate."""
        embed = self.model.get_input_embeddings()
        seqs, labels = [], []
        for r, target in zip(rows.tolist(), targets):
            keep = enc["attention_mask"][r].bool()  # drop the prompt's left padding
            prompt = enc["inputs_embeds"][r][keep]
            tgt = torch.tensor(target, device=self.device)
            seqs.append(torch.cat([prompt, embed(tgt)], 0))
            labels.append([IGNORE_INDEX] * (len(prompt) - 1) + target + [IGNORE_INDEX])  # shifted: position p predicts p+1
        width = max(len(s) for s in seqs)
        hidden = seqs[0].shape[-1]
        batch = torch.zeros(len(seqs), width, hidden, dtype=seqs[0].dtype, device=self.device)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=self.device)
        for j, s in enumerate(seqs):
            batch[j, : len(s)], mask[j, : len(s)] = s, 1
        logits = self.model.language_model(inputs_embeds=batch, attention_mask=mask).logits
        lab, _ = pad_sequences([lab[:width] for lab in labels], IGNORE_INDEX)
        return _sequence_logprob(logits[:, : lab.shape[1]], lab.to(self.device), length_normalized)


def _sequence_logprob(logits: torch.Tensor, labels: torch.Tensor, length_normalized: bool) -> list[float]:
    """Sum (or mean) over the labelled positions of log p(label)."""
    logp = torch.log_softmax(logits.float(), -1)
    keep = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    total = picked.sum(-1)
    if length_normalized:
        total = total / keep.sum(-1).clamp(min=1)
    return total.tolist()


def yes_probability(scores: Sequence[float], n_yes: int) -> float:
    """P(yes) from the verbalisers' log-likelihoods: the first n_yes are "yes" words, the rest "no" words."""
    yes = torch.logsumexp(torch.tensor(scores[:n_yes]), 0)
    no = torch.logsumexp(torch.tensor(scores[n_yes:]), 0)
    return float(torch.sigmoid(yes - no))


def predict_rows(evaluator: Evaluator, rows: Sequence[Mapping[str, Any]], cfg: EvalConfig) -> list[Prediction]:
    """Answer prepared rows (any mix of datasets, tasks, images and videos), one Prediction each, in order.

    A row whose media cannot be decoded gets a Prediction with `error` set; the others are unaffected.
    """
    preds = [Prediction(str(r["sample_id"]), str(r["dataset"])) for r in rows]
    groups: dict[tuple[str, str, int], list[tuple[int, torch.Tensor]]] = {}
    for i, row in enumerate(rows):
        try:
            pixels = evaluator.pixels(row)
        except MediaError as exc:
            preds[i].error = f"{type(exc).__name__}: {exc}"
            continue
        kind = str(row["task"])
        settings = "caption" if kind == "generate" and row.get("category") == "image_captioning" else "short"
        groups.setdefault((kind, settings, pixels.shape[0]), []).append((i, pixels))
    yes_words, no_words = cfg.verbalizers["yes"], cfg.verbalizers["no"]
    for (kind, settings, _), members in groups.items():
        index = [i for i, _ in members]
        pixels = torch.stack([p for _, p in members])
        instructions = [str(rows[i]["instruction"]) for i in index]
        if kind == "generate":
            answers = evaluator.generate(pixels, instructions, cfg.caption if settings == "caption" else cfg.short_answer)
            for i, text in zip(index, answers):
                preds[i].prediction = text
        elif kind == "binary":
            cands = [list(yes_words) + list(no_words)] * len(index)
            for i, scores in zip(index, evaluator.score(pixels, instructions, cands, cfg.length_normalized)):
                p = yes_probability(scores, len(yes_words))
                preds[i].scores, preds[i].prob_yes = scores, p
                preds[i].prediction = "yes" if p >= 0.5 else "no"
        elif kind == "rank_choices":
            cands = [[str(c) for c in rows[i]["choices"]] for i in index]
            for i, c, scores in zip(index, cands, evaluator.score(pixels, instructions, cands, cfg.length_normalized)):
                preds[i].scores = scores
                preds[i].prediction = c[max(range(len(c)), key=scores.__getitem__)] if c else ""
        else:
            for i in index:
                preds[i].error = f"unknown task {kind!r}"
    return preds


# ---------------------------------------------------------------- scoring a dataset


def dataset_score(metric: str, records: Sequence[Mapping[str, Any]]) -> float:
    """The dataset's metric over its answered rows, in the paper's units (percent, CIDEr x 100).

    Each record holds the row's `answers`, `choices`, `label_index` and the Prediction fields.

    Raises:
        ValueError: no answered rows, or the metric cannot be computed from them (one AUC class).
    """
    ok = [r for r in records if not r.get("error")]
    if not ok:
        raise ValueError("no answered rows")
    if metric == "cider":
        return metrics.cider({r["sample_id"]: r["prediction"] for r in ok},
                             {r["sample_id"]: list(r["answers"]) for r in ok})
    if metric == "vqa_accuracy":
        return 100 * sum(metrics.vqa_accuracy(r["prediction"], list(r["answers"])) for r in ok) / len(ok)
    if metric == "ivqa_accuracy":
        return 100 * sum(metrics.ivqa_accuracy(r["prediction"], list(r["answers"])) for r in ok) / len(ok)
    if metric == "mrr":
        return 100 * metrics.mean_reciprocal_rank([metrics.gold_rank(r["scores"], int(r["label_index"])) for r in ok])
    if metric == "auc":
        labels = [1 if _gold(r).lower() in ("yes", "true") else 0 for r in ok]
        return 100 * metrics.roc_auc([r["prob_yes"] for r in ok], labels)
    if metric == "accuracy":
        return 100 * metrics.exact_match_accuracy([r["prediction"] for r in ok], [_gold(r) for r in ok])
    raise ValueError(f"unknown metric {metric!r}")


def _gold(record: Mapping[str, Any]) -> str:
    """The gold answer: the labelled choice, else the first answer."""
    choices, index = list(record.get("choices") or []), int(record.get("label_index", -1))
    if 0 <= index < len(choices):
        return str(choices[index])
    answers = list(record.get("answers") or [])
    return str(answers[0]) if answers else ""


def results_table(scores: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table: dataset, metric, ours, the paper's InstructBLIP FlanT5-XL, rows scored, rows failed."""
    lines = ["| dataset | metric | ours | paper (FlanT5-XL) | scored | failed |", "|---|---|---|---|---|---|"]
    for name, s in scores.items():
        ours = "n/a" if s.get("value") is None or math.isnan(s["value"]) else f"{s['value']:.1f}"
        paper = PAPER_FLANT5XL.get(name)
        lines.append(f"| {name} | {METRIC_NAMES.get(s['metric'], s['metric'])} | {ours} | "
                     f"{'-' if paper is None else f'{paper:.1f}'} | {s['scored']} | {s['failed']} |")
    return "\n".join(lines) + "\n"
