"""Pre-training the sample world's tiny vision tower so that it sees colours and shapes.

InstructBLIP starts from a frozen, pre-trained image encoder (EVA-CLIP ViT-g): its patch
features already say what is where, and the Q-Former only learns to pick from them. A randomly
initialised tiny ViT is a poor stand-in (measured in issue 4: with it, even a Q-Former trained
with a classifier head straight on the answers stayed at chance on "what colour is the
circle?"). So the tiny ViT is first trained, on freshly drawn sample-world scenes (not on the
prepared data), to say for every patch what the tiny LLM's slot for that cell says
(`components.tiny_lm.slot_words`: size, colour and shape of the shape centred there, or the
background, or writing; a fifth of the images are book covers, `components.tiny_lm.cover_slots`,
whose emblem cell is named by its genre),
with linear heads on its last hidden state that are thrown away afterwards (a fourth head names the
patch's own cell, so the features keep their position). The caller freezes the tower, as the paper
freezes its ViT.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from components.imaging import PixelSpec, to_pixels
from components.sample_world import scene as scenes
from components.sample_world import ocrvqa as ocrvqa_world
from components.tiny_lm import cover_slots, fit, slot_words

# the three word positions of a slot (components.tiny_lm.slot_words, cover_slots), as classes; a
# cover's emblem cell is ("romantic", "emblem"): its genre word takes the colour position
COLOR_CLASSES = (*scenes.COLORS, *scenes.BACKGROUNDS, *ocrvqa_world.GENRES.values())
WHAT_CLASSES = (*scenes.SHAPES, "background", "writing", "emblem")
SIZE_CLASSES = ("none", *scenes.SIZES)
# the sample world's writers draw at 160 px (image_scale 1) and store JPEGs
DRAW_SIDE = 160
# share of book covers (components.sample_world.ocrvqa) among the pre-training images: labelled as
# the tiny LLM reads them, "beige writing" but for the emblem, named by its genre. A fifth: with a
# tenth, 300 steps named the genre of 0.81 of fresh covers' emblems, with a fifth 1.00, while
# scene objects stayed as well named (colour 1.00, shape 0.85; measured in issue 4)
COVER_SHARE = 0.2


def slot_classes(slot: tuple[str, ...]) -> tuple[int, int, int]:
    """(colour, what, size) class ids of one slot: ("small", "red", "circle"), ("gray", "background")
    or a cover's ("romantic", "emblem")."""
    if len(slot) == 3:
        size, color, what = slot
    else:
        (color, what), size = slot, "none"
    return COLOR_CLASSES.index(color), WHAT_CLASSES.index(what), SIZE_CLASSES.index(size)


def slots_labels(slots: list[tuple[str, ...]]) -> np.ndarray:
    """(cells, 3) class ids of the slots of one image, row by row."""
    return np.array([slot_classes(slot) for slot in slots], dtype=np.int64)


def patch_labels(scene: scenes.Scene, grid: int) -> np.ndarray:
    """(grid*grid, 3) class ids of each patch, row by row: the slots of `slot_words`."""
    return slots_labels(slot_words(scene, grid))


def scene_batch(rng: random.Random, n: int, spec: PixelSpec, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random scenes drawn as the sample world draws them: (pixels (n,3,S,S), labels (n,patches,3))."""
    pixels, labels = [], []
    grid = spec.size // patch_size
    for _ in range(n):
        if rng.random() < COVER_SHARE:
            genre = rng.choice(list(ocrvqa_world.GENRES))
            a, b = rng.sample(scenes.WORDS, 2)
            card = ocrvqa_world.cover(f"The {a.capitalize()} {b.capitalize()}", "Anna Reed", genre,
                                      rng.choice(list(scenes.BACKGROUNDS)))
            pixels.append(to_pixels(scenes.encode(card), spec))
            labels.append(slots_labels(cover_slots(genre, grid)))
            continue
        words = [rng.choice(scenes.WORDS)] if rng.random() < 0.2 else None
        scene = scenes.random_scene(rng, 1, 4, words=words)
        pixels.append(to_pixels(scenes.encode(scenes.draw(scene, DRAW_SIDE)), spec))
        labels.append(patch_labels(scene, grid))
    return torch.as_tensor(np.stack(pixels)), torch.as_tensor(np.stack(labels))


def pretrain_vision(vision_model, spec: PixelSpec, patch_size: int, steps: int = 150, batch_size: int = 32,
                    lr: float = 2e-3, seed: int = 0, log=None) -> list[float]:
    """Train the vision tower to label its patches (see module docstring); returns the loss per step.

    `vision_model` is `InstructBlipForConditionalGeneration.vision_model`; its output has one CLS
    token followed by the patch tokens. Leaves it in eval mode.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    hidden = vision_model.config.hidden_size
    grid = spec.size // patch_size
    # the fourth head names each patch's own cell: without it nothing asks the features to keep
    # where they are, and a query of the Q-Former cannot find "its" cell
    heads = torch.nn.ModuleList(
        torch.nn.Linear(hidden, n) for n in (len(COLOR_CLASSES), len(WHAT_CLASSES), len(SIZE_CLASSES), grid * grid)
    )
    cells = torch.arange(grid * grid)
    params = list(vision_model.parameters()) + list(heads.parameters())
    vision_model.train()

    def step_loss(step: int):
        pixels, labels = scene_batch(rng, batch_size, spec, patch_size)
        labels = torch.cat([labels, cells.expand(len(labels), -1).unsqueeze(-1)], -1)
        features = vision_model(pixel_values=pixels).last_hidden_state[:, 1:]
        return sum(
            torch.nn.functional.cross_entropy(head(features).flatten(0, 1), labels[..., i].flatten())
            for i, head in enumerate(heads)
        )

    losses = fit(params, step_loss, steps, lr, max(1, min(20, steps // 5)), log, "tiny-vit", every=50)
    vision_model.eval()
    return losses

