"""TextVQA 0.5.1 (textvqa.org): questions that need reading the text in an image.

Layout under the source root (as released; images are Open Images):
    TextVQA_0.5.1_{train,val,test}.json          ({"data": [...]}; test has no answers)
    TextVQA_Rosetta_OCR_v0.2_{train,val,test}.json  (optional: {"data": [{"image_id", "ocr_tokens", ...}]})
    train_images/<image_id>.jpg                   (train AND val images)
    test_images/<image_id>.jpg

A question record holds question, image_id (16 hex characters, a string),
question_id (an int, unique across splits), answers (ten strings; absent in test)
and image metadata this adapter does not need. When the Rosetta OCR file of the split
is present, its tokens for the image fill {ocr} (joined with ", "); otherwise {ocr} is "".

Provides `textvqa` (reading-comprehension QA), held out: evaluated zero-shot on val.
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
    SourceError,
    guard,
    most_common,
    require,
    text_list,
)

# our split name -> the image folder (val images live with train's)
IMAGE_FOLDERS = {"train": "train_images", "val": "train_images", "test": "test_images"}


class TextVQAAdapter(Adapter):
    source = "textvqa"
    datasets = (DatasetSpec("textvqa", "reading_qa", HELD_OUT, "reading_qa", ("val",), eval_split="val"),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in IMAGE_FOLDERS:
            raise ValueError(f"textvqa has no split {split!r}; known: {sorted(IMAGE_FOLDERS)}")
        relpath = f"TextVQA_0.5.1_{split}.json"
        records = self._data(relpath)
        ocr = self._ocr_tokens(split)
        for index, record in enumerate(records):
            qid = record.get("question_id") if isinstance(record, dict) else None
            key = str(qid) if isinstance(qid, int) and not isinstance(qid, bool) else f"index{index}"
            yield guard(key, f"{relpath}#{key}", lambda r=record: self._example(r, split, relpath, ocr))

    def _data(self, relpath: str) -> list:
        content = self.load_json(relpath)
        if not isinstance(content, dict) or not isinstance(content.get("data"), list):
            raise SourceError(f"textvqa: {self.uri(relpath)} has no 'data' list")
        return content["data"]

    def _ocr_tokens(self, split: str) -> dict[str, list[str]] | None:
        """Image id -> Rosetta OCR tokens, or None when the optional OCR file is absent."""
        relpath = f"TextVQA_Rosetta_OCR_v0.2_{split}.json"
        if not self.exists(relpath):
            return None
        tokens: dict[str, list[str]] = {}
        for entry in self._data(relpath):
            # an unusable OCR entry leaves its image without tokens; the question itself is still valid
            if isinstance(entry, dict) and isinstance(entry.get("image_id"), str):
                words = entry.get("ocr_tokens")
                if isinstance(words, list) and all(isinstance(t, str) for t in words):
                    tokens[entry["image_id"]] = [t.strip() for t in words if t.strip()]
        return tokens

    def _example(self, record: dict, split: str, relpath: str, ocr: dict[str, list[str]] | None) -> Example:
        qid = require(record, "question_id", int)
        image_id = require(record, "image_id", str, allow_empty=False).strip()
        question = require(record, "question", str, allow_empty=False).strip()
        answers: list[str] = []
        target = ""
        if split != "test":
            answers = [a for a in text_list(require(record, "answers", list), "answers") if a]
            target = most_common(answers)
            if not target:
                raise RecordError("no non-empty answer")
        return Example(
            key=str(qid),
            source=f"{relpath}#{qid}",
            image=self.media_uri(f"{IMAGE_FOLDERS[split]}/{image_id}.jpg"),
            slots={"ocr": ", ".join(ocr.get(image_id, [])) if ocr else "", "question": question},
            target=target,
            answers=answers,
        )
