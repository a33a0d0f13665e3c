"""Sample ScienceQA in the lupantech release format (see shared/formats/scienceqa.md).

Image problems ask science-flavoured questions that the picture answers: which object has a
geometric property (three sides, four equal sides, no corners), which is larger, which is
farthest north (the hint says north is up, as on the release's map questions), and yes-or-no
questions with choices ["no", "yes"]. Text-only problems (image null) ask the same geometry
without a picture. Hints and solutions are sometimes "", as in the release.
"""

from __future__ import annotations

import random

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "scienceqa"

# shape -> (the property a question asks about, the fact the hint/lecture states)
PROPERTIES = {
    "triangle": ("has three sides", "A triangle is a flat shape with three straight sides."),
    "square": ("has four sides of the same length", "A square is a flat shape with four equal straight sides."),
    "circle": ("has no corners", "A circle is a round flat shape with no sides and no corners."),
}
SIDES = {"triangle": "three", "square": "four", "circle": "zero"}
GEOMETRY_LECTURE = "Flat shapes can be sorted by their sides and corners. " + " ".join(
    fact for _, fact in PROPERTIES.values()
)
NORTH_HINT = "North is at the top of the picture."
MAP_LECTURE = "Maps have four cardinal directions: north, south, east and west. In these pictures north is at the top."
SIZE_LECTURE = "The size of an object is how much space it takes up. A larger object covers more of the picture."

Problem = tuple[str, list[str], int, str, str, str, str]  # question, choices, answer, hint, task, lecture, solution


def _named(scene: scenes.Scene) -> list[scenes.Shape]:
    """Shapes that "the <color> <shape>" names unambiguously."""
    return [s for s in scene.shapes if scene.count(s.shape, s.color) == 1]


def _shuffled(rng: random.Random, answer: str, others: list[str]) -> tuple[list[str], int]:
    choices = [answer, *others]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _property_question(scene: scenes.Scene, rng: random.Random) -> Problem | None:
    named = _named(scene)
    options = [s for s in named if scene.count(shape=s.shape) == 1 and any(o.shape != s.shape for o in named)]
    if not options:
        return None
    target = rng.choice(options)
    others = [o.name for o in named if o.shape != target.shape][: rng.randint(1, 3)]
    choices, index = _shuffled(rng, target.name, others)
    prop, fact = PROPERTIES[target.shape]
    hint = rng.choice((fact, ""))
    solution = f"Look at the picture. The {target.name} {prop}." if rng.random() < 0.8 else ""
    return f"Which object in the picture {prop}?", choices, index, hint, "closed choice", GEOMETRY_LECTURE, solution


def _size_question(scene: scenes.Scene, rng: random.Random) -> Problem | None:
    named = _named(scene)
    pairs = [(a, b) for a in named for b in named if a.size == "large" and b.size == "small"]
    if not pairs:
        return None
    big, small = rng.choice(pairs)
    choices, index = _shuffled(rng, big.name, [small.name])
    hint = f"Figure: a {big.name} and a {small.name}."
    solution = f"The {big.name} covers more of the picture than the {small.name}, so it is larger."
    return "Which object is larger?", choices, index, hint, "closed choice", SIZE_LECTURE, solution


def _north_question(scene: scenes.Scene, rng: random.Random) -> Problem | None:
    ordered = sorted(scene.shapes, key=lambda s: s.y)
    named = _named(scene)
    top = ordered[0]
    # the top shape must be nameable and plainly higher than every other shape
    if top not in named or len(named) < 2 or ordered[1].y - top.y < 0.15:
        return None
    choices, index = _shuffled(rng, top.name, [s.name for s in named if s is not top])
    solution = f"To find the answer, look at which object is nearest the top. The {top.name} is farthest north."
    return "Which object is farthest north?", choices, index, NORTH_HINT, "closed choice", MAP_LECTURE, solution


def _yes_no_question(scene: scenes.Scene, rng: random.Random) -> Problem | None:
    named = _named(scene)
    pairs = [(a, b) for a in named for b in named if abs(a.y - b.y) >= 0.15]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    answer = "yes" if a.y < b.y else "no"
    solution = f"The {a.name} is {'above' if a.y < b.y else 'below'} the {b.name}."
    question = f"Is the {a.name} north of the {b.name}?"
    # the release lists yes-or-no choices as ["no", "yes"]
    choices = ["no", "yes"]
    return question, choices, choices.index(answer), NORTH_HINT, "yes or no", MAP_LECTURE, solution


def _text_only_question(rng: random.Random) -> Problem:
    shape = rng.choice(scenes.SHAPES)
    answer = SIDES[shape]
    choices, index = _shuffled(rng, answer, [v for v in SIDES.values() if v != answer])
    question = f"How many straight sides does a {shape} have?"
    return question, choices, index, "", "closed choice", GEOMETRY_LECTURE, PROPERTIES[shape][1]


def _record(w: SourceWriter, problem: Problem, image: str | None, split: str, topic: str) -> dict:
    question, choices, answer, hint, task, lecture, solution = problem
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": hint,
        "image": image,
        "task": task,
        "grade": f"grade{w.rng.randint(1, 6)}",
        "subject": "natural science" if topic != "geography" else "social science",
        "topic": topic,
        "category": {"geography": "Geography", "physics": "Measurement"}.get(topic, "Shapes"),
        "skill": {"geography": "Read a map: cardinal directions"}.get(topic, "Identify shapes and sizes"),
        "lecture": lecture,
        "solution": solution,
        "split": split,
    }


def _image_problem(w: SourceWriter, split: str, pid: str) -> dict:
    makers = [(_property_question, "geometry"), (_size_question, "physics"),
              (_north_question, "geography"), (_yes_no_question, "geography")]
    while True:
        scene = scenes.random_scene(w.rng, 2, 4)
        make, topic = w.rng.choice(makers)
        problem = make(scene, w.rng)
        if problem is not None:
            w.write_scene(f"images/{split}/{pid}/image.png", scene, side=w.rng.choice((96, 128)))
            return _record(w, problem, "image.png", split, topic)


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write problems.json, pid_splits.json and images/ (test holds n image problems)."""
    counts = {"train": (max(10, n // 5), 3), "val": (max(5, n // 10), 2), "test": (n, max(3, n // 4))}
    total = sum(a + b for a, b in counts.values()) + 1
    pids = [str(p) for p in range(1, total + 1)]
    w.rng.shuffle(pids)  # pids of the splits interleave, as in the release
    problems: dict[str, dict] = {}
    pid_splits: dict[str, list[str]] = {}
    for split, (with_image, text_only) in counts.items():
        listed = []
        kinds = ["image"] * with_image + ["text"] * text_only
        w.rng.shuffle(kinds)
        for kind in kinds:
            pid = pids.pop()
            if kind == "image":
                problems[pid] = _image_problem(w, split, pid)
            else:
                problems[pid] = _record(w, _text_only_question(w.rng), None, split, "geometry")
            listed.append(pid)
        pid_splits[split] = listed

    if faults:
        # choices flattened into one string, and an image problem whose image is not an image
        broken = next(p for p in pid_splits["test"] if problems[p]["image"])
        bad = pids.pop()
        problems[bad] = dict(problems[broken])
        problems[broken]["choices"] = ", ".join(problems[broken]["choices"])
        w.write_corrupt_image(f"images/test/{bad}/image.png")
        pid_splits["test"].append(bad)

    pid_splits["trainval"] = pid_splits["train"] + pid_splits["val"]
    pid_splits["minival"] = pid_splits["val"][: max(1, len(pid_splits["val"]) // 2)]
    pid_splits["minitest"] = pid_splits["test"][: max(1, len(pid_splits["test"]) // 2)]
    ordered = dict(sorted(problems.items(), key=lambda item: int(item[0])))
    w.write_json("problems.json", ordered)
    w.write_json("pid_splits.json", pid_splits)
