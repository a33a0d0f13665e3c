"""COCO Caption on the Karpathy split (`caption_datasets.zip`), the split InstructBLIP trains on.

Layout under the source root (as released; images are COCO 2014):
    dataset_coco.json                              {"images": [...], "dataset": "coco"}
    train2014/COCO_train2014_<cocoid:012d>.jpg
    val2014/COCO_val2014_<cocoid:012d>.jpg

Each entry of "images" is one picture with its five human captions:
    {"filepath": "train2014"|"val2014", "filename": "COCO_val2014_%012d.jpg", "imgid": int, "cocoid": int,
     "split": "train"|"restval"|"val"|"test", "sentids": [int],
     "sentences": [{"tokens": [str], "raw": str, "imgid": int, "sentid": int}]}
The image file is `<filepath>/<filename>`.

Split mapping: Karpathy "train" + "restval" (val2014 pictures moved into training) -> train,
"val" -> val, "test" -> test. Training gives one example per caption (key = sentid); val and test
give one example per image (key = cocoid) whose target is its first caption and whose answers are
all of its captions. Captions carry trailing spaces and stray punctuation in the release; they are
stripped here.

The Karpathy helpers below are shared with the Flickr30K adapter, whose file has the same shape.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

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

ANNOTATION_FILE = "dataset_coco.json"

# our split name -> the Karpathy split values that feed it
KARPATHY_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


def karpathy_images(adapter: Adapter, relpath: str) -> list[Any]:
    """The "images" list of a Karpathy caption file, or SourceError naming the file."""
    data = adapter.load_json(relpath)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise SourceError(f"{adapter.source}: {adapter.uri(relpath)} has no 'images' list")
    return images


def karpathy_captions(record: dict) -> list[tuple[int, str]]:
    """(sentid, stripped caption) for every sentence of one Karpathy image record.

    Raises RecordError when a sentence is malformed or the image has no caption at all.
    """
    sentences = require(record, "sentences", list, allow_empty=False)
    captions = []
    for i, sentence in enumerate(sentences):
        try:
            sentid = require(sentence, "sentid", int)
            raw = require(sentence, "raw", str).strip()
        except RecordError as exc:
            raise RecordError(f"sentence {i}: {exc}") from None
        if not raw:
            raise RecordError(f"sentence {sentid} has an empty caption")
        captions.append((sentid, raw))
    return captions


def read_karpathy(
    adapter: Adapter,
    relpath: str,
    split: str,
    *,
    image_key: Callable[[dict], int],
    image_path: Callable[[dict], str],
    per_caption: bool,
) -> Iterator[Example | Reject]:
    """Yield the examples of one of our splits from a Karpathy caption file.

    Args:
        adapter: the adapter reading (for file access and media URIs).
        relpath: the Karpathy JSON file, relative to the source root.
        split: train / val / test (our names; mapped through KARPATHY_SPLITS).
        image_key: returns an image record's id (raises RecordError if absent); the key of
            per-image examples and of rejected images.
        image_path: returns the image file of a record, relative to the image root.
        per_caption: one example per caption (key = sentid) instead of one per image.
    Raises:
        ValueError: unknown split. SourceError: the file is missing or has no "images" list.
    """
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"{adapter.source} has no split {split!r}; known: {sorted(KARPATHY_SPLITS)}")
    wanted = KARPATHY_SPLITS[split]
    known = {s for values in KARPATHY_SPLITS.values() for s in values}
    for index, record in enumerate(karpathy_images(adapter, relpath)):
        try:
            key = f"img{image_key(record)}" if per_caption else str(image_key(record))
        except (RecordError, TypeError, ValueError):
            key = f"index{index}"
        source = f"{relpath}#{key}"
        record_split = record.get("split") if isinstance(record, dict) else None
        if not isinstance(record_split, str) or record_split not in known:
            # a record we cannot place in a split is reported in every split read, never dropped
            yield Reject(key, source, f"image has no usable 'split' field (got {record_split!r})")
            continue
        if record_split not in wanted:
            continue
        if not per_caption:
            yield guard(key, source, lambda r=record: _image_example(adapter, relpath, r, image_key, image_path))
            continue
        # one example per caption: a broken sentence rejects only itself
        try:
            media = adapter.media_uri(image_path(record))
            sentences = require(record, "sentences", list, allow_empty=False)
        except (RecordError, TypeError, ValueError) as exc:
            yield Reject(key, source, str(exc))
            continue
        good = [s["raw"].strip() for s in sentences if isinstance(s, dict) and isinstance(s.get("raw"), str)]
        for i, sentence in enumerate(sentences):
            sentid = sentence.get("sentid") if isinstance(sentence, dict) else None
            skey = str(sentid) if isinstance(sentid, int) and not isinstance(sentid, bool) else f"{key}.sentence{i}"
            yield guard(
                skey,
                f"{relpath}#{skey}",
                lambda s=sentence: _caption_example(relpath, s, media, [c for c in good if c]),
            )


def _image_example(
    adapter: Adapter, relpath: str, record: dict, image_key: Callable[[dict], int], image_path: Callable[[dict], str]
) -> Example:
    key = str(image_key(record))
    captions = [text for _, text in karpathy_captions(record)]
    return Example(
        key=key,
        source=f"{relpath}#{key}",
        image=adapter.media_uri(image_path(record)),
        target=captions[0],
        answers=captions,
    )


def _caption_example(relpath: str, sentence: Any, media: str, references: list[str]) -> Example:
    sentid = require(sentence, "sentid", int)
    caption = require(sentence, "raw", str).strip()
    if not caption:
        raise RecordError(f"sentence {sentid} has an empty caption")
    return Example(
        key=str(sentid),
        source=f"{relpath}#{sentid}",
        image=media,
        target=caption,
        answers=references or [caption],
    )


def _cocoid(record: Any) -> int:
    return require(record, "cocoid", int)


def _coco_image_path(record: Any) -> str:
    folder = require(record, "filepath", str, allow_empty=False)
    name = require(record, "filename", str, allow_empty=False)
    return f"{folder}/{name}"


class COCOCaptionAdapter(Adapter):
    source = "coco_caption"
    datasets = (DatasetSpec("coco_caption", "image_captioning", HELD_IN, "image_captioning", ("train", "val")),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)  # KeyError for a dataset this source does not provide
        yield from read_karpathy(
            self,
            ANNOTATION_FILE,
            split,
            image_key=_cocoid,
            image_path=_coco_image_path,
            per_caption=split == "train",
        )
