"""Sample GQA in the questions1.2 release format (see shared/formats/gqa.md).

Writes testdev_balanced (the evaluation split, `n` questions) and small train/val
balanced files: JSON objects keyed by zero-padded string question ids, each record
with its answer, full-sentence answer, question types and a small functional program.
Image ids are strings, some in the "n161313" style.
"""

from __future__ import annotations

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "gqa"

FILES = {
    "train": "questions1.2/train_balanced_questions.json",
    "val": "questions1.2/val_balanced_questions.json",
    "test": "questions1.2/testdev_balanced_questions.json",
}
SIDE = 128


def _relation_questions(scene: scenes.Scene) -> list[dict]:
    """Spatial questions between two shapes that are each the only one of their colour and kind."""
    named = [s for s in scene.shapes if scene.count(s.shape, s.color) == 1]
    out = []
    for i, a in enumerate(named):
        for j, b in enumerate(named):
            if i == j:
                continue
            rel = scene.relation(a, b)
            if rel in ("left of", "right of"):
                side = rel.split()[0]
                question = f"Is the {a.name} to the left or to the right of the {b.name}?"
                full = f"The {a.name} is to the {side} of the {b.name}."
            else:
                side = rel
                question = f"Is the {a.name} above or below the {b.name}?"
                full = f"The {a.name} is {rel} the {b.name}."
            out.append(
                {
                    "question": question,
                    "answer": side,
                    "fullAnswer": full,
                    "types": {"structural": "choose", "semantic": "rel", "detailed": "positionChoose"},
                    "semantic": [
                        {"operation": "select", "dependencies": [], "argument": f"{b.shape} ({j})"},
                        {"operation": "choose rel", "dependencies": [0], "argument": f"{a.shape}|{rel}|s"},
                    ],
                }
            )
    return out


def _attribute_questions(scene: scenes.Scene) -> list[dict]:
    """The scene's own true question/answer pairs, with a full answer and question types."""
    out = []
    for question, answer in scene.qa_pairs():
        question = question.replace("Is there a orange", "Is there an orange")  # scene.py's article slip
        if question.startswith("Is there"):
            article, thing = question.split(maxsplit=3)[2:]
            thing = thing.rstrip("?")
            full = f"Yes, there is {article} {thing}." if answer == "yes" else f"No, there is no {thing}."
            types = {"structural": "verify", "semantic": "obj", "detailed": "existAttr"}
        elif question.startswith("How many"):
            continue  # GQA has no counting questions
        elif question.startswith("What color is the background"):
            full = f"The background is {answer}."
            types = {"structural": "query", "semantic": "global", "detailed": "place"}
        elif question.startswith("What color"):
            full = f"The {question.split()[-1][:-1]} is {answer}."
            types = {"structural": "query", "semantic": "attr", "detailed": "color"}
        elif question.startswith("What shape"):
            full = f"The {question.split()[4]} object is a {answer}."
            types = {"structural": "query", "semantic": "cat", "detailed": "categoryAttr"}
        elif question.startswith("Is the"):
            full = f"The {question.split()[2]} is {answer}."
            types = {"structural": "choose", "semantic": "attr", "detailed": "chooseAttr"}
        else:
            continue
        out.append(
            {
                "question": question,
                "answer": answer,
                "fullAnswer": full,
                "types": types,
                "semantic": [{"operation": "select", "dependencies": [], "argument": question.split()[-1].rstrip("?")}],
            }
        )
    return out


def _record(q: dict, image_id: str, group: str) -> dict:
    """A full GQA question record around the generated question/answer."""
    return {
        "semantic": q["semantic"],
        "entailed": [],
        "equivalent": [],
        "question": q["question"],
        "imageId": image_id,
        "isBalanced": True,
        "groups": {"global": None if q["types"]["structural"] != "query" else q["types"]["detailed"], "local": group},
        "answer": q["answer"],
        "semanticStr": " -> ".join(f"{op['operation']}: {op['argument']}" for op in q["semantic"]),
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
        "types": q["types"],
        "fullAnswer": q["fullAnswer"],
    }


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the three balanced question files and their images; `n` is the size of test-dev."""
    sizes = {"train": max(10, n // 5), "val": max(10, n // 5), "test": n}
    next_qid = 2930152  # written zero-padded to 8 digits, like "02930152"
    next_image = 2354786
    for split, count in sizes.items():
        questions: dict[str, dict] = {}
        while len(questions) < count:
            # test-dev images carry "n"-prefixed ids in the release; mix both styles everywhere
            image_id = f"n{next_image % 1_000_000}" if w.rng.random() < 0.4 else str(next_image)
            next_image += 13
            scene = scenes.random_scene(w.rng, 2, 4)
            w.write_scene(f"images/{image_id}.jpg", scene, SIDE)
            pool = _attribute_questions(scene) + _relation_questions(scene)
            picked = w.rng.sample(pool, min(len(pool), w.rng.randint(2, 4)))
            qids = []
            for q in picked:
                qid = f"{next_qid:08d}"
                next_qid += 1
                qids.append(qid)
                questions[qid] = _record(q, image_id, f"{len(questions):02d}-{q['answer'].replace(' ', '_')}")
            for qid in qids:
                questions[qid]["equivalent"] = [qid]
                questions[qid]["entailed"] = [other for other in qids if other != qid][:2]
        if faults and split == "test":
            # an image id written as a number instead of a string, and an image that is not one
            first = next(iter(questions))
            questions[first]["imageId"] = int(questions[first]["imageId"].lstrip("n"))
            bad_image = f"n{next_image % 1_000_000}"
            next_image += 13
            w.write_corrupt_image(f"images/{bad_image}.jpg")
            qid = f"{next_qid:08d}"
            next_qid += 1
            questions[qid] = _record(
                {
                    "question": "What color is the background?",
                    "answer": "gray",
                    "fullAnswer": "The background is gray.",
                    "types": {"structural": "query", "semantic": "global", "detailed": "place"},
                    "semantic": [{"operation": "select", "dependencies": [], "argument": "background"}],
                },
                bad_image,
                "00-gray",
            )
        w.write_json(FILES[split], questions)
