"""Formatting shared by the report's sections: escaping, masking, numbers, times, badges."""

from __future__ import annotations

import math
import re
from datetime import datetime
from html import escape
from typing import Any

from calliope_graph._secrets import REDACTED, redact, redact_tree

__all__ = ["REDACTED", "fmt_seconds", "redact_params"]

_SLUG = re.compile(r"[^A-Za-z0-9_\-]+")


def redact_params(value: Any) -> Any:
    """``value`` with secret-named entries replaced and key-shaped strings masked (recursive)."""
    return redact_tree(value, strict=True)


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def txt(value: object) -> str:
    """Untrusted text, masked and escaped."""
    return escape(redact(str(value), strict=True), quote=True)


def num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt_seconds(seconds: float) -> str:
    """``850 ms``, ``4.2 s``, ``3 min 05 s``."""
    if seconds <= 0:
        return "0 s"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1000:.2f} ms"
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + " s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)} min {rest:02.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def clock(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    except (OverflowError, OSError, ValueError):
        return "?"


def nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exp = math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        step = mult * 10.0**exp
        if step >= raw:
            return step
    return 10.0 ** (exp + 1)


def node_slug(name: str, used: set[str]) -> str:
    base = "node-" + (_SLUG.sub("_", name) or "x")
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


STATUS_LABEL = {
    "ok": "ok",
    "failed": "failed",
    "skipped": "skipped (continued)",
    "fallback": "failed → route taken",
    "cache_hit": "cache hit",
    "running": "running",
    "not_run": "not run",
    "retry": "retried attempt",
    "interrupted": "interrupted",
    "waiting": "waiting for a choice",
    "not_taken": "branch not taken",
}


def badge(status: str) -> str:
    return (
        f'<span class="badge status-{esc(status)}">{esc(STATUS_LABEL.get(status, status))}</span>'
    )


def tick_label(value: float, step: float) -> str:
    """An axis label: ``0``, ``250 ms``, ``1.5 s``, ``45 s``, ``2:30``."""
    if value <= 0:
        return "0"
    if step < 1 and value < 1:
        return f"{value * 1000:.4g} ms"
    if value < 120 or step < 1:
        return f"{value:.4g} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}:{seconds:02d}"


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bar_fill(status: str) -> str:
    return {
        "ok": "#2da44e",
        "cache_hit": "#0a7ea4",
        "fallback": "#d97706",
        "skipped": "#a0a7b0",
        "failed": "#cf222e",
        "running": "#3b6fd8",
        "interrupted": "#7b3fbf",
        "waiting": "#bf3989",
        "not_taken": "#d0d4da",
    }.get(status, "#8c959f")


def media_kind(value: dict[str, Any]) -> str | None:
    path = value.get("path")
    if not isinstance(path, str) or not path:
        return None
    kind = value.get("type")
    if kind in ("image", "audio", "video"):
        return str(kind)
    mime = str(value.get("mime") or "")
    for candidate in ("image", "audio", "video"):
        if mime.startswith(candidate + "/"):
            return candidate
    return None
