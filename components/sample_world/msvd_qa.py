"""Sample MSVD-QA in the xudejing/video-question-answering release format (see shared/formats/msvd_qa.md).

Writes {train,val,test}_qa.json, youtube_mapping.txt and AVI clips video/<clip name>.avi.
The clip helpers here (`clip_questions`, `youtube_id`, `write_clip`) are shared with the
other video-QA writers.
"""

from __future__ import annotations

import random
import string

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "msvd_qa"

YOUTUBE_ALPHABET = string.ascii_letters + string.digits + "-_"
CLIP_SIDE = 96


def youtube_id(rng: random.Random, leading_dash: bool = False) -> str:
    """An 11-character YouTube-like id; `leading_dash` makes one starting with "-" (a real quirk)."""
    body = "".join(rng.choice(YOUTUBE_ALPHABET) for _ in range(10 if leading_dash else 11))
    return "-" + body if leading_dash else body


def clip_questions(clip: scenes.Clip) -> list[tuple[str, str]]:
    """Lower-case (question, one-word answer) pairs that are true of the clip, in a fixed order."""
    mover = clip.moving_shape()
    scene = clip.scene
    # name the mover by colour and shape only when no still shape shares both
    name = mover.name if scene.count(mover.shape, mover.color) == 1 else f"moving {mover.shape}"
    return [
        ("what is moving?", mover.shape),
        ("what color is the moving shape?", mover.color),
        (f"which way does the {name} move?", clip.direction(mover)),
        ("what color is the background?", scene.background),
        ("is the moving shape large or small?", mover.size),
    ]


def write_clip(w: SourceWriter, relpath: str, clip: scenes.Clip, container_format: str) -> None:
    """Encode the clip's frames (small, 16 frames) as a real video file."""
    w.write_bytes(relpath, scenes.encode_video(clip.frames(CLIP_SIDE), container_format=container_format))


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the sample MSVD-QA release; `n` questions in test, the evaluation split.

    Train has at least 40 questions so that its answer vocabulary (the ranking candidates)
    covers most test answers.
    """
    sizes = {"train": max(40, n // 2), "val": max(10, n // 5), "test": n}
    mapping: list[str] = []  # line i is the clip of vid<i+1>
    used: set[str] = set()

    def new_clip_name() -> str:
        while True:
            # the first clip gets a leading "-", as MSVD's "-4wsuPCjDBc_5_15" does
            ytid = youtube_id(w.rng, leading_dash=not mapping)
            start = w.rng.randint(0, 300)
            name = f"{ytid}_{start}_{start + w.rng.randint(4, 20)}"
            if name not in used:
                used.add(name)
                return name

    for split, count in sizes.items():
        rows: list[dict] = []
        while len(rows) < count:
            clip = scenes.random_clip(w.rng)
            name = new_clip_name()
            mapping.append(name)
            video_id = len(mapping)
            write_clip(w, f"video/{name}.avi", clip, "avi")
            pairs = clip_questions(clip)
            for question, answer in w.rng.sample(pairs, w.rng.randint(2, 3)):
                rows.append({"answer": answer, "id": len(rows), "question": question, "video_id": video_id})
        if faults and split == "test":
            # a mistyped video_id (the clip name instead of the int), an id missing from the
            # mapping file, and a clip whose file is not a video
            rows[1]["video_id"] = f"vid{rows[1]['video_id']}"
            rows.append({"answer": "circle", "id": len(rows), "question": "what is moving?", "video_id": 99999})
            name = new_clip_name()
            mapping.append(name)
            w.write_corrupt_image(f"video/{name}.avi")
            rows.append(
                {"answer": "red", "id": len(rows), "question": "what color is the moving shape?", "video_id": len(mapping)}
            )
        w.write_json(f"{split}_qa.json", rows)
    w.write_text("youtube_mapping.txt", "".join(f"{name} vid{i}\n" for i, name in enumerate(mapping, start=1)))
