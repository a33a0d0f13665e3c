"""Flickr30K on the Karpathy split (`caption_datasets.zip`); held out, evaluated on the 1K test images.

Layout under the source root (as released):
    dataset_flickr30k.json                 {"images": [...], "dataset": "flickr30k"}
    flickr30k-images/<flickr photo id>.jpg

Each entry of "images" is one picture with five captions:
    {"filename": "1000092795.jpg", "imgid": int, "split": "train"|"val"|"test", "sentids": [int x5],
     "sentences": [{"tokens": [str], "raw": str, "imgid": int, "sentid": int} x5]}
Unlike dataset_coco.json there is no "filepath" (nor "cocoid"): the image file is always
`flickr30k-images/<filename>`.

Every split gives one example per image (key = imgid): target = its first caption, answers =
all five captions (the CIDEr references).
"""

from __future__ import annotations

from typing import Any, Iterator

from components.datasets.base import HELD_OUT, Adapter, DatasetSpec, Example, Reject, require
from components.datasets.coco_caption import read_karpathy

ANNOTATION_FILE = "dataset_flickr30k.json"
IMAGE_FOLDER = "flickr30k-images"


def _imgid(record: Any) -> int:
    return require(record, "imgid", int)


def _image_path(record: Any) -> str:
    return f"{IMAGE_FOLDER}/{require(record, 'filename', str, allow_empty=False)}"


class Flickr30kAdapter(Adapter):
    source = "flickr30k"
    datasets = (
        DatasetSpec(
            "flickr30k", "image_captioning", HELD_OUT, "image_captioning", ("test",), eval_split="test", task="generate"
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)  # KeyError for a dataset this source does not provide
        yield from read_karpathy(
            self, ANNOTATION_FILE, split, image_key=_imgid, image_path=_image_path, per_caption=False
        )
