"""Sample VQAv2 in the visualqa.org release format (see shared/formats/vqav2.md)."""

from __future__ import annotations

from components.sample_world.world import SourceWriter
from components.sample_world import scene as scenes

SOURCE = "vqav2"

SUBSETS = {"train": "train2014", "val": "val2014", "test": "test2015"}


def _answer_type(answer: str) -> str:
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def write(w: SourceWriter, n: int, faults: bool) -> None:
    sizes = {"train": n, "val": max(10, n // 5), "test": max(5, n // 20)}
    next_image_id = 100
    for split, count in sizes.items():
        subset = SUBSETS[split]
        questions, annotations = [], []
        while len(questions) < count:
            image_id = next_image_id
            next_image_id += 7
            scene = scenes.random_scene(w.rng, 1, 4)
            w.write_scene(f"{subset}/COCO_{subset}_{image_id:012d}.jpg", scene)
            pairs = scene.qa_pairs()
            for k, (question, answer) in enumerate(w.rng.sample(pairs, min(3, len(pairs)))):
                qid = image_id * 1000 + k
                questions.append({"image_id": image_id, "question": question, "question_id": qid})
                annotations.append(
                    {
                        "question_type": " ".join(question.lower().split()[:2]),
                        "multiple_choice_answer": answer,
                        "answers": [
                            {"answer": answer, "answer_confidence": w.rng.choice(("yes", "yes", "maybe")), "answer_id": i}
                            for i in range(1, 11)
                        ],
                        "image_id": image_id,
                        "answer_type": _answer_type(answer),
                        "question_id": qid,
                    }
                )
        if faults and split == "train":
            # a question whose annotation lost its answers list, and one whose image is corrupt
            annotations[1]["answers"] = "net"
            bad_image = next_image_id
            next_image_id += 7
            w.write_corrupt_image(f"{subset}/COCO_{subset}_{bad_image:012d}.jpg")
            questions.append({"image_id": bad_image, "question": "What color is the circle?", "question_id": bad_image * 1000})
            annotations.append(
                {
                    "question_type": "what color",
                    "multiple_choice_answer": "red",
                    "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)],
                    "image_id": bad_image,
                    "answer_type": "other",
                    "question_id": bad_image * 1000,
                }
            )
        header = {"info": {"description": "sample world"}, "license": {"url": "", "name": "sample"}, "data_type": "mscoco", "data_subtype": subset}
        w.write_json(
            f"v2_OpenEnded_mscoco_{subset}_questions.json",
            {**header, "task_type": "Open-Ended", "questions": questions},
        )
        if split != "test":
            w.write_json(f"v2_mscoco_{subset}_annotations.json", {**header, "annotations": annotations})
