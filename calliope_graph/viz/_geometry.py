"""Plane geometry for the layout: text widths, smooth curves through points, anchors,
rectangle hits."""

from __future__ import annotations

import math

__all__ = ["Point", "curve", "mono_width", "rect_hits", "spread", "text_width"]

Point = tuple[float, float]


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous width estimate for sans-serif text (no font metrics offline)."""
    wide = sum(1 for ch in text if ch.isupper() or ch in "mwMW@%")
    narrow = sum(1 for ch in text if ch in "iljtf.,:;'|!() ")
    normal = len(text) - wide - narrow
    em = (normal * 0.56 + wide * 0.72 + narrow * 0.33) * size
    return em * (1.06 if bold else 1.0)


def mono_width(text: str, size: float) -> float:
    """Width of monospace text (port lines)."""
    return len(text) * 0.61 * size


def _hermite(p0: Point, t0: Point, p1: Point, t1: Point, scale: float) -> tuple[Point, ...]:
    c1 = (p0[0] + t0[0] * scale, p0[1] + t0[1] * scale)
    c2 = (p1[0] - t1[0] * scale, p1[1] - t1[1] * scale)
    return (p0, c1, c2, p1)


def curve(points: list[Point], start: Point, end: Point) -> list[tuple[Point, Point, Point, Point]]:
    """Smooth cubic segments through ``points`` with the given end tangents."""
    tangents: list[Point] = [start]
    for i in range(1, len(points) - 1):
        dx = points[i + 1][0] - points[i - 1][0]
        dy = points[i + 1][1] - points[i - 1][1]
        norm = math.hypot(dx, dy) or 1.0
        tangents.append((dx / norm, dy / norm))
    tangents.append(end)
    segments = []
    for i in range(len(points) - 1):
        d = math.dist(points[i], points[i + 1])
        scale = max(d / 2.4, 24.0)
        if i == 0 and start[1] == 0:  # sideways exit of a loop edge
            scale = max(scale, 56.0)
        if i == len(points) - 2 and end[1] == 0:
            scale = max(scale, 56.0)
        p0, c1, c2, p1 = _hermite(points[i], tangents[i], points[i + 1], tangents[i + 1], scale)
        segments.append((p0, c1, c2, p1))
    return segments


def spread(count: int, index: int, left: float, width: float) -> float:
    """The x of the index-th of ``count`` anchors spread over the middle of a box side."""
    if count <= 1:
        return left + width / 2
    span = min(width * 0.7, 26.0 * (count - 1))
    return left + width / 2 - span / 2 + span * index / (count - 1)


def rect_hits(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])
