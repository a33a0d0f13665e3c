"""Sample Hateful Memes in the phase-2 release format (see shared/formats/hateful_memes.md).

A meme is a text card whose lines are the meme's text, with a small scene pasted below. The
label is a function of that text only: phrases from a fixed list of mildly hostile, group-
directed lines are hateful (1), friendly or neutral lines are not (0). Rows are compact JSON with
escaped slashes ("img\\/05349.png"); ids below 10000 are unpadded in `id` but padded in `img`;
the test files have no `label`.
"""

from __future__ import annotations

import textwrap

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "hateful_memes"

# Kept deliberately mild: the point is a learnable text -> label rule, not realistic abuse.
HOSTILE = (
    "you people are all worthless",
    "nobody wants your kind around here",
    "your people ruin everything they touch",
    "people like you should stay out of our town",
    "your kind is too dumb to learn anything",
    "we would be better off without your people",
)
FRIENDLY = (
    "have a great day everyone",
    "friends make every day better",
    "when the coffee finally kicks in",
    "my cat thinks he runs this house",
    "love your neighbors all of them",
    "monday again but we got this",
    "everyone is welcome at our table",
    "me pretending to understand the meeting",
)


def _draw_meme(w: SourceWriter, relpath: str, text: str) -> None:
    side = 160
    card = scenes.draw_text_card(textwrap.wrap(text, 17), side, w.rng.choice(list(scenes.BACKGROUNDS)))
    picture = scenes.draw(scenes.random_scene(w.rng, 1, 2), side // 2)
    card.paste(picture, (side // 4, side // 2))
    w.write_image(relpath, card)


def _rows(w: SourceWriter, ids: list[int], labelled: bool) -> list[dict]:
    rows = []
    for meme_id in ids:
        hateful = w.rng.random() < 0.4
        text = w.rng.choice(HOSTILE if hateful else FRIENDLY)
        img = f"img/{meme_id:05d}.png"
        _draw_meme(w, img, text)
        row = {"id": meme_id, "img": img}
        if labelled:
            row["label"] = int(hateful)
        row["text"] = text
        rows.append(row)
    return rows


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write the five JSON Lines files and img/ (dev_seen holds n memes)."""
    sizes = {"dev_seen": n, "train": max(10, n // 5), "dev_unseen": max(5, n // 10), "test_seen": 5, "test_unseen": 5}
    total = sum(sizes.values()) + 1
    # a few ids below 10000 (unpadded id, padded file name) lead the main split
    ids = w.rng.sample(range(1000, 10000), 3) + w.rng.sample(range(10000, 100000), total - 3)
    files: dict[str, list[dict]] = {}
    for name, count in sizes.items():
        chunk, ids = ids[:count], ids[count:]
        files[name] = _rows(w, chunk, labelled=not name.startswith("test"))

    if faults:
        # a row whose label went missing, and a meme whose image is not an image
        del files["dev_seen"][1]["label"]
        bad = ids.pop()
        w.write_corrupt_image(f"img/{bad:05d}.png")
        files["dev_seen"].append({"id": bad, "img": f"img/{bad:05d}.png", "label": 0, "text": FRIENDLY[0]})

    for name, rows in files.items():
        w.write_jsonl(f"{name}.jsonl", rows, compact=True, escape_slashes=True)
