"""Sample TextCaps v0.1 in the release format (see shared/formats/textcaps.md).

Writes `TextCaps_0.1_{train,val,test}.json` ({"data": [...]}, one row per caption, image fields
repeated; test rows without caption fields), the pictures at `train_images/<image_id>.jpg` (train
AND val) and `test_images/<image_id>.jpg` while each row's `image_path` says "train/..." or
"test/..." as in the release, and the optional TextVQA Rosetta OCR files
`TextVQA_Rosetta_OCR_v0.2_{split}.json` holding the words actually drawn in each picture.
Every picture shows one or two words; all five captions of a picture mention them.
"""

from __future__ import annotations

import random
import re

from components.sample_world import scene as scenes
from components.sample_world.coco_caption import shapes_phrase
from components.sample_world.world import SourceWriter

SOURCE = "textcaps"

SIDE = 128
CAPTIONS_PER_IMAGE = 5
IMAGE_CLASSES = ("Poster", "Signage", "Billboard", "Street sign", "Book", "Shelf")


def scene_captions(rng: random.Random, scene: scenes.Scene) -> list[str]:
    """Five true captions of a scene with words; each one reads the written text."""
    text = " ".join(scene.words)
    noun = "word" if len(scene.words) == 1 else "words"
    shapes = shapes_phrase(scene)
    options = [
        scene.caption(rng),
        f"A white banner at the top reads {text}",
        f"The {noun} {text} written in black above {shapes}",
        f"{text.capitalize()} is written above {shapes} on a {scene.background} background",
        f"An image with the text {text} and {shapes}",
        f"A {scene.background} picture labeled {text}",
    ]
    return rng.sample(options, CAPTIONS_PER_IMAGE)


def _tokens(text: str) -> list[str]:
    return ["<s>", *re.findall(r"[a-z0-9]+", text.lower()), "</s>"]


def _image_fields(rng: random.Random, image_id: str, split: str) -> dict:
    folder = "test" if split == "test" else "train"  # the release's image_path prefix, not the disk folder
    return {
        "image_id": image_id,
        "image_classes": sorted(rng.sample(IMAGE_CLASSES, 2)),
        "flickr_original_url": f"https://farm1.sample-world.invalid/{image_id}_o.jpg",
        "flickr_300k_url": f"https://c1.sample-world.invalid/{image_id}_z.jpg",
        "image_width": SIDE,
        "image_height": SIDE,
        "set_name": split,
        "image_name": image_id,
        "image_path": f"{folder}/{image_id}.jpg",
    }


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write `n` train caption rows, max(10, n//5) val rows and a few test images, plus OCR files."""
    next_caption_id = 100000000
    sizes = {"train": n, "val": max(10, n // 5), "test": max(5, n // 20)}
    for split, count in sizes.items():
        folder = "test_images" if split == "test" else "train_images"  # val pictures sit with train's
        rows: list[dict] = []
        ocr: list[dict] = []
        pictures = 0

        def add_image(corrupt: bool = False) -> list[dict]:
            nonlocal next_caption_id
            image_id = "%016x" % w.rng.getrandbits(64)
            words = w.rng.sample(scenes.WORDS, w.rng.choice((1, 1, 2)))
            scene = scenes.random_scene(w.rng, 1, 3, words=words)
            if corrupt:
                w.write_corrupt_image(f"{folder}/{image_id}.jpg")
            else:
                w.write_scene(f"{folder}/{image_id}.jpg", scene, SIDE)
            ocr.append({"image_id": image_id, "ocr_tokens": list(words)})
            fields = _image_fields(w.rng, image_id, split)
            if split == "test":
                return [fields]  # test rows carry no captions
            captions = scene_captions(w.rng, scene)
            added = []
            for caption in captions:
                added.append(
                    {
                        **fields,
                        "caption_id": next_caption_id,
                        "caption_str": caption,
                        "caption_tokens": _tokens(caption),
                        "reference_strs": list(captions),
                        "reference_tokens": [_tokens(c) for c in captions],
                    }
                )
                next_caption_id += 1
            return added

        while (pictures if split == "test" else len(rows)) < count:
            rows.extend(add_image())
            pictures += 1
        if faults and split == "train":
            # a caption row that lost its caption, and a picture whose file is not an image
            rows[1]["caption_str"] = None
            rows.extend(add_image(corrupt=True))
        header = {"dataset_type": split, "dataset_name": "textcaps", "dataset_version": 0.1}
        w.write_json(f"TextCaps_0.1_{split}.json", {**header, "data": rows})
        w.write_json(
            f"TextVQA_Rosetta_OCR_v0.2_{split}.json",
            {"dataset_type": split, "dataset_name": "textvqa", "dataset_version": "0.2", "data": ocr},
        )
