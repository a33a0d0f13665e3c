"""Sample Visual Dialog v1.0 in the visualdialog.org release format (see shared/formats/visdial.md).

Each dialog is ten question/answer rounds true of its scene, stored the release's way: global
question and answer pools per file (questions lower-case and without "?"), rounds as pool
indices, 100 answer options per round (the true answer plus distractors) and gt_index. The
answer pool is padded with object phrases that answer none of the questions, so every round
has 100 distinct options of which exactly one is right. Train images are COCO names, split
between train2014/ and val2014/ as in the release; val/test images are VisualDialog_*2018
names. Test dialogs stop at round_id, whose round has options but no answer.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "visdial"

ROUNDS = 10
OPTIONS = 100
# distractor answers: things that never appear in a scene, so they are wrong for every question
_ADJECTIVES = (
    "a wooden", "an old", "a plastic", "a shiny", "a broken", "a tall", "a folded", "a striped", "a tiny", "a heavy",
)
_NOUNS = ("chair", "table", "lamp", "bicycle", "boat", "tree", "bottle", "clock", "book", "umbrella", "kite", "sandwich")
FILLERS = tuple(f"{a} {n}" for a in _ADJECTIVES for n in _NOUNS)


def _dialog_pairs(w: SourceWriter, scene: scenes.Scene) -> list[tuple[str, str]]:
    """Ten (question, answer) pairs true of the scene, in the release's lower-case style."""
    pairs = [(q.rstrip("?").lower(), a.lower()) for q, a in scene.qa_pairs()]
    pairs.append(("how many shapes are there", str(len(scene.shapes))))
    pairs.append(("is the picture in color", "yes"))
    for color in scenes.COLORS:
        if scene.count(color=color) == 0:
            pairs.append((f"is anything {color}", "no"))
    unique = list(dict.fromkeys(pairs))
    return w.rng.sample(unique, ROUNDS)


def _caption(w: SourceWriter, scene: scenes.Scene) -> str:
    text = scene.caption(w.rng)
    return text[0].lower() + text[1:]


def _draw_dialogs(w: SourceWriter, count: int, image_name, next_id: int) -> tuple[list[dict], int]:
    """Scenes, their images and their dialogs as text; returns (dialogs, next free image id)."""
    dialogs = []
    for _ in range(count):
        next_id += w.rng.randint(1, 500)
        scene = scenes.random_scene(w.rng, 2, 4)
        w.write_scene(image_name(next_id), scene, side=w.rng.choice((96, 128)))
        dialogs.append({"image_id": next_id, "caption": _caption(w, scene), "pairs": _dialog_pairs(w, scene)})
    return dialogs, next_id


def _encode(w: SourceWriter, dialogs: list[dict], split: str) -> dict:
    """Turn text dialogs into the release's pooled, index-based file."""
    questions = sorted({q for d in dialogs for q, _ in d["pairs"]})
    answers = sorted({a for d in dialogs for _, a in d["pairs"]} | set(FILLERS))
    w.rng.shuffle(questions)
    w.rng.shuffle(answers)
    q_index = {q: i for i, q in enumerate(questions)}
    a_index = {a: i for i, a in enumerate(answers)}
    out = []
    for d in dialogs:
        rounds = []
        last = d.get("round_id", ROUNDS)
        for number, (q, a) in enumerate(d["pairs"][:last], start=1):
            rnd: dict = {"question": q_index[q], "answer": a_index[a]}
            if split != "test" or number == last:
                wrong = w.rng.sample([i for i in range(len(answers)) if i != a_index[a]], OPTIONS - 1)
                gt = w.rng.randrange(OPTIONS)
                rnd["answer_options"] = wrong[:gt] + [a_index[a]] + wrong[gt:]
                rnd["gt_index"] = gt
            if split == "test" and number == last:
                del rnd["answer"], rnd["gt_index"]  # the evaluated round is unanswered
            rounds.append(rnd)
        entry = {"image_id": d["image_id"], "caption": d["caption"], "dialog": rounds}
        if split == "test":
            entry["round_id"] = last
        out.append(entry)
    data = {"questions": questions, "answers": answers, "dialogs": out}
    return {"data": data, "split": f"{split}2018", "version": "1.0"}


def _visdial_name(split: str):
    folder = f"VisualDialog_{split}2018"
    return lambda image_id: f"{folder}/{folder}_{image_id:012d}.jpg"


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write visdial_1.0_{train,val,test}.json and their images (val holds n dialogs)."""
    val, next_id = _draw_dialogs(w, n, _visdial_name("val"), 185000)
    if faults:
        # an extra dialog whose image is not an image
        next_id += 17
        bad = _visdial_name("val")(next_id)
        w.write_corrupt_image(bad)
        val.append({**val[0], "image_id": next_id})
    val_file = _encode(w, val, "val")
    if faults:
        # a last-round option pointing past the end of the answer pool
        pool = len(val_file["data"]["answers"])
        val_file["data"]["dialogs"][1]["dialog"][-1]["answer_options"][3] = pool + 1000
    w.write_json("visdial_1.0_val.json", val_file)

    test, next_id = _draw_dialogs(w, 5, _visdial_name("test"), next_id)
    for d in test:
        d["round_id"] = w.rng.randint(1, ROUNDS)
    w.write_json("visdial_1.0_test.json", _encode(w, test, "test"))

    # train images are COCO's, from both train2014 and val2014
    def coco_name(image_id: int) -> str:
        subset = "val2014" if image_id % 4 == 0 else "train2014"
        return f"{subset}/COCO_{subset}_{image_id:012d}.jpg"

    train, _ = _draw_dialogs(w, max(5, n // 10), coco_name, 9)
    w.write_json("visdial_1.0_train.json", _encode(w, train, "train"))
