"""GQA (Stanford, questions1.2 release): compositional questions about real-world scenes.

Layout under the source root (as released):
    questions1.2/train_balanced_questions.json
    questions1.2/val_balanced_questions.json
    questions1.2/testdev_balanced_questions.json
    images/<imageId>.jpg                       (imageId is a string, e.g. "2354786" or "n161313")

Each questions file is a JSON object keyed by the question id (a string with leading
zeros, kept as a string); a record holds question, imageId, answer, fullAnswer and
the functional program (semantic, types, groups, ...), which this adapter does not need.

Provides `gqa` (visual reasoning, open-ended), held out. Our `test` split is the
balanced test-dev set, the one the paper reports; `train`/`val` are the balanced sets.
"""

from __future__ import annotations

from typing import Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    Reject,
    SourceError,
    guard,
    require,
)

# our split name -> the release's questions file
FILES = {
    "train": "questions1.2/train_balanced_questions.json",
    "val": "questions1.2/val_balanced_questions.json",
    "test": "questions1.2/testdev_balanced_questions.json",
}


class GQAAdapter(Adapter):
    source = "gqa"
    datasets = (
        DatasetSpec("gqa", "visual_reasoning", HELD_OUT, "visual_reasoning.open", ("test",), eval_split="test"),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in FILES:
            raise ValueError(f"gqa has no split {split!r}; known: {sorted(FILES)}")
        relpath = FILES[split]
        questions = self.load_json(relpath)
        if not isinstance(questions, dict):
            raise SourceError(f"gqa: {self.uri(relpath)} is not a JSON object keyed by question id")
        for qid, record in questions.items():
            yield guard(qid, f"{relpath}#{qid}", lambda q=qid, r=record: self._example(q, r, relpath))

    def _example(self, qid: str, record: dict, relpath: str) -> Example:
        question = require(record, "question", str, allow_empty=False).strip()
        image_id = require(record, "imageId", str, allow_empty=False).strip()
        answer = require(record, "answer", str, allow_empty=False).strip()
        return Example(
            key=qid,
            source=f"{relpath}#{qid}",
            image=self.media_uri(f"images/{image_id}.jpg"),
            slots={"question": question},
            target=answer,
            answers=[answer],
        )
