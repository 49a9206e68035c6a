"""Simple drawn scenes for the image fakes: the prompt's nouns as recognisable shapes.

A small vocabulary of nouns (cat, fox, house, tree, sun, moon, sea, mountain, person, dog,
bird, boat, castle, flower, star, dragon, …) each has a drawing made of Pillow primitives;
any other noun gets a generic object with its name written under it. The sky, the ground
and the light follow words of the prompt (night, sunset, snow, desert, beach). Every image
carries a small "simulated" mark. Everything is a pure function of the prompt and size.
"""

from __future__ import annotations

import random

from PIL import Image as PILImage
from PIL import ImageChops, ImageDraw, ImageStat

from calliope_graph.simulate._scene_shapes import RGB, SHAPES, Box

__all__ = ["MARK", "SHAPES", "draw_scene", "has_mark"]


#: Synonyms drawn with the same shape.
_ALIASES = {
    "kitten": "cat",
    "kitty": "cat",
    "puppy": "dog",
    "wolf": "dog",
    "home": "house",
    "cottage": "house",
    "cabin": "house",
    "village": "house",
    "forest": "tree",
    "woods": "tree",
    "oak": "tree",
    "pine": "tree",
    "ocean": "sea",
    "lake": "sea",
    "river": "sea",
    "water": "sea",
    "harbor": "sea",
    "harbour": "sea",
    "beach": "sea",
    "waves": "sea",
    "hill": "mountain",
    "hills": "mountain",
    "mountains": "mountain",
    "peak": "mountain",
    "man": "person",
    "woman": "person",
    "girl": "person",
    "boy": "person",
    "child": "person",
    "knight": "person",
    "king": "person",
    "queen": "person",
    "princess": "person",
    "prince": "person",
    "wizard": "person",
    "robot": "person",
    "people": "person",
    "traveler": "person",
    "traveller": "person",
    "raven": "bird",
    "crow": "bird",
    "owl": "bird",
    "gull": "bird",
    "ship": "boat",
    "sailboat": "boat",
    "tower": "castle",
    "palace": "castle",
    "fortress": "castle",
    "lighthouse": "castle",
    "flowers": "flower",
    "rose": "flower",
    "garden": "flower",
    "meadow": "flower",
    "stars": "star",
    "comet": "star",
    "sky": "cloud",
    "clouds": "cloud",
    "storm": "cloud",
    "rain": "cloud",
    "lamp": "lantern",
    "light": "lantern",
    "candle": "lantern",
    "sunrise": "sun",
    "sunset": "sun",
}

#: Words that set the light or the ground rather than name a thing to draw.
_MOOD = {"night", "midnight", "day", "morning", "evening", "dusk", "dawn", "noon", "snow"}
_MOOD |= {"winter", "summer", "autumn", "spring", "desert", "sand", "dune", "ice", "snowy"}
_MOOD |= {"field", "fields", "grass", "ground", "landscape", "world", "air", "weather"}
_SKY_THINGS = {"sun", "moon", "star", "cloud", "bird", "dragon", "kite"}


def shape_of(noun: str) -> str | None:
    """The drawing a noun maps to (``"kitten"`` → ``"cat"``), or None."""
    word = noun.lower()
    word = _ALIASES.get(word, word)
    if word not in SHAPES and word.endswith("s"):
        word = _ALIASES.get(word[:-1], word[:-1])
    return word if word in SHAPES else None


def _generic(d: ImageDraw.ImageDraw, b: Box, rng: random.Random, name: str) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    colour = (rng.randrange(60, 220), rng.randrange(60, 220), rng.randrange(60, 220))
    d.rounded_rectangle(
        (x0 + 0.15 * w, y0 + 0.25 * h, x1 - 0.15 * w, y1 - 0.2 * h), radius=0.1 * w, fill=colour
    )
    d.ellipse((x0 + 0.3 * w, y0 + 0.05 * h, x1 - 0.3 * w, y0 + 0.35 * h), fill=colour)
    d.text((x0 + 0.1 * w, y1 - 0.15 * h), name[:14], fill=(255, 255, 255))


def _background(im: PILImage.Image, words: set[str], horizon: int, rng: random.Random) -> None:
    width, height = im.size
    if words & {"night", "moon", "stars", "star", "dark", "midnight", "comet"}:
        top, bottom = (10, 15, 45), (40, 50, 110)
    elif words & {"sunset", "dusk", "evening", "sunrise", "dawn"}:
        top, bottom = (90, 70, 160), (250, 150, 80)
    else:
        top, bottom = (90, 150, 230), (190, 220, 250)
    shade = rng.randrange(-12, 13)  # the seed varies the light a little
    top = (max(0, top[0] + shade), max(0, top[1] + shade), min(255, top[2] + abs(shade)))
    sky = PILImage.new("RGB", (1, 2))
    sky.putpixel((0, 0), top)
    sky.putpixel((0, 1), bottom)
    im.paste(sky.resize((width, max(horizon, 1)), PILImage.Resampling.BILINEAR), (0, 0))
    if words & {"snow", "winter", "ice", "snowy"}:
        ground: RGB = (235, 240, 245)
    elif words & {"desert", "sand", "beach", "dune"}:
        ground = (225, 200, 140)
    else:
        ground = (80, 160, 70)
    ImageDraw.Draw(im).rectangle((0, horizon, width, height), fill=ground)


def draw_scene(
    nouns: list[str], words: set[str], width: int, height: int, rng: random.Random
) -> PILImage.Image:
    """An RGB picture of ``nouns`` (the first few), lit and placed after ``words``."""
    im = PILImage.new("RGB", (width, height))
    horizon = int(height * (0.55 + 0.06 * rng.random()))
    _background(im, words, horizon, rng)
    d = ImageDraw.Draw(im)
    shapes = [(n, shape_of(n)) for n in nouns]
    kinds = {k for _, k in shapes if k}
    if "mountain" in kinds:
        SHAPES["mountain"](d, (0, horizon - 0.35 * height, width, horizon), rng)
    if "sea" in kinds:
        SHAPES["sea"](d, (0, horizon, width, horizon + 0.2 * height), rng)
    night = bool(words & {"night", "moon", "stars", "star", "dark", "midnight", "comet"})
    sky_slots = [(0.08, 0.06), (0.62, 0.08), (0.38, 0.16)]
    ground: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for name, kind in shapes:
        key = kind or name
        if key in seen or kind in ("mountain", "sea") or (kind is None and name in _MOOD):
            continue
        seen.add(key)
        if kind in _SKY_THINGS and sky_slots:
            fx, fy = sky_slots.pop(0)
            size = 0.22 * min(width, height) if kind != "dragon" else 0.35 * min(width, height)
            SHAPES[kind](
                d,
                (
                    fx * width,
                    fy * height,
                    fx * width + size * (1.6 if kind in ("cloud", "bird", "dragon") else 1),
                    fy * height + size,
                ),
                rng,
            )
        else:
            ground.append((name, kind))
    if night and "moon" not in kinds and "star" not in kinds:
        for _ in range(12):
            x, y = rng.random() * width, rng.random() * horizon * 0.8
            d.ellipse((x, y, x + 2, y + 2), fill=(250, 250, 220))
    ground = ground[:3]
    for i, (name, kind) in enumerate(ground):
        slot_w = width / max(len(ground), 1)
        size = min(slot_w * 0.8, height * (0.42 if kind in ("house", "castle", "tree") else 0.3))
        cx = slot_w * (i + 0.5)
        base = (
            height * (0.92 if kind != "boat" else 0.78)
            if "sea" not in kinds or kind == "boat"
            else height * 0.95
        )
        if kind == "boat":
            base = horizon + 0.12 * height
        box = (cx - size / 2, base - size, cx + size / 2, base)
        if kind:
            SHAPES[kind](d, box, rng)
        else:
            _generic(d, box, rng, name)
    _mark(d, width, height)
    return im


#: The mark's text, and its box's size and distance from the bottom-right corner.
MARK = "simulated"
_MARK_W, _MARK_H = 6 * len(MARK) + 7, 11 + 3
_MARK_RIGHT, _MARK_BOTTOM = 3, 5


def _mark_box(width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = width - _MARK_RIGHT - _MARK_W, height - _MARK_BOTTOM - _MARK_H
    return x0, y0, x0 + _MARK_W, y0 + _MARK_H


def _mark(d: ImageDraw.ImageDraw, width: int, height: int) -> None:
    """A small "simulated" label in the bottom-right corner."""
    x0, y0, x1, y1 = _mark_box(width, height)
    if x0 < 0 or y0 < 0:
        return
    d.rectangle((x0, y0, x1 - 1, y1 - 1), fill=(0, 0, 0))
    d.text((x0 + 3, y0 + 2), MARK, fill=(255, 255, 255))


def has_mark(im: PILImage.Image) -> bool:
    """Whether the RGB image carries the "simulated" mark where :func:`draw_scene` puts it
    (compared pixel by pixel with the mark drawn afresh, allowing for JPEG noise)."""
    box = _mark_box(*im.size)
    if box[0] < 0 or box[1] < 0:
        return False
    reference = PILImage.new("RGB", (_MARK_W, _MARK_H))
    _mark(ImageDraw.Draw(reference), _MARK_W + _MARK_RIGHT, _MARK_H + _MARK_BOTTOM)
    diff = ImageChops.difference(im.crop(box).convert("RGB"), reference).convert("L")
    return sum(ImageStat.Stat(diff).mean) < 24
