"""Test media and helpers for code built on calliope-graph.

Real, small, deterministic files, made without an encoder or a network, the same ones the
offline simulator (:mod:`calliope_graph.simulate`) produces and reads:

* :func:`image_bytes` — a PNG (or ``fmt="JPEG"``/``"WEBP"``) derived from a prompt;
* :func:`mp4_bytes` — a playable H.264 MP4, from a prompt or zooming into a still image;
* :func:`wav_bytes` — a mono 16-bit WAV of tones; :func:`mp3_bytes` — silent MP3 frames;
* :func:`story_text` — the sentences a simulated text model writes for a prompt;
* :func:`describe_image` — what a simulated vision model sees in an image (caption, tags,
  objects, text), to assert on an analysis without hard-coding it.

And checks for what a flow wrote: :func:`mp4_info` (codec, size, duration, sample count;
``ValueError`` when malformed), :func:`read_boxes` / :class:`Box` (an ISO-BMFF box walker),
:func:`is_wav`, :func:`is_mp3`, and :func:`multipart_form` (the fields and files of a
``multipart/form-data`` request an engine sent, e.g. to an httpx ``MockTransport``).

    from calliope_graph.testing import image_bytes, mp4_info

    Path("kite.png").write_bytes(image_bytes("a red kite", 64, 64))
    assert mp4_info(result["video"].path.read_bytes())["codec"] == "avc1"

Everything is a pure function of its arguments, so a test that uses it is reproducible.
"""

from __future__ import annotations

from calliope_graph.simulate._content import describe_image, image_bytes, story_text
from calliope_graph.simulate._openai_wire import multipart_form
from calliope_graph.simulate._video import (
    Box,
    is_mp3,
    is_wav,
    mp3_bytes,
    mp4_bytes,
    mp4_info,
    read_boxes,
    wav_bytes,
)

__all__ = [
    "Box",
    "describe_image",
    "image_bytes",
    "is_mp3",
    "is_wav",
    "mp3_bytes",
    "mp4_bytes",
    "mp4_info",
    "multipart_form",
    "read_boxes",
    "story_text",
    "wav_bytes",
]
