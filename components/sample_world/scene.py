"""Procedural scenes: the pictures, captions and questions of the sample world.

A `Scene` is a background colour plus a few coloured shapes (and, optionally,
rendered words). Everything said about a scene (captions, questions, answers,
statements) is computed from it, so it is true of the image drawn from it.
All randomness comes from a `random.Random` passed in, so a seed fixes the world.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 205, 35),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (150, 150, 150),
    "beige": (225, 210, 175),
    "teal": (70, 150, 150),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Shapes are laid out on a 4 x 4 grid of cells, one shape per cell. The tiny model's ViT splits
# its 64 px input into the same 4 x 4 patches, so each patch holds at most one whole shape: measured
# in issue 4, its pre-training (components/tiny_vision.py, 300 steps) named size, colour and shape
# of 0.79 of object patches with this layout against 0.24 with shapes placed anywhere.
LAYOUT_GRID = 4
LAYOUT_JITTER = 0.02  # of the image side; a large shape (radius 0.12) stays inside its 0.25 cell
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")
# Words that can be written in a scene (OCR sets, memes, book covers).
WORDS = (
    "stop", "open", "sale", "exit", "cafe", "books", "music", "pizza", "hotel", "taxi",
    "bank", "park", "news", "fresh", "milk", "gold", "river", "space", "tiger", "happy",
)


@dataclass
class Shape:
    """One object of a scene; x, y are its centre as fractions of the image side."""

    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class Scene:
    """A background, shapes and optional words written at the top of the image."""

    background: str
    shapes: list[Shape]
    words: list[str] = field(default_factory=list)

    # -- facts -----------------------------------------------------------------------
    def count(self, shape: str | None = None, color: str | None = None) -> int:
        return sum(
            1 for s in self.shapes if (shape is None or s.shape == shape) and (color is None or s.color == color)
        )

    def unique(self, shape: str | None = None, color: str | None = None) -> Shape | None:
        found = [s for s in self.shapes if (shape is None or s.shape == shape) and (color is None or s.color == color)]
        return found[0] if len(found) == 1 else None

    def caption(self, rng: random.Random) -> str:
        """A true sentence describing the scene; wording varies with rng."""
        groups: dict[tuple[str, str], int] = {}
        for s in self.shapes:
            groups[(s.color, s.shape)] = groups.get((s.color, s.shape), 0) + 1
        parts = []
        for (color, shape), n in groups.items():
            article = "an" if color[0] in "aeiou" else "a"
            parts.append(f"{article} {color} {shape}" if n == 1 else f"{NUMBER_WORDS[n]} {color} {shape}s")
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        opener = rng.choice(("", "a picture of ", "an image showing ", "there is "))
        text = f"{opener}{listed} on a {self.background} background"
        if self.words:
            text += f" with the word {' '.join(self.words)} written on it"
        return text[0].upper() + text[1:]

    def qa_pairs(self) -> list[tuple[str, str]]:
        """Every (question, short answer) pair that is true of the scene, in a fixed order."""
        pairs: list[tuple[str, str]] = []
        for shape in SHAPES:
            obj = self.unique(shape=shape)
            if obj is not None:
                pairs.append((f"What color is the {shape}?", obj.color))
                pairs.append((f"Is the {shape} large or small?", obj.size))
        for color in COLORS:
            obj = self.unique(color=color)
            if obj is not None:
                pairs.append((f"What shape is the {color} object?", obj.shape))
        for shape in SHAPES:
            pairs.append((f"How many {shape}s are there?", str(self.count(shape=shape))))
        pairs.append(("What color is the background?", self.background))
        for s in self.shapes[:2]:
            pairs.append((f"Is there {'an' if s.color[0] in 'aeiou' else 'a'} {s.color} {s.shape}?", "yes"))
        missing = [(c, sh) for c in COLORS for sh in SHAPES if self.count(sh, c) == 0]
        if missing:
            c, sh = missing[(len(self.shapes) * 7) % len(missing)]
            pairs.append((f"Is there {'an' if c[0] in 'aeiou' else 'a'} {c} {sh}?", "no"))
        if self.words:
            pairs.append(("What word is written in the image?", " ".join(self.words)))
        return pairs

    def relation(self, a: Shape, b: Shape) -> str:
        """The dominant spatial relation of a to b: left of / right of / above / below."""
        dx, dy = a.x - b.x, a.y - b.y
        if abs(dx) >= abs(dy):
            return "left of" if dx < 0 else "right of"
        return "above" if dy < 0 else "below"


def random_scene(
    rng: random.Random,
    min_shapes: int = 1,
    max_shapes: int = 4,
    words: list[str] | None = None,
) -> Scene:
    """Draw a random scene: each shape sits in its own cell of a LAYOUT_GRID x LAYOUT_GRID layout
    (centre jittered by at most LAYOUT_JITTER of the image side), so shapes never overlap and every
    fact is visible. With words, the top row is left to the white band they are written on."""
    n = rng.randint(min_shapes, max_shapes)
    rows = range(1 if words else 0, LAYOUT_GRID)
    cells = rng.sample([(r, c) for r in rows for c in range(LAYOUT_GRID)], n)
    shapes = [
        Shape(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES),
              (c + 0.5) / LAYOUT_GRID + rng.uniform(-LAYOUT_JITTER, LAYOUT_JITTER),
              (r + 0.5) / LAYOUT_GRID + rng.uniform(-LAYOUT_JITTER, LAYOUT_JITTER))
        for r, c in cells
    ]
    return Scene(rng.choice(list(BACKGROUNDS)), shapes, list(words or []))


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _draw_shape(pen: ImageDraw.ImageDraw, s: Shape, side: int) -> None:
    r = side * (0.12 if s.size == "large" else 0.07)
    cx, cy = s.x * side, s.y * side
    fill = COLORS[s.color]
    if s.shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif s.shape == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def draw(scene: Scene, side: int = 160) -> Image.Image:
    """Render a scene to an RGB image of side x side pixels."""
    img = Image.new("RGB", (side, side), BACKGROUNDS[scene.background])
    pen = ImageDraw.Draw(img)
    for s in scene.shapes:
        _draw_shape(pen, s, side)
    if scene.words:
        text = " ".join(scene.words)
        font = _font(max(10, side // 9))
        pen.rectangle((0, 0, side, side * 0.25), fill=(255, 255, 255))
        pen.text((side * 0.05, side * 0.04), text, fill=(0, 0, 0), font=font)
    return img


def draw_text_card(lines: list[str], side: int = 160, background: str = "beige",
                   shapes: tuple[Shape, ...] = ()) -> Image.Image:
    """An image that is mostly text (book covers, memes): each line written top to bottom, over
    the given shapes (a book cover's genre emblem)."""
    img = Image.new("RGB", (side, side), BACKGROUNDS[background])
    pen = ImageDraw.Draw(img)
    for s in shapes:
        _draw_shape(pen, s, side)
    font = _font(max(9, side // 11))
    y = side * 0.08
    for line in lines:
        pen.text((side * 0.06, y), line, fill=(0, 0, 0), font=font)
        y += side // 8
    return img


def encode(img: Image.Image, fmt: str = "JPEG") -> bytes:
    """Encode an image in the given PIL format (JPEG, PNG)."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt.upper() == "JPEG" else {}))
    return buf.getvalue()


@dataclass
class Clip:
    """A short video: shapes moving in straight lines over a background."""

    scene: Scene
    velocities: list[tuple[float, float]]
    num_frames: int = 16

    def moving_shape(self) -> Shape:
        """The shape that moves the most (the one questions ask about)."""
        speeds = [abs(vx) + abs(vy) for vx, vy in self.velocities]
        return self.scene.shapes[speeds.index(max(speeds))]

    def direction(self, shape: Shape) -> str:
        vx, vy = self.velocities[self.scene.shapes.index(shape)]
        if abs(vx) >= abs(vy):
            return "left" if vx < 0 else "right"
        return "up" if vy < 0 else "down"

    def frames(self, side: int = 96) -> list[Image.Image]:
        out = []
        for t in range(self.num_frames):
            f = t / max(1, self.num_frames - 1)
            moved = [
                Shape(s.shape, s.color, s.size, min(0.9, max(0.1, s.x + vx * f)), min(0.9, max(0.1, s.y + vy * f)))
                for s, (vx, vy) in zip(self.scene.shapes, self.velocities)
            ]
            out.append(draw(Scene(self.scene.background, moved), side))
        return out


def random_clip(rng: random.Random, num_frames: int = 16) -> Clip:
    """A clip with one clearly moving shape and up to two still ones."""
    scene = random_scene(rng, 1, 3)
    velocities = [(0.0, 0.0) for _ in scene.shapes]
    mover = rng.randrange(len(scene.shapes))
    s = scene.shapes[mover]
    direction = rng.choice(("left", "right", "up", "down"))
    # move towards the side with room, keeping the stated direction
    step = 0.35
    velocities[mover] = {"left": (-step, 0.0), "right": (step, 0.0), "up": (0.0, -step), "down": (0.0, step)}[direction]
    # start the mover on the side it moves away from, so the motion is visible
    if direction == "left":
        s.x = 0.8
    elif direction == "right":
        s.x = 0.2
    elif direction == "up":
        s.y = 0.8
    else:
        s.y = 0.2
    return Clip(scene, velocities, num_frames)


def encode_video(frames: list[Image.Image], container_format: str = "mp4", fps: int = 8) -> bytes:
    """Encode frames as a real video file (MPEG-4 Part 2 in an MP4 or AVI container)."""
    import av  # imported here: only video writers need it

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_format) as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
