"""Sample OK-VQA in the okvqa.allenai.org release format (see shared/formats/okvqa.md).

VQA-v1-style question and annotation files over COCO-2014-named images. The questions
need a little outside knowledge (what colour a ripe banana is, how many corners a
triangle has) but their answers are still true of the drawn scene. Each of the ten
answers has the annotator's `raw_answer` and the processed `answer` (articles dropped,
plurals singular, number words as digits), and there is no `multiple_choice_answer`.

`knowledge_questions()` is shared with the A-OKVQA writer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "okvqa"

SUBSETS = {"train": "train2014", "val": "val2014"}
SIDE = 128

LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}
# the release's question_types map (annotation code -> knowledge category)
QUESTION_TYPES = {
    "one": "Vehicles and Transportation",
    "two": "Brands, Companies and Products",
    "three": "Objects, Material and Clothing",
    "four": "Sports and Recreation",
    "five": "Cooking and Food",
    "six": "Geography, History, Language and Culture",
    "seven": "People and Everyday life",
    "eight": "Plants and Animals",
    "nine": "Science and Technology",
    "ten": "Weather and Climate",
    "other": "Other",
}

# colour -> (something everyone knows has that colour, its question_type code)
COLOR_KNOWLEDGE = {
    "yellow": ("a ripe banana", "five"),
    "red": ("a ripe tomato", "five"),
    "green": ("fresh grass", "eight"),
    "blue": ("a clear summer sky", "ten"),
    "orange": ("a carrot", "five"),
    "purple": ("an eggplant", "five"),
    "white": ("fresh snow", "ten"),
    "black": ("coal", "three"),
}
# colour -> a fruit or vegetable of that colour
FOODS = {"yellow": "banana", "red": "tomato", "orange": "carrot", "purple": "eggplant", "green": "lime"}
# colour -> what a traffic light of that colour tells drivers
TRAFFIC_LIGHTS = {"red": "stop", "green": "go", "yellow": "slow down"}
CORNERS = {"triangle": "three", "square": "four", "circle": "zero"}
SHAPE_CLUES = {"triangle": "with three corners", "square": "with four equal sides", "circle": "with no corners"}
DIGITS = {"zero": "0", "three": "3", "four": "4", "five": "5", "six": "6"}


@dataclass(frozen=True)
class KnowledgeQA:
    """A question needing outside knowledge whose answer is true of one scene.

    Attributes:
        question: the question text.
        answer: the answer in natural words (the A-OKVQA correct choice).
        processed: the answer as OK-VQA's processing writes it (digits, singular, no article).
        variants: other raw spellings annotators use for the same answer.
        distractors: wrong answers of the same kind (for multiple-choice options).
        question_type: OK-VQA question_type code.
        rationales: three sentences explaining the answer (A-OKVQA).
    """

    question: str
    answer: str
    processed: str
    variants: tuple[str, ...]
    distractors: tuple[str, ...]
    question_type: str
    rationales: tuple[str, str, str]


def _plural(noun: str) -> str:
    return f"{noun}es" if noun.endswith("o") else f"{noun}s"


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def knowledge_questions(scene: scenes.Scene) -> list[KnowledgeQA]:
    """Every knowledge question this module can ask that is true of `scene`, in a fixed order."""
    out: list[KnowledgeQA] = []
    for color, (thing, qtype) in COLOR_KNOWLEDGE.items():
        obj = scene.unique(color=color)
        if obj is None:
            continue
        out.append(
            KnowledgeQA(
                question=f"Which object in the picture has the color of {thing}?",
                answer=obj.shape,
                processed=obj.shape,
                variants=(f"the {obj.shape}", _a(obj.shape), f"{obj.shape}s"),
                distractors=tuple(s for s in (*scenes.SHAPES, "star", "hexagon") if s != obj.shape),
                question_type=qtype,
                rationales=(
                    f"{thing[0].upper() + thing[1:]} is {color}, and the only {color} thing here is {_a(obj.shape)}.",
                    f"The {color} object is {_a(obj.shape)}, the same color as {thing}.",
                    f"Only one object in the picture is {color}: {_a(obj.shape)}.",
                ),
            )
        )
    for shape in scenes.SHAPES:
        obj = scene.unique(shape=shape)
        if obj is None:
            continue
        out.append(
            KnowledgeQA(
                question=f"What color is the shape {SHAPE_CLUES[shape]}?",
                answer=obj.color,
                processed=obj.color,
                variants=(obj.color.capitalize(), f"{obj.color}."),
                distractors=tuple(c for c in scenes.COLORS if c != obj.color),
                question_type="nine",
                rationales=(
                    f"The shape {SHAPE_CLUES[shape]} is a {shape}, and it is {obj.color}.",
                    f"A {shape} is the shape {SHAPE_CLUES[shape]}; this one is {obj.color}.",
                    f"The {shape} in the picture is {obj.color}.",
                ),
            )
        )
        food = FOODS.get(obj.color)
        if food is not None:
            out.append(
                KnowledgeQA(
                    question=f"Which fruit or vegetable has the same color as the {shape}?",
                    answer=food,
                    processed=food,
                    variants=(_plural(food), _a(food)),
                    distractors=tuple(f for f in FOODS.values() if f != food),
                    question_type="five",
                    rationales=(
                        f"The {shape} is {obj.color}, and a ripe {food} is {obj.color} too.",
                        f"{_plural(food).capitalize()} are {obj.color} like the {shape}.",
                        f"The {shape} has the {obj.color} color of {_a(food)}.",
                    ),
                )
            )
        signal = TRAFFIC_LIGHTS.get(obj.color)
        if signal is not None:
            out.append(
                KnowledgeQA(
                    question=f"If a traffic light showed the color of the {shape}, what should a driver do?",
                    answer=signal,
                    processed=signal,
                    variants=(signal.capitalize(), f"{signal}!"),
                    distractors=tuple(s for s in ("stop", "go", "slow down", "turn around", "honk") if s != signal),
                    question_type="one",
                    rationales=(
                        f"The {shape} is {obj.color}, and a {obj.color} light means {signal}.",
                        f"A {obj.color} traffic light tells drivers to {signal}.",
                        f"Drivers {signal} at a {obj.color} light, the color of the {shape}.",
                    ),
                )
            )
    for color in scenes.COLORS:
        obj = scene.unique(color=color)
        if obj is None:
            continue
        corners = CORNERS[obj.shape]
        out.append(
            KnowledgeQA(
                question=f"How many corners does the {color} shape have?",
                answer=corners,
                processed=DIGITS[corners],
                variants=(DIGITS[corners], "none" if corners == "zero" else f"{corners}."),
                distractors=tuple(c for c in DIGITS if c != corners),
                question_type="nine",
                rationales=(
                    f"The {color} shape is a {obj.shape}, which has {corners} corners.",
                    f"A {obj.shape} has {corners} corners and the {color} shape is a {obj.shape}.",
                    f"The {color} object is a {obj.shape}.",
                ),
            )
        )
    return out


def processed_form(qa: KnowledgeQA, raw: str) -> str:
    """What OK-VQA's answer processing makes of one raw spelling of `qa`'s answer."""
    return qa.processed if raw in (qa.answer, *qa.variants) else raw


def annotator_answers(rng: random.Random, qa: KnowledgeQA, count: int = 10) -> list[str]:
    """`count` raw answers: mostly the natural answer, some other spellings of it."""
    return [qa.answer if rng.random() < 0.7 else rng.choice(qa.variants) for _ in range(count)]


def _annotation(w: SourceWriter, qa: KnowledgeQA, image_id: int, qid: int) -> dict:
    answers = []
    for i, raw in enumerate(annotator_answers(w.rng, qa), start=1):
        answers.append(
            {
                "answer_id": i,
                "raw_answer": raw,
                "answer_confidence": "yes" if w.rng.random() < 0.9 else "no",
                "answer": processed_form(qa, raw),
            }
        )
    return {
        "image_id": image_id,
        "answer_type": "other",
        "question_type": qa.question_type,
        "question_id": qid,
        "answers": answers,
    }


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write train/val questions, annotations and COCO-named images; `n` is the size of train."""
    sizes = {"train": n, "val": max(10, n // 5)}
    next_image_id = 51606
    for split, count in sizes.items():
        subset = SUBSETS[split]
        questions, annotations = [], []
        while len(questions) < count:
            image_id = next_image_id
            next_image_id += 11
            scene = scenes.random_scene(w.rng, 1, 4)
            pool = knowledge_questions(scene)
            if not pool:
                continue
            w.write_scene(f"{subset}/COCO_{subset}_{image_id:012d}.jpg", scene, SIDE)
            ks = w.rng.sample(range(10), min(len(pool), w.rng.randint(1, 2)))
            for k, qa in zip(ks, w.rng.sample(pool, len(ks))):
                qid = image_id * 10 + k
                questions.append({"image_id": image_id, "question": qa.question, "question_id": qid})
                annotations.append(_annotation(w, qa, image_id, qid))
        if faults and split == "train":
            # an answer that lost its processed text, and an image file that is not an image
            del annotations[1]["answers"][2]["answer"]
            bad_image = next_image_id
            next_image_id += 11
            w.write_corrupt_image(f"{subset}/COCO_{subset}_{bad_image:012d}.jpg")
            qa = knowledge_questions(scenes.Scene("gray", [scenes.Shape("circle", "red", "large", 0.5, 0.5)]))[0]
            questions.append({"image_id": bad_image, "question": qa.question, "question_id": bad_image * 10})
            annotations.append(_annotation(w, qa, bad_image, bad_image * 10))
        w.write_json(
            f"OpenEnded_mscoco_{subset}_questions.json",
            {"license": LICENSE, "data_subtype": subset, "task_type": "Open-Ended", "questions": questions},
        )
        w.write_json(
            f"mscoco_{subset}_annotations.json",
            {"license": LICENSE, "data_subtype": subset, "question_types": QUESTION_TYPES, "annotations": annotations},
        )
