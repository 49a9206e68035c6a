"""The shipped flows compiled for LangGraph Server (``langgraph.json`` lists each of them).

Each module attribute is one flow, named as the flow (``webcam_story``, ...), built by
:func:`calliope_graph.serve.serve_graph`: the flow's own inputs and outputs as its schemas
(media in by data URL, http(s) URL or a path under the media root; out as URLs of this
server's ``/media`` routes), a run context built per run from the server's environment
(keys, ``CALLIOPE_MEDIA_ROOT``, ``CALLIOPE_SIMULATE=1``). The server supplies persistence,
so they compile without a checkpointer.
"""

from __future__ import annotations

from typing import Any

from calliope_graph.flow import shipped_flows
from calliope_graph.media import set_media_root
from calliope_graph.serve import ServeSettings, serve_graph

SETTINGS = ServeSettings.from_env()
# Thread state and checkpoints name media files under the media root, never by the
# server's absolute paths.
set_media_root(SETTINGS.media_root)
#: Flow name → its served graph.
GRAPHS: dict[str, Any] = {name: serve_graph(name, SETTINGS) for name in shipped_flows()}
globals().update(GRAPHS)

__all__ = ["GRAPHS", "SETTINGS", *GRAPHS]
