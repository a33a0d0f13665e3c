"""Sample IconQA in the lupantech release format (see shared/formats/iconqa.md).

All three sub-tasks are written, as in the release: choose_txt (the bulk: text choices, int
answer), choose_img (choice_<i>.png pictures in the pid folder, int answer) and fill_in_blank
(no choices, the answer as a string). Each problem sits in problems.json and, again, in its own
folder's data.json; pid_splits.json lists the pids per "<sub-task>_<split>".
"""

from __future__ import annotations

import random

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "iconqa"

DATA = "iconqa_data"
GRADES = ("prek", "kindergarten", "grade1", "grade2")
LIKELIHOOD = ("certain", "probable", "unlikely", "impossible")


def _with_distractors(rng: random.Random, answer: str, pool: list[str], k: int) -> tuple[list[str], int]:
    """`answer` plus up to k-1 other values of `pool`, shuffled; returns (choices, answer index)."""
    others = [p for p in pool if p != answer]
    choices = rng.sample(others, min(k - 1, len(others))) + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def choice_question(scene: scenes.Scene, rng: random.Random) -> tuple[str, list[str], int]:
    """A multiple-choice question true of `scene`: (question, text choices, correct index)."""
    kinds = ["count", "background"]
    if any(scene.unique(shape=s) for s in scenes.SHAPES):
        kinds += ["color", "size"]
    if any(scene.unique(color=c) for c in scenes.COLORS):
        kinds.append("shape")
    kinds.append("likely")
    kind = rng.choice(kinds)
    if kind == "count":
        shape = rng.choice(scenes.SHAPES)
        answer = str(scene.count(shape=shape))
        choices, _ = _with_distractors(rng, answer, [str(i) for i in range(7)], rng.randint(3, 4))
        choices.sort(key=int)  # counting options are listed in order
        return f"How many {shape}s are there?", choices, choices.index(answer)
    if kind == "background":
        choices, index = _with_distractors(rng, scene.background, list(scenes.BACKGROUNDS), 3)
        return "What color is the background?", choices, index
    if kind == "color":
        obj = rng.choice([scene.unique(shape=s) for s in scenes.SHAPES if scene.unique(shape=s)])
        choices, index = _with_distractors(rng, obj.color, list(scenes.COLORS), rng.randint(2, 4))
        return f"What color is the {obj.shape}?", choices, index
    if kind == "size":
        obj = rng.choice([scene.unique(shape=s) for s in scenes.SHAPES if scene.unique(shape=s)])
        choices, index = _with_distractors(rng, obj.size, list(scenes.SIZES), 2)
        return f"Is the {obj.shape} large or small?", choices, index
    if kind == "shape":
        obj = rng.choice([scene.unique(color=c) for c in scenes.COLORS if scene.unique(color=c)])
        choices, index = _with_distractors(rng, obj.shape, list(scenes.SHAPES), 3)
        return f"Which shape is {obj.color}?", choices, index
    # "likely": picking one shape at random, how likely is a given colour? An even split has no
    # single right word, so such colours are never asked about.
    total = len(scene.shapes)
    present = sorted({s.color for s in scene.shapes})
    present_ok = [c for c in present if 2 * scene.count(color=c) != total]
    absent = [c for c in scenes.COLORS if scene.count(color=c) == 0]
    color = rng.choice(present_ok if present_ok and rng.random() < 0.75 else absent)
    hits = scene.count(color=color)
    if hits == total:
        answer = "certain"
    elif hits == 0:
        answer = "impossible"
    else:
        answer = "probable" if 2 * hits > total else "unlikely"
    choices = list(LIKELIHOOD)
    rng.shuffle(choices)
    return f"If you pick a shape without looking, how likely is it that it is {color}?", choices, choices.index(answer)


def _problem(w: SourceWriter, question: str, choices: list, answer, ques_type: str, split: str) -> dict:
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "ques_type": ques_type,
        "grade": w.rng.choice(GRADES),
        "label": f"S{w.rng.randint(1, 12)}",
        "split": split,
    }


def _choose_img(w: SourceWriter, folder: str, split: str) -> dict:
    """A prompt shape and 2-4 choice pictures; exactly one shows the same coloured shape."""
    target = scenes.Shape(w.rng.choice(scenes.SHAPES), w.rng.choice(list(scenes.COLORS)), "large", 0.5, 0.5)
    background = w.rng.choice(list(scenes.BACKGROUNDS))
    w.write_scene(f"{folder}/image.png", scenes.Scene(background, [target]), side=96)
    count = w.rng.randint(2, 4)
    right = w.rng.randrange(count)
    choices = []
    for i in range(count):
        if i == right:
            shape, color = target.shape, target.color
        else:  # differ in colour, shape or both
            while True:
                shape, color = w.rng.choice(scenes.SHAPES), w.rng.choice(list(scenes.COLORS))
                if (shape, color) != (target.shape, target.color):
                    break
        name = f"choice_{i}.png"
        picture = scenes.Scene(background, [scenes.Shape(shape, color, "large", 0.5, 0.5)])
        w.write_scene(f"{folder}/{name}", picture, side=96)
        choices.append(name)
    question = "Which picture shows the same shape in the same color?"
    return _problem(w, question, choices, right, "choose_img", split)


def _fill_in_blank(w: SourceWriter, folder: str, split: str) -> dict:
    scene = scenes.random_scene(w.rng, 1, 4)
    w.write_scene(f"{folder}/image.png", scene, side=w.rng.choice((96, 128)))
    shape = w.rng.choice(scenes.SHAPES)
    return _problem(w, f"How many {shape}s are there?", [], str(scene.count(shape=shape)), "fill_in_blank", split)


def _choose_txt(w: SourceWriter, folder: str, split: str) -> dict:
    scene = scenes.random_scene(w.rng, 1, 4)
    w.write_scene(f"{folder}/image.png", scene, side=w.rng.choice((96, 128)))
    question, choices, index = choice_question(scene, w.rng)
    return _problem(w, question, choices, index, "choose_txt", split)


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write problems.json, pid_splits.json and the per-problem folders (choose_txt test has n)."""
    counts = {
        "test": {"choose_txt": n, "choose_img": 3, "fill_in_blank": 3},
        "train": {"choose_txt": max(10, n // 5), "choose_img": 2, "fill_in_blank": 2},
        "val": {"choose_txt": max(5, n // 10), "choose_img": 2, "fill_in_blank": 2},
    }
    total = sum(sum(c.values()) for c in counts.values()) + 1
    pid_pool = [str(p) for p in w.rng.sample(range(1, 20 * total), total)]
    makers = {"choose_txt": _choose_txt, "choose_img": _choose_img, "fill_in_blank": _fill_in_blank}
    problems: dict[str, dict] = {}
    pid_splits: dict[str, list[str]] = {}
    for split, per_task in counts.items():
        for task, count in per_task.items():
            pids = [pid_pool.pop() for _ in range(count)]
            for pid in pids:
                folder = f"{DATA}/iconqa/{split}/{task}/{pid}"
                problems[pid] = makers[task](w, folder, split)
            pid_splits[f"{task}_{split}"] = pids

    if faults:
        # a choose_txt answer written as text (as fill_in_blank answers are), and a corrupt image
        broken = pid_splits["choose_txt_test"][1]
        problems[broken]["answer"] = str(problems[broken]["answer"])
        bad = pid_pool.pop()
        w.write_corrupt_image(f"{DATA}/iconqa/test/choose_txt/{bad}/image.png")
        problems[bad] = _problem(w, "What color is the background?", ["gray", "beige", "teal"], 0, "choose_txt", "test")
        pid_splits["choose_txt_test"].append(bad)

    for pid, problem in problems.items():
        folder = f"{DATA}/iconqa/{problem['split']}/{problem['ques_type']}/{pid}"
        w.write_json(f"{folder}/data.json", {k: v for k, v in problem.items() if k != "split"})
    for task in makers:
        pid_splits[f"{task}_trainval"] = pid_splits[f"{task}_train"] + pid_splits[f"{task}_val"]
        for split in ("train", "val", "test"):
            full = pid_splits[f"{task}_{split}"]
            pid_splits[f"{task}_mini{split}"] = full[: max(1, len(full) // 4)]
    w.write_json(f"{DATA}/problems.json", problems)
    w.write_json(f"{DATA}/pid_splits.json", pid_splits)
