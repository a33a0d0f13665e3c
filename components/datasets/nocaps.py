"""NoCaps (nocaps.org): novel-object captioning on Open Images; held out, evaluated on val.

Layout under the source root (as released, COCO-caption style; images as LAVIS stores them):
    nocaps_val_4500_captions.json     {"info", "licenses", "images": [...], "annotations": [...]}
    nocaps_test_image_info.json       {"info", "licenses", "images": [...]}   (no "annotations")
    val/<file_name>                   Open Images validation pictures, "<open_images_id>.jpg"
    test/<file_name>

images:      {"id": int, "open_images_id": str, "file_name": str, "coco_url": str, "height": int,
              "width": int, "license": int, "date_captured": str, "domain": "in-domain"|"near-domain"|"out-domain"}
annotations: {"image_id": int, "id": int, "caption": str}     (10 per val image)

One example per image (key = image id): target = its first caption, answers = all ten (the
CIDEr references). Test images have no captions (empty target and answers). The per-image
`domain` (used for NoCaps' per-domain CIDEr) is not carried: `Example` has no field for it.
"""

from __future__ import annotations

from typing import Any, Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    require,
)

FILES = {"val": "nocaps_val_4500_captions.json", "test": "nocaps_test_image_info.json"}


class NoCapsAdapter(Adapter):
    source = "nocaps"
    datasets = (
        DatasetSpec("nocaps", "image_captioning", HELD_OUT, "image_captioning", ("val",), eval_split="val", task="generate"),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)  # KeyError for a dataset this source does not provide
        if split not in FILES:
            raise ValueError(f"nocaps has no split {split!r}; known: {sorted(FILES)}")
        relpath = FILES[split]
        data = self.load_json(relpath)
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(images, list):
            raise SourceError(f"nocaps: {self.uri(relpath)} has no 'images' list")

        captions: dict[int, list[str]] = {}
        if split == "val":
            annotations = data.get("annotations")
            if not isinstance(annotations, list):
                raise SourceError(f"nocaps: {self.uri(relpath)} has no 'annotations' list")
            for index, ann in enumerate(annotations):
                # a caption that cannot be attached to an image is its own reject
                ann_id = ann.get("id") if isinstance(ann, dict) else None
                key = f"ann{ann_id}" if isinstance(ann_id, int) and not isinstance(ann_id, bool) else f"ann_index{index}"
                try:
                    image_id = require(ann, "image_id", int)
                    caption = require(ann, "caption", str).strip()
                    if not caption:
                        raise RecordError("field 'caption' is empty")
                except RecordError as exc:
                    yield Reject(key, f"{relpath}#{key}", f"annotation: {exc}")
                    continue
                captions.setdefault(image_id, []).append(caption)

        for index, image in enumerate(images):
            image_id = image.get("id") if isinstance(image, dict) else None
            key = str(image_id) if isinstance(image_id, int) and not isinstance(image_id, bool) else f"index{index}"
            yield guard(key, f"{relpath}#{key}", lambda image=image: self._example(image, split, relpath, captions))

    def _example(self, image: Any, split: str, relpath: str, captions: dict[int, list[str]]) -> Example:
        image_id = require(image, "id", int)
        file_name = require(image, "file_name", str, allow_empty=False)
        refs: list[str] = []
        if split == "val":
            refs = captions.get(image_id, [])
            if not refs:
                raise RecordError(f"no captions for image {image_id}")
        return Example(
            key=str(image_id),
            source=f"{relpath}#{image_id}",
            image=self.media_uri(f"{split}/{file_name}"),
            target=refs[0] if refs else "",
            answers=refs,
        )
