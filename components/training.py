"""Training-step building blocks (work in progress for issue 4): the schedule and the collator.

Plain torch, no Ray: the Ray Train loop (pipelines/train.py, to come) drives these.

- `lr_at(step, cfg)`: the paper's schedule, linear warm-up from 1e-8 to the peak, then cosine to 0.
- `Collator`: prepared rows (image bytes, instruction, target) -> model inputs, with the loss on
  target tokens only: for an encoder-decoder LLM (FlanT5) the encoder reads
  [queries ; instruction] and the decoder predicts the target; for a decoder-only LLM
  (OPT, Vicuna) the sequence is [queries][instruction][target </s>] and every position before
  the target is masked out of the loss. Instructions are left-truncated (the reference code's
  128 tokens), targets right-truncated (256).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from components.config import ConfigError, doc

IGNORE_INDEX = -100


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (METHOD.md: warm-up 1,000 steps from 1e-8 to 1e-5, cosine to 0)."""

    lr: float = doc("Peak learning rate.", 1e-5)
    warmup_start_lr: float = doc("Learning rate at step 0.", 1e-8)
    warmup_steps: int = doc("Linear warm-up steps.", 1000)
    total_steps: int = doc("Steps of the whole run (the cosine reaches min_lr here).", 60000)
    min_lr: float = doc("Learning rate at the end of the cosine.", 0.0)

    def validate(self) -> None:
        if self.total_steps < 1 or self.warmup_steps < 0:
            raise ConfigError("schedule.total_steps must be >= 1 and warmup_steps >= 0")
        if self.warmup_steps > self.total_steps:
            raise ConfigError("schedule.warmup_steps must not exceed total_steps")


def lr_at(step: int, cfg: ScheduleConfig) -> float:
    """The learning rate at optimizer step `step` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.warmup_start_lr + (cfg.lr - cfg.warmup_start_lr) * step / cfg.warmup_steps
    decay_steps = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `lr_at`; the optimizer's lr must be set to cfg.lr."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, cfg) / cfg.lr)


class Collator:
    """Turns prepared rows into a batch for InstructBlipForConditionalGeneration.

    Args:
        processor: the model's InstructBlipProcessor (image processor + both tokenizers).
        decoder_only: True for OPT/LLaMA/Vicuna-style LLMs, False for T5.
        image_token_id: `model.config.image_token_index`.
        max_instruction_tokens: instruction length bound (left-truncated).
        max_target_tokens: target length bound (right-truncated).
        instruction_aware: False = the paper's ablation: the Q-Former sees no instruction
            (the LLM still does).
    """

    def __init__(
        self,
        processor,
        decoder_only: bool,
        image_token_id: int,
        max_instruction_tokens: int = 128,
        max_target_tokens: int = 256,
        instruction_aware: bool = True,
    ) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.qformer_tokenizer = processor.qformer_tokenizer
        self.num_query_tokens = processor.num_query_tokens
        self.decoder_only = decoder_only
        self.image_token_id = image_token_id
        self.max_instruction_tokens = max_instruction_tokens
        self.max_target_tokens = max_target_tokens
        self.instruction_aware = instruction_aware

    def _ids(self, text: str, limit: int, keep_end: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > limit:
            ids = ids[-limit:] if keep_end else ids[:limit]
        return ids

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [Image.open(io.BytesIO(r["image"])).convert("RGB") for r in rows]
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]

        qformer_text = [r["instruction"] if self.instruction_aware else "" for r in rows]
        qf = self.qformer_tokenizer(
            qformer_text, padding=True, truncation=True, max_length=self.max_instruction_tokens, return_tensors="pt"
        )
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        queries = [self.image_token_id] * self.num_query_tokens
        sequences, label_seqs, decoder_labels = [], [], []
        for r in rows:
            instruction = self._ids(r["instruction"], self.max_instruction_tokens, keep_end=True)
            target = self._ids(r["target"], self.max_target_tokens - 1, keep_end=False) + [eos]
            if self.decoder_only:
                seq = queries + instruction + target
                sequences.append(seq)
                label_seqs.append([IGNORE_INDEX] * (len(queries) + len(instruction)) + target)
            else:
                sequences.append(queries + instruction + [eos])
                decoder_labels.append(target)
        batch = {
            "pixel_values": pixel_values,
            "qformer_input_ids": qf["input_ids"],
            "qformer_attention_mask": qf["attention_mask"],
        }
        batch["input_ids"], batch["attention_mask"] = pad_sequences(sequences, pad)
        if self.decoder_only:
            batch["labels"], _ = pad_sequences(label_seqs, IGNORE_INDEX)
        else:
            batch["labels"], _ = pad_sequences(decoder_labels, IGNORE_INDEX)
        return batch


def pad_sequences(seqs: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest one with `value`; returns (ids, attention mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask
