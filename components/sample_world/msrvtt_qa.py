"""Sample MSRVTT-QA in the xudejing/video-question-answering release format (see shared/formats/msrvtt_qa.md).

Writes {train,val,test}_qa.json (QA `id` counting on across the three files, a
`category_id` per video) and MP4 videos video/video<N>.mp4, with the release's video
numbering: train from video0, val from video6513, test from video7010.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.msvd_qa import clip_questions, write_clip
from components.sample_world.world import SourceWriter

SOURCE = "msrvtt_qa"

FIRST_VIDEO = {"train": 0, "val": 6513, "test": 7010}


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the sample MSRVTT-QA release; `n` questions in test, the evaluation split."""
    sizes = {"train": max(40, n // 2), "val": max(10, n // 5), "test": n}
    next_id = 0
    for split, count in sizes.items():
        rows: list[dict] = []
        video_id = FIRST_VIDEO[split]
        while len(rows) < count:
            clip = scenes.random_clip(w.rng)
            write_clip(w, f"video/video{video_id}.mp4", clip, "mp4")
            category = w.rng.randrange(20)
            for question, answer in w.rng.sample(clip_questions(clip), w.rng.randint(2, 3)):
                row = {"answer": answer, "category_id": category, "id": next_id, "question": question}
                rows.append({**row, "video_id": video_id})
                next_id += 1
            video_id += 1
        if faults and split == "test":
            # a record that lost its question, and a video file that is not a video
            del rows[1]["question"]
            w.write_corrupt_image(f"video/video{video_id}.mp4")
            question = "what color is the moving shape?"
            rows.append({"answer": "blue", "category_id": 3, "id": next_id, "question": question, "video_id": video_id})
            next_id += 1
        w.write_json(f"{split}_qa.json", rows)
