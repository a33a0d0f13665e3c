"""MSVD-QA (xudejing/video-question-answering release): open-ended questions on MSVD clips.

Layout under the source root (as released):
    train_qa.json, val_qa.json, test_qa.json
        JSON arrays of {"answer": str, "id": int, "question": str, "video_id": int}
    youtube_mapping.txt
        one "<youtube clip name> vid<N>" per line; maps the integer video_id N to a clip
    video/<youtube clip name>.avi
        the MSVD clips from YouTubeClips.tar (names like "-4wsuPCjDBc_5_15"; some start with "-")

Provides `msvd_qa`, held out: evaluated on test by ranking the answer vocabulary (every
distinct answer of the train split, sorted).

The answer-vocabulary and record-building helpers here are shared with the MSRVTT-QA
adapter, whose release has the same QA file structure.
"""

from __future__ import annotations

from typing import Callable, Iterator

from components.datasets.base import (
    HELD_OUT,
    Adapter,
    DatasetSpec,
    Example,
    RecordError,
    Reject,
    SourceError,
    guard,
    require,
)

SPLITS = ("train", "val", "test")
MAPPING_FILE = "youtube_mapping.txt"


def qa_file(split: str) -> str:
    """The release's QA file of one split (same names for MSVD-QA and MSRVTT-QA)."""
    if split not in SPLITS:
        raise ValueError(f"no split {split!r}; known: {list(SPLITS)}")
    return f"{split}_qa.json"


def load_qa_records(adapter: Adapter, split: str) -> list:
    """The JSON array of one split's QA file; SourceError if missing, unreadable or not an array."""
    records = adapter.load_json(qa_file(split))
    if not isinstance(records, list):
        raise SourceError(f"{adapter.source}: {adapter.uri(qa_file(split))} is not a JSON array")
    return records


# Candidates for vocabulary ranking: the most frequent train answers (the usual practice
# for these long-tailed sets); the full MSRVTT-QA train vocabulary would put thousands of
# strings into every one of its 73k test rows.
VOCABULARY_SIZE = 1000


def answer_vocabulary(records: list, size: int = VOCABULARY_SIZE) -> list[str]:
    """The `size` most frequent (stripped, non-empty) answers of the given QA records, sorted.

    Malformed records are skipped here; they are rejected when their own split is read.
    """
    counts: dict[str, int] = {}
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("answer"), str) and r["answer"].strip():
            answer = r["answer"].strip()
            counts[answer] = counts.get(answer, 0) + 1
    top = sorted(counts, key=lambda a: (-counts[a], a))[:size]
    return sorted(top)


def video_qa_examples(
    records: list,
    relpath: str,
    video_of: Callable[[int], str],
    vocabulary: list[str],
) -> Iterator[Example | Reject]:
    """Turn MSVD/MSRVTT-style QA records into Examples (or Rejects).

    Args:
        records: the parsed QA file (a list of dicts with answer, id, question, video_id).
        relpath: the QA file's path relative to the source root (for lineage).
        video_of: int video_id -> video URI; raises RecordError for an unknown id.
        vocabulary: the answer vocabulary; every Example shares this one list as `choices`.
    """
    index_of = {answer: i for i, answer in enumerate(vocabulary)}

    def build(record: dict) -> Example:
        qid = require(record, "id", int)
        video_id = require(record, "video_id", int)
        question = require(record, "question", str, allow_empty=False).strip()
        answer = require(record, "answer", str, allow_empty=False).strip()
        if not question or not answer:
            raise RecordError("question or answer is blank")
        return Example(
            key=str(qid),
            source=f"{relpath}#{qid}",
            video=video_of(video_id),
            slots={"question": question},
            target=answer,
            answers=[answer],
            choices=vocabulary,
            # an answer outside the train vocabulary stays an example: it simply cannot be ranked right
            label_index=index_of.get(answer, -1),
        )

    for index, record in enumerate(records):
        qid = record.get("id") if isinstance(record, dict) else None
        key = str(qid) if isinstance(qid, int) and not isinstance(qid, bool) else f"index{index}"
        yield guard(key, f"{relpath}#{key}", lambda record=record: build(record))


def parse_youtube_mapping(text: str) -> dict[int, str]:
    """Parse youtube_mapping.txt ("<clip name> vid<N>" per line) into {N: clip name}.

    Lines that do not have that shape are ignored; a QA record naming an id that is
    missing from the map is rejected when read.
    """
    mapping: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].startswith("vid") or not parts[1][3:].isdigit():
            continue
        mapping[int(parts[1][3:])] = parts[0]
    return mapping


class MSVDQAAdapter(Adapter):
    source = "msvd_qa"
    datasets = (
        DatasetSpec("msvd_qa", "video_qa", HELD_OUT, "video_qa", ("test",), eval_split="test", task="rank_choices"),
    )

    def read(self, dataset: str, split: str) -> Iterator[Example | Reject]:
        self.spec(dataset)
        relpath = qa_file(split)
        records = load_qa_records(self, split)
        vocabulary = answer_vocabulary(records if split == "train" else load_qa_records(self, "train"))
        mapping = parse_youtube_mapping(self.open_text(MAPPING_FILE))

        def video_of(video_id: int) -> str:
            clip = mapping.get(video_id)
            if clip is None:
                raise RecordError(f"video_id {video_id} is not in {MAPPING_FILE}")
            return self.media_uri(f"video/{clip}.avi")

        yield from video_qa_examples(records, relpath, video_of, vocabulary)
