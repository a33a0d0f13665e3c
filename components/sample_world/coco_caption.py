"""Sample COCO Caption as the Karpathy split file `dataset_coco.json` (see shared/formats/coco_caption.md).

Writes `dataset_coco.json` and the pictures at `<filepath>/<filename>` (train2014/ for Karpathy
"train", val2014/ for "restval", "val" and "test"), five true captions per picture, some with the
release's trailing space. The Karpathy helpers here are reused by the Flickr30K writer.
"""

from __future__ import annotations

import random
import re

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "coco_caption"

SIDE = 128
CAPTIONS_PER_IMAGE = 5


def caption_tokens(text: str) -> list[str]:
    """Lower-case word tokens without punctuation, as the Karpathy files store them."""
    return re.findall(r"[a-z0-9]+", text.lower())


def shapes_phrase(scene: scenes.Scene) -> str:
    """'a red circle and two blue squares': the shapes of a scene, grouped by colour and shape."""
    groups: dict[tuple[str, str], int] = {}
    for s in scene.shapes:
        groups[(s.color, s.shape)] = groups.get((s.color, s.shape), 0) + 1
    parts = [
        f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}" if k == 1 else f"{scenes.NUMBER_WORDS[k]} {color} {shape}s"
        for (color, shape), k in groups.items()
    ]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_caption(rng: random.Random, scene: scenes.Scene) -> str:
    """One true caption of a scene (without written words), worded in one of several ways."""
    shapes = shapes_phrase(scene)
    count = len(scene.shapes)
    how_many = f"{scenes.NUMBER_WORDS[count].capitalize()} {'shape' if count == 1 else 'shapes'}"
    wordings = (
        lambda: scene.caption(rng),
        lambda: f"A {scene.background} background with {shapes}",
        lambda: f"{shapes[0].upper()}{shapes[1:]} on a plain {scene.background} background",
        lambda: f"{how_many} on a {scene.background} background",
        lambda: f"A simple drawing of {shapes}",
    )
    return rng.choice(wordings)()


def karpathy_sentences(
    rng: random.Random, scene: scenes.Scene, first_sentid: int, count: int = CAPTIONS_PER_IMAGE
) -> list[dict]:
    """`count` true captions of `scene` as Karpathy sentence records (imgid filled in later).

    Like the release, endings vary: with a period, without, or with a period and a trailing space.
    """
    out = []
    for i in range(count):
        raw = scene_caption(rng, scene) + rng.choice((".", ".", ". ", ""))
        out.append({"tokens": caption_tokens(raw), "raw": raw, "imgid": -1, "sentid": first_sentid + i})
    return out


def number_images(images: list[dict], rng: random.Random) -> None:
    """Shuffle the image records (the release interleaves splits) and number them: imgid = position."""
    rng.shuffle(images)
    for imgid, record in enumerate(images):
        record["imgid"] = imgid
        for sentence in record["sentences"]:
            if isinstance(sentence, dict):
                sentence["imgid"] = imgid


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write `n` training captions (plus val/test images) in the Karpathy dataset_coco.json format."""
    images: list[dict] = []
    state = {"cocoid": 391895, "sentid": 770337}

    def add(split: str, corrupt: bool = False) -> dict:
        cocoid = state["cocoid"]
        state["cocoid"] += w.rng.randint(3, 40)
        filepath = "train2014" if split == "train" else "val2014"  # restval pictures come from val2014
        filename = f"COCO_{filepath}_{cocoid:012d}.jpg"
        scene = scenes.random_scene(w.rng, 1, 4)
        if corrupt:
            w.write_corrupt_image(f"{filepath}/{filename}")
        else:
            w.write_scene(f"{filepath}/{filename}", scene, SIDE)
        sentences = karpathy_sentences(w.rng, scene, state["sentid"])
        state["sentid"] += CAPTIONS_PER_IMAGE + w.rng.randint(0, 2000)
        record = {
            "filepath": filepath,
            "sentids": [s["sentid"] for s in sentences],
            "filename": filename,
            "imgid": -1,
            "split": split,
            "sentences": sentences,
            "cocoid": cocoid,
        }
        images.append(record)
        return record

    train_captions = 0
    while train_captions < n:
        # every third training picture is a "restval" one (Karpathy's val2014 leftovers)
        add("restval" if len(images) % 3 == 2 else "train")
        train_captions += CAPTIONS_PER_IMAGE
    for _ in range(max(10, n // 5)):
        add("val")
    for _ in range(max(5, n // 20)):
        add("test")
    if faults:
        # a training caption that lost its text, and a training picture whose file is not an image
        del images[0]["sentences"][1]["raw"]
        add("train", corrupt=True)
    number_images(images, w.rng)
    w.write_json("dataset_coco.json", {"images": images, "dataset": "coco"})
