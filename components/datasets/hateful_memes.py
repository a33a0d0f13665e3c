"""Hateful Memes (Meta / DrivenData phase-2 release, `hateful_memes.zip`).

Layout under the source root:
    train.jsonl                          labelled
    dev_seen.jsonl, dev_unseen.jsonl     labelled
    test_seen.jsonl, test_unseen.jsonl   no `label` field
    img/<5-digit id>.png                 e.g. img/05349.png

One compact JSON object per line, keys in the order id, img, label, text:
    {"id":42953,"img":"img\\/42953.png","label":0,"text":"its their character not their color that matters"}
The slash in `img` is escaped (PHP-style JSON; a JSON parser reads "img/42953.png"). `id` is an
int and is NOT zero-padded (5349) while the file name is (img/05349.png), so the image path is
taken from `img`, never built from `id`. label: 1 = hateful, 0 = not hateful.

Provides `hateful_memes` (held out, image classification), evaluated on dev_seen (our `val`)
by ranking "yes" (hateful) against "no". Our `train` is train.jsonl and `test` is
test_seen.jsonl; the *_unseen files are not mapped.
"""

from __future__ import annotations

from typing import Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    guard,
    require,
)

# our split name -> the release's file
SPLIT_FILES = {"train": "train.jsonl", "val": "dev_seen.jsonl", "test": "test_seen.jsonl"}
CHOICES = ["yes", "no"]


class HatefulMemesAdapter(Adapter):
    source = "hateful_memes"
    datasets = (
        DatasetSpec(
            "hateful_memes",
            "image_classification",
            HELD_OUT,
            "image_classification",
            ("val",),
            eval_split="val",
            task="binary",
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        """Yield one yes/no example per meme of the split's JSON Lines file."""
        self.spec(dataset)
        if split not in SPLIT_FILES:
            raise ValueError(f"hateful_memes has no split {split!r}; known: {sorted(SPLIT_FILES)}")
        relpath = SPLIT_FILES[split]
        for lineno, row in self.iter_jsonl(relpath):
            if isinstance(row, Reject):
                yield row
                continue
            meme_id = row.get("id")
            key = str(meme_id) if isinstance(meme_id, int) and not isinstance(meme_id, bool) else f"line{lineno}"
            yield guard(key, f"{relpath}#{key}", lambda row=row: self._example(row, relpath, split))

    def _example(self, row: dict, relpath: str, split: str) -> Example:
        meme_id = require(row, "id", int)
        img = require(row, "img", str, allow_empty=False).strip()
        text = require(row, "text", str).strip()
        if split == "test" and "label" not in row:
            # test files are unlabelled: the example carries the choices but no answer
            target, answers, index = "", [], -1
        else:
            label = require(row, "label", int)
            if label not in (0, 1):
                raise RecordError(f"label must be 0 or 1, got {label}")
            index = 0 if label == 1 else 1
            target, answers = CHOICES[index], [CHOICES[index]]
        return Example(
            key=str(meme_id),
            source=f"{relpath}#{meme_id}",
            image=self.media_uri(img),
            slots={"text": text},
            target=target,
            answers=answers,
            choices=list(CHOICES),
            label_index=index,
        )
