"""PNG of the same layout the SVG draws, with Pillow only (no renderer binary, no browser).

Pillow draws without anti-aliasing, so the picture is drawn at twice the wanted size and
scaled down with a Lanczos filter. Fonts: DejaVu when the system has it, else Pillow's
bundled scalable font.
"""

from __future__ import annotations

import io
import itertools
import math
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from calliope_graph.viz._geometry import Point
from calliope_graph.viz._graph import CATEGORIES
from calliope_graph.viz._layout import (
    LABEL_SIZE,
    LINE_GAP,
    PAD_X,
    PAD_Y,
    STACK,
    TEXT_SIZE,
    TITLE_SIZE,
    Box,
    Layout,
    Route,
    text_width,
)
from calliope_graph.viz._style import EDGE_STYLES, STATUS_STYLES

__all__ = ["render_png"]

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

_SUPERSAMPLE = 2


@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False, mono: bool = False) -> Font:
    names = (
        ["DejaVuSansMono.ttf"]
        if mono
        else (
            ["DejaVuSans-Bold.ttf", "Arial Bold.ttf"] if bold else ["DejaVuSans.ttf", "Arial.ttf"]
        )
    )
    for name in names:
        for candidate in (name, f"/usr/share/fonts/truetype/dejavu/{name}"):
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))


def _blend(colour: str, opacity: float) -> tuple[int, int, int]:
    r, g, b = _rgb(colour)
    return (
        round(r * opacity + 255 * (1 - opacity)),
        round(g * opacity + 255 * (1 - opacity)),
        round(b * opacity + 255 * (1 - opacity)),
    )


def _dashed(
    draw: ImageDraw.ImageDraw,
    points: list[Point],
    fill: tuple[int, int, int],
    width: int,
    dash: tuple[float, ...],
) -> None:
    """Draw a polyline with a dash pattern (Pillow has none)."""
    if not dash:
        draw.line(points, fill=fill, width=width, joint="curve")
        return
    pattern = list(dash)
    index, left, on = 0, pattern[0], True
    for a, b in itertools.pairwise(points):
        seg = math.dist(a, b)
        pos = 0.0
        while pos < seg - 1e-9:
            step = min(left, seg - pos)
            if on:
                t0, t1 = pos / seg, (pos + step) / seg
                draw.line(
                    [
                        (a[0] + (b[0] - a[0]) * t0, a[1] + (b[1] - a[1]) * t0),
                        (a[0] + (b[0] - a[0]) * t1, a[1] + (b[1] - a[1]) * t1),
                    ],
                    fill=fill,
                    width=width,
                )
            pos += step
            left -= step
            if left <= 1e-9:
                index = (index + 1) % len(pattern)
                left, on = pattern[index], not on


def render_png(
    layout: Layout,
    *,
    status: dict[str, str] | None = None,
    taken: set[tuple[str, str, str]] | None = None,
    scale: float = 1.5,
) -> bytes:
    """The drawing as PNG bytes, ``scale`` times the SVG's size (1.5 by default)."""
    k = scale * _SUPERSAMPLE
    legend = sorted({r.style for r in layout.all_routes()}, key=list(EDGE_STYLES).index)
    legend_h = 36.0 if legend else 0.0
    legend_w = sum(44 + text_width(EDGE_STYLES[s].name, LABEL_SIZE) + 18 for s in legend) + 32
    width = max(layout.width, legend_w)
    size = (max(int(width * k), 1), max(int((layout.height + legend_h) * k), 1))
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)

    _draw_layout(draw, layout, k, status, taken)
    if legend:
        x, y = 16.0, layout.height + 18
        for key in legend:
            es = EDGE_STYLES[key]
            _dashed(
                draw,
                [(x * k, y * k), ((x + 30) * k, y * k)],
                _rgb(es.color),
                max(int(es.width * k), 1),
                tuple(d * k for d in es.dash),
            )
            _arrow(draw, ((x + 34) * k, y * k), (1.0, 0.0), _rgb(es.color), 4.5 * k)
            draw.text(
                ((x + 42) * k, y * k),
                es.name,
                fill=(51, 51, 51),
                font=_font(round(LABEL_SIZE * k)),
                anchor="lm",
            )
            x += 44 + text_width(es.name, LABEL_SIZE) + 18
    out = image.resize(
        (max(int(width * scale), 1), max(int((layout.height + legend_h) * scale), 1)),
        Image.Resampling.LANCZOS,
    )
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _draw_layout(
    draw: ImageDraw.ImageDraw,
    layout: Layout,
    k: float,
    status: dict[str, str] | None,
    taken: set[tuple[str, str, str]] | None,
) -> None:
    """Edges, then boxes (a cluster's inside right after its frame), then edge labels."""
    for route in layout.routes:
        _draw_route(draw, route, k, taken)
    for box in layout.boxes.values():
        _draw_box(draw, box, k, status)
        if box.inner is not None:
            _draw_layout(draw, box.inner, k, status, taken)
    for route in layout.routes:
        if route.label is None:
            continue
        lab = route.label
        style = EDGE_STYLES[route.style]
        faded = taken is not None and (route.source, route.target, route.kind) not in taken
        colour = _blend(style.color, 0.5 if faded else 1.0)
        draw.rounded_rectangle(
            [
                (lab.x - lab.w / 2) * k,
                (lab.y - lab.h / 2) * k,
                (lab.x + lab.w / 2) * k,
                (lab.y + lab.h / 2) * k,
            ],
            radius=3 * k,
            fill=(255, 255, 255),
            outline=colour,
            width=max(int(0.6 * k), 1),
        )
        draw.text(
            (lab.x * k, lab.y * k),
            lab.text,
            fill=colour,
            font=_font(round(LABEL_SIZE * k)),
            anchor="mm",
        )


def _arrow(
    draw: ImageDraw.ImageDraw,
    tip: Point,
    direction: Point,
    fill: tuple[int, int, int],
    size: float,
) -> None:
    dx, dy = direction
    back = (tip[0] - dx * size * 1.8, tip[1] - dy * size * 1.8)
    nx, ny = -dy, dx
    draw.polygon(
        [
            tip,
            (back[0] + nx * size, back[1] + ny * size),
            (back[0] - nx * size, back[1] - ny * size),
        ],
        fill=fill,
    )


def _draw_route(
    draw: ImageDraw.ImageDraw,
    route: Route,
    k: float,
    taken: set[tuple[str, str, str]] | None,
) -> None:
    style = EDGE_STYLES[route.style]
    width = style.width
    opacity = 1.0
    if taken is not None:
        if (route.source, route.target, route.kind) in taken:
            width += 1.6
        else:
            opacity = 0.32
    colour = _blend(style.color, opacity)
    line = [(x * k, y * k) for x, y in route.polyline(20)]
    head = (4.0 if width < 2.5 else 3.2) * k
    # Stop the line short of the tip so the arrowhead stays sharp.
    direction = route.end_direction()
    tip = line[-1]
    line[-1] = (tip[0] - direction[0] * head * 1.5, tip[1] - direction[1] * head * 1.5)
    _dashed(draw, line, colour, max(int(width * k), 1), tuple(d * k for d in style.dash))
    _arrow(draw, tip, direction, colour, head)


def _draw_box(draw: ImageDraw.ImageDraw, box: Box, k: float, status: dict[str, str] | None) -> None:
    fill, stroke = CATEGORIES.get(box.category, CATEGORIES["helper"])
    dash: tuple[float, ...] = (5.0, 3.0) if box.fallback_only else ()
    opacity = 1.0
    outcome = None
    if status is not None:
        outcome = status.get(box.id, "not_run")
        st = STATUS_STYLES.get(outcome, STATUS_STYLES["not_run"])
        fill, stroke, opacity = st.fill, st.stroke, st.opacity
        dash = st.dash or dash
    x0, y0, x1, y1 = box.x * k, box.y * k, (box.x + box.w) * k, (box.y + box.h) * k
    radius = (box.h / 2 if box.role in ("input", "output", "continue") else 8.0) * k
    line_w = max(int((2.2 if outcome not in (None, "not_run") else 1.4) * k), 1)
    if box.inner is not None:  # a subflow cluster: a frame with its header
        fill = CATEGORIES.get(box.category, CATEGORIES["subflow"])[0]
        opacity = 1.0
    if box.stack:  # a mapped node: two shadow boxes behind it
        for d in (2 * STACK, STACK):
            draw.rounded_rectangle(
                [x0 + d * k, y0 + d * k, x1 + d * k, y1 + d * k],
                radius=radius,
                fill=_blend(fill, opacity),
                outline=_blend(stroke, opacity),
                width=max(int(1.2 * k), 1),
            )
    draw.rounded_rectangle(
        [x0, y0, x1, y1],
        radius=radius,
        fill=_blend(fill, opacity),
        outline=None if dash else _blend(stroke, opacity),
        width=line_w,
    )
    if dash:  # dashed outline: walk the rectangle's perimeter
        r = radius
        outline = [
            (x0 + r, y0), (x1 - r, y0), (x1, y0 + r), (x1, y1 - r),
            (x1 - r, y1), (x0 + r, y1), (x0, y1 - r), (x0, y0 + r), (x0 + r, y0),
        ]  # fmt: skip
        _dashed(draw, outline, _blend(stroke, opacity), line_w, tuple(d * k for d in dash))
    if box.role == "continue":
        draw.text(
            ((x0 + x1) / 2, (y0 + y1) / 2),
            "continue",
            fill=_blend("#555555", opacity),
            font=_font(round(TEXT_SIZE * k)),
            anchor="mm",
        )
        return
    if box.role == "node" and box.inner is None:
        band = CATEGORIES.get(box.category, CATEGORIES["helper"])[1]
        draw.rounded_rectangle([x0, y0, x0 + 5 * k, y1], radius=2 * k, fill=_blend(band, opacity))
    pad = (PAD_X + (5 if box.role in ("input", "output") else 0)) * k
    y = y0 + (PAD_Y + TITLE_SIZE * 0.85) * k
    draw.text(
        (x0 + pad, y),
        box.title,
        fill=_blend("#1f2328", opacity),
        font=_font(round(TITLE_SIZE * k), bold=True),
        anchor="ls",
    )
    y += 3 * k
    rows: list[tuple[str, bool]] = []
    if box.subtitle:
        rows.append((box.subtitle, False))
    rows += [(line, line[:3] in ("in ", "out") and box.inner is None) for line in box.lines]
    for text, mono in rows:
        y += (TEXT_SIZE + LINE_GAP) * k
        size = TEXT_SIZE - (0.8 if mono else 0)
        draw.text(
            (x0 + pad, y),
            text,
            fill=_blend("#57606a", opacity),
            font=_font(round(size * k), mono=mono),
            anchor="ls",
        )
