"""A-OKVQA (allenai/aokvqa, v1.0): knowledge questions with four choices and free-form answers.

Layout under the source root (as released; images are COCO 2017):
    aokvqa_v1p0_{train,val,test}.json        (JSON arrays)
    {train2017,val2017,test2017}/<image_id:012d>.jpg

Each record: split, image_id (int), question_id (a 22-character string), question,
choices (four strings), correct_choice_idx, direct_answers (ten strings),
difficult_direct_answer (bool) and rationales (three strings). The test file has no
correct_choice_idx, direct_answers or rationales.

Provides `aokvqa` (knowledge-grounded QA shown with its options; target = the text of
the correct choice, answers = the direct answers) and `aokvqa_qg` (question generation
from the correct choice), both held-in.
"""

from __future__ import annotations

from typing import Iterator

from components.datasets.base import (
    HELD_IN,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    format_options,
    guard,
    with_question_generation,
    require,
    text_list,
)

SPLITS = ("train", "val", "test")


class AOKVQAAdapter(Adapter):
    source = "aokvqa"
    datasets = (
        DatasetSpec("aokvqa", "knowledge_qa", HELD_IN, "knowledge_qa.multiple_choice", ("train", "val")),
        DatasetSpec("aokvqa_qg", "question_generation", HELD_IN, "question_generation", ("train", "val")),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"aokvqa has no split {split!r}; known: {list(SPLITS)}")
        yield from with_question_generation(dataset, self._read_aokvqa(split))

    def _read_aokvqa(self, split: str) -> Iterator[Example | Reject]:
        relpath = f"aokvqa_v1p0_{split}.json"
        records = self.load_json(relpath)
        if not isinstance(records, list):
            raise SourceError(f"aokvqa: {self.uri(relpath)} is not a JSON array")
        for index, record in enumerate(records):
            qid = record.get("question_id") if isinstance(record, dict) else None
            key = qid if isinstance(qid, str) and qid else f"index{index}"
            yield guard(key, f"{relpath}#{key}", lambda r=record: self._example(r, split, relpath))

    def _example(self, record: dict, split: str, relpath: str) -> Example:
        qid = require(record, "question_id", str, allow_empty=False)
        image_id = require(record, "image_id", int)
        question = require(record, "question", str, allow_empty=False).strip()
        choices = text_list(require(record, "choices", list), "choices")
        if len(choices) < 2 or not all(choices):
            raise RecordError(f"field 'choices' needs at least two non-empty options, got {choices!r}")
        target, label_index, answers = "", -1, []
        if split != "test":
            label_index = require(record, "correct_choice_idx", int)
            if not 0 <= label_index < len(choices):
                raise RecordError(f"correct_choice_idx {label_index} is outside the {len(choices)} choices")
            target = choices[label_index]
            answers = [a for a in text_list(require(record, "direct_answers", list), "direct_answers") if a]
        return Example(
            key=qid,
            source=f"{relpath}#{qid}",
            image=self.media_uri(f"{split}2017/{image_id:012d}.jpg"),
            slots={"question": question, "options": format_options(choices)},
            target=target,
            answers=answers,
            choices=choices,
            label_index=label_index,
        )
