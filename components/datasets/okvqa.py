"""OK-VQA (okvqa.allenai.org): questions that need outside knowledge, VQA-v1 file layout.

Layout under the source root (as released; images are COCO 2014):
    OpenEnded_mscoco_{train2014,val2014}_questions.json
    mscoco_{train2014,val2014}_annotations.json
    {train2014,val2014}/COCO_<subset>_<image_id:012d>.jpg

Questions and annotations join on question_id (= image_id * 10 + k). Unlike VQAv2
there is no `multiple_choice_answer`, and each of the ten answers has both the
annotator's `raw_answer` and the processed (lemmatised) `answer`; the v1.0 files
have no `raw_answer`. The annotations file also maps question_type codes ("one" ..
"ten", "other") to knowledge categories, which this adapter does not need.

Target = the most common processed answer, written as its most common raw form (so the
model learns natural text); answers = the processed answers, which the official scoring
compares against. There is no test split: OK-VQA's val is its test set.

Provides `okvqa` (knowledge-grounded QA) and `okvqa_qg` (question generation: answer
in, question out), both held-in.
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
    guard,
    most_common,
    with_question_generation,
    require,
)

# our split name -> the release's subset name
SUBSETS = {"train": "train2014", "val": "val2014"}


class OKVQAAdapter(Adapter):
    source = "okvqa"
    datasets = (
        DatasetSpec("okvqa", "knowledge_qa", HELD_IN, "knowledge_qa.open", ("train", "val")),
        DatasetSpec("okvqa_qg", "question_generation", HELD_IN, "question_generation", ("train", "val")),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in SUBSETS:
            raise ValueError(f"okvqa has no split {split!r}; known: {sorted(SUBSETS)}")
        yield from with_question_generation(dataset, self._read_okvqa(split))

    def _list_field(self, relpath: str, name: str) -> list:
        data = self.load_json(relpath)
        if not isinstance(data, dict) or not isinstance(data.get(name), list):
            raise SourceError(f"okvqa: {self.uri(relpath)} has no {name!r} list")
        return data[name]

    def _read_okvqa(self, split: str) -> Iterator[Example | Reject]:
        subset = SUBSETS[split]
        qfile = f"OpenEnded_mscoco_{subset}_questions.json"
        afile = f"mscoco_{subset}_annotations.json"
        questions = self._list_field(qfile, "questions")
        annotations: dict[int, dict] = {}
        for ann in self._list_field(afile, "annotations"):
            if isinstance(ann, dict) and isinstance(ann.get("question_id"), int):
                annotations[ann["question_id"]] = ann
        for index, q in enumerate(questions):
            qid = q.get("question_id") if isinstance(q, dict) else None
            key = str(qid) if qid is not None else f"index{index}"
            yield guard(key, f"{qfile}#{key}", lambda q=q: self._example(q, annotations, subset, qfile))

    def _example(self, q: dict, annotations: dict[int, dict], subset: str, qfile: str) -> Example:
        qid = require(q, "question_id", int)
        image_id = require(q, "image_id", int)
        question = require(q, "question", str, allow_empty=False).strip()
        ann = annotations.get(qid)
        if ann is None:
            raise RecordError(f"no annotation for question_id {qid}")
        answers: list[str] = []
        raw_answers: list[str] = []
        for a in require(ann, "answers", list):
            answer = require(a, "answer", str).strip()
            raw = a.get("raw_answer")  # absent in the v1.0 files
            if raw is not None and not isinstance(raw, str):
                raise RecordError(f"field 'raw_answer' is {type(raw).__name__}, expected str")
            answers.append(answer)
            raw_answers.append(raw.strip() if raw else answer)
        target = natural_target(answers, raw_answers)
        if not target:
            raise RecordError("annotation has no usable answer")
        return Example(
            key=str(qid),
            source=f"{qfile}#{qid}",
            image=self.media_uri(f"{subset}/COCO_{subset}_{image_id:012d}.jpg"),
            slots={"question": question},
            target=target,
            answers=answers,
        )


def natural_target(answers: list[str], raw_answers: list[str]) -> str:
    """The most common processed answer, spelled as annotators most often wrote it.

    Args:
        answers: processed answers (what the scoring compares against).
        raw_answers: the annotators' own text, parallel to `answers`.
    Returns:
        the target text, or "" when every answer is empty.
    """
    best = most_common(answers)
    if not best:
        return most_common(raw_answers)
    return most_common([raw for raw, answer in zip(raw_answers, answers) if answer == best]) or best
