"""TextCaps v0.1: captions that read the text in the picture (images are TextVQA's, Open Images).

Layout under the source root (as released):
    TextCaps_0.1_{train,val,test}.json     {"dataset_type", "dataset_name": "textcaps", "dataset_version": 0.1, "data": [...]}
    train_images/<image_id>.jpg            train AND val pictures (TextVQA's train_val_images.zip)
    test_images/<image_id>.jpg
    TextVQA_Rosetta_OCR_v0.2_{train,val,test}.json    optional: {"data": [{"image_id": str, "ocr_tokens": [str]}]}

Rows of "data" are ONE PER CAPTION (the image fields repeat on each caption of an image):
    {"image_id": str, "image_name": str, "image_path": "train/<image_id>.jpg", "set_name": str,
     "image_classes": [str], "image_width": int, "image_height": int, "flickr_original_url": str,
     "flickr_300k_url": str, "caption_id": int, "caption_str": str, "caption_tokens": [str],
     "reference_strs": [str x5], "reference_tokens": [[str]]}
Test rows carry the image fields only (no caption_* / reference_*).

Quirk: `image_path` says "train/..." (or "test/...") but the zips unpack to `train_images/` (val
too) and `test_images/`, so the picture is resolved from `image_id`, not from `image_path`.

Train and val give one example per caption row (key = caption_id): target = that caption, answers
= the image's reference captions. Test gives one example per image (key = image_id), no target.
The {ocr} slot holds the image's Rosetta OCR tokens joined with ", " when the OCR file of that
split is present, else "".
"""

from __future__ import annotations

from typing import Any, Iterator

from components.datasets.base import (
    HELD_IN,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    require,
    text_list,
)

SPLITS = ("train", "val", "test")
# where each split's pictures live: val pictures sit with train's
IMAGE_FOLDERS = {"train": "train_images", "val": "train_images", "test": "test_images"}


def caption_file(split: str) -> str:
    """The TextCaps annotation file of one split."""
    return f"TextCaps_0.1_{split}.json"


def ocr_file(split: str) -> str:
    """The (optional) Rosetta OCR file of one split, shared with TextVQA."""
    return f"TextVQA_Rosetta_OCR_v0.2_{split}.json"


class TextCapsAdapter(Adapter):
    source = "textcaps"
    datasets = (DatasetSpec("textcaps", "captioning_reading", HELD_IN, "captioning_reading", ("train", "val")),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)  # KeyError for a dataset this source does not provide
        if split not in SPLITS:
            raise ValueError(f"textcaps has no split {split!r}; known: {list(SPLITS)}")
        relpath = caption_file(split)
        rows = self._data(relpath)
        ocr = self._ocr(split)
        seen_images: set[str] = set()
        for index, row in enumerate(rows):
            if split == "test":
                image_id = row.get("image_id") if isinstance(row, dict) else None
                key = image_id if isinstance(image_id, str) and image_id else f"index{index}"
                if key in seen_images:
                    continue  # test has no captions: one example per picture
                seen_images.add(key)
            else:
                caption_id = row.get("caption_id") if isinstance(row, dict) else None
                valid = isinstance(caption_id, int) and not isinstance(caption_id, bool)
                key = str(caption_id) if valid else f"index{index}"
            yield guard(key, f"{relpath}#{key}", lambda row=row: self._example(row, split, relpath, ocr))

    def _data(self, relpath: str) -> list[Any]:
        data = self.load_json(relpath)
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list):
            raise SourceError(f"textcaps: {self.uri(relpath)} has no 'data' list")
        return rows

    def _ocr(self, split: str) -> dict[str, list[str] | str]:
        """image_id -> OCR tokens, or -> an error message for a malformed OCR entry; {} without a file."""
        relpath = ocr_file(split)
        if not self.exists(relpath):
            return {}
        tokens: dict[str, list[str] | str] = {}
        for entry in self._data(relpath):
            image_id = entry.get("image_id") if isinstance(entry, dict) else None
            if not isinstance(image_id, str):
                continue  # an OCR entry without an image id belongs to no example
            try:
                tokens[image_id] = [t for t in text_list(entry.get("ocr_tokens"), "ocr_tokens") if t]
            except RecordError as exc:
                # remembered, so that the image's captions are rejected rather than silently losing their OCR
                tokens[image_id] = f"{relpath}: {exc}"
        return tokens

    def _example(self, row: Any, split: str, relpath: str, ocr: dict[str, list[str] | str]) -> Example:
        image_id = require(row, "image_id", str, allow_empty=False)
        tokens = ocr.get(image_id, [])
        if isinstance(tokens, str):
            raise RecordError(f"bad OCR entry for image {image_id}: {tokens}")
        image = self.media_uri(f"{IMAGE_FOLDERS[split]}/{image_id}.jpg")
        slots = {"ocr": ", ".join(tokens)}
        if split == "test":
            return Example(key=image_id, source=f"{relpath}#{image_id}", image=image, slots=slots)
        caption_id = require(row, "caption_id", int)
        caption = require(row, "caption_str", str).strip()
        if not caption:
            raise RecordError("field 'caption_str' is empty")
        references = [caption]
        if "reference_strs" in row:
            references = [r for r in text_list(row["reference_strs"], "reference_strs") if r] or [caption]
        return Example(
            key=str(caption_id),
            source=f"{relpath}#{caption_id}",
            image=image,
            slots=slots,
            target=caption,
            answers=references,
        )
