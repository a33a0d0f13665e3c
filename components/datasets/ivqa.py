"""iVQA (antoyang/just-ask release): open-ended questions on HowTo100M clips, 5 answers each.

Layout under the source root (as released):
    train.csv, val.csv, test.csv
        header: video_id,start,end,question,answer1,answer2,answer3,answer4,answer5,type
        video_id is an 11-character YouTube id; start/end are the clip bounds in seconds;
        answer1..answer5 are five annotators' answers (test has them too); type is 0.
    videos/<video_id>_<start>_<end>.mp4
        the clips, named from the row's own video_id/start/end text

Provides `ivqa`, held out: evaluated on test, open-ended (an answer counts as right when
at least two annotators gave it).

Columns are read by name, never by position (the column order of the real CSV is not
documented). If a release copy lacks start/end, clips are looked up as videos/<video_id>.mp4.
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
)

SPLITS = ("train", "val", "test")
ANSWER_COLUMNS = tuple(f"answer{i}" for i in range(1, 6))
REQUIRED_COLUMNS = ("video_id", "question") + ANSWER_COLUMNS


def clip_path(video_id: str, start: str | None, end: str | None) -> str:
    """Path of a clip under the source root, from the row's video_id/start/end text."""
    if start is None or end is None:
        return f"videos/{video_id}.mp4"
    return f"videos/{video_id}_{start}_{end}.mp4"


class IVQAAdapter(Adapter):
    source = "ivqa"
    datasets = (DatasetSpec("ivqa", "video_qa", HELD_OUT, "video_qa", ("test",), eval_split="test", task="generate"),)

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        if split not in SPLITS:
            raise ValueError(f"ivqa has no split {split!r}; known: {list(SPLITS)}")
        relpath = f"{split}.csv"
        rows = self.read_csv(relpath)
        header = set(rows[0]) - {None} if rows else set()
        missing = [c for c in REQUIRED_COLUMNS if rows and c not in header]
        if missing:
            raise SourceError(f"ivqa: {self.uri(relpath)} lacks column(s) {missing}")
        has_bounds = "start" in header and "end" in header
        for index, row in enumerate(rows):
            key = f"row{index}"
            yield guard(key, f"{relpath}#{key}", lambda row=row, key=key: self._example(row, key, relpath, has_bounds))

    def _example(self, row: dict, key: str, relpath: str, has_bounds: bool) -> Example:
        # csv.DictReader puts surplus cells under None and fills absent ones with None
        if row.get(None):
            raise RecordError(f"row has {len(row[None])} more cell(s) than the header")
        absent = [c for c in REQUIRED_COLUMNS if row.get(c) is None]
        if absent:
            raise RecordError(f"row is missing cell(s) {absent}")
        video_id = row["video_id"].strip()
        question = row["question"].strip()
        if not video_id or not question:
            raise RecordError("empty video_id or question")
        start = end = None
        if has_bounds:
            start, end = (row.get("start") or "").strip(), (row.get("end") or "").strip()
            if not start or not end:
                raise RecordError("empty start or end")
        answers = [row[c].strip() for c in ANSWER_COLUMNS if row[c].strip()]
        if not answers:
            raise RecordError("all five answers are empty")
        return Example(
            key=key,
            source=f"{relpath}#{key}",
            video=self.media_uri(clip_path(video_id, start, end)),
            slots={"question": question},
            target=most_common(answers),
            answers=answers,
        )
