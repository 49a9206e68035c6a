"""LangGraph Server adapters: the shipped flows served with typed I/O, per-run context and
media routes.

- :func:`serve_graph` compiles a flow for the server (``calliope_graph.graphs.server`` does
  it for every shipped flow; ``langgraph.json`` lists them);
- :class:`ServeSettings` is what the server's environment decides (media root, simulator,
  public URL); :class:`ServeContext` what a client may pass with a run;
- :func:`media_input` turns a data URL, an http(s) URL or a path under the media root into
  a media value; :func:`public` turns outputs into JSON with media URLs;
- :mod:`calliope_graph.serve.app` is the Starlette app serving ``GET /media/...``.
"""

from calliope_graph.serve._graph import ServeContext, ServeSettings, serve_graph, stream_event
from calliope_graph.serve._inputs import media_input
from calliope_graph.serve._outputs import media_url, public
from calliope_graph.serve._schema import AudioOutput, ImageOutput, VideoOutput

__all__ = [
    "AudioOutput",
    "ImageOutput",
    "ServeContext",
    "ServeSettings",
    "VideoOutput",
    "media_input",
    "media_url",
    "public",
    "serve_graph",
    "stream_event",
]
