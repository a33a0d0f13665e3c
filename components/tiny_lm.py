"""Pre-training the sample world's tiny LLM so that it can read a scene description.

InstructBLIP freezes a pre-trained LLM and trains only the Q-Former to talk to it. A randomly
initialised tiny LLM cannot be talked to (Q-Former-only training stays near 0 accuracy), so the
tiny LLM is first trained, text only, on prompts shaped like the real training prompts, with a
written scene description where the soft visual prompt will go:

    "<scene description> <instruction>" -> "<target>"

The instruction comes from the same template sets (`components/templates/templates.yaml`) and
the question/answer generators of the sample-world writers (vqav2, okvqa, aokvqa, ocrvqa,
captions), so after this the LLM already knows every held-in task and its answer vocabulary;
the Q-Former then only has to put the facts of the image into the soft prompt.

The description (`describe`) states each fact a held-in question can ask about, once, in a
fixed order: background, then every shape as "<size> <color> <shape>", then any written words;
book covers give title, author and genre. Counts are not written out: the LLM counts the listed
shapes, so the Q-Former does not have to.
"""

from __future__ import annotations

import math
import random
from typing import Iterator

import torch

from components.datasets.base import format_options
from components.datasets.llava_instruct import dialog_context
from components.sample_world.llava_instruct import answer_sentence
from components.sample_world import okvqa as okvqa_world
from components.sample_world import ocrvqa as ocrvqa_world
from components.sample_world import scene as scenes
from components.sample_world.coco_caption import scene_caption
from components.templates import TemplateBank, render

# Task mix of the pre-training text, roughly the held-in short-answer and caption shares of the
# training stream (components/mixing.py, okvqa weighted x2 and aokvqa x0.5 there).
# Every task here is also in the Q-Former's training stream. The long-target tasks (captions,
# question generation, conversation) matter even though only short answers are scored: the
# training loss is a mean over target tokens, so they carry most of the Q-Former's gradient,
# and that gradient only says "put the scene into the soft prompt" if the LLM already does
# those tasks from a description. Keys are template-set names, plus "llava_conversation"
# (template-free: the human turn is the instruction).
TASK_WEIGHTS = {
    "image_qa": 3.0,  # vqav2: colours, sizes, shapes, counts, background, yes/no
    "knowledge_qa.open": 3.0,  # okvqa: colour knowledge, corners
    "knowledge_qa.multiple_choice": 1.0,  # aokvqa: the same questions with four options
    "reading_qa": 1.0,  # ocrvqa: book covers
    "image_captioning": 2.0,  # coco_caption, web_capfilt
    "question_generation": 2.0,  # vqav2_qg, okvqa_qg, aokvqa_qg
    "llava_conversation": 2.0,  # LLaVA conversation turns, earlier turns as "Q: .. A: .." context
}


def describe(scene: scenes.Scene) -> str:
    """The written stand-in for a scene's soft prompt: every fact a held-in question asks about."""
    parts = [f"{scene.background} background"] + [f"{s.size} {s.color} {s.shape}" for s in scene.shapes]
    if scene.words:
        parts.append("word " + " ".join(scene.words))
    return "; ".join(parts) + "."


def _book(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """A book cover as the ocrvqa writer draws it: (description, its question/answer pairs)."""
    genre = rng.choice(list(ocrvqa_world.GENRES))
    author = f"{rng.choice(ocrvqa_world.FIRST_NAMES)} {rng.choice(ocrvqa_world.LAST_NAMES)}"
    a, b = rng.sample(scenes.WORDS, 2)
    pairs = []
    if genre == "Calendars":
        year = str(rng.randint(2010, 2017))
        title = f"{a.capitalize()} Wall Calendar {year}"
        pairs.append(("What is the year printed on this calendar?", year))
    else:
        title = rng.choice((f"The {a.capitalize()} {b.capitalize()}", f"{a.capitalize()} and {b.capitalize()}"))
    other = rng.choice([g for g in ocrvqa_world.GENRES if g != genre])
    pairs += [
        ("Who wrote this book?", author),
        ("What is the title of this book?", title),
        ("What is the genre of this book?", genre),
        (f"Is this {ocrvqa_world._a(ocrvqa_world.GENRES[genre])} book?", "Yes"),
        (f"Is this {ocrvqa_world._a(ocrvqa_world.GENRES[other])} book?", "No"),
    ]
    return f"book cover; title {title}; by {author}; genre {genre}.", pairs


def _example(rng: random.Random, bank: TemplateBank, task: str) -> tuple[str, str]:
    """One (description + instruction, target) pair of `task` (a template-set name)."""
    if task == "reading_qa":
        context, pairs = _book(rng)
        question, answer = rng.choice(pairs)
        slots = {"question": question, "ocr": ""}  # the ocrvqa release has no OCR tokens
    else:
        scene = scenes.random_scene(rng, 1, 4)
        context = describe(scene)
        if task == "image_qa":
            question, answer = rng.choice(scene.qa_pairs())
            slots = {"question": question}
        elif task == "image_captioning":
            slots, answer = {}, scene_caption(rng, scene)
        elif task == "question_generation":
            pool = [(qa.question, qa.answer) for qa in okvqa_world.knowledge_questions(scene)] + scene.qa_pairs()
            answer, given = rng.choice(pool)  # the question is the target, its answer the slot
            slots = {"answer": given}
        elif task == "llava_conversation":
            turns = [(q, answer_sentence(q, a)) for q, a in rng.sample(scene.qa_pairs(), rng.randint(1, 3))]
            question, answer = turns[-1]
            context = dialog_context(turns[:-1])
            instruction = f"{context}\n{question}" if context else question
            return f"{describe(scene)} {instruction}", answer
        else:
            pool = okvqa_world.knowledge_questions(scene)
            if task == "knowledge_qa.multiple_choice":
                pool = [qa for qa in pool if len(qa.distractors) >= 3]
            if not pool:  # no shape of a colour the questions know about: draw another scene
                return _example(rng, bank, task)
            qa = rng.choice(pool)
            question, answer = qa.question, qa.answer
            slots = {"question": question}
            if task == "knowledge_qa.multiple_choice":
                choices = [qa.answer, *rng.sample(qa.distractors, 3)]
                rng.shuffle(choices)
                slots["options"] = format_options(choices)
    instruction = render(rng.choice(bank.sets[task]), slots)
    return f"{context} {instruction}", answer


def reading_examples(n: int, seed: int, tasks: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """n (description + instruction, target) pairs whose target follows from the description.

    Args:
        n: how many pairs.
        seed: fixes the scenes, tasks and templates.
        tasks: template-set name -> sampling weight (default TASK_WEIGHTS).
    """
    rng = random.Random(seed)
    bank = TemplateBank()
    weights = tasks or TASK_WEIGHTS
    names = list(weights)
    return [_example(rng, bank, task) for task in rng.choices(names, [weights[t] for t in names], k=n)]


def vocabulary_texts(n: int = 2000, seed: int = 0) -> Iterator[str]:
    """Text for training the tiny tokenizers: descriptions, instructions and targets of pre-training pairs."""
    for context, answer in reading_examples(n, seed):
        yield context
        yield answer


def pad_sequences(seqs: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest with `value`; returns (ids, attention mask).

    Kept here rather than imported from components.training so the LLM pre-training does not
    depend on the training loop's imports (MLflow and the rest).
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def _batch(tokenizer, pairs: list[tuple[str, str]], decoder_only: bool) -> dict[str, torch.Tensor]:
    """The Collator's layout with the description in place of the queries (see module docstring)."""
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
                    lr: float = 3e-3, seed: int = 0, log=None, warmup_steps: int = 30,
                    tasks: dict[str, float] | None = None) -> list[float]:
    """Train the language model (text only) to answer from a scene description; returns the loss per step.

    Linear warm-up over `warmup_steps`, then cosine decay to 0 at `steps`: a short run at a high
    peak rate needs both (a constant 3e-3 leaves the loss noisy at the end).
    The caller freezes the model afterwards (`components.model.set_trainable`).
    """
    torch.manual_seed(seed)
    data = reading_examples(steps * batch_size, seed, tasks)
    language_model.train()
    opt = torch.optim.AdamW(language_model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, min(warmup_steps, steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    losses = []
    for step in range(steps):
        batch = _batch(tokenizer, data[step * batch_size : (step + 1) * batch_size], decoder_only)
        loss = language_model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(language_model.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"[tiny-lm] step {step + 1}/{steps} loss {sum(losses[-100:]) / len(losses[-100:]):.3f}")
    language_model.eval()
    return losses


def _matches(text: str, answer: str) -> bool:
    """The evaluation's exact match: lowercased, stripped, trailing period removed."""
    return text.strip().lower().removesuffix(".") == answer.lower().removesuffix(".")


@torch.no_grad()
def reading_accuracy(language_model, tokenizer, decoder_only: bool, n: int = 200, seed: int = 12345,
                     tasks: dict[str, float] | None = None) -> float:
    """Exact-match accuracy of greedy answers on fresh (description + instruction, target) pairs."""
    pairs = reading_examples(n, seed, tasks)
    correct = 0
    for i in range(0, n, 50):
        chunk = pairs[i : i + 50]
        if decoder_only:
            # greedy continuation of each context, one at a time (left padding not needed)
            for context, answer in chunk:
                ids = torch.tensor([tokenizer(context, add_special_tokens=False)["input_ids"]])
                out = language_model.generate(input_ids=ids, max_new_tokens=24, do_sample=False,
                                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                correct += _matches(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), answer)
        else:
            batch = _batch(tokenizer, chunk, decoder_only)
            out = language_model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                          max_new_tokens=24, do_sample=False)
            for text, (_, answer) in zip(tokenizer.batch_decode(out, skip_special_tokens=True), chunk):
                correct += _matches(text, answer)
    return correct / n
