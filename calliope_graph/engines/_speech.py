"""Speech answers into audio files, the same way for every text-to-speech engine.

A speech endpoint answers with the audio bytes themselves. :func:`audio_bytes` runs inside
the retry loop (as a ``parse``): an empty body is an :class:`EmptyOutputError`, and a body
that is not the audio container asked for (a truncated JSON body, an HTML error page from a
proxy) is a retryable :class:`TransientProviderError` — never a file that does not play.
:func:`save_speech` then writes the file atomically through the media store, under the
extension of the real container (raw PCM is wrapped in a WAV header, so every file plays and
knows its duration), and probes its duration (:meth:`MediaStore.save_audio`: on a full disk
the paid bytes are kept for the output journal, so a resume does not pay for them again).
"""

from __future__ import annotations

import io
import wave
from pathlib import PurePosixPath

import httpx

from calliope_graph.context import RunContext
from calliope_graph.errors import EmptyOutputError, TransientProviderError
from calliope_graph.media import Audio

__all__ = [
    "CONTAINER_EXT",
    "audio_bytes",
    "container_of",
    "pcm_to_wav",
    "save_speech",
    "speech_bytes",
]

#: The file extension of each audio container an engine saves.
CONTAINER_EXT: dict[str, str] = {
    "mp3": ".mp3",
    "wav": ".wav",
    "flac": ".flac",
    "ogg": ".ogg",
    "aac": ".aac",
}


def container_of(data: bytes) -> str | None:
    """The audio container ``data`` starts with (mp3, wav, flac, ogg, aac), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF:
        if data[1] & 0xF6 == 0xF0:  # ADTS sync word, layer 0: AAC
            return "aac"
        if data[1] & 0xE0 == 0xE0 and (data[1] >> 1) & 3 == 1:  # MPEG audio, Layer III
            return "mp3"
    return None


def _looks_like_text(data: bytes, content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith(("application/json", "text/")):
        return True
    return data[:1] in (b"{", b"[", b"<")


def audio_bytes(
    response: httpx.Response, provider: str, model: str, container: str | None
) -> bytes:
    """The audio body of a speech answer, checked against the ``container`` asked for
    (None: raw PCM, which has no header to check)."""
    data = response.content
    if not data:
        raise EmptyOutputError(
            f"{provider} ({model}) answered with no audio at all: try again, or add a fallback "
            "edge on 'empty'."
        )
    content_type = response.headers.get("content-type", "")
    found = container_of(data)
    if (container is None and _looks_like_text(data, content_type)) or (
        container is not None and found != container
    ):
        what = f"{len(data)} bytes of {content_type or 'unlabelled data'}"
        raise TransientProviderError(
            f"{provider} ({model}) answered HTTP {response.status_code} with {what}, not "
            f"{container or 'PCM'} audio; it was retried. Try again later.",
            provider=provider,
            status=response.status_code,
            code="malformed_body",
        )
    return data


def pcm_to_wav(data: bytes, rate: int, *, channels: int = 1, sample_width: int = 2) -> bytes:
    """Raw little-endian PCM samples wrapped in a WAV header (an odd trailing byte dropped)."""
    frame = channels * sample_width
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sample_width)
        w.setframerate(rate)
        w.writeframes(data[: len(data) - len(data) % frame])
    return buf.getvalue()


async def save_speech(ctx: RunContext, output_name: str, data: bytes, container: str) -> Audio:
    """Write ``data`` (a ``container`` file) as ``output_name`` with that container's
    extension, atomically, and open it (duration probed) off the event loop."""
    name = str(PurePosixPath(output_name).with_suffix(CONTAINER_EXT[container]))
    # Off the event loop (LangGraph Server); on a full disk inside the node the bytes are
    # kept for the journal and probed from memory (MediaStore.save_audio).
    return await ctx.store.asave_audio(name, data)


#: Characters a slow narrator speaks a second: :func:`speech_bytes` errs long (about 14 is
#: usual), so the room checked before a speech node is paid is rarely too little.
SLOW_CHARS_PER_SECOND = 8.0
#: Bytes a second of compressed speech whose bitrate the format does not name (192 kbit/s).
_COMPRESSED = 24_000
_UNCOMPRESSED = frozenset({"wav", "pcm", "flac", "ulaw", "alaw"})


def speech_bytes(text: str, audio_format: str, *, speed: float = 1.0) -> int:
    """About the most bytes speech of ``text`` takes as ``audio_format``: an ElevenLabs
    ``codec_samplerate[_bitrate]`` (``mp3_44100_128``, ``wav_24000``), an OpenAI
    ``response_format`` or a file extension (``wav``: 16-bit mono at 24 kHz, as OpenAI and
    ElevenLabs answer; ``mp3``: 192 kbit/s at most), read aloud slowly."""
    parts = audio_format.lower().lstrip(".").split("_")
    numbers = [int(p) for p in parts[1:] if p.isdigit()]
    rate = numbers[0] if numbers else 24_000
    if parts[0] in _UNCOMPRESSED or parts[0] not in CODEC_NAMES:
        per_second = 2 * rate  # 16-bit mono samples (FLAC is smaller)
    else:
        per_second = numbers[1] * 125 if len(numbers) > 1 else _COMPRESSED
    seconds = len(text.strip()) / SLOW_CHARS_PER_SECOND / max(speed, 0.25)
    return int(seconds * per_second) + 4096  # + headers


#: Compressed codecs :func:`speech_bytes` knows by name.
CODEC_NAMES = frozenset({"mp3", "mpeg", "opus", "ogg", "aac", "m4a", "mp4", "webm"})
