"""Sample LLaVA-Instruct-150K in the Hugging Face release format (see shared/formats/llava_instruct_150k.md).

Writes detail_23k.json (long descriptions), complex_reasoning_77k.json (questions that need
a step of reasoning), conversation_58k.json (2-4 question/answer turns) and
llava_instruct_150k.json (the three concatenated), all over the same COCO-train2017-named
images train2017/<12-digit id>.jpg, so ids repeat across files (and once within the
conversation file). The "<image>" token opens or closes the first human turn.
"""

from __future__ import annotations

import re

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "llava_instruct"

SIDE = 128
DETAIL_PROMPTS = (
    "Describe the following image in detail.",
    "What is going on in this picture? Give a thorough description.",
    "Write a detailed account of everything visible in the image.",
    "Can you describe this image carefully, covering each object you see?",
)
RELATION_WORDS = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


def _with_image_token(w: SourceWriter, text: str) -> str:
    """The release puts "<image>" either before or after the first human turn."""
    return f"<image>\n{text}" if w.rng.random() < 0.5 else f"{text}\n<image>"


def _where(shape: scenes.Shape) -> str:
    """Coarse position of a shape's centre in the image."""
    col = "left" if shape.x < 0.4 else "right" if shape.x > 0.6 else ""
    row = "top" if shape.y < 0.4 else "bottom" if shape.y > 0.6 else ""
    if row and col:
        return f"toward the {row} {col} of the image"
    if row:
        return f"near the {row} of the image"
    if col:
        return f"on the {col} side of the image"
    return "near the center of the image"


def _named(scene: scenes.Scene) -> list[scenes.Shape]:
    """Shapes that "the <color> <shape>" names without ambiguity."""
    return [s for s in scene.shapes if scene.count(s.shape, s.color) == 1]


def _count_phrase(n: int, shape: str) -> str:
    if n == 0:
        return f"no {shape}s"
    return f"one {shape}" if n == 1 else f"{scenes.NUMBER_WORDS[n]} {shape}s"


def describe(scene: scenes.Scene, w: SourceWriter) -> str:
    """A long, true description: overview, every shape with its size and place, one relation."""
    sentences = [scene.caption(w.rng) + "."]
    for s in scene.shapes:
        sentences.append(f"A {s.size} {s.color} {s.shape} is {_where(s)}.")
    named = _named(scene)
    if len(named) >= 2:
        a, b = w.rng.sample(named, 2)
        sentences.append(f"The {a.name} is {RELATION_WORDS[scene.relation(a, b)]} the {b.name}.")
    total = len(scene.shapes)
    how_many = "is one shape" if total == 1 else f"are {scenes.NUMBER_WORDS[total]} shapes"
    sentences.append(f"Altogether there {how_many} on the {scene.background} background.")
    return " ".join(sentences)


def reasoning(scene: scenes.Scene, w: SourceWriter) -> tuple[str, str]:
    """A question that needs a step of reasoning about the scene, and its worked answer."""
    options = []
    by_x = sorted(scene.shapes, key=lambda s: s.x)
    # only ask for an extreme when it is clearly visible (no near tie)
    if len(by_x) >= 2 and by_x[1].x - by_x[0].x >= 0.15:
        s = by_x[0]
        options.append((
            "Which shape is closest to the left edge of the image, and what color is it?",
            f"Comparing how far each shape is from the left edge, the {s.shape} {_where(s)} is the closest one, "
            f"so the answer is a {s.shape}, and it is {s.color}.",
        ))
    by_y = sorted(scene.shapes, key=lambda s: s.y)
    if len(by_y) >= 2 and by_y[1].y - by_y[0].y >= 0.15:
        s = by_y[0]
        same = sum(1 for o in scene.shapes if o is not s and o.size == s.size)
        options.append((
            "Which object sits highest in the picture, and how big is it compared with the others?",
            f"The highest object is a {s.color} {s.shape}. It is {s.size}, "
            + (f"like {scenes.NUMBER_WORDS[same]} of the other shapes." if same else f"and no other shape is {s.size}."),
        ))
    first, second = w.rng.sample(scenes.SHAPES, 2)
    a, b = scene.count(first), scene.count(second)
    verdict = "Yes" if a > b else "No"
    if a > b:
        tail = f"so there are more {first}s"
    else:
        tail = "so the numbers are equal" if a == b else f"so the {second}s outnumber them"
    options.append((
        f"Are there more {first}s than {second}s in this image?",
        f"{verdict}. The image contains {_count_phrase(a, first)} and {_count_phrase(b, second)}, {tail}.",
    ))
    named = _named(scene)
    if named:
        s = w.rng.choice(named)
        total = len(scene.shapes)
        left = total - 1
        if left:
            remain = f"{scenes.NUMBER_WORDS[left]}, so {scenes.NUMBER_WORDS[left]} shape{'' if left == 1 else 's'}"
        else:
            remain = "nothing, so no shapes"
        options.append((
            f"If the {s.name} were taken away, how many shapes would be left in the image?",
            f"The image has {scenes.NUMBER_WORDS[total]} shape{'s' if total > 1 else ''} in total. "
            f"Removing the {s.name} leaves {remain} would remain.",
        ))
    return w.rng.choice(options)


def answer_sentence(question: str, answer: str) -> str:
    """A full-sentence reply for one of Scene.qa_pairs()'s questions."""
    if m := re.fullmatch(r"What color is the (\w+)\?", question):
        return f"The {m[1]} is {answer}." if m[1] != "background" else f"The background is {answer}."
    if m := re.fullmatch(r"Is the (\w+) large or small\?", question):
        return f"The {m[1]} is {answer}."
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        return f"The {m[1]} object is a {answer}."
    if m := re.fullmatch(r"How many (\w+)s are there\?", question):
        count = int(answer)
        return f"There is one {m[1]}." if count == 1 else f"There are {_count_phrase(count, m[1])}."
    if m := re.fullmatch(r"Is there a (\w+ \w+)\?", question):
        return f"Yes, there is a {m[1]} in the image." if answer == "yes" else f"No, there is no {m[1]} in the image."
    return f"{answer[0].upper()}{answer[1:]}."


def conversation(scene: scenes.Scene, w: SourceWriter) -> list[dict]:
    """2-4 true question/answer turns about the scene."""
    pairs = scene.qa_pairs()
    turns = []
    for i, (question, answer) in enumerate(w.rng.sample(pairs, min(len(pairs), w.rng.randint(2, 4)))):
        turns.append({"from": "human", "value": _with_image_token(w, question) if i == 0 else question})
        turns.append({"from": "gpt", "value": answer_sentence(question, answer)})
    return turns


def _record(image_id: int, turns: list[dict]) -> dict:
    return {"id": f"{image_id:012d}", "image": f"{image_id:012d}.jpg", "conversations": turns}


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the sample release: `n` records in each subset file over `n` shared images."""
    detail, reasoning_rows, conversations = [], [], []
    image_id = 9
    for _ in range(n):
        image_id += w.rng.randint(1, 5000)
        scene = scenes.random_scene(w.rng, 1, 4)
        w.write_scene(f"train2017/{image_id:012d}.jpg", scene, side=SIDE)
        prompt = w.rng.choice(DETAIL_PROMPTS)
        detail.append(_record(image_id, [
            {"from": "human", "value": _with_image_token(w, prompt)},
            {"from": "gpt", "value": describe(scene, w)},
        ]))
        question, answer = reasoning(scene, w)
        reasoning_rows.append(_record(image_id, [
            {"from": "human", "value": _with_image_token(w, question)},
            {"from": "gpt", "value": answer},
        ]))
        conversations.append(_record(image_id, conversation(scene, w)))
        if len(conversations) == 1:
            # a second conversation on the same image: the id repeats within the file
            conversations.append(_record(image_id, conversation(scene, w)))
    if faults:
        # a conversation whose reply lost its text, and a description of an image file that is not an image
        conversations[2]["conversations"][1] = {"from": "gpt"}
        image_id += 17
        w.write_corrupt_image(f"train2017/{image_id:012d}.jpg")
        detail.append(_record(image_id, [
            {"from": "human", "value": "<image>\nDescribe the following image in detail."},
            {"from": "gpt", "value": "A large red circle is near the center of the image."},
        ]))
    w.write_json("detail_23k.json", detail)
    w.write_json("complex_reasoning_77k.json", reasoning_rows)
    w.write_json("conversation_58k.json", conversations)
    w.write_json("llava_instruct_150k.json", detail + reasoning_rows + conversations)
