"""Sample VSR in the cambridgeltl release format (see shared/formats/vsr.md).

Every row states a spatial relation between two shapes of its image ("The red circle is left of
the blue square."). True rows use the relation `Scene.relation` computes; false rows use its
opposite, which is false whatever the secondary offset. The same pool of rows is split twice,
as the release does: the zero-shot split (subj/obj fields, test as the main split) and the random
split (reference_frame field, a reshuffle of the same rows). Images are COCO-2017 style names in
one flat folder, some with a val2017 image_link.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "vsr"

OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _named_pair(w: SourceWriter) -> tuple[scenes.Scene, scenes.Shape, scenes.Shape]:
    """A scene with two shapes that "the <color> <shape>" names unambiguously."""
    while True:
        scene = scenes.random_scene(w.rng, 2, 3)
        named = [s for s in scene.shapes if scene.count(s.shape, s.color) == 1]
        if len(named) >= 2:
            a, b = w.rng.sample(named, 2)
            return scene, a, b


def _validators(w: SourceWriter, n: int) -> str:
    """Validator ids the way the split files store them: a stringified list."""
    return str(w.rng.sample(range(1, 70), n))


def _rows_for_image(w: SourceWriter, image_id: int) -> list[dict]:
    """Draw one scene, write its image, and return one or two statements about it."""
    scene, a, b = _named_pair(w)
    name = f"{image_id:012d}.jpg"
    w.write_scene(f"images/{name}", scene, side=w.rng.choice((96, 128)))
    subset = "val2017" if w.rng.random() < 0.1 else "train2017"
    truth = scene.relation(a, b)
    labels = [w.rng.randint(0, 1)]
    if w.rng.random() < 0.3:
        labels.append(1 - labels[0])  # a second row on the same image, with the other label
    rows = []
    for label in labels:
        relation = truth if label == 1 else OPPOSITE[truth]
        agree, disagree = (w.rng.randint(1, 3), w.rng.randint(0, 1))
        rows.append(
            {
                "image": name,
                "image_link": f"http://images.cocodataset.org/{subset}/{name}",
                "caption": f"The {a.name} is {relation} the {b.name}.",
                "label": label,
                "relation": relation,
                "subj": a.name,
                "obj": b.name,
                "annotator_id": w.rng.randint(1, 40),
                "vote_true_validator_id": _validators(w, agree if label else disagree),
                "vote_false_validator_id": _validators(w, disagree if label else agree),
            }
        )
    return rows


def _as_random_row(w: SourceWriter, row: dict) -> dict:
    """A zero-shot row in the random split's key set: no subj/obj, a reference_frame."""
    out = {k: v for k, v in row.items() if k not in ("subj", "obj")}
    out["reference_frame"] = w.rng.choice((None, None, 0.0, 1.0))
    return out


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write zero-shot and random splits (zero-shot test has `n` rows) and their images."""
    sizes = {"test": n, "train": max(10, n // 5), "dev": max(5, n // 10)}
    image_id = 17000
    zeroshot: dict[str, list[dict]] = {}
    for stem, count in sizes.items():
        rows: list[dict] = []
        while len(rows) < count:
            image_id += w.rng.randint(1, 900)
            rows.extend(_rows_for_image(w, image_id))
        zeroshot[stem] = rows[:count]

    # the random split re-partitions the same rows (70/10/20), before any fault is planted
    pool = [_as_random_row(w, r) for stem in ("train", "dev", "test") for r in zeroshot[stem]]
    w.rng.shuffle(pool)
    cut_train, cut_dev = int(len(pool) * 0.7), int(len(pool) * 0.8)
    random_split = {"train": pool[:cut_train], "dev": pool[cut_train:cut_dev], "test": pool[cut_dev:]}

    if faults:
        test = zeroshot["test"]
        # a label written as a string, and a row whose image is not an image
        test[1] = {**test[1], "label": str(test[1]["label"])}
        image_id += 13
        bad = f"{image_id:012d}.jpg"
        w.write_corrupt_image(f"images/{bad}")
        test.append({**test[0], "image": bad, "image_link": f"http://images.cocodataset.org/train2017/{bad}"})

    for stem, rows in zeroshot.items():
        w.write_jsonl(f"splits/zeroshot/{stem}.jsonl", rows)
    for stem, rows in random_split.items():
        w.write_jsonl(f"splits/random/{stem}.jsonl", rows)
