"""VizWiz-VQA (vizwiz.org, VizWiz_final release): questions asked by blind people about their photos.

Layout under the source root (as released):
    train.json, val.json, test.json          (Annotations.zip; JSON arrays, one question per image;
                                              an `Annotations/` folder around them is accepted too)
    {train,val,test}/VizWiz_<split>_<n:08d>.jpg

Each record: image (file name), question, and for train/val ten answers
({"answer_confidence", "answer"}), answer_type and answerable. test.json has only
image + question. Unanswerable questions carry the literal answer "unanswerable"
(answer_type "unanswerable", answerable 0); a few train answers are empty strings,
which are kept out of the target and the references.

Provides `vizwiz` (image QA), held out: evaluated zero-shot on val.
"""

from __future__ import annotations

import posixpath
from typing import Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    most_common,
    require,
)

SPLITS = ("train", "val", "test")


class VizWizAdapter(Adapter):
    source = "vizwiz"
    datasets = (DatasetSpec("vizwiz", "image_qa", HELD_OUT, "image_qa", ("val",), eval_split="val"),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"vizwiz has no split {split!r}; known: {list(SPLITS)}")
        relpath = self._annotation_file(split)
        records = self.load_json(relpath)
        if not isinstance(records, list):
            raise SourceError(f"vizwiz: {self.uri(relpath)} is not a JSON array")
        for index, record in enumerate(records):
            image = record.get("image") if isinstance(record, dict) else None
            key = posixpath.splitext(image)[0] if isinstance(image, str) and image else f"index{index}"
            yield guard(key, f"{relpath}#{key}", lambda r=record: self._example(r, split, relpath))

    def _annotation_file(self, split: str) -> str:
        # Annotations.zip unpacks to bare train/val/test.json; some copies keep the zip's folder name.
        name = f"{split}.json"
        nested = f"Annotations/{name}"
        return nested if not self.exists(name) and self.exists(nested) else name

    def _example(self, record: dict, split: str, relpath: str) -> Example:
        image = require(record, "image", str, allow_empty=False).strip()
        question = require(record, "question", str, allow_empty=False).strip()
        key = posixpath.splitext(image)[0]
        answers: list[str] = []
        target = ""
        if split != "test":
            for answer in require(record, "answers", list):
                text = require(answer, "answer", str).strip()
                if text:  # the release has a few empty answers in train: not a reference
                    answers.append(text)
            target = most_common(answers)
            if not target:
                raise RecordError("no non-empty answer among the annotators' answers")
        return Example(
            key=key,
            source=f"{relpath}#{key}",
            image=self.media_uri(f"{split}/{image}"),
            slots={"question": question},
            target=target,
            answers=answers,
        )
