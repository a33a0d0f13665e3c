"""Sample A-OKVQA in the allenai/aokvqa v1.0 release format (see shared/formats/aokvqa.md).

JSON arrays per split over COCO-2017-named images (`{split}2017/<id:012d>.jpg`, no
"COCO_" prefix). Each question (a 22-character string id) has four choices, the
index of the correct one, ten free-form direct answers and three rationales, all
true of the drawn scene; the test file has none of the answer fields.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.okvqa import annotator_answers, knowledge_questions
from components.sample_world.world import SourceWriter

SOURCE = "aokvqa"

SIDE = 128
# question ids look like "22MexNkBPpdZGX6sxbxVBH": 22 characters of this alphabet
ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _question_id(w: SourceWriter, taken: set[str]) -> str:
    while True:
        qid = "22" + "".join(w.rng.choice(ID_ALPHABET) for _ in range(20))
        if qid not in taken:
            taken.add(qid)
            return qid


def _record(w: SourceWriter, split: str, image_id: int, qid: str, qa) -> dict:
    """One A-OKVQA record: the answer among three distractors, shuffled."""
    choices = [qa.answer, *w.rng.sample(qa.distractors, 3)]
    w.rng.shuffle(choices)
    record = {
        "split": split,
        "image_id": image_id,
        "question_id": qid,
        "question": qa.question,
        "choices": choices,
        "correct_choice_idx": choices.index(qa.answer),
        "direct_answers": annotator_answers(w.rng, qa),
        "difficult_direct_answer": w.rng.random() < 0.1,
        "rationales": list(qa.rationales),
    }
    if split == "test":
        for hidden in ("correct_choice_idx", "direct_answers", "rationales"):
            del record[hidden]
    return record


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the three annotation arrays and COCO 2017 images; `n` is the size of train."""
    sizes = {"train": n, "val": max(10, n // 5), "test": max(5, n // 20)}
    next_image_id = 299207
    taken: set[str] = set()
    for split, count in sizes.items():
        records = []
        while len(records) < count:
            image_id = next_image_id
            next_image_id += 17
            scene = scenes.random_scene(w.rng, 1, 4)
            pool = [qa for qa in knowledge_questions(scene) if len(qa.distractors) >= 3]
            if not pool:
                continue
            w.write_scene(f"{split}2017/{image_id:012d}.jpg", scene, SIDE)
            for qa in w.rng.sample(pool, min(len(pool), w.rng.randint(1, 2))):
                records.append(_record(w, split, image_id, _question_id(w, taken), qa))
        if faults and split == "train":
            # a correct_choice_idx written as a string, and an image file that is not an image
            records[1]["correct_choice_idx"] = str(records[1]["correct_choice_idx"])
            bad_image = next_image_id
            next_image_id += 17
            w.write_corrupt_image(f"{split}2017/{bad_image:012d}.jpg")
            qa = knowledge_questions(scenes.Scene("gray", [scenes.Shape("square", "blue", "large", 0.5, 0.5)]))[0]
            records.append(_record(w, split, bad_image, _question_id(w, taken), qa))
        w.write_json(f"aokvqa_v1p0_{split}.json", records)
