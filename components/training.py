"""Training building blocks: the job's config, the schedule, the collator, DeepSpeed settings, progress.

Plain torch, no Ray: the Ray Train loop (`pipelines/train.py`) drives these.

- `TrainConfig`: every setting of `iblip train` (typed, documented, validated).
- `lr_at(step, cfg)`: the paper's schedule, linear warm-up from 1e-8 to the peak, then cosine to 0.
- `deepspeed_config(cfg, world_size, use_gpu)`: the DeepSpeed config for ZeRO stage 1/2/3.
- `Progress`: step, loss, samples/s and ETA lines at a steady rate.
- `Collator`: prepared rows (image bytes, instruction, target) -> model inputs, with the loss on
  target tokens only: for an encoder-decoder LLM (FlanT5) the encoder reads
  [queries ; instruction] and the decoder predicts the target; for a decoder-only LLM
  (OPT, Vicuna) the sequence is [queries][instruction][target </s>] and every position before
  the target is masked out of the loss. Instructions are left-truncated (the reference code's
  128 tokens), targets right-truncated (256).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from components.config import ConfigError, doc
from components.imaging import AugmentConfig
from components.model import ModelSourceConfig
from components.preparation import RayConfig
from components.reading import DEFAULT_LOCAL_LIMIT_MB
from components.tracking import MLflowConfig

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
        if self.lr <= 0 or self.warmup_start_lr < 0 or self.min_lr < 0:
            raise ConfigError("schedule.lr must be > 0 and warmup_start_lr, min_lr >= 0")


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


def loss_terms(loss: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(loss x target tokens, target tokens) of one batch whose `loss` is the mean over its target
    tokens. Summed over batches (and ranks) and divided, they give the mean over every target token,
    however the rows were split into batches; a row-weighted mean of batch means would not. The
    product keeps its graph, so a loss split into sub-batches can be backpropagated."""
    tokens = int((labels != IGNORE_INDEX).sum())
    return loss * tokens, tokens


def _cut(ids: list[int], limit: int, keep_end: bool) -> list[int]:
    """At most `limit` token ids: the last ones (keep_end) or the first ones."""
    if len(ids) > limit:
        ids = ids[-limit:] if keep_end else ids[:limit]
    return ids


def padding_id(tokenizer) -> int:
    """The id that pads the LLM's batches: the tokenizer's pad token, else its unknown token, else its
    end-of-sequence token.

    LLaMA/Vicuna tokenizers often come without a pad token. Padded positions are masked out of
    attention and labels, so any id works; the unknown token is a common choice for LLaMA, and
    end-of-sequence is what `generate` falls back to.

    Raises:
        ValueError: the tokenizer has none of the three.
    """
    for name in ("pad_token_id", "unk_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(f"the LLM tokenizer ({type(tokenizer).__name__}) has no pad, unknown or end-of-sequence "
                     "token: set tokenizer.pad_token before training")


class Collator:
    """Turns prepared rows into a batch for InstructBlipForConditionalGeneration.

    Rows come as columns (Ray Data's numpy batch format or plain lists): `instruction`,
    `target` (training only) and either `pixel_values` (float arrays made by the data
    pipeline with `components.imaging.to_pixels`) or `image` (encoded bytes, converted here
    with the evaluation transform).

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
        from components.imaging import PixelSpec

        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.qformer_tokenizer = processor.qformer_tokenizer
        self.num_query_tokens = processor.num_query_tokens
        self.pixel_spec = PixelSpec.from_processor(processor)
        self.decoder_only = decoder_only
        self.image_token_id = image_token_id
        self.max_instruction_tokens = max_instruction_tokens
        self.max_target_tokens = max_target_tokens
        self.instruction_aware = instruction_aware
        # a decoder-only LLM whose tokenizer has a BOS (OPT, LLaMA) reads it before the prompt
        bos = self.tokenizer.bos_token_id
        self._bos = [bos] if decoder_only and bos is not None else []
        self.pad_id = padding_id(self.tokenizer)

    def _ids(self, text: str, limit: int, keep_end: bool) -> list[int]:
        return _cut(self.tokenizer(text, add_special_tokens=False)["input_ids"], limit, keep_end)

    def prompt_ids(self, instruction: str, frames: int = 1, instruction_ids: Sequence[int] | None = None) -> list[int]:
        """The LLM's input before the answer: [queries][instruction] (+ </s> for T5's encoder).

        A video of `frames` frames gets `frames` x num_query_tokens query slots (the paper's video path).
        `instruction_ids`: the instruction already tokenized (without special tokens), to skip the tokenizer.
        """
        queries = [self.image_token_id] * (self.num_query_tokens * frames)
        if instruction_ids is None:
            instruction_ids = self._ids(instruction, self.max_instruction_tokens, keep_end=True)
        else:
            instruction_ids = _cut(list(instruction_ids), self.max_instruction_tokens, keep_end=True)
        if self.decoder_only:
            return queries + self._bos + instruction_ids
        return queries + instruction_ids + [self.tokenizer.eos_token_id]

    def _vision_inputs(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if "pixel_values" in batch:
            pixels = torch.as_tensor(np.stack(list(batch["pixel_values"])), dtype=torch.float32)
        else:
            from components.imaging import to_pixels

            pixels = torch.as_tensor(np.stack([to_pixels(b, self.pixel_spec) for b in batch["image"]]))
        return {"pixel_values": pixels, **self.qformer_inputs([str(t) for t in batch["instruction"]])}

    def qformer_inputs(self, instructions: list[str]) -> dict[str, torch.Tensor]:
        """The Q-Former's text input: the instructions, or nothing in the instruction-unaware ablation."""
        qformer_text = instructions if self.instruction_aware else [""] * len(instructions)
        qf = self.qformer_tokenizer(
            qformer_text, padding=True, truncation=True, max_length=self.max_instruction_tokens, return_tensors="pt"
        )
        return {"qformer_input_ids": qf["input_ids"], "qformer_attention_mask": qf["attention_mask"]}

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Training batch with `labels` (loss on target tokens only)."""
        out = self._vision_inputs(batch)
        eos, pad = self.tokenizer.eos_token_id, self.pad_id
        sequences, labels = [], []
        for instruction, target in zip(batch["instruction"], batch["target"]):
            prompt = self.prompt_ids(str(instruction))
            target_ids = self._ids(str(target), self.max_target_tokens - 1, keep_end=False) + [eos]
            if self.decoder_only:
                sequences.append(prompt + target_ids)
                labels.append([IGNORE_INDEX] * len(prompt) + target_ids)
            else:
                sequences.append(prompt)
                labels.append(target_ids)
        out["input_ids"], out["attention_mask"] = pad_sequences(sequences, pad)
        out["labels"], _ = pad_sequences(labels, IGNORE_INDEX)
        return out

    def prompts(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Generation inputs (no targets); decoder-only prompts are left-padded so answers follow them."""
        out = self._vision_inputs(batch)
        sequences = [self.prompt_ids(str(t)) for t in batch["instruction"]]
        out["input_ids"], out["attention_mask"] = pad_sequences(
            sequences, self.pad_id, left=self.decoder_only
        )
        return out


def pad_sequences(seqs: list[list[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists to the longest one with `value` (right, or left); returns (ids, attention mask)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


# ---- the job's configuration ----


@dataclass
class OptimizerConfig:
    """AdamW, as in the paper (betas 0.9/0.999, weight decay 0.05)."""

    beta1: float = doc("AdamW beta1.", 0.9)
    beta2: float = doc("AdamW beta2.", 0.999)
    weight_decay: float = doc("Weight decay (not applied to biases and LayerNorms).", 0.05)
    grad_clip: float = doc("Clip the global gradient norm to this (0 = no clipping, as the reference code).", 0.0)

    def validate(self) -> None:
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("optimizer.beta1 and beta2 must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("optimizer.weight_decay and grad_clip must be >= 0")


@dataclass
class DeepSpeedConfig:
    """DeepSpeed ZeRO settings."""

    zero_stage: int = doc("ZeRO stage: 1 (optimizer states), 2 (+ gradients) or 3 (+ parameters) partitioned.", 2)
    precision: str = doc(
        "auto (bf16 on GPU, fp32 on CPU), bf16 or fp32. bf16 also runs on CPU (DeepSpeed's CPU accelerator; "
        "slower than fp32 on CPUs without native bf16 arithmetic: 96-104 against 150-270 samples/s measured "
        "on the 2-core test machine). A bf16 run exports its model in bf16.", "auto")
    offload_optimizer: bool = doc("Keep optimizer states in CPU memory (ZeRO-Offload; GPU runs only).", False)

    def validate(self) -> None:
        if self.zero_stage not in (1, 2, 3):
            raise ConfigError(f"deepspeed.zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"deepspeed.precision must be auto, bf16 or fp32, got {self.precision!r}")


@dataclass
class ScalingConfig:
    """How many Ray Train workers, and what each holds."""

    num_workers: int = doc("Data-parallel training workers.", 2)
    use_gpu: bool = doc("One GPU per worker (NCCL); false trains on CPU (gloo).", False)
    cpus_per_worker: float = doc(
        "Logical CPUs each worker reserves. Fractions are allowed; keep some CPUs free for the Ray Data "
        "tasks that feed the workers (see README, CPU budgeting).", 1.0)

    def validate(self) -> None:
        if self.num_workers < 1 or self.cpus_per_worker <= 0:
            raise ConfigError("scaling.num_workers must be >= 1 and cpus_per_worker > 0")


@dataclass
class DataConfig:
    """The training stream and its preprocessing (done in the Ray Data pipeline)."""

    balanced: bool = doc("Balanced sqrt-size mixing of the held-in sets; false = concatenation (ablation).", True)
    seed: int = doc("Seed of the mixed stream.", 0)
    datasets: list[str] = doc("Held-in datasets to train on (empty = all in the prepared manifest).", default_factory=list)
    augment: AugmentConfig = doc("Training image augmentation.", default_factory=AugmentConfig)
    instruction_aware: bool = doc("The Q-Former reads the instruction; false = the paper's ablation.", True)
    max_instruction_tokens: int = doc("Instruction tokens kept (from the end).", 128)
    max_target_tokens: int = doc(
        "Target tokens kept (from the start, </s> included). The default suits the tiny sample-world model, "
        "whose LLM is pre-trained on targets cut the same way; real LLMs want 256 or more (configs/train_flant5xl.yaml).",
        24,
    )
    prefetch_batches: int = doc("Micro-batches each worker prefetches from Ray Data.", 2)
    local_read_limit_mb: float = doc(
        "Training streams and validation rows up to this size (MB, files read and stream each) are read, "
        "mixed and ordered in the driver with pyarrow (fast start); larger ones with distributed Ray Data "
        "reads and sort. 0 = always distributed.",
        DEFAULT_LOCAL_LIMIT_MB,
    )

    def validate(self) -> None:
        if self.local_read_limit_mb < 0:
            raise ConfigError("train_data.local_read_limit_mb must be >= 0")
        if self.max_target_tokens < 2 or self.max_instruction_tokens < 1:
            raise ConfigError(
                "train_data.max_target_tokens must be >= 2 (a token and </s>) and max_instruction_tokens >= 1, got "
                f"{self.max_target_tokens} and {self.max_instruction_tokens}"
            )


@dataclass
class ValidationConfig:
    """Validation on the held-in validation splits."""

    every_steps: int = doc("Validate every this many optimizer steps (and before the first and after the last).", 100)
    max_samples: int = doc("At most this many validation rows (a seeded subset when there are more).", 512)
    short_answer_categories: list[str] = doc(
        "Task categories whose targets are short answers, scored by exact match of generated text.",
        default_factory=lambda: ["image_qa", "knowledge_qa", "reading_qa"],
    )
    max_new_tokens: int = doc("Generation length bound for exact-match scoring.", 10)
    batch_size: int = doc("Validation micro-batch size.", 32)
    num_predictions_logged: int = doc("Sample predictions (with images) logged to MLflow at the end.", 16)


@dataclass
class CheckpointConfig:
    """Checkpoints (through ray.train.Checkpoint, in the run's storage)."""

    every_steps: int = doc("Checkpoint every this many optimizer steps (0 = only at the end).", 100)
    keep: int = doc("Checkpoints kept (oldest deleted first).", 2)


@dataclass
class TrainConfig:
    """`iblip train`: instruction tuning of the Q-Former on Ray Train with DeepSpeed ZeRO.

    The defaults train the tiny model on the sample world in a few minutes on a laptop; the
    paper's FlanT5-XL recipe is configs/train_flant5xl.yaml.
    """

    data: str = doc("URI of the `iblip prepare` output (holds manifest.json).", "")
    run_name: str = doc("Name of the run; relaunching with the same name resumes it ('' = a new timestamped name).", "")
    storage: str = doc("Where runs live (checkpoints, initial and final model): local path or URI.", "work_dirs/runs")
    export: str = doc("Where the final model goes ('' = <storage>/<run_name>/model).", "")
    seed: int = doc("Seed of initialisation and of anything random in the loop.", 0)
    model: ModelSourceConfig = doc("The model to tune.", default_factory=ModelSourceConfig)
    schedule: ScheduleConfig = doc(
        "Learning-rate schedule; total_steps is the length of the run.",
        default_factory=lambda: ScheduleConfig(lr=3e-3, warmup_start_lr=1e-8, warmup_steps=30, total_steps=800),
    )
    optimizer: OptimizerConfig = doc("AdamW settings.", default_factory=OptimizerConfig)
    global_batch_size: int = doc("Samples per optimizer step over all workers (the paper: 192 for FlanT5-XL).", 32)
    micro_batch_size: int = doc("Samples per worker per forward pass; gradient accumulation fills the rest.", 16)
    deepspeed: DeepSpeedConfig = doc("DeepSpeed ZeRO.", default_factory=DeepSpeedConfig)
    scaling: ScalingConfig = doc("Ray Train workers.", default_factory=ScalingConfig)
    train_data: DataConfig = doc("The training stream.", default_factory=DataConfig)
    validation: ValidationConfig = doc("Validation.", default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = doc("Checkpoints.", default_factory=CheckpointConfig)
    gradient_checkpointing: bool = doc(
        "Recompute the frozen LLM's activations in the backward pass instead of keeping them "
        "(components.model.checkpoint_llm_activations): less memory for large LLMs, more compute per step.", False)
    max_failures: int = doc("Worker failures tolerated per run; each restarts from the last checkpoint.", 2)
    log_every: int = doc("Print a progress line every this many optimizer steps.", 10)
    mlflow: MLflowConfig = doc("MLflow tracking.", default_factory=MLflowConfig)
    ray: RayConfig = doc("How to reach Ray.", default_factory=RayConfig)
    fail_at_step: int = doc("Testing fault tolerance: the last worker exits at this step, once per run (0 = never).", 0)

    def validate(self) -> None:
        if not self.data:
            raise ConfigError("data is required: the `iblip prepare` output (--data)")
        for part in (self.model, self.schedule, self.optimizer, self.deepspeed, self.scaling,
                     self.train_data.augment, self.mlflow):
            part.validate()
        if self.micro_batch_size < 1 or self.global_batch_size < 1:
            raise ConfigError("global_batch_size and micro_batch_size must be >= 1")
        per_step = self.micro_batch_size * self.scaling.num_workers
        if self.global_batch_size % per_step:
            raise ConfigError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of micro_batch_size x "
                f"scaling.num_workers ({self.micro_batch_size} x {self.scaling.num_workers} = {per_step})"
            )
        if self.validation.every_steps < 1 or self.validation.max_samples < 1 or self.log_every < 1:
            raise ConfigError("validation.every_steps, validation.max_samples and log_every must be >= 1")
        if self.checkpoint.every_steps < 0 or self.checkpoint.keep < 1:
            raise ConfigError("checkpoint.every_steps must be >= 0 and checkpoint.keep >= 1")

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.scaling.num_workers)

    @property
    def bf16(self) -> bool:
        return self.deepspeed.precision == "bf16" or (self.deepspeed.precision == "auto" and self.scaling.use_gpu)


def deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed config dict for this run (also logged to MLflow).

    The optimizer is DeepSpeed's AdamW with the configured betas; weight decay is set per parameter
    group by `parameter_groups`. The learning-rate schedule is ours (`make_scheduler`).
    """
    ds: dict[str, Any] = {
        "train_batch_size": cfg.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.accumulation_steps,
        "gradient_clipping": cfg.optimizer.grad_clip,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": cfg.schedule.lr,
                "betas": [cfg.optimizer.beta1, cfg.optimizer.beta2],
                "eps": 1e-8,
                "weight_decay": cfg.optimizer.weight_decay,
                # DeepSpeed's fused CPU/GPU Adam kernels are JIT builds; torch's AdamW needs none
                "torch_adam": True,
                "adam_w_mode": True,
            },
        },
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": cfg.bf16},
        "steps_per_print": 10**9,  # our own progress lines instead of DeepSpeed's
        "wall_clock_breakdown": False,
    }
    if cfg.deepspeed.offload_optimizer:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.deepspeed.zero_stage == 3:
        # frozen LLM/ViT weights are gathered layer by layer; keep the trainable ones gathered at export
        ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    return ds


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups: with weight decay, and without (biases, norms, 1-d)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower() else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Progress:
    """Progress lines at a steady rate: step, loss, lr, grad norm, samples/s, ETA.

    Args:
        total_steps: steps of the run.
        samples_per_step: global batch size.
        start_step: the step the run (re)started at, so the ETA uses this process's rate.
    """

    def __init__(self, total_steps: int, samples_per_step: int, start_step: int = 0, clock=None) -> None:
        import time

        self.clock = clock or time.perf_counter
        self.total_steps = total_steps
        self.samples_per_step = samples_per_step
        self.start_step = start_step
        self.t0 = self.clock()
        self.window_start = (start_step, self.t0)

    def update(self, step: int) -> dict[str, float]:
        """Rates since the last update and overall: samples_per_s, eta_s."""
        now = self.clock()
        last_step, last_t = self.window_start
        self.window_start = (step, now)
        window = max(now - last_t, 1e-9)
        overall = max(now - self.t0, 1e-9)
        rate_steps = (step - self.start_step) / overall
        eta = (self.total_steps - step) / rate_steps if rate_steps > 0 else float("inf")
        return {"samples_per_s": (step - last_step) * self.samples_per_step / window, "eta_s": eta}

    @staticmethod
    def line(step: int, total: int, metrics: dict[str, float]) -> str:
        eta = metrics.get("eta_s", float("inf"))
        eta_text = "?" if eta == float("inf") else f"{int(eta) // 60}:{int(eta) % 60:02d}"
        return (
            f"[train] step {step}/{total} loss {metrics.get('loss', float('nan')):.4f} "
            f"lr {metrics.get('lr', 0.0):.2e} grad-norm {metrics.get('grad_norm', float('nan')):.3f} "
            f"{metrics.get('samples_per_s', 0.0):.1f} samples/s ETA {eta_text}"
        )
