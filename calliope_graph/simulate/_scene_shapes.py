"""The drawings of :mod:`calliope_graph.simulate._scene`: one function per noun, made of
Pillow primitives, each drawing into a box (``SHAPES`` maps a noun to its drawing)."""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import ImageDraw

__all__ = ["RGB", "SHAPES", "Box", "Drawer"]

Box = tuple[float, float, float, float]
RGB = tuple[int, int, int]
Drawer = Callable[[ImageDraw.ImageDraw, Box, random.Random], None]


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
