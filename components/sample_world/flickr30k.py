"""Sample Flickr30K as the Karpathy split file `dataset_flickr30k.json` (see shared/formats/flickr30k.md).

Writes `dataset_flickr30k.json` (no "filepath" or "cocoid" keys, unlike COCO's file) and the
pictures at `flickr30k-images/<photo id>.jpg`, five true captions each. The main split is the
Karpathy test split (the evaluation split); train and val are smaller.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.coco_caption import CAPTIONS_PER_IMAGE, karpathy_sentences, number_images
from components.sample_world.world import SourceWriter

SOURCE = "flickr30k"

SIDE = 128


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write `n` test images (plus small train/val splits) in the Karpathy dataset_flickr30k.json format."""
    images: list[dict] = []
    state = {"photo": 1000092795, "sentid": 0}

    def add(split: str, corrupt: bool = False) -> dict:
        filename = f"{state['photo']}.jpg"
        state["photo"] += w.rng.randint(1000, 900000)
        scene = scenes.random_scene(w.rng, 1, 4)
        if corrupt:
            w.write_corrupt_image(f"flickr30k-images/{filename}")
        else:
            w.write_scene(f"flickr30k-images/{filename}", scene, SIDE)
        sentences = karpathy_sentences(w.rng, scene, state["sentid"])
        state["sentid"] += CAPTIONS_PER_IMAGE
        record = {
            "sentids": [s["sentid"] for s in sentences],
            "imgid": -1,
            "sentences": sentences,
            "split": split,
            "filename": filename,
        }
        images.append(record)
        return record

    for _ in range(max(10, n // 5)):
        add("train")
    for _ in range(max(5, n // 20)):
        add("val")
    for _ in range(n):
        add("test")
    if faults:
        # an evaluation image whose sentences field is mangled, and one whose file is not an image
        add("test")["sentences"] = {"raw": "not a list"}
        add("test", corrupt=True)
    number_images(images, w.rng)
    w.write_json("dataset_flickr30k.json", {"images": images, "dataset": "flickr30k"})
