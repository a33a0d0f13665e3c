"""Sample iVQA in the antoyang/just-ask release format (see shared/formats/ivqa.md).

Writes {train,val,test}.csv (header video_id,start,end,question,answer1..answer5,type;
questions without a question mark, five annotators' answers that sometimes differ in
wording) and MP4 clips videos/<video_id>_<start>_<end>.mp4.
"""

from __future__ import annotations

import csv
import io

from components.sample_world import scene as scenes
from components.sample_world.msvd_qa import clip_questions, write_clip, youtube_id
from components.sample_world.world import SourceWriter

SOURCE = "ivqa"

HEADER = ["video_id", "start", "end", "question", "answer1", "answer2", "answer3", "answer4", "answer5", "type"]
# other true ways an annotator may word an answer
REWORDINGS = {"gray": "grey", "up": "upward", "down": "downward", "left": "to the left", "right": "to the right"}


def _reworded(answer: str) -> str:
    if answer in REWORDINGS:
        return REWORDINGS[answer]
    if answer in scenes.COLORS or answer in scenes.BACKGROUNDS:
        return f"{answer} color"
    if answer in scenes.SHAPES:
        return f"a {answer}"
    return answer


def _five_answers(w: SourceWriter, answer: str) -> list[str]:
    """Five annotators: at least three give the plain answer, the rest reword it."""
    answers = [answer if w.rng.random() < 0.7 else _reworded(answer) for _ in range(5)]
    for i in w.rng.sample(range(5), 3):
        answers[i] = answer
    return answers


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buf.getvalue()


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the sample iVQA release; `n` questions in test, the evaluation split."""
    sizes = {"train": max(10, n // 2), "val": max(10, n // 5), "test": n}
    used: set[str] = set()

    def new_clip() -> tuple[str, int, int]:
        while True:
            ytid, start = youtube_id(w.rng), w.rng.randint(0, 600)
            if ytid not in used:
                used.add(ytid)
                return ytid, start, start + w.rng.randint(8, 30)

    for split, count in sizes.items():
        rows: list[list] = []
        while len(rows) < count:
            ytid, start, end = new_clip()
            clip = scenes.random_clip(w.rng)
            write_clip(w, f"videos/{ytid}_{start}_{end}.mp4", clip, "mp4")
            for question, answer in w.rng.sample(clip_questions(clip), w.rng.randint(1, 2)):
                question = question.rstrip("?")  # iVQA questions carry no question mark
                rows.append([ytid, start, end, question, *_five_answers(w, answer), 0])
        if faults and split == "test":
            # a row cut short after the question (no answers, no type), and a clip that is not a video
            rows[1] = rows[1][:4]
            ytid, start, end = new_clip()
            w.write_corrupt_image(f"videos/{ytid}_{start}_{end}.mp4")
            rows.append([ytid, start, end, "what is moving", "square", "square", "square", "a square", "square", 0])
        w.write_text(f"{split}.csv", _csv(rows))
