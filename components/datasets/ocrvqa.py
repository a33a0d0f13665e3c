"""OCR-VQA (ocr-vqa.github.io): questions about book covers (title, author, genre).

Layout under the source root (as released):
    dataset.json                 (one JSON object for all splits, keyed by book id)
    images/<book id><ext>        (downloaded by the release's loadDataset.py; the extension
                                  is the one of the record's imageURL: .jpg, sometimes .png/.gif)

Book ids are ASIN / ISBN-10 strings: leading zeros matter and an id may end with "X".
A record holds imageURL, parallel `questions` / `answers` lists, title, authorName,
genre and split (1 = train, 2 = val, 3 = test). Yes/no answers are "Yes" / "No".

One example per (book, question index), keyed "<book id>_<index>". A book whose lists
differ in length is rejected as a whole; a book without a usable split is reported
once, when reading train. The release has no OCR tokens, so {ocr} is "".

Provides `ocrvqa` (reading-comprehension QA), held-in.
"""

from __future__ import annotations

import posixpath
from functools import partial
from typing import Iterator
from urllib.parse import urlparse

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

ANNOTATIONS = "dataset.json"
# the release's split codes -> our split names
SPLIT_CODES = {1: "train", 2: "val", 3: "test"}


class OCRVQAAdapter(Adapter):
    source = "ocrvqa"
    datasets = (DatasetSpec("ocrvqa", "reading_qa", HELD_IN, "reading_qa", ("train", "val")),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in SPLIT_CODES.values():
            raise ValueError(f"ocrvqa has no split {split!r}; known: {list(SPLIT_CODES.values())}")
        books = self.load_json(ANNOTATIONS)
        if not isinstance(books, dict):
            raise SourceError(f"ocrvqa: {self.uri(ANNOTATIONS)} is not a JSON object keyed by book id")
        for book_id, record in books.items():
            code = record.get("split") if isinstance(record, dict) else None
            if type(code) is not int or code not in SPLIT_CODES:  # bool, float or text codes are not split codes
                if split == "train":  # the book belongs to no split: report it once
                    yield Reject(book_id, f"{ANNOTATIONS}#{book_id}", f"field 'split' must be 1, 2 or 3, got {code!r}")
                continue
            if SPLIT_CODES[code] != split:
                continue
            # a fault in the book's shared fields rejects the book; otherwise one item per question
            book = guard(book_id, f"{ANNOTATIONS}#{book_id}", partial(self._book, book_id, record))
            if isinstance(book, Reject):
                yield book
            else:
                yield from book

    def _book(self, book_id: str, record: dict) -> list[Example | Reject]:
        """Check the book's shared fields, then build one example per question."""
        url = require(record, "imageURL", str, allow_empty=False)
        questions = require(record, "questions", list)
        answers = require(record, "answers", list)
        if len(questions) != len(answers):
            raise RecordError(f"{len(questions)} questions but {len(answers)} answers")
        # the downloader names each cover after the book id with the URL's extension
        ext = posixpath.splitext(urlparse(url).path)[1] or ".jpg"
        image = self.media_uri(f"images/{book_id}{ext}")
        items: list[Example | Reject] = []
        for i, (question, answer) in enumerate(zip(questions, answers)):
            key = f"{book_id}_{i}"
            items.append(guard(key, f"{ANNOTATIONS}#{key}", partial(self._example, key, question, answer, image)))
        return items

    def _example(self, key: str, question, answer, image: str) -> Example:
        question, answer = text_list([question, answer], "questions/answers")
        if not question or not answer:
            raise RecordError("empty question or answer")
        return Example(
            key=key,
            source=f"{ANNOTATIONS}#{key}",
            image=image,
            slots={"ocr": "", "question": question},
            target=answer,
            answers=[answer],
        )
