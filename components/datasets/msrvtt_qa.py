"""MSRVTT-QA (xudejing/video-question-answering release): open-ended questions on MSR-VTT videos.

Layout under the source root (as released):
    train_qa.json, val_qa.json, test_qa.json
        JSON arrays of {"answer": str, "category_id": int, "id": int, "question": str, "video_id": int}
        (`id` counts on across the three files; `category_id` is the MSR-VTT category, unused here)
    video/video<N>.mp4
        the MSR-VTT videos; `video_id` N names the file directly
        (train = video0-6512, val = video6513-7009, test = video7010-9999)

Provides `msrvtt_qa`, held out: evaluated on test by ranking the answer vocabulary (every
distinct answer of the train split, sorted).
"""

from __future__ import annotations

from typing import Iterator

from components.datasets.base import HELD_OUT, Adapter, DatasetSpec, Example, Reject
from components.datasets.msvd_qa import answer_vocabulary, load_qa_records, qa_file, video_qa_examples


class MSRVTTQAAdapter(Adapter):
    source = "msrvtt_qa"
    datasets = (
        DatasetSpec(
            "msrvtt_qa", "video_qa", HELD_OUT, "video_qa", ("test",), eval_split="test", task="rank_choices"
        ),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        relpath = qa_file(split)
        records = load_qa_records(self, split)
        vocabulary = answer_vocabulary(records if split == "train" else load_qa_records(self, "train"))
        yield from video_qa_examples(
            records, relpath, lambda video_id: self.media_uri(f"video/video{video_id}.mp4"), vocabulary
        )
