"""The shipped flows as compiled LangGraph graphs, for LangGraph Server (``langgraph.json``).

``langgraph dev`` / LangGraph Server import these module attributes; the server supplies
persistence, so they compile without a checkpointer. Without a run context, nodes read keys
from the environment (``OPENAI_API_KEY``, ...) and write media under ``./out/<flow>``.
"""

from __future__ import annotations

from typing import Any

from calliope_graph.flow import Flow

__all__ = [
    "continuous_story",
    "illustrate",
    "image_to_video_story",
    "structured_scene",
    "voice_story",
    "webcam_story",
]

webcam_story: Any = Flow.load("webcam_story").compile()
voice_story: Any = Flow.load("voice_story").compile()
illustrate: Any = Flow.load("illustrate").compile()
image_to_video_story: Any = Flow.load("image_to_video_story").compile()
structured_scene: Any = Flow.load("structured_scene").compile()
continuous_story: Any = Flow.load("continuous_story").compile()
