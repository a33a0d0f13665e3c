"""Answering (image, instruction) pairs with a trained model: validation, evaluation, MLflow, serving.

One code path builds generation inputs for every consumer (`Collator.prompts`), so the model
sees exactly the prompt layout it was trained on.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from components.training import Collator

_PUNCT_END = re.compile(r"[\s.]+$")


def normalize_answer(text: str) -> str:
    """Lower-case, collapse whitespace, drop trailing periods: the exact-match comparison form."""
    return _PUNCT_END.sub("", " ".join(str(text).lower().split()))


def exact_match(prediction: str, references: Sequence[str]) -> bool:
    """True when the normalised prediction equals any normalised reference."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(r) for r in references)


def strip_prompt(out: torch.Tensor, prompt_ids: torch.Tensor) -> torch.Tensor:
    """Decoder-only generate may return prompt + continuation (it varies with the transformers
    version); keep the continuation."""
    width = prompt_ids.shape[1]
    if out.shape[1] > width and torch.equal(out[:, :width], prompt_ids):
        return out[:, width:]
    return out


def to_device(batch: dict[str, torch.Tensor], device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """A collated batch on `device`, its floating-point tensors (pixels) cast to `dtype`."""
    return {k: v.to(device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}


class Answerer:
    """Greedy (or beam) answers from an InstructBlipForConditionalGeneration.

    Args:
        model: the model (any device; inputs follow it).
        collator: the `Collator` that built its training batches (prompt layout, tokenizers).
    """

    def __init__(self, model, collator: Collator) -> None:
        self.model = model
        self.collator = collator

    @torch.no_grad()
    def answer_batch(self, batch: dict[str, Any], max_new_tokens: int = 16, num_beams: int = 1,
                     **generate_kwargs: Any) -> list[str]:
        """Answers for a column batch with `instruction` and `pixel_values` or `image` (bytes).

        Extra keyword arguments go to `generate` (e.g. `synced_gpus=True` under ZeRO-3, where every
        rank must keep stepping until all ranks have finished).
        """
        param = next(self.model.parameters())
        inputs = to_device(self.collator.prompts(batch), param.device, param.dtype)
        tok = self.collator.tokenizer
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                pad_token_id=self.collator.pad_id,
                eos_token_id=tok.eos_token_id,
                **generate_kwargs,
            )
        finally:
            self.model.train(was_training)
        if self.collator.decoder_only:
            out = strip_prompt(out, inputs["input_ids"])
        return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]

    def answer(self, images: Sequence[bytes], instructions: Sequence[str], max_new_tokens: int = 16,
               num_beams: int = 1, batch_size: int = 16) -> list[str]:
        """Answers for encoded images and their instructions, in order.

        Raises:
            ValueError: the two lists differ in length.
            components.imaging.MediaError: an image cannot be decoded.
        """
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} images but {len(instructions)} instructions")
        answers: list[str] = []
        for i in range(0, len(images), batch_size):
            chunk = {"image": list(images[i : i + batch_size]), "instruction": list(instructions[i : i + batch_size])}
            answers.extend(self.answer_batch(chunk, max_new_tokens, num_beams))
        return answers


def collator_for(model, processor, **options) -> Collator:
    """The Collator matching a model's LLM family and image token."""
    return Collator(
        processor, bool(model.config.use_decoder_only_language_model), int(model.config.image_token_index), **options
    )


def load_answerer(model_dir: str, device: str = "cpu", bf16_on_gpu: bool = False) -> Answerer:
    """An Answerer for an exported model directory (what `iblip train` writes as its final model).

    The directory is loaded with `InstructBlipForConditionalGeneration.from_pretrained` and
    `InstructBlipProcessor.from_pretrained`; the instruction-awareness switch used in training
    is read back from `training_options.json` when present. On CPU the weights are float32 whatever
    dtype they were saved in (a bf16 run exports bf16; bf16 arithmetic is slower on most CPUs:
    measured 11.3 against 8.5 ms for one tiny-model answer, 18.5 against 15.1 for 32); on a GPU
    they become bf16 with `bf16_on_gpu` (evaluation and serving: the paper evaluates in half
    precision) and otherwise stay as saved (the pyfunc model).
    """
    import json
    import os

    import fsspec

    from components.model import load_pretrained

    model, processor = load_pretrained(model_dir)
    options: dict[str, Any] = {}
    options_file = os.path.join(model_dir, TRAINING_OPTIONS)
    fs, path = fsspec.core.url_to_fs(options_file)
    if fs.exists(path):
        with fs.open(path, "r") as f:
            options = json.load(f)
    model.to(device).eval()
    if device == "cpu":
        model.float()
    elif bf16_on_gpu and device.startswith("cuda"):
        model.to(torch.bfloat16)
    return Answerer(model, collator_for(model, processor, **options))


# saved next to an exported model: the Collator options it was trained with
TRAINING_OPTIONS = "training_options.json"
