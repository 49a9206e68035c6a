"""Simple drawn scenes for the image fakes: the prompt's nouns as recognisable shapes.

A small vocabulary of nouns (cat, fox, house, tree, sun, moon, sea, mountain, person, dog,
bird, boat, castle, flower, star, dragon, …) each has a drawing made of Pillow primitives;
any other noun gets a generic object with its name written under it. The sky, the ground
and the light follow words of the prompt (night, sunset, snow, desert, beach). Every image
carries a small "simulated" mark. Everything is a pure function of the prompt and size.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image as PILImage
from PIL import ImageChops, ImageDraw, ImageStat

__all__ = ["MARK", "SHAPES", "draw_scene", "has_mark"]

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, Box, random.Random], None]

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


def _poly(d: ImageDraw.ImageDraw, pts: list[tuple[float, float]], fill: RGB) -> None:
    d.polygon(pts, fill=fill)


def _cat(d: ImageDraw.ImageDraw, b: Box, rng: random.Random, fur: RGB = (235, 140, 40)) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    d.ellipse((x0 + 0.15 * w, y0 + 0.45 * h, x1 - 0.05 * w, y1), fill=fur)  # body
    d.line((x1 - 0.1 * w, y1 - 0.2 * h, x1 + 0.05 * w, y0 + 0.3 * h), fill=fur, width=int(w / 12))
    hx, hy, r = x0 + 0.28 * w, y0 + 0.38 * h, 0.22 * w
    _poly(
        d, [(hx - r, hy - 0.3 * r), (hx - 0.8 * r, hy - 1.5 * r), (hx - 0.1 * r, hy - 0.8 * r)], fur
    )
    _poly(
        d, [(hx + r, hy - 0.3 * r), (hx + 0.8 * r, hy - 1.5 * r), (hx + 0.1 * r, hy - 0.8 * r)], fur
    )
    d.ellipse((hx - r, hy - r, hx + r, hy + r), fill=fur)
    for ex in (hx - 0.4 * r, hx + 0.4 * r):
        d.ellipse((ex - 0.14 * r, hy - 0.3 * r, ex + 0.14 * r, hy + 0.05 * r), fill=(30, 120, 40))
    d.line((hx - 0.9 * r, hy + 0.3 * r, hx - 0.2 * r, hy + 0.2 * r), fill=(40, 40, 40), width=1)
    d.line((hx + 0.9 * r, hy + 0.3 * r, hx + 0.2 * r, hy + 0.2 * r), fill=(40, 40, 40), width=1)


def _fox(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    fur, white = (220, 95, 25), (245, 240, 230)
    d.ellipse((x0 + 0.25 * w, y0 + 0.45 * h, x1 - 0.1 * w, y1 - 0.1 * h), fill=fur)
    d.ellipse((x1 - 0.3 * w, y0 + 0.55 * h, x1 + 0.1 * w, y1 - 0.05 * h), fill=fur)  # tail
    d.ellipse((x1 - 0.02 * w, y0 + 0.7 * h, x1 + 0.1 * w, y1 - 0.1 * h), fill=white)
    for lx in (0.35, 0.65):
        d.rectangle((x0 + lx * w, y1 - 0.2 * h, x0 + (lx + 0.05) * w, y1), fill=(60, 30, 20))
    hx, hy = x0 + 0.2 * w, y0 + 0.42 * h
    _poly(
        d, [(hx - 0.18 * w, hy - 0.05 * h), (hx - 0.1 * w, hy - 0.32 * h), (hx, hy - 0.1 * h)], fur
    )
    _poly(
        d, [(hx + 0.18 * w, hy - 0.05 * h), (hx + 0.1 * w, hy - 0.32 * h), (hx, hy - 0.1 * h)], fur
    )
    _poly(d, [(hx - 0.2 * w, hy - 0.1 * h), (hx + 0.2 * w, hy - 0.1 * h), (hx, hy + 0.2 * h)], fur)
    _poly(
        d, [(hx - 0.1 * w, hy + 0.03 * h), (hx + 0.1 * w, hy + 0.03 * h), (hx, hy + 0.2 * h)], white
    )
    d.ellipse((hx - 0.03 * w, hy + 0.16 * h, hx + 0.03 * w, hy + 0.22 * h), fill=(20, 20, 20))
    for ex in (hx - 0.08 * w, hx + 0.06 * w):
        d.ellipse((ex, hy - 0.05 * h, ex + 0.03 * w, hy - 0.01 * h), fill=(20, 20, 20))


def _dog(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    fur, dark = (150, 100, 60), (90, 55, 30)
    d.ellipse((x0 + 0.25 * w, y0 + 0.4 * h, x1 - 0.05 * w, y1 - 0.15 * h), fill=fur)
    for lx in (0.32, 0.45, 0.72, 0.82):
        d.rectangle((x0 + lx * w, y1 - 0.3 * h, x0 + (lx + 0.06) * w, y1), fill=fur)
    d.line((x1 - 0.08 * w, y0 + 0.5 * h, x1 + 0.05 * w, y0 + 0.3 * h), fill=fur, width=int(w / 15))
    hx, hy, r = x0 + 0.22 * w, y0 + 0.35 * h, 0.17 * w
    d.ellipse((hx - r, hy - r, hx + r, hy + r), fill=fur)
    d.ellipse((hx - 1.2 * r, hy - 0.8 * r, hx - 0.6 * r, hy + 0.6 * r), fill=dark)  # ears
    d.ellipse((hx + 0.6 * r, hy - 0.8 * r, hx + 1.2 * r, hy + 0.6 * r), fill=dark)
    d.ellipse((hx - 0.2 * r, hy + 0.2 * r, hx + 0.2 * r, hy + 0.5 * r), fill=(20, 20, 20))
    for ex in (hx - 0.45 * r, hx + 0.3 * r):
        d.ellipse((ex, hy - 0.35 * r, ex + 0.18 * r, hy - 0.15 * r), fill=(20, 20, 20))


def _house(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    wall = rng.choice([(230, 215, 180), (200, 120, 90), (240, 240, 230)])
    d.rectangle((x0 + 0.1 * w, y0 + 0.4 * h, x1 - 0.1 * w, y1), fill=wall)
    _poly(d, [(x0, y0 + 0.42 * h), (x1, y0 + 0.42 * h), ((x0 + x1) / 2, y0)], (150, 45, 35))
    d.rectangle((x0 + 0.42 * w, y0 + 0.68 * h, x0 + 0.58 * w, y1), fill=(100, 60, 30))
    for wx in (0.18, 0.68):
        d.rectangle(
            (x0 + wx * w, y0 + 0.52 * h, x0 + (wx + 0.14) * w, y0 + 0.66 * h), fill=(120, 190, 230)
        )


def _tree(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.rectangle((cx - 0.08 * w, y0 + 0.55 * h, cx + 0.08 * w, y1), fill=(110, 70, 35))
    leaf = rng.choice([(40, 140, 50), (60, 160, 60), (30, 110, 45)])
    if rng.random() < 0.5:
        for i in range(3):
            top = y0 + i * 0.18 * h
            _poly(
                d,
                [
                    (x0 + 0.1 * w - i * 0.05 * w, top + 0.4 * h),
                    (x1 - 0.1 * w + i * 0.05 * w, top + 0.4 * h),
                    (cx, top),
                ],
                leaf,
            )
    else:
        d.ellipse((x0, y0, x1, y0 + 0.65 * h), fill=leaf)


def _sun(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    for i in range(12):
        a = i * 3.14159 / 6
        from math import cos, sin

        d.line(
            (cx + 0.7 * r * cos(a), cy + 0.7 * r * sin(a), cx + r * cos(a), cy + r * sin(a)),
            fill=(255, 200, 40),
            width=max(2, int(r / 10)),
        )
    d.ellipse((cx - 0.6 * r, cy - 0.6 * r, cx + 0.6 * r, cy + 0.6 * r), fill=(255, 215, 60))


def _moon(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    d.ellipse(b, fill=(245, 240, 200))
    shift = 0.35 * (x1 - x0)
    d.ellipse(
        (x0 + shift, y0 - 0.1 * (y1 - y0), x1 + shift, y1 - 0.1 * (y1 - y0)), fill=(20, 30, 70)
    )


def _star(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    from math import cos, pi, sin

    x0, y0, x1, y1 = b
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.42
        a = -pi / 2 + i * pi / 5
        pts.append((cx + rad * cos(a), cy + rad * sin(a)))
    _poly(d, pts, (255, 230, 90))


def _cloud(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    for fx, fy, fr in ((0.3, 0.6, 0.25), (0.55, 0.45, 0.3), (0.75, 0.62, 0.22)):
        cx, cy, r = x0 + fx * w, y0 + fy * h, fr * w
        d.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=(250, 250, 250))


def _bird(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    width = max(2, int(w / 14))
    for k in range(3):
        ox, oy, s = x0 + k * 0.3 * w, y0 + (k % 2) * 0.3 * h, 0.35
        d.line(
            (ox, oy + 0.2 * h, ox + s * w / 2, oy + 0.35 * h, ox + s * w, oy + 0.2 * h),
            fill=(30, 30, 40),
            width=width,
        )


def _boat(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    _poly(
        d,
        [(x0, y0 + 0.7 * h), (x1, y0 + 0.7 * h), (x1 - 0.15 * w, y1), (x0 + 0.15 * w, y1)],
        (120, 60, 30),
    )
    d.rectangle((x0 + 0.48 * w, y0, x0 + 0.52 * w, y0 + 0.7 * h), fill=(80, 50, 30))
    _poly(
        d,
        [
            (x0 + 0.54 * w, y0 + 0.05 * h),
            (x0 + 0.54 * w, y0 + 0.65 * h),
            (x1 - 0.05 * w, y0 + 0.65 * h),
        ],
        (250, 250, 245),
    )
    _poly(
        d,
        [
            (x0 + 0.46 * w, y0 + 0.15 * h),
            (x0 + 0.46 * w, y0 + 0.65 * h),
            (x0 + 0.12 * w, y0 + 0.65 * h),
        ],
        (230, 80, 60),
    )


def _castle(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    stone = (150, 150, 160)
    d.rectangle((x0 + 0.15 * w, y0 + 0.35 * h, x1 - 0.15 * w, y1), fill=stone)
    for tx in (0.0, 0.7):
        d.rectangle((x0 + tx * w, y0 + 0.15 * h, x0 + (tx + 0.3) * w, y1), fill=stone)
        for k in range(3):
            cx = x0 + (tx + 0.02 + k * 0.1) * w
            d.rectangle((cx, y0 + 0.08 * h, cx + 0.06 * w, y0 + 0.15 * h), fill=stone)
        _poly(
            d,
            [
                (x0 + tx * w, y0 + 0.08 * h),
                (x0 + (tx + 0.3) * w, y0 + 0.08 * h),
                (x0 + (tx + 0.15) * w, y0 - 0.1 * h),
            ],
            (70, 60, 140),
        )
    _poly(
        d,
        [
            (x0 + 0.4 * w, y1),
            (x0 + 0.6 * w, y1),
            (x0 + 0.6 * w, y0 + 0.7 * h),
            (x0 + 0.5 * w, y0 + 0.6 * h),
            (x0 + 0.4 * w, y0 + 0.7 * h),
        ],
        (70, 45, 25),
    )


def _flower(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    for k in range(3):
        cx = x0 + (0.2 + 0.3 * k) * w
        top = y0 + (0.2 + 0.15 * (k % 2)) * h
        d.line((cx, top, cx, y1), fill=(40, 130, 40), width=max(2, int(w / 30)))
        petal = rng.choice([(230, 60, 90), (250, 200, 40), (200, 90, 220), (250, 250, 250)])
        r = 0.1 * w
        for dx, dy in ((-r, 0), (r, 0), (0, -r), (0, r)):
            d.ellipse(
                (cx + dx - r * 0.7, top + dy - r * 0.7, cx + dx + r * 0.7, top + dy + r * 0.7),
                fill=petal,
            )
        d.ellipse((cx - r * 0.5, top - r * 0.5, cx + r * 0.5, top + r * 0.5), fill=(250, 220, 60))


def _person(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    coat = rng.choice([(60, 90, 180), (170, 50, 50), (60, 130, 80), (120, 70, 150)])
    r = 0.13 * h
    d.ellipse((cx - r, y0, cx + r, y0 + 2 * r), fill=(240, 200, 160))
    _poly(
        d,
        [
            (cx - 0.25 * w, y0 + 0.75 * h),
            (cx + 0.25 * w, y0 + 0.75 * h),
            (cx + 0.12 * w, y0 + 0.27 * h),
            (cx - 0.12 * w, y0 + 0.27 * h),
        ],
        coat,
    )
    lw = max(2, int(w / 12))
    d.line((cx - 0.1 * w, y0 + 0.75 * h, cx - 0.12 * w, y1), fill=(50, 40, 40), width=lw)
    d.line((cx + 0.1 * w, y0 + 0.75 * h, cx + 0.12 * w, y1), fill=(50, 40, 40), width=lw)
    d.line((cx - 0.12 * w, y0 + 0.32 * h, cx - 0.35 * w, y0 + 0.6 * h), fill=coat, width=lw)
    d.line((cx + 0.12 * w, y0 + 0.32 * h, cx + 0.35 * w, y0 + 0.55 * h), fill=coat, width=lw)


def _dragon(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    scale = (50, 150, 70)
    _poly(
        d,
        [(x0 + 0.4 * w, y0 + 0.5 * h), (x0 + 0.3 * w, y0), (x0 + 0.65 * w, y0 + 0.45 * h)],
        (30, 110, 50),
    )
    _poly(
        d,
        [
            (x0 + 0.55 * w, y0 + 0.5 * h),
            (x0 + 0.8 * w, y0 + 0.05 * h),
            (x0 + 0.75 * w, y0 + 0.5 * h),
        ],
        (30, 110, 50),
    )
    d.ellipse((x0 + 0.25 * w, y0 + 0.4 * h, x0 + 0.8 * w, y0 + 0.75 * h), fill=scale)
    d.line((x0 + 0.75 * w, y0 + 0.6 * h, x1, y0 + 0.85 * h), fill=scale, width=max(3, int(h / 12)))
    d.line(
        (x0 + 0.3 * w, y0 + 0.5 * h, x0 + 0.15 * w, y0 + 0.3 * h),
        fill=scale,
        width=max(3, int(h / 10)),
    )
    d.ellipse((x0, y0 + 0.2 * h, x0 + 0.22 * w, y0 + 0.38 * h), fill=scale)
    _poly(
        d,
        [(x0, y0 + 0.3 * h), (x0 - 0.12 * w, y0 + 0.25 * h), (x0 - 0.1 * w, y0 + 0.35 * h)],
        (250, 130, 30),
    )
    d.ellipse((x0 + 0.05 * w, y0 + 0.24 * h, x0 + 0.08 * w, y0 + 0.28 * h), fill=(250, 230, 60))


def _lantern(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    d.line((cx, y0, cx, y0 + 0.2 * h), fill=(40, 40, 40), width=max(2, int(w / 20)))
    d.ellipse((cx - 0.45 * w, y0 + 0.1 * h, cx + 0.45 * w, y1), fill=(255, 220, 120))
    d.ellipse((cx - 0.3 * w, y0 + 0.25 * h, cx + 0.3 * w, y1 - 0.15 * h), fill=(255, 170, 40))
    d.rectangle((cx - 0.35 * w, y0 + 0.1 * h, cx + 0.35 * w, y0 + 0.2 * h), fill=(60, 40, 30))


def _mountain(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    for k, (fx, fw, fh) in enumerate(((0.0, 0.6, 1.0), (0.35, 0.65, 0.8))):
        left, right, peak = x0 + fx * w, x0 + (fx + fw) * w, y1 - fh * h
        mid = (left + right) / 2
        _poly(d, [(left, y1), (right, y1), (mid, peak)], (110 + 15 * k, 110 + 15 * k, 125))
        cap = 0.25
        _poly(
            d,
            [
                (mid - cap * (mid - left), peak + cap * (y1 - peak)),
                (mid + cap * (right - mid), peak + cap * (y1 - peak)),
                (mid, peak),
            ],
            (245, 245, 250),
        )


def _sea(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    d.rectangle(b, fill=(40, 100, 180))
    step = max(8.0, (x1 - x0) / 12)
    for row in range(3):
        y = y0 + (row + 0.5) * (y1 - y0) / 3
        x = x0 + (row % 2) * step / 2
        while x < x1:
            d.arc(
                (x, y - step / 4, x + step, y + step / 4), 200, 340, fill=(200, 230, 250), width=2
            )
            x += step


def _kite(d: ImageDraw.ImageDraw, b: Box, rng: random.Random) -> None:
    x0, y0, x1, y1 = b
    w, h = x1 - x0, y1 - y0
    cx, cy = x0 + 0.35 * w, y0 + 0.4 * h
    colour = rng.choice([(220, 40, 40), (240, 180, 30), (60, 90, 200)])
    _poly(d, [(cx, y0), (cx + 0.22 * w, cy), (cx, y0 + 0.85 * h), (cx - 0.22 * w, cy)], colour)
    d.line((cx, y0, cx, y0 + 0.85 * h), fill=(250, 250, 250), width=1)
    d.line((cx - 0.22 * w, cy, cx + 0.22 * w, cy), fill=(250, 250, 250), width=1)
    tail = [(cx, y0 + 0.85 * h), (cx + 0.15 * w, y1 - 0.05 * h), (cx + 0.3 * w, y1), (x1, y1)]
    d.line(tail, fill=(60, 60, 60), width=max(1, int(w / 40)))


SHAPES: dict[str, Drawer] = {
    "kite": _kite,
    "cat": _cat,
    "fox": _fox,
    "dog": _dog,
    "house": _house,
    "tree": _tree,
    "sun": _sun,
    "moon": _moon,
    "star": _star,
    "cloud": _cloud,
    "bird": _bird,
    "boat": _boat,
    "castle": _castle,
    "flower": _flower,
    "person": _person,
    "dragon": _dragon,
    "lantern": _lantern,
    "mountain": _mountain,
    "sea": _sea,
}


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
        _mountain(d, (0, horizon - 0.35 * height, width, horizon), rng)
    if "sea" in kinds:
        _sea(d, (0, horizon, width, horizon + 0.2 * height), rng)
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
