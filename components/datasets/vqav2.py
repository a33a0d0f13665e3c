"""VQAv2 (visualqa.org release): questions + annotations joined on question_id.

Layout under the source root (as released; images are COCO 2014):
    v2_OpenEnded_mscoco_{train2014,val2014,test2015}_questions.json
    v2_mscoco_{train2014,val2014}_annotations.json   (no annotations for test)
    {train2014,val2014,test2015}/COCO_<subset>_<image_id:012d>.jpg

Provides `vqav2` (image QA) and `vqav2_qg` (question generation: answer in,
question out), both held-in.
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
    guard,
    most_common,
    with_question_generation,
    require,
)

# our split name -> the release's subset name
SUBSETS = {"train": "train2014", "val": "val2014", "test": "test2015"}


class VQAv2Adapter(Adapter):
    source = "vqav2"
    datasets = (
        DatasetSpec("vqav2", "image_qa", HELD_IN, "image_qa", ("train", "val")),
        DatasetSpec("vqav2_qg", "question_generation", HELD_IN, "question_generation", ("train", "val")),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        if split not in SUBSETS:
            raise ValueError(f"vqav2 has no split {split!r}; known: {sorted(SUBSETS)}")
        yield from with_question_generation(dataset, self._read_vqa(split))

    def _read_vqa(self, split: str) -> Iterator[Example | Reject]:
        subset = SUBSETS[split]
        qfile = f"v2_OpenEnded_mscoco_{subset}_questions.json"
        afile = f"v2_mscoco_{subset}_annotations.json"
        questions = self.load_json_field(qfile, "questions", list)
        annotations: dict[int, dict] = {}
        if split != "test":
            for ann in self.load_json_field(afile, "annotations", list):
                if isinstance(ann, dict) and isinstance(ann.get("question_id"), int):
                    annotations[ann["question_id"]] = ann

        for index, q in enumerate(questions):
            qid = q.get("question_id") if isinstance(q, dict) else None
            key = str(qid) if qid is not None else f"index{index}"
            yield guard(key, f"{qfile}#{key}", lambda q=q, qid=qid: self._example(q, qid, annotations, subset, qfile, split))

    def _example(self, q: dict, qid, annotations: dict[int, dict], subset: str, qfile: str, split: str) -> Example:
        qid = require(q, "question_id", int)
        image_id = require(q, "image_id", int)
        question = require(q, "question", str, allow_empty=False).strip()
        answers: list[str] = []
        target = ""
        if split != "test":
            ann = annotations.get(qid)
            if ann is None:
                raise RecordError(f"no annotation for question_id {qid}")
            raw = require(ann, "answers", list)
            answers = [require(a, "answer", str).strip() for a in raw]
            target = ann.get("multiple_choice_answer") if isinstance(ann.get("multiple_choice_answer"), str) else ""
            target = target.strip() or most_common(answers)
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
