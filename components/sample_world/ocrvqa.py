"""Sample OCR-VQA in the ocr-vqa.github.io release format (see shared/formats/ocrvqa.md).

One `dataset.json` keyed by book id (ISBN-10 style ids with leading zeros or a final
"X", and ASINs), every split in it (`split` 1/2/3), with parallel question and answer
lists; yes/no answers are capitalised "Yes"/"No". Each cover is a text card showing
the title, "by <author>" and the genre, so every answer can be read off the image;
its file is `images/<id><ext>` with the extension of the record's imageURL.

Like real covers, whose imagery follows genre conventions, every cover also carries its genre's
emblem: a large shape of a fixed colour in the bottom-right corner (`EMBLEMS`), below the text.
A model too small to read the title (the tiny model sees covers at 64 px) can still answer the
genre questions from it, as a person can tell a cookbook from across the shop.
"""

from __future__ import annotations

from PIL import Image, ImageFont

from components.sample_world import scene as scenes
from components.sample_world.world import SourceWriter

SOURCE = "ocrvqa"

SIDE = 160
# genre as the release names it -> the adjective its yes/no questions use
GENRES = {
    "Travel": "travel",
    "Romance": "romantic",
    "History": "historical",
    "Cookbooks, Food & Wine": "cooking",
    "Science & Math": "science",
    "Humor & Entertainment": "comedy",
    "Sports & Outdoors": "sports",
    "Arts & Photography": "art",
    "Calendars": "calendar",
}
# genre -> (colour, shape) of its emblem; no two genres share one
EMBLEMS = {
    "Travel": ("blue", "triangle"),
    "Romance": ("red", "circle"),
    "History": ("black", "square"),
    "Cookbooks, Food & Wine": ("orange", "circle"),
    "Science & Math": ("green", "triangle"),
    "Humor & Entertainment": ("yellow", "circle"),
    "Sports & Outdoors": ("green", "circle"),
    "Arts & Photography": ("purple", "square"),
    "Calendars": ("red", "square"),
}
# the emblem's centre (fractions of the side): the middle of the bottom-right cell of the 4 x 4
# layout grid, which the cover's text (at most four lines from the top) never reaches
EMBLEM_AT = (0.875, 0.875)
FIRST_NAMES = ("Sandra", "James", "Maria", "Lee", "Anna", "Tom", "Ruth", "Omar", "Ivy", "Paul")
LAST_NAMES = ("Boynton", "Hale", "Ortiz", "Park", "Novak", "Reed", "Stone", "Khan", "Moss", "Ford")
URL_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}


def _wrap(text: str, width: float) -> list[str]:
    """Break `text` into lines that fit `width` pixels in the cover's font."""
    font = ImageFont.load_default(size=max(9, SIDE // 11))  # the font draw_text_card uses
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def emblem(genre: str) -> scenes.Shape:
    """The genre's emblem as a shape of the cover (see module docstring)."""
    color, shape = EMBLEMS[genre]
    return scenes.Shape(shape, color, "large", *EMBLEM_AT)


def cover(title: str, author: str, genre: str, background: str) -> Image.Image:
    """The cover: title, "by <author>" and genre written from the top, the genre's emblem below."""
    lines = _wrap(title, SIDE * 0.9) + _wrap(f"by {author}", SIDE * 0.9) + _wrap(genre, SIDE * 0.9)
    return scenes.draw_text_card(lines, SIDE, background, (emblem(genre),))


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _book_id(w: SourceWriter, taken: set[str]) -> str:
    """An ISBN-10 (maybe with leading zeros or a final X) or an ASIN, as strings."""
    while True:
        kind = w.rng.random()
        if kind < 0.2:
            book_id = "B00" + "".join(w.rng.choice("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(7))
        else:
            digits = "".join(w.rng.choice("0123456789") for _ in range(9))
            if kind < 0.5:
                digits = "0" + digits[1:]
            book_id = digits + ("X" if kind > 0.85 else w.rng.choice("0123456789"))
        if book_id not in taken:
            taken.add(book_id)
            return book_id


def _book(w: SourceWriter, split: str, taken: set[str]) -> tuple[str, dict]:
    """Draw one cover and return (book id, record)."""
    book_id = _book_id(w, taken)
    genre = w.rng.choice(list(GENRES))
    author = f"{w.rng.choice(FIRST_NAMES)} {w.rng.choice(LAST_NAMES)}"
    a, b = w.rng.sample(scenes.WORDS, 2)
    year = None
    if genre == "Calendars":
        year = str(w.rng.randint(2010, 2017))
        title = f"{a.capitalize()} Wall Calendar {year}"
    else:
        title = w.rng.choice((f"The {a.capitalize()} {b.capitalize()}", f"{a.capitalize()} and {b.capitalize()}"))
    ext = ".jpg" if w.rng.random() < 0.85 else w.rng.choice((".png", ".gif"))
    w.write_image(f"images/{book_id}{ext}", cover(title, author, genre, w.rng.choice(list(scenes.BACKGROUNDS))))
    other = w.rng.choice([g for g in GENRES if g != genre])
    yes_no = [(f"Is this {_a(GENRES[genre])} book?", "Yes"), (f"Is this {_a(GENRES[other])} book?", "No")]
    w.rng.shuffle(yes_no)
    pairs = [
        ("Who wrote this book?", author),
        ("What is the title of this book?", title),
        ("What is the genre of this book?", genre),
        *yes_no,
    ]
    if year is not None:
        pairs.append(("What is the year printed on this calendar?", year))
    url_name = "".join(w.rng.choice(URL_CHARS) for _ in range(11))
    record = {
        "imageURL": f"http://ecx.images-amazon.com/images/I/{url_name}{ext}",
        "questions": [q for q, _ in pairs],
        "answers": [a for _, a in pairs],
        "title": title,
        "authorName": author,
        "genre": genre,
        "split": SPLIT_CODES[split],
    }
    return book_id, record


def write(w: SourceWriter, n: int, faults: bool) -> None:
    """Write dataset.json and the covers; `n` is the number of train questions (about)."""
    sizes = {"train": n, "val": max(10, n // 5), "test": max(5, n // 20)}
    taken: set[str] = set()
    books: list[tuple[str, dict]] = []
    for split, count in sizes.items():
        written = 0
        first = len(books)
        while written < count:
            books.append(_book(w, split, taken))
            written += len(books[-1][1]["questions"])
        if faults and split == "train":
            # a book whose answer list lost its last entry, and a cover that is not an image
            books[first][1]["answers"].pop()
            book_id, record = _book(w, split, taken)
            ext = record["imageURL"].rsplit(".", 1)[1]
            w.write_corrupt_image(f"images/{book_id}.{ext}")
            books.append((book_id, record))
    w.rng.shuffle(books)  # the release lists books in no split order
    w.write_json("dataset.json", dict(books))
