"""The sample world's book covers show their genre's emblem where the text never reaches."""

import random

import numpy as np
import pytest

from components.sample_world import ocrvqa
from components.sample_world import scene as scenes


def test_every_genre_has_its_own_emblem():
    assert set(ocrvqa.EMBLEMS) == set(ocrvqa.GENRES)
    assert len(set(ocrvqa.EMBLEMS.values())) == len(ocrvqa.EMBLEMS)
    for color, shape in ocrvqa.EMBLEMS.values():
        assert color in scenes.COLORS and shape in scenes.SHAPES


@pytest.mark.parametrize("genre", list(ocrvqa.GENRES))
def test_the_emblem_cell_holds_the_emblem_and_no_text(genre):
    rng = random.Random(genre)
    side = ocrvqa.SIDE
    cell = slice(side * 3 // 4, side)  # the bottom-right cell of the 4 x 4 layout grid
    longest = sorted(scenes.WORDS, key=len)[-2:]
    for a, b in [longest] + [rng.sample(scenes.WORDS, 2) for _ in range(19)]:
        # the writer's longer title forms: "<A> and <B>", "<A> Wall Calendar <year>"
        calendar = genre == "Calendars"
        title = f"{a.capitalize()} Wall Calendar 2016" if calendar else f"{a.capitalize()} and {b.capitalize()}"
        background = rng.choice(list(scenes.BACKGROUNDS))
        card = np.asarray(ocrvqa.cover(title, "Sandra Boynton", genre, background))
        emblem_only = np.asarray(scenes.draw_text_card([], side, background, (ocrvqa.emblem(genre),)))
        assert np.array_equal(card[cell, cell], emblem_only[cell, cell])
        plain = np.asarray(scenes.draw_text_card([], side, background))
        assert not np.array_equal(card[cell, cell], plain[cell, cell])  # the emblem is there
        assert not np.array_equal(card[: side // 2], plain[: side // 2])  # and so is the text
