"""How one value of a trace is shown: text, numbers, lists, tables, analyses, media."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from calliope_graph.viz._report._data import RunData
from calliope_graph.viz._report._format import esc, media_kind, short, txt

__all__ = ["Page"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]+:")


class Page(RunData):
    """A run's data plus the renderers of its values (media linked relative to the report)."""

    def link(self, path: str) -> str | None:
        """A relative URL to a local media file, or None (remote, missing or not a file)."""
        if _SCHEME.match(path) and not re.match(r"^[A-Za-z]:[\\/]", path):
            return None  # a URL: never fetched by the report
        given = Path(path)
        # Trace paths are relative to the run's output folder; an input given on the command
        # line may be relative to the working directory instead.
        candidates = [given] if given.is_absolute() else [self.media_root / given, given]
        try:
            file = next((c for c in candidates if c.is_file()), None)
            if file is None:
                return None
            rel = os.path.relpath(file.resolve(), self.report_dir)
        except (OSError, ValueError):
            return None
        return quote(Path(rel).as_posix(), safe="/")

    def media(self, kind: str, value: dict[str, Any]) -> str:
        path = str(value.get("path", ""))
        name = path.replace("\\", "/").rsplit("/", 1)[-1] or path
        size = ""
        if value.get("width") and value.get("height"):
            size = f" · {esc(value['width'])}×{esc(value['height'])}"
        mime = f" · {esc(value['mime'])}" if value.get("mime") else ""
        url = self.link(path)
        if url is None:
            return (
                f'<div class="media missing">{esc(kind)} <code>{txt(short(path, 200))}</code> '
                "(not found beside this report)</div>"
            )
        href = esc(url)
        caption = f'<figcaption><a href="{href}">{txt(name)}</a>{size}{mime}</figcaption>'
        if kind == "image":
            body = (
                f'<a href="{href}" target="_blank" rel="noopener">'
                f'<img class="thumb" src="{href}" alt="{txt(name)}"></a>'
            )
        elif kind == "audio":
            body = f'<audio class="player" controls preload="metadata" src="{href}"></audio>'
        else:
            body = f'<video class="player thumb" controls preload="metadata" src="{href}"></video>'
        return f'<figure class="media media-{kind}">{body}{caption}</figure>'

    def value(self, value: Any, depth: int = 0) -> str:
        if value is None:
            return '<span class="none">—</span>'
        if isinstance(value, bool | int | float):
            return f"<code>{esc(value)}</code>"
        if isinstance(value, str):
            if len(value) <= 90 and "\n" not in value:
                return f'<span class="text">{txt(value) or "<i>(empty)</i>"}</span>'
            return f'<pre class="text">{txt(value)}</pre>'
        if isinstance(value, dict):
            kind = media_kind(value)
            if kind is not None:
                return self.media(kind, value)
            if value.get("type") == "analysis":
                return self.analysis(value)
            if depth >= 4:
                return f'<pre class="text">{txt(value)}</pre>'
            rows = "".join(
                f"<dt>{txt(k)}</dt><dd>{self.value(v, depth + 1)}</dd>" for k, v in value.items()
            )
            return f'<dl class="kv">{rows}</dl>' if rows else '<span class="none">{}</span>'
        if isinstance(value, list | tuple):
            if not value:
                return '<span class="none">[]</span>'
            if (
                all(isinstance(v, str | int | float) for v in value)
                and sum(len(str(v)) for v in value) < 160
            ):
                return '<span class="text">' + txt(", ".join(map(str, value))) + "</span>"
            items = "".join(f"<li>{self.value(v, depth + 1)}</li>" for v in value)
            return f'<ol class="list">{items}</ol>'
        return f"<code>{txt(value)}</code>"

    def analysis(self, value: dict[str, Any]) -> str:
        rows = []
        for key in ("description", "captions", "tags", "objects", "text", "sources"):
            item = value.get(key)
            if item in (None, "", []):
                continue
            shown = ", ".join(map(str, item)) if isinstance(item, list) else str(item)
            rows.append(f"<dt>{esc(key)}</dt><dd>{txt(shown)}</dd>")
        head = '<dt class="tag">image analysis</dt>'
        return f'<dl class="kv analysis">{head}{"".join(rows)}</dl>'

    def table(self, values: dict[str, Any], empty: str) -> str:
        if not values:
            return f'<p class="none">{esc(empty)}</p>'
        rows = "".join(
            f'<tr><th scope="row">{txt(k)}</th><td>{self.value(v)}</td></tr>'
            for k, v in values.items()
        )
        return f'<table class="values">{rows}</table>'
