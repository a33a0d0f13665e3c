"""Sample VizWiz-VQA in the VizWiz_final release format (see shared/formats/vizwiz.md).

One question per photo. About one photo in six is blurred almost to a blank (as a blind
photographer's shot can be): its question gets the answer "unanswerable" from most
annotators (answer_type "unanswerable", answerable 0). One train record has empty-string
answers, as the real train.json does.
"""

from __future__ import annotations

from PIL import ImageFilter

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "vizwiz"

SIDE = 128


def _answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def _question(w: SourceWriter, scene: scenes.Scene) -> tuple[str, str]:
    """A (question, answer) pair true of the scene, phrased the way VizWiz users ask."""
    if len(scene.shapes) == 1:
        only = scene.shapes[0]
        pairs = [("What color is this?", only.color), ("What shape is this?", only.shape)]
    else:
        pairs = scene.qa_pairs()
    question, answer = w.rng.choice(pairs)
    return question.replace("Is there a orange", "Is there an orange"), answer  # scene.py's article slip


def _answers(w: SourceWriter, answer: str) -> list[dict]:
    """Ten annotator answers, mostly agreeing; one may say "unanswerable" with low confidence."""
    out = [{"answer_confidence": "yes", "answer": answer} for _ in range(10)]
    if w.rng.random() < 0.3:
        out[w.rng.randrange(10)] = {"answer_confidence": "no", "answer": "unanswerable"}
    for a in out:
        if a["answer"] == answer and w.rng.random() < 0.2:
            a["answer_confidence"] = "maybe"
    return out


def _record(w: SourceWriter, split: str, index: int) -> dict:
    """Draw one photo (sometimes an unusable blur) and return its annotation record."""
    image = f"VizWiz_{split}_{index:08d}.jpg"
    scene = scenes.random_scene(w.rng, 1, 3)
    question, answer = _question(w, scene)
    unanswerable = w.rng.random() < 1 / 6
    img = scenes.draw(scene, SIDE)
    if unanswerable:
        # blurred until nothing in it can be made out: the question has no answer in the photo
        img = img.filter(ImageFilter.GaussianBlur(SIDE // 3)).filter(ImageFilter.BoxBlur(SIDE // 2))
    w.write_image(f"{split}/{image}", img)
    record: dict = {"image": image, "question": question}
    if split == "test":
        return record
    if unanswerable:
        answers = [{"answer_confidence": "yes", "answer": "unanswerable"} for _ in range(10)]
        answers[w.rng.randrange(10)] = {"answer_confidence": "maybe", "answer": "too blurry"}
        record.update(answers=answers, answer_type="unanswerable", answerable=0)
    else:
        record.update(answers=_answers(w, answer), answer_type=_answer_type(answer), answerable=1)
    return record


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write train/val/test annotations and photos; `n` is the size of val (the evaluation split)."""
    sizes = {"train": max(10, n // 5), "val": n, "test": max(5, n // 20)}
    for split, count in sizes.items():
        records = [_record(w, split, i) for i in range(count)]
        if split == "train":
            # the release has a couple of empty-string answers in train
            records[0]["answers"][3]["answer"] = ""
            records[0]["answers"][7]["answer"] = ""
        if faults and split == "val":
            # an annotation whose answers lost their list, and a photo that is not an image
            records[1]["answers"] = "unanswerable"
            bad = f"VizWiz_val_{count:08d}.jpg"
            w.write_corrupt_image(f"val/{bad}")
            records.append(
                {
                    "image": bad,
                    "question": "What color is this?",
                    "answers": [{"answer_confidence": "yes", "answer": "red"} for _ in range(10)],
                    "answer_type": "other",
                    "answerable": 1,
                }
            )
        w.write_json(f"{split}.json", records)
