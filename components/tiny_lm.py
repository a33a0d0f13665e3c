"""Pre-training the sample world's tiny LLM so that it can read (work in progress for issue 4).

InstructBLIP freezes a pre-trained LLM and trains only the Q-Former to talk to it. A randomly
initialised tiny LLM cannot be talked to (measured while planning issue 4: Q-Former-only
training stayed near 0 accuracy), so the tiny LLM is first trained, text only, to answer a
question whose answer appears in its context: "<caption> <question>" -> "<answer>". After
that the Q-Former only has to put caption-like information into the soft prompt.

The text comes from random sample-world scenes (`reading_examples`), so it uses the same
words as the instruction data.
"""

from __future__ import annotations

import random
from typing import Iterator

import torch

from components.sample_world import scene as scenes
from components.training import pad_sequences


def reading_examples(n: int, seed: int) -> list[tuple[str, str]]:
    """n (context + question, answer) pairs whose answer can be read off the context."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = scenes.random_scene(rng, 1, 4, words=[rng.choice(scenes.WORDS)] if rng.random() < 0.2 else None)
        question, answer = rng.choice(s.qa_pairs())
        out.append((f"{s.caption(rng)}. {question}", answer))
    return out


def vocabulary_texts(n: int = 2000, seed: int = 0) -> Iterator[str]:
    """Text for training the tiny tokenizers: captions, questions and answers of random scenes."""
    for context, answer in reading_examples(n, seed):
        yield context
        yield answer


def _batch(tokenizer, pairs: list[tuple[str, str]], decoder_only: bool) -> dict[str, torch.Tensor]:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    contexts = [tokenizer(c, add_special_tokens=False)["input_ids"] for c, _ in pairs]
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for _, a in pairs]
    if decoder_only:
        ids, mask = pad_sequences([c + a for c, a in zip(contexts, answers)], pad)
        labels, _ = pad_sequences([[-100] * len(c) + a for c, a in zip(contexts, answers)], -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    ids, mask = pad_sequences([c + [eos] for c in contexts], pad)
    labels, _ = pad_sequences(answers, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pretrain_reader(language_model, tokenizer, decoder_only: bool, steps: int = 400, batch_size: int = 32,
                    lr: float = 3e-3, seed: int = 0, log=None) -> list[float]:
    """Train the language model (text only) to answer from context; returns the loss per step.

    The caller freezes it afterwards (`components.model.set_trainable`).
    """
    torch.manual_seed(seed)
    data = reading_examples(steps * batch_size, seed)
    language_model.train()
    opt = torch.optim.AdamW(language_model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    for step in range(steps):
        batch = _batch(tokenizer, data[step * batch_size : (step + 1) * batch_size], decoder_only)
        loss = language_model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(language_model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"[tiny-lm] step {step + 1}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.3f}")
    language_model.eval()
    return losses


@torch.no_grad()
def reading_accuracy(language_model, tokenizer, decoder_only: bool, n: int = 200, seed: int = 12345) -> float:
    """Exact-match accuracy of greedy answers on fresh (context + question, answer) pairs."""
    pairs = reading_examples(n, seed)
    correct = 0
    for i in range(0, n, 50):
        chunk = pairs[i : i + 50]
        batch = _batch(tokenizer, chunk, decoder_only)
        if decoder_only:
            # greedy continuation of each context, one at a time (left padding not needed)
            for context, answer in chunk:
                ids = torch.tensor([tokenizer(context, add_special_tokens=False)["input_ids"]])
                out = language_model.generate(input_ids=ids, max_new_tokens=6, do_sample=False,
                                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                correct += text.strip() == answer.lower()
        else:
            out = language_model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                          max_new_tokens=6, do_sample=False)
            for text, (_, answer) in zip(tokenizer.batch_decode(out, skip_special_tokens=True), chunk):
                correct += text.strip() == answer.lower()
    return correct / n
