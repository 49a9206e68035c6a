"""LangGraph Server adapters: the shipped flows served with typed I/O, per-run context and
media routes.

- :func:`serve_graph` compiles a flow for the server (``calliope_graph.graphs.server`` does
  it for every shipped flow; ``langgraph.json`` lists them);
- :class:`ServeSettings` is what the server's environment decides (media root, simulator,
  public URL); :class:`ServeContext` what a client may pass with a run;
- :func:`media_input` turns a data URL, an http(s) URL, a signed media URL of this server or
  a media path of the run's own thread into a media value; :func:`public` turns outputs
  into JSON with signed, expiring media URLs (:class:`MediaSigner`);
- :mod:`calliope_graph.serve.app` is the Starlette app serving ``GET /media/...`` to a valid
  signature (or to the thread's owner under a custom auth handler).
"""

from typing import TYPE_CHECKING

from calliope_graph._lazy import exports

# Loaded on first use (calliope_graph/_lazy.py).
if TYPE_CHECKING:
    from calliope_graph.serve._graph import ServeContext, ServeSettings, serve_graph, stream_event
    from calliope_graph.serve._inputs import media_input
    from calliope_graph.serve._outputs import media_url, public
    from calliope_graph.serve._schema import AudioOutput, ImageOutput, VideoOutput
    from calliope_graph.serve._signing import MediaSigner
else:
    __getattr__, __dir__ = exports(
        __name__,
        {
            "calliope_graph.serve._graph": [
                "ServeContext",
                "ServeSettings",
                "serve_graph",
                "stream_event",
            ],
            "calliope_graph.serve._inputs": ["media_input"],
            "calliope_graph.serve._outputs": ["media_url", "public"],
            "calliope_graph.serve._schema": ["AudioOutput", "ImageOutput", "VideoOutput"],
            "calliope_graph.serve._signing": ["MediaSigner"],
        },
    )

__all__ = [
    "AudioOutput",
    "ImageOutput",
    "MediaSigner",
    "ServeContext",
    "ServeSettings",
    "VideoOutput",
    "media_input",
    "media_url",
    "public",
    "serve_graph",
    "stream_event",
]
