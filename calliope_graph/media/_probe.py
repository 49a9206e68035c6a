"""Audio and video probed with PyAV (duration, frame size, rate; corrupt files refused),
and the audio limits a provider declares (:class:`AudioLimits`, :func:`check_audio`)."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from calliope_graph.errors import MediaError
from calliope_graph.media._checks import _AUDIO_EXT

if TYPE_CHECKING:
    from calliope_graph.media._values import Audio


# -- audio and video: probed with PyAV ---------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    duration: float | None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


def _head(path: Path, n: int = 12) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _ffmpeg_reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return str(reason).strip().rstrip(".") or type(exc).__name__


def _probe(
    source: Path | bytes, kind: Literal["audio", "video"], name: str | None = None
) -> _Probe:
    """Duration (and for video size and frame rate) of ``source`` (a file, or the bytes of one
    called ``name`` in messages) from its container metadata.

    The first frame of the stream is decoded (cheap) to prove the codec is supported and the
    data is not garbage behind a valid header; the whole stream is decoded only when the
    container declares no duration (a WebM from a browser's MediaRecorder, raw ADTS AAC).
    """
    import av

    path = name if name is not None else str(source)
    label = "Audio" if kind == "audio" else "Video"
    fix = (
        "re-export it as WAV, MP3 or M4A (AAC)"
        if kind == "audio"
        else "re-export it as an H.264 MP4 or a VP8/VP9 WebM"
    )
    try:
        opened = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        with av.open(opened, mode="r") as container:
            streams = container.streams.audio if kind == "audio" else container.streams.video
            if not streams:
                raise MediaError(
                    f"{label} file {path!r} has no {kind} stream (it is truncated, corrupt "
                    f"or holds no {kind}): {fix}.",
                    path=path,
                )
            stream = streams[0]
            duration: float | None = None
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            elif container.duration:
                duration = container.duration / av.time_base
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise MediaError(
                    f"{label} file {path!r} holds no decodable {kind} "
                    f"(its {stream.codec_context.name} stream is empty or corrupt): {fix}.",
                    path=path,
                )
            if duration is None or duration <= 0:
                duration = _decoded_duration(container, stream, first)
            if isinstance(stream, av.VideoStream) and isinstance(first, av.VideoFrame):
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                return _Probe(
                    duration,
                    width=stream.codec_context.width or first.width,
                    height=stream.codec_context.height or first.height,
                    fps=float(rate) if rate else None,
                )
            return _Probe(duration)
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError, StopIteration) as exc:
        raise MediaError(
            f"{label} file {path!r} cannot be read ({_ffmpeg_reason(exc)}): it is "
            f"corrupt or in a format FFmpeg does not support; {fix}.",
            path=path,
        ) from None


def _decoded_duration(container: Any, stream: Any, first: Any) -> float | None:
    """Decode the rest of ``stream`` to learn its length (no duration in the metadata)."""
    import av

    if isinstance(first, av.AudioFrame):
        samples, rate = first.samples, first.sample_rate
        for frame in container.decode(stream):
            samples += frame.samples
        return samples / rate if rate else None
    last, count = first, 1
    for frame in container.decode(stream):
        last, count = frame, count + 1
    rate = stream.average_rate or stream.guessed_rate
    step = 1 / float(rate) if rate else 0.0
    if last.time is not None:
        return float(last.time) + step
    return count * step or None


def _audio_mime(name: str, head: bytes) -> str:
    """The mime type of audio file ``name`` by its extension, its first bytes checked."""
    suffix = Path(name).suffix.lower()
    mime = _AUDIO_EXT.get(suffix)
    if mime is None:
        raise MediaError(
            f"Audio file {name!r} has an unsupported extension {suffix!r}: use one of "
            + ", ".join(sorted(_AUDIO_EXT)),
            path=name,
        )
    if mime == "audio/wav" and (head[:4] != b"RIFF" or head[8:12] != b"WAVE"):
        raise MediaError(
            f"Audio file {name!r} is named .wav but is not a RIFF/WAVE file: re-export it as WAV.",
            path=name,
        )
    if mime == "audio/mpeg" and not (head[:3] == b"ID3" or head[:1] == b"\xff"):
        raise MediaError(
            f"Audio file {name!r} is named .mp3 but has no MP3 frame or ID3 header.", path=name
        )
    return mime


def _video_mime(name: str, head: bytes) -> str:
    """``video/mp4`` or ``video/webm`` by the file's first bytes; a MediaError otherwise."""
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video/webm"
    raise MediaError(
        f"Video file {name!r} is neither MP4 nor WebM (no ftyp box or EBML header).", path=name
    )


@dataclass(frozen=True)
class AudioLimits:
    """What one provider accepts as input audio, declared by its speech-to-text engine as
    data (like :class:`ImageLimits` for images), so an oversized or unreadable file is
    refused before the call instead of by the provider's 413 after the upload.

    ``max_bytes`` is what the file may weigh, counted as ``measure`` (the raw bytes, or their
    base64 text for a provider that takes the audio inline in JSON; None: no documented
    limit); ``formats`` are the mime types the provider reads (empty: any); ``where`` names
    the limit in the message (``"an upload"``, ``"inline"``); ``fix`` says what to do.
    """

    provider: str
    max_bytes: int | None = None
    measure: Literal["bytes", "base64"] = "bytes"
    formats: frozenset[str] = frozenset()
    where: str = "a request"
    fix: str = "split it into shorter parts or compress it (MP3 or OGG)"


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def check_audio(audio: Audio, limits: AudioLimits, model: str | None = None) -> None:
    """Refuse ``audio`` with a MediaError when ``limits.provider`` would refuse it: a format
    it does not read, or a file over its size limit (naming the limit and the fix)."""
    who = f"{limits.provider} ({model})" if model else limits.provider
    if limits.formats and audio.mime not in limits.formats:
        exts = sorted({ext for ext, mime in _AUDIO_EXT.items() if mime in limits.formats})
        raise MediaError(
            f"{who} does not read {audio.mime} audio ({audio.name}): convert it to one of "
            f"{', '.join(exts)}.",
            path=audio.path,
        )
    if limits.max_bytes is None:
        return
    size = Path(audio.path).stat().st_size
    weight = size if limits.measure == "bytes" else 4 * math.ceil(size / 3)
    if weight > limits.max_bytes:
        counted = "" if limits.measure == "bytes" else f" ({_size_text(weight)} as base64)"
        raise MediaError(
            f"Audio file {audio.name!r} is {_size_text(size)}{counted}, over the "
            f"{_size_text(limits.max_bytes)} {who} accepts in {limits.where}: {limits.fix}.",
            path=audio.path,
        )
