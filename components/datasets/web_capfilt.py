"""Web CapFilt: BLIP's filtered synthetic captions of web images (CC3M + CC12M + SBU, ~14M).

Layout under the source root:
    ccs_synthetic_filtered_large.json      [{"url": str, "caption": str}, ...]  (as released by BLIP)
    images/<sha1(url)[:16]>.jpg            (downloaded by the user; see below)

The release ships captions and image URLs only, no pictures. Users download them (img2dataset,
wget, ...) into `images/` under the image root (default: the source root), naming each file by
the first 16 hex digits of the SHA-1 of its UTF-8 URL plus ".jpg"; `image_file_name(url)` gives
that name. A URL that could not be downloaded simply has no file, and prepare rejects that record
as a missing image. The release has no ids, so a record's key is its position in the list.

Captions are model-generated (lower case, no final period). One split: train.
"""

from __future__ import annotations

import hashlib
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
)

ANNOTATION_FILE = "ccs_synthetic_filtered_large.json"
IMAGE_FOLDER = "images"


def image_file_name(url: str) -> str:
    """The file a downloaded web image is stored under: sha1(url)[:16] + ".jpg"."""
    return hashlib.sha1(url.encode("utf-8")).hexdigest()[:16] + ".jpg"


class WebCapFiltAdapter(Adapter):
    source = "web_capfilt"
    datasets = (DatasetSpec("web_capfilt", "image_captioning", HELD_IN, "image_captioning", ("train",)),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)  # KeyError for a dataset this source does not provide
        if split != "train":
            raise ValueError(f"web_capfilt has only a 'train' split, not {split!r}")
        items = self.load_json(ANNOTATION_FILE)
        if not isinstance(items, list):
            raise SourceError(f"web_capfilt: {self.uri(ANNOTATION_FILE)} is not a JSON list")
        for index, item in enumerate(items):
            key = str(index)
            yield guard(key, f"{ANNOTATION_FILE}#{key}", lambda item=item, key=key: self._example(item, key))

    def _example(self, item: Any, key: str) -> Example:
        url = require(item, "url", str)  # hashed exactly as given: that is the URL that was fetched
        if not url.strip():
            raise RecordError("field 'url' is empty")
        caption = require(item, "caption", str).strip()
        if not caption:
            raise RecordError("field 'caption' is empty")
        return Example(
            key=key,
            source=f"{ANNOTATION_FILE}#{key}",
            image=self.media_uri(f"{IMAGE_FOLDER}/{image_file_name(url)}"),
            target=caption,
            answers=[caption],
        )
