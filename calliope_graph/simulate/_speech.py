"""Synthesized speech for the text-to-speech fakes: real audio whose length follows the text.

A narration lasts ``len(text) / CHARS_PER_SECOND / speed`` seconds (about the pace of a
narrator, 14 characters a second), at least :data:`MIN_SECONDS`. Where ``espeak-ng`` is
installed (found on ``PATH``) the text is really spoken by it, fitted to that length;
otherwise each word is a tone chosen from the word, followed by a short pause, so two texts
sound different. Either way the same text always gives the same bytes. WAV and raw PCM are
written directly; MP3 is silent MPEG-1 Layer III frames of the same duration (every decoder
reads them), or with espeak-ng the voice encoded by PyAV's LAME; FLAC, Ogg Opus and AAC
(ADTS) are encoded with PyAV when it is installed.
"""

from __future__ import annotations

import functools
import io
import math
import shutil
import subprocess
import sys
import wave
from array import array

from calliope_graph.simulate._content import digest
from calliope_graph.simulate._video import mp3_bytes

__all__ = ["CHARS_PER_SECOND", "MIN_SECONDS", "speech_audio", "speech_pcm", "speech_seconds"]

CHARS_PER_SECOND = 14.0
MIN_SECONDS = 0.3
#: Tones (Hz) whose 50 ms chunk holds whole cycles, so a repeated chunk has no click.
_TONES = (180.0, 220.0, 260.0, 300.0, 340.0, 380.0, 440.0, 520.0)
_CHUNK = 0.05


def speech_seconds(text: str, speed: float = 1.0) -> float:
    """How long the fakes speak ``text`` at ``speed``."""
    return max(MIN_SECONDS, len(text.strip()) / CHARS_PER_SECOND / max(speed, 0.01))


def speech_pcm(text: str, seconds: float, rate: int) -> bytes:
    """``seconds`` of mono 16-bit little-endian PCM at ``rate``: ``text`` spoken by espeak-ng
    where it is installed, else a tone per word, then a pause."""
    voice = _espeak(text.strip(), seconds, rate) if shutil.which("espeak-ng") else None
    return voice if voice is not None else _tones(text, seconds, rate)


#: espeak-ng's words a minute at speed 1 (about :data:`CHARS_PER_SECOND`).
_ESPEAK_WPM = 160


@functools.lru_cache(maxsize=64)
def _espeak(text: str, seconds: float, rate: int) -> bytes | None:
    """``text`` spoken by espeak-ng, as exactly ``seconds`` of PCM at ``rate`` (None if
    espeak-ng fails): resampled when it runs long, padded with silence when it runs short."""
    wpm = max(80, min(450, round(_ESPEAK_WPM * len(text) / CHARS_PER_SECOND / seconds)))
    try:
        done = subprocess.run(
            ["espeak-ng", "--stdout", "-s", str(wpm), "--", text or "…"],
            capture_output=True,
            timeout=30,
            check=True,
        )
        with wave.open(io.BytesIO(done.stdout), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                return None
            spoken, spoken_rate = w.readframes(w.getnframes()), w.getframerate()
    except (OSError, subprocess.SubprocessError, wave.Error, EOFError):
        return None
    if sys.byteorder == "big":  # WAV samples are little-endian; array works in native order
        swapped = array("h", spoken)
        swapped.byteswap()
        spoken = swapped.tobytes()
    total = max(1, round(seconds * rate))
    pcm = speech_resampled(spoken, spoken_rate, rate)
    if len(pcm) > 2 * total:
        pcm = speech_resampled(pcm, len(pcm) // 2, total)
    pcm = (pcm + bytes(2 * total))[: 2 * total]
    if sys.byteorder == "big":
        swapped = array("h", pcm)
        swapped.byteswap()
        pcm = swapped.tobytes()
    return pcm


def _tones(text: str, seconds: float, rate: int) -> bytes:
    """A tone per word, then a pause (the stand-in voice without espeak-ng)."""
    total = max(1, round(seconds * rate))
    words = text.split() or ["…"]
    weights = [len(w) + 1 for w in words]
    scale = total / sum(weights)
    samples = array("h")
    for i, word in enumerate(words):
        frames = total - len(samples) if i == len(words) - 1 else round(weights[i] * scale)
        tone = _TONES[int(digest("tone", word)[:4], 16) % len(_TONES)]
        chunk_len = max(1, round(rate * _CHUNK))
        chunk = array(
            "h", (int(8000 * math.sin(2 * math.pi * tone * n / rate)) for n in range(chunk_len))
        )
        voiced = frames - min(frames // 4, round(rate * 0.04))  # a pause after each word
        word_samples = chunk * (voiced // chunk_len + 1)
        samples.extend(word_samples[:voiced])
        samples.extend(array("h", bytes(2 * (frames - voiced))))
    del samples[total:]
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _wav(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


#: container -> (PyAV muxer, encoder, sample rate the encoder needs or None)
_ENCODED = {
    "flac": ("flac", "flac", None),
    "ogg": ("ogg", "libopus", 48000),
    "aac": ("adts", "aac", None),
    "mp3": ("mp3", "libmp3lame", None),
}


def _encode(pcm: bytes, rate: int, container: str) -> bytes:
    try:
        import av
        from av.audio.stream import AudioStream
    except ImportError:  # pragma: no cover - PyAV is installed with the test extra
        raise RuntimeError(
            f"the simulator encodes {container} speech with PyAV: pip install av, or ask for "
            "mp3 or wav"
        ) from None
    muxer, codec, needs_rate = _ENCODED[container]
    if codec == "libmp3lame" and rate not in (
        8000,
        11025,
        12000,
        16000,
        22050,
        24000,
        32000,
        44100,
        48000,
    ):
        needs_rate = 24000
    if needs_rate is not None and needs_rate != rate:
        pcm = speech_resampled(pcm, rate, needs_rate)
        rate = needs_rate
    buf = io.BytesIO()
    with av.open(buf, "w", format=muxer) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, AudioStream)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        step = 960
        for start in range(0, len(pcm) // 2, step):
            piece = pcm[2 * start : 2 * (start + step)]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(piece) // 2)
            frame.planes[0].update(piece)
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                for packet in stream.encode(converted):
                    out.mux(packet)
        for converted in resampler.resample(None):
            for packet in stream.encode(converted):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def speech_resampled(pcm: bytes, rate: int, target: int) -> bytes:
    """16-bit mono PCM at ``rate`` as ``target`` Hz (nearest sample; enough for a fake)."""
    source = array("h")
    source.frombytes(pcm)
    count = round(len(source) * target / rate)
    out = array("h", (source[min(len(source) - 1, i * rate // target)] for i in range(count)))
    return out.tobytes()


def speech_audio(text: str, container: str | None, *, rate: int, speed: float = 1.0) -> bytes:
    """``text`` spoken as a ``container`` file (None: raw PCM) at ``rate`` Hz and ``speed``."""
    seconds = speech_seconds(text, speed)
    if container == "mp3" and not shutil.which("espeak-ng"):
        return mp3_bytes(seconds)
    pcm = speech_pcm(text, seconds, rate)
    if container is None:
        return pcm
    if container == "wav":
        return _wav(pcm, rate)
    try:
        return _encode(pcm, rate, container)
    except RuntimeError:
        if container == "mp3":  # no PyAV to encode the voice: silence of the same length
            return mp3_bytes(seconds)
        raise
