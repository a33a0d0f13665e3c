"""Pre-training the sample world's tiny LLM so that it can read a soft scene description.

InstructBLIP freezes a pre-trained LLM and trains only the Q-Former to talk to it through a
soft prompt of query vectors. A randomly initialised tiny LLM cannot be talked to, so it is
first trained (text only) on prompts shaped like the real training prompts, with a written
stand-in for the soft prompt:

    [slot vectors] <instruction>  ->  <target>

The stand-in is a grid of slots, one per cell of the tiny ViT's patch grid and one per query
token (so `num_query_tokens = (image_size / patch_size)^2`): the slot of a cell is the sum of
the LLM's own embeddings of the words that say what is there, "<size> <color> <shape>" when a
shape's centre lies in the cell (the sample world lays shapes out one per cell of this grid, so a cell
holds at most one centre), "<background colour> background" when it is empty, "white writing"
where words are written, "beige writing" on a book cover (but for its genre emblem). Everything a
held-in question asks about is in the slots; which cell is which is the LLM's business (it counts
circles by counting circle slots).

Why slots rather than a written sentence ("gray background; small red circle; ..."): with one
slot per cell, query k of the Q-Former only has to look at cell k, an attention pattern that does
not depend on the image, and read what the ViT (`components.tiny_vision`, pre-trained to label
cells the same way) says is there. With the sample world's shapes on the same 4 x 4 grid, the trained
Q-Former gets close to this stand-in: 0.56 against 0.59 exact match on fresh VQAv2-style questions
(issue 4; see the README, "Does it learn?").

The instructions come from the same template sets (`components/templates/templates.yaml`) and
the question/answer generators of the sample-world writers (vqav2, okvqa, aokvqa, ocrvqa,
captions, LLaVA conversations), so the LLM already knows every held-in task and its answers.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
import re
import threading
import weakref
from typing import Iterator

import torch

from components.datasets.base import format_options
from components.datasets.llava_instruct import dialog_context
from components.sample_world import llava_instruct as llava_world
from components.sample_world import textcaps as textcaps_world
from components.sample_world.llava_instruct import answer_sentence
from components.sample_world import okvqa as okvqa_world
from components.sample_world import ocrvqa as ocrvqa_world
from components.sample_world import scene as scenes
from components.sample_world.coco_caption import scene_caption
from components.templates import TemplateBank, render
from components.inference import exact_match
from components.training import loss_terms, pad_sequences, padding_id

# Task mix of the pre-training text. Every task of the Q-Former's training stream is here, so
# that every training target asks the Q-Former for the same thing, "put the scene into the soft
# prompt": measured in issue 4, training on tasks the LLM had never seen (LLaVA detail/reasoning,
# TextCaps) pulled the Q-Former elsewhere and held-in short-answer accuracy did not rise. The
# short-answer tasks carry most of the weight: they are what validation scores, they are cheap
# (short targets) and reading one slot's attribute is the skill every other task builds on.
# Keys are template-set names, plus the template-free LLaVA tasks (the human turn is the instruction).
TASK_WEIGHTS = {
    "image_qa": 3.0,  # vqav2: colours, sizes, shapes, counts, background, yes/no
    "knowledge_qa.open": 3.0,  # okvqa: colour knowledge, corners
    "knowledge_qa.multiple_choice": 1.0,  # aokvqa: the same questions with four options
    "reading_qa": 1.0,  # ocrvqa: book covers
    "image_captioning": 0.5,  # coco_caption, web_capfilt
    "captioning_reading": 0.25,  # textcaps: captions that quote the OCR tokens
    "question_generation": 0.5,  # vqav2_qg, okvqa_qg, aokvqa_qg
    "llava_conversation": 0.5,  # LLaVA conversation turns, earlier turns as "Q: .. A: .." context
    "llava_detail": 0.25,  # LLaVA detailed descriptions
    "llava_reasoning": 0.25,  # LLaVA complex reasoning
}


Slot = tuple[str, ...]  # the words of one cell, e.g. ("small", "red", "circle")
_FIELD = re.compile(r"\{[^}]*\}")  # a template's placeholder
# every word a slot can hold
SLOT_WORDS = {*scenes.COLORS, *scenes.BACKGROUNDS, *scenes.SHAPES, *scenes.SIZES, "background", "writing",
              *ocrvqa_world.GENRES.values(), "emblem"}


def cell_of(x: float, y: float, grid: int) -> int:
    """Row-major index of the grid cell holding the point (x, y) (fractions of the image side)."""
    return min(int(y * grid), grid - 1) * grid + min(int(x * grid), grid - 1)


def slot_words(scene: scenes.Scene, grid: int) -> list[Slot]:
    """The words of every cell of a grid x grid split of the scene's image (see module docstring)."""
    cells: list[Slot] = [(scene.background, "background")] * (grid * grid)
    if scene.words:  # `scenes.draw` writes them on a white band over the top quarter
        for row in range(grid):
            if (row + 0.5) / grid < 0.25:
                cells[row * grid : (row + 1) * grid] = [("white", "writing")] * grid
    for s in scene.shapes:
        cells[cell_of(s.x, s.y, grid)] = (s.size, s.color, s.shape)
    return cells


def _book(rng: random.Random, grid: int) -> tuple[list[Slot], list[tuple[str, str]]]:
    """A book cover as the ocrvqa writer draws it: (its slots, its question/answer pairs).

    At the tiny model's resolution the writing cannot be read: every cell is "beige writing"
    except the bottom-right one, which holds the genre's emblem (`ocrvqa_world.EMBLEMS`), named
    by its genre (`cover_slots`). So the genre and the yes/no genre questions can be answered;
    author, title and year cannot.
    """
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
    return cover_slots(genre, grid), pairs


def cover_slots(genre: str, grid: int) -> list[Slot]:
    """The slots of a book cover of this genre (see `_book`): "beige writing", and in the emblem's
    cell the genre's word and "emblem" (("romantic", "emblem")).

    The emblem is named by what it stands for, as a pre-trained image encoder knows a cookbook
    cover when it sees one, not by its colour and shape: then "Is this a romantic book?" is a
    match of one word, like "Is the circle red?". Named by colour and shape, the reader had to
    pair nine adjectives with nine emblems, and after 1,500 pre-training steps it still answered
    those yes/no questions at chance (169 of 300 with perfect slots, measured in issue 4).
    """
    cells: list[Slot] = [("beige", "writing")] * (grid * grid)
    mark = ocrvqa_world.emblem(genre)
    cells[cell_of(mark.x, mark.y, grid)] = (ocrvqa_world.GENRES[genre], "emblem")
    return cells


class _Writer:
    """What the sample world's LLaVA generators need of a SourceWriter: its random generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng


def _example(rng: random.Random, bank: TemplateBank, task: str, grid: int) -> tuple[list[Slot], str, str]:
    if task == "reading_qa":
        cells, pairs = _book(rng, grid)
        question, answer = rng.choice(pairs)
        values = {"question": question, "ocr": ""}  # the ocrvqa release has no OCR tokens
        return cells, render(rng.choice(bank.sets[task]), values), answer
    scene = scenes.random_scene(rng, 1, 4, words=[rng.choice(scenes.WORDS)] if rng.random() < 0.1 else None)
    cells = slot_words(scene, grid)
    if task == "image_qa":
        question, answer = rng.choice(scene.qa_pairs())
        values = {"question": question}
    elif task == "image_captioning":
        values, answer = {}, scene_caption(rng, scene)
    elif task == "question_generation":
        pool = [(qa.question, qa.answer) for qa in okvqa_world.knowledge_questions(scene)] + scene.qa_pairs()
        answer, given = rng.choice(pool)  # the question is the target, its answer the slot
        values = {"answer": given}
    elif task == "captioning_reading":  # textcaps: the written words also arrive as OCR tokens
        scene = scenes.random_scene(rng, 1, 3, words=rng.sample(scenes.WORDS, rng.choice((1, 1, 2))))
        cells = slot_words(scene, grid)
        values, answer = {"ocr": ", ".join(scene.words)}, rng.choice(textcaps_world.scene_captions(rng, scene))
    elif task == "llava_detail":
        return cells, rng.choice(llava_world.DETAIL_PROMPTS), llava_world.describe(scene, _Writer(rng))
    elif task == "llava_reasoning":
        question, answer = llava_world.reasoning(scene, _Writer(rng))
        return cells, question, answer
    elif task == "llava_conversation":
        turns = [(q, answer_sentence(q, a)) for q, a in rng.sample(scene.qa_pairs(), rng.randint(1, 3))]
        question, answer = turns[-1]
        context = dialog_context(turns[:-1])
        return cells, (f"{context}\n{question}" if context else question), answer
    else:
        pool = okvqa_world.knowledge_questions(scene)
        if task == "knowledge_qa.multiple_choice":
            pool = [qa for qa in pool if len(qa.distractors) >= 3]
        if not pool:  # no shape of a colour the questions know about: draw another scene
            return _example(rng, bank, task, grid)
        qa = rng.choice(pool)
        answer = qa.answer
        values = {"question": qa.question}
        if task == "knowledge_qa.multiple_choice":
            choices = [qa.answer, *rng.sample(qa.distractors, 3)]
            rng.shuffle(choices)
            values["options"] = format_options(choices)
    return cells, render(rng.choice(bank.sets[task]), values), answer


def reading_examples(n: int, seed: int, tasks: dict[str, float] | None = None,
                     grid: int = 4) -> list[tuple[list[Slot], str, str]]:
    """n (slots, instruction, target) examples whose target follows from the slots.

    Args:
        n: how many.
        seed: fixes the scenes, tasks and templates.
        tasks: template-set name -> sampling weight (default TASK_WEIGHTS).
        grid: cells per side (the tiny ViT's patch grid).
    """
    rng = random.Random(seed)
    bank = TemplateBank()
    weights = tasks or TASK_WEIGHTS
    names = list(weights)
    examples = []
    # the default pre-training's 192,000 take seconds: a stop (`stoppable`) is honoured meanwhile too
    for i, task in enumerate(rng.choices(names, [weights[t] for t in names], k=n)):
        if i % 4096 == 0:
            check_stop(f"making pre-training examples ({i} of {n})")
        examples.append(_example(rng, bank, task, grid))
    return examples


def vocabulary_texts(n: int = 2000, seed: int = 0) -> Iterator[str]:
    """Text for training the tiny tokenizers: slot words, digits, every instruction template of every
    task (placeholders left out) and the instructions and targets of pre-training examples.

    Only the sample world's own text, never a dataset's: the tiny model is a fixed pre-trained
    checkpoint like a hub model (its tokenizers do not change with the training data), which is
    what lets it be built once and cached (`components.tiny_cache`).
    """
    yield " ".join(sorted(SLOT_WORDS))
    yield " ".join("0123456789")
    for templates in TemplateBank().sets.values():
        for template in templates:
            yield _FIELD.sub(" ", template)
    for _, instruction, target in reading_examples(n, seed):
        yield instruction
        yield target


# token ids of each slot, per tokenizer: a few dozen distinct slots, tokenized once instead of
# batch x cells times per pre-training step (a third of the step time otherwise)
_SLOT_IDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _slot_ids(tokenizer, slot: Slot) -> list[int]:
    cache = _SLOT_IDS.setdefault(tokenizer, {})
    if slot not in cache:
        cache[slot] = tokenizer(" ".join(slot), add_special_tokens=False)["input_ids"]
    return cache[slot]


def slot_embeddings(language_model, tokenizer, slots: list[list[Slot]]) -> torch.Tensor:
    """(batch, cells, hidden): each slot is the sum of the LLM's input embeddings of its words' tokens."""
    embed = language_model.get_input_embeddings()
    ids = [[_slot_ids(tokenizer, tuple(slot)) for slot in example] for example in slots]
    width = max(len(t) for example in ids for t in example)
    pad = padding_id(tokenizer)
    # one tensor built from padded lists (filling it cell by cell was a fifth of a pre-training step)
    table = torch.tensor([[t + [pad] * (width - len(t)) for t in example] for example in ids], dtype=torch.long)
    mask = torch.tensor([[[1.0] * len(t) + [0.0] * (width - len(t)) for t in example] for example in ids])
    return (embed(table) * mask.unsqueeze(-1).to(embed.weight.dtype)).sum(2)


def _batch(language_model, tokenizer, examples, decoder_only: bool, with_targets: bool = True,
           max_target_tokens: int = 0) -> dict[str, torch.Tensor]:
    """The Collator's layout (components.training) with slot vectors in place of the query outputs.

    T5: encoder [slots][instruction][</s>], labels [target][</s>]. Decoder-only: [slots][BOS]
    [instruction][target][</s>] with the loss on the target only; without targets the prompts
    are left-padded for generation.
    """
    eos, pad = tokenizer.eos_token_id, padding_id(tokenizer)
    bos = [tokenizer.bos_token_id] if decoder_only and tokenizer.bos_token_id is not None else []
    embed = language_model.get_input_embeddings()
    slots = slot_embeddings(language_model, tokenizer, [s for s, _, _ in examples])
    n = slots.shape[1]
    texts = tokenizer([i for _, i, _ in examples], add_special_tokens=False)["input_ids"]  # one call per batch
    targets = tokenizer([t for _, _, t in examples], add_special_tokens=False)["input_ids"]
    if max_target_tokens:  # as components.training.Collator cuts them (</s> included)
        targets = [t[: max_target_tokens - 1] for t in targets]
    targets = [t + [eos] for t in targets]
    if not decoder_only:
        ids, text_mask = pad_sequences([t + [eos] for t in texts], pad)
        out = {"inputs_embeds": torch.cat([slots, embed(ids)], 1),
               "attention_mask": torch.cat([torch.ones(len(examples), n, dtype=torch.long), text_mask], 1)}
        if with_targets:
            out["labels"] = pad_sequences(targets, -100)[0]
        return out
    if with_targets:
        seqs = [bos + t + a for t, a in zip(texts, targets)]
        ids, text_mask = pad_sequences(seqs, pad)
        labels = pad_sequences([[-100] * (n + len(bos) + len(t)) + a for t, a in zip(texts, targets)], -100)[0]
        return {"inputs_embeds": torch.cat([slots, embed(ids)], 1),
                "attention_mask": torch.cat([torch.ones(len(examples), n, dtype=torch.long), text_mask], 1),
                "labels": labels}
    # left-padded: [pad..][slots][BOS][instruction], so every prompt ends at the last position
    ids, text_mask = pad_sequences([bos + t for t in texts], pad, left=True)
    pads = (text_mask == 0).sum(1).tolist()
    parts = [torch.cat([embed(ids[i, :k]), slots[i], embed(ids[i, k:])], 0) for i, k in enumerate(pads)]
    mask = torch.tensor([[0] * k + [1] * (n + ids.shape[1] - k) for k in pads], dtype=torch.long)
    return {"inputs_embeds": torch.stack(parts), "attention_mask": mask}


def token_mean_loss(language_model, tokenizer, examples, decoder_only: bool, max_target_tokens: int = 0) -> torch.Tensor:
    """The batch's loss (mean over all its target tokens), computed as two sub-batches: answers of
    one or two words, and longer targets. The same value as one forward over the whole batch, but
    the few long targets no longer pad every short answer to their length (a quarter less time per
    pre-training step, measured in issue 4)."""
    groups: dict[bool, list] = {}
    for example in examples:
        groups.setdefault(len(example[2].split()) > 2, []).append(example)
    total, tokens = 0.0, 0
    for part in groups.values():
        batch = _batch(language_model, tokenizer, part, decoder_only, max_target_tokens=max_target_tokens)
        weighted, n = loss_terms(language_model(**batch).loss, batch["labels"])
        total = total + weighted
        tokens += n
    return total / tokens


def pretrain_reader(language_model, tokenizer, decoder_only: bool, steps: int = 300, batch_size: int = 128,
                    lr: float = 5e-3, seed: int = 0, log=None, warmup_steps: int = 30,
                    tasks: dict[str, float] | None = None, grid: int = 4, max_target_tokens: int = 0) -> list[float]:
    """Train the language model (text only) to answer from slot vectors; returns the loss per step.

    `max_target_tokens` (0 = no bound) cuts long targets as the training collator does.

    Linear warm-up over `warmup_steps`, then cosine decay to 0 at `steps`: a short run at a high
    peak rate needs both (a constant 3e-3 leaves the loss noisy at the end).
    The caller freezes the model afterwards (`components.model.set_trainable`).
    """
    torch.manual_seed(seed)
    data = reading_examples(steps * batch_size, seed, tasks, grid)
    language_model.train()

    def step_loss(step: int):
        examples = data[step * batch_size : (step + 1) * batch_size]
        return token_mean_loss(language_model, tokenizer, examples, decoder_only, max_target_tokens)

    losses = fit(list(language_model.parameters()), step_loss, steps, lr, warmup_steps, log, "tiny-lm", every=100)
    language_model.eval()
    return losses


class PretrainingStopped(RuntimeError):
    """The pre-training was asked to stop (`stoppable`)."""


_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("iblip_pretraining_stop", default=None)


@contextlib.contextmanager
def stoppable(event: threading.Event):
    """Within this block (in the thread that runs the pre-training), `fit` checks `event` before each
    step and raises PretrainingStopped once it is set: another thread can end minutes of pre-training
    within a step. A Python thread cannot be killed, and one still inside torch when the interpreter
    exits aborts the process."""
    token = _STOP.set(event)
    try:
        yield
    finally:
        _STOP.reset(token)


def check_stop(where: str) -> None:
    """Raise PretrainingStopped when the enclosing `stoppable` block's event is set."""
    stop = _STOP.get()
    if stop is not None and stop.is_set():
        raise PretrainingStopped(f"stopped while {where}")


def fit(params: list, step_loss, steps: int, lr: float, warmup_steps: int, log=None, tag: str = "", every: int = 100) -> list[float]:
    """The short pre-training loops of the tiny towers: AdamW (wd 0.01), gradient clipping at 1,
    linear warm-up then cosine decay to 0; `step_loss(step)` returns the loss of one step.
    Returns the loss per step and logs the running mean every `every` steps."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warmup = max(1, min(warmup_steps, steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    losses = []
    for step in range(steps):
        check_stop(f"{tag} pre-training at step {step} of {steps}")
        loss = step_loss(step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
        if log and (step + 1) % every == 0:
            log(f"[{tag}] step {step + 1}/{steps} loss {sum(losses[-every:]) / len(losses[-every:]):.3f}")
    return losses


@torch.no_grad()
def reading_accuracy(language_model, tokenizer, decoder_only: bool, n: int = 200, seed: int = 12345,
                     tasks: dict[str, float] | None = None, grid: int = 4) -> float:
    """Exact-match accuracy of greedy answers on fresh (slots, instruction, target) examples."""
    examples = reading_examples(n, seed, tasks, grid)
    correct = 0
    for i in range(0, n, 50):
        chunk = examples[i : i + 50]
        batch = _batch(language_model, tokenizer, chunk, decoder_only, with_targets=False)
        out = language_model.generate(**batch, max_new_tokens=24, do_sample=False,
                                      pad_token_id=padding_id(tokenizer), eos_token_id=tokenizer.eos_token_id)
        for text, (_, _, answer) in zip(tokenizer.batch_decode(out, skip_special_tokens=True), chunk):
            correct += exact_match(text, [answer])
    return correct / n
