"""``draw(spec, format)``: one entry point for every structure drawing."""

from __future__ import annotations

from typing import Any, Literal

from calliope_graph.errors import ConfigurationError
from calliope_graph.viz._graph import to_networkx

__all__ = ["FORMATS", "DrawFormat", "draw"]

DrawFormat = Literal["mermaid", "dot", "ascii", "svg", "png"]
FORMATS: tuple[str, ...] = ("mermaid", "dot", "ascii", "svg", "png")


def draw(spec: Any, format: str = "mermaid", **options: Any) -> str | bytes:
    """Draw a flow's structure, offline: text for ``mermaid``/``dot``/``ascii``/``svg``, bytes
    for ``png``.

    ``spec`` is a :class:`~calliope_graph.flow.FlowSpec` or a flow with a ``.spec``. SVG and
    PNG are laid out in Python (no Graphviz, no browser, no web service); ``options`` go to
    the renderer (``legend=False`` for SVG, ``scale=2.0`` for PNG).
    """
    fmt = format.lower().strip()
    if fmt not in FORMATS:
        raise ConfigurationError(
            f"Unknown drawing format {format!r}: use one of {', '.join(FORMATS)}."
        )
    graph = to_networkx(spec)
    if fmt == "mermaid":
        from calliope_graph.viz._text import to_mermaid

        return to_mermaid(graph)
    if fmt == "dot":
        from calliope_graph.viz._text import to_dot

        return to_dot(graph)
    from calliope_graph.viz._layout import layout

    laid_out = layout(graph)
    if fmt == "ascii":
        from calliope_graph.viz._ascii import to_ascii

        return to_ascii(laid_out)
    if fmt == "svg":
        from calliope_graph.viz._svg import render_svg

        return render_svg(laid_out, **options)
    from calliope_graph.viz._png import render_png

    return render_png(laid_out, **options)
