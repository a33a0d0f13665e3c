"""Sample TextVQA 0.5.1 in the textvqa.org release format (see shared/formats/textvqa.md).

Scenes with one or two words written on a white banner at the top; lower-case
questions about that text, ten answers each (some annotators write in capitals).
Train and val images share `train_images/`, test images are in `test_images/`, and
the test file has no answers. The optional Rosetta OCR files are written too, with
exactly the words drawn on each image.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "textvqa"

SIDE = 128
IMAGE_FOLDERS = {"train": "train_images", "val": "train_images", "test": "test_images"}
IMAGE_CLASSES = ("Poster", "Signage", "Billboard", "Street sign", "Banner", "Shape")


def _reading_questions(words: list[str]) -> list[tuple[str, str]]:
    """(question, answer) pairs about the words on the banner, all true of the image."""
    text = " ".join(words)
    pairs = [("what is written at the top?", text), ("what does the sign say?", text)]
    if len(words) == 1:
        pairs.append(("what word is written at the top?", text))
    else:
        pairs += [
            ("what is the first word written at the top?", words[0]),
            ("what is the last word on the banner?", words[-1]),
            ("how many words are written at the top?", str(len(words))),
        ]
    return pairs


def _question_record(w: SourceWriter, split: str, image_id: str, qid: int, question: str, answer: str) -> dict:
    record = {
        "question": question,
        "image_id": image_id,
        "image_classes": w.rng.sample(IMAGE_CLASSES, 2),
        "flickr_original_url": f"https://farm6.staticflickr.com/2891/{qid + 9134076951}_{image_id[:10]}_o.jpg",
        "flickr_300k_url": f"https://c4.staticflickr.com/3/2891/{qid + 9134076951}_{image_id[:10]}_z.jpg",
        "image_width": SIDE,
        "image_height": SIDE,
        "answers": [answer.upper() if w.rng.random() < 0.15 else answer for _ in range(10)],
        "question_tokens": question.rstrip("?").split(),
        "question_id": qid,
        "set_name": split,
    }
    if split == "test":
        del record["answers"]
    return record


def _ocr_entry(image_id: str, words: list[str]) -> dict:
    """Rosetta-style OCR for one image: the drawn words with their boxes (fractions of the side)."""
    info, x = [], 0.05
    for word in words:
        width = 0.07 * len(word)
        info.append(
            {
                "word": word,
                "bounding_box": {
                    "top_left_x": round(x, 4), "top_left_y": 0.04, "width": round(width, 4), "height": 0.12,
                    "rotation": 0, "roll": 0, "pitch": 0, "yaw": 0,
                },
            }
        )
        x += width + 0.04
    return {"image_id": image_id, "ocr_tokens": list(words), "ocr_info": info}


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write questions, OCR files and images for train/val/test; `n` is the size of val."""
    sizes = {"train": max(10, n // 5), "val": n, "test": max(5, n // 20)}
    next_qid = 0  # question ids are unique across the three splits
    for split, count in sizes.items():
        folder = IMAGE_FOLDERS[split]
        records, ocr = [], []
        while len(records) < count:
            image_id = "".join(w.rng.choice("0123456789abcdef") for _ in range(16))
            words = w.rng.sample(scenes.WORDS, w.rng.randint(1, 2))
            w.write_scene(f"{folder}/{image_id}.jpg", scenes.random_scene(w.rng, 1, 3, words=words), SIDE)
            ocr.append(_ocr_entry(image_id, words))
            pairs = _reading_questions(words)
            for question, answer in w.rng.sample(pairs, w.rng.randint(1, 2)):
                records.append(_question_record(w, split, image_id, next_qid, question, answer))
                next_qid += 1
        if faults and split == "val":
            # a question that lost its text, and an image file that is not an image
            del records[1]["question"]
            image_id = "".join(w.rng.choice("0123456789abcdef") for _ in range(16))
            w.write_corrupt_image(f"{folder}/{image_id}.jpg")
            ocr.append(_ocr_entry(image_id, ["exit"]))
            records.append(_question_record(w, split, image_id, next_qid, "what is written at the top?", "exit"))
            next_qid += 1
        header = {"dataset_type": split, "dataset_name": "textvqa", "dataset_version": "0.5.1"}
        w.write_json(f"TextVQA_0.5.1_{split}.json", {**header, "data": records})
        w.write_json(f"TextVQA_Rosetta_OCR_v0.2_{split}.json", {**header, "data": ocr})
