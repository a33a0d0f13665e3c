"""Sample NoCaps in the nocaps.org release format (see shared/formats/nocaps.md).

Writes `nocaps_val_4500_captions.json` (images with a `domain`, ten true captions each) and
`nocaps_test_image_info.json` (images only, no "annotations" key), with the pictures at
`val/<open_images_id>.jpg` and `test/<open_images_id>.jpg`. The main split is val (the
evaluation split); test is a handful of images.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.coco_caption import scene_caption
from components.sample_world.world import SourceWriter

SOURCE = "nocaps"

SIDE = 128
CAPTIONS_PER_IMAGE = 10
DOMAINS = ("in-domain", "near-domain", "out-domain")


def _info(description: str) -> dict:
    return {
        "url": "http://nocaps.org",
        "date_created": "2018/11/06",
        "version": "0.1",
        "description": description,
        "contributor": "nocaps team (sample world)",
        "year": 2018,
    }


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write `n` val images with ten captions each, and a few uncaptioned test images."""
    next_ann = 0

    def image_record(folder: str, image_id: int, corrupt: bool = False) -> tuple[dict, scenes.Scene]:
        open_images_id = "%016x" % w.rng.getrandbits(64)
        file_name = f"{open_images_id}.jpg"
        scene = scenes.random_scene(w.rng, 1, 4)
        if corrupt:
            w.write_corrupt_image(f"{folder}/{file_name}")
        else:
            w.write_scene(f"{folder}/{file_name}", scene, SIDE)
        record = {
            "id": image_id,
            "open_images_id": open_images_id,
            "height": SIDE,
            "width": SIDE,
            "coco_url": f"https://s3.amazonaws.com/nocaps/{folder}/{file_name}",
            "file_name": file_name,
            "license": 0,
            "date_captured": "2018-11-06 11:04:33",
        }
        if folder == "val":
            record["domain"] = w.rng.choice(DOMAINS)
        return record, scene

    images, annotations = [], []
    for image_id in range(n + (1 if faults else 0)):
        # with faults, the last val image's file is not an image
        record, scene = image_record("val", image_id, corrupt=faults and image_id == n)
        images.append(record)
        for _ in range(CAPTIONS_PER_IMAGE):
            caption = scene_caption(w.rng, scene) + w.rng.choice((".", ".", ""))
            annotations.append({"image_id": image_id, "id": next_ann, "caption": caption})
            next_ann += 1
    if faults:
        # an annotation whose caption is missing
        annotations.insert(3, {"image_id": 0, "id": next_ann})
    w.write_json(
        "nocaps_val_4500_captions.json",
        {"licenses": [], "info": _info("nocaps validation dataset"), "images": images, "annotations": annotations},
    )

    test_images = [image_record("test", image_id)[0] for image_id in range(max(5, n // 20))]
    w.write_json(
        "nocaps_test_image_info.json",
        {"licenses": [], "info": _info("nocaps test dataset"), "images": test_images},
    )
