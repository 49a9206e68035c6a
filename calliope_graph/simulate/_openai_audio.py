"""The OpenAI fake's audio endpoints (transcriptions, speech) and its refusal of
shut-down models, shared by every endpoint; split out of
:mod:`calliope_graph.simulate.openai` to keep modules under 600 lines."""

from __future__ import annotations

import io
import wave
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    digest,
    story_text,
)
from calliope_graph.simulate._openai_wire import (
    OpenAIWire,
    count_tokens,
    multipart_form,
    quote_list,
)
from calliope_graph.simulate._speech import speech_audio


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_AUDIO_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_AUDIO_LIMIT = 26_214_400  # 25 MiB
_SPEECH_ARGS = _words("model input voice instructions response_format speed stream_format")
_SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
_SPEECH_VOICES = [
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
]
#: response_format -> (container of the answer, content-type); pcm is raw 24 kHz s16le.
_SPEECH_FORMATS: dict[str, tuple[str | None, str]] = {
    "mp3": ("mp3", "audio/mpeg"),
    "opus": ("ogg", "audio/opus"),
    "aac": ("aac", "audio/aac"),
    "flac": ("flac", "audio/flac"),
    "wav": ("wav", "audio/wav"),
    "pcm": (None, "audio/pcm"),
}


class OpenAIAudio(OpenAIWire):
    """OpenAI's audio endpoints; ``retired_models`` are refused with OpenAI's 404."""

    #: Shut-down models this fake refuses (set by OpenAIFake).
    retired_models: frozenset[str] = frozenset()

    def _require_model(self, body: dict[str, Any]) -> str:
        return self._not_retired(super()._require_model(body))

    def _not_retired(self, model: str) -> str:
        """A shut-down model is OpenAI's 404 ``model_not_found`` (its message and code)."""
        if model in self.retired_models:
            raise self._reject(
                f"The model `{model}` has been deprecated, learn more here: "
                "https://platform.openai.com/docs/deprecations",
                status=404,
                code="model_not_found",
            )
        return model

    # -- audio ----------------------------------------------------------------------------
    def _transcriptions(self, request: httpx.Request) -> httpx.Response:
        if len(request.content) > _AUDIO_LIMIT:
            raise self._reject(
                f"Maximum content size limit ({_AUDIO_LIMIT}) exceeded ({len(request.content)} "
                "bytes read)",
                status=413,
            )
        try:
            fields, files = multipart_form(request)
        except ValueError as exc:
            raise self._reject(str(exc)) from None
        if "file" not in files:
            raise self._missing("file")
        model = fields.get("model")
        if not model:
            raise self._missing("model")
        self._not_retired(model)
        filename, data = files["file"]
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in _AUDIO_FORMATS:
            raise self._reject(
                f"Invalid file format. Supported formats: {list(_AUDIO_FORMATS)}",
                param="file",
                code="invalid_value",
            )
        response_format = fields.get("response_format", "json")
        allowed: tuple[str, ...] = ("json", "text", "srt", "verbose_json", "vtt")
        if "4o" in model:
            allowed = ("json",)
        elif model.startswith("gpt-"):  # gpt-transcribe: no subtitles or timestamps
            allowed = ("json", "text")
        if response_format not in allowed:
            raise self._reject(
                f"response_format '{response_format}' is not compatible with model '{model}'. "
                f"Use {quote_list(allowed)}.",
                param="response_format",
                code="unsupported_value",
            )
        temperature = fields.get("temperature")
        if temperature is not None:
            try:
                self._number_param({"temperature": float(temperature)}, "temperature", 0, 1)
            except ValueError:
                raise self._reject(
                    f"Invalid type for 'temperature': expected a decimal, but got "
                    f"'{temperature}' instead.",
                    param="temperature",
                    code="invalid_type",
                ) from None
        duration = _duration(data, ext)
        if duration < 0.1:
            raise self._reject(
                "Audio file is too short. Minimum audio length is 0.1 seconds.",
                param="file",
                code="audio_too_short",
            )
        seq = self._seq()
        # What was "said" depends on the audio bytes only (the language is just a hint).
        text = story_text("lantern garden harbour meadow window", sentences=1, model=digest(data))
        if response_format in ("text", "srt", "vtt"):
            body = text
            if response_format == "srt":
                body = f"1\n00:00:00,000 --> {_stamp(duration, ',')}\n{text}\n"
            elif response_format == "vtt":
                body = f"WEBVTT\n\n00:00:00.000 --> {_stamp(duration, '.')}\n{text}\n"
            headers = self._headers(seq)
            headers["content-type"] = "text/plain; charset=utf-8"
            return httpx.Response(200, content=(body + "\n").encode(), headers=headers)
        if response_format == "verbose_json":
            words = text.split()
            step = duration / max(len(words), 1)
            return self._ok(
                {
                    "task": "transcribe",
                    "language": _LANGUAGES.get(fields.get("language", "en"), "english"),
                    "duration": round(duration, 2),
                    "text": text,
                    "segments": [
                        {
                            "id": 0,
                            "seek": 0,
                            "start": 0.0,
                            "end": round(duration, 2),
                            "text": " " + text,
                            "tokens": list(range(50364, 50364 + len(words))),
                            "temperature": float(temperature or 0.0),
                            "avg_logprob": -0.21,
                            "compression_ratio": 1.1,
                            "no_speech_prob": 0.01,
                        }
                    ],
                    "words": [
                        {
                            "word": w.strip(".,"),
                            "start": round(i * step, 2),
                            "end": round((i + 1) * step, 2),
                        }
                        for i, w in enumerate(words)
                    ],
                },
                seq=seq,
            )
        out: dict[str, Any] = {"text": text}
        if model != "whisper-1":
            out["usage"] = {
                "type": "tokens",
                "input_tokens": int(duration * 10) + 1,
                "output_tokens": count_tokens(text),
                "total_tokens": int(duration * 10) + 1 + count_tokens(text),
            }
        return self._ok(out, seq=seq)

    # -- speech ---------------------------------------------------------------------------
    def _speech(self, request: httpx.Request) -> httpx.Response:
        body = self._json_body(request, _SPEECH_ARGS)
        model = self._require_model(body)
        if model not in _SPEECH_MODELS:
            raise self._reject(
                f"Invalid value: '{model}'. Supported values are: {quote_list(_SPEECH_MODELS)}.",
                param="model",
                code="invalid_value",
            )
        text = body.get("input")
        if text is None:
            raise self._missing("input")
        if not isinstance(text, str) or not text:
            raise self._reject(
                "Invalid 'input': empty string. Expected a string with minimum length 1, but "
                "got an empty string instead.",
                param="input",
                code="empty_string",
            )
        if len(text) > 4096:
            raise self._reject(
                "Invalid 'input': string too long. Expected a string with maximum length 4096, "
                f"but got a string with length {len(text)} instead.",
                param="input",
                code="string_above_max_length",
            )
        voice = body.get("voice")
        if voice is None:
            raise self._missing("voice")
        if isinstance(voice, dict) and isinstance(voice.get("id"), str):
            pass  # a custom voice by id
        elif voice not in _SPEECH_VOICES:
            raise self._reject(
                f"Invalid value: '{voice}'. Supported values are: {quote_list(_SPEECH_VOICES)}.",
                param="voice",
                code="invalid_value",
            )
        fmt = body.get("response_format", "mp3")
        if fmt not in _SPEECH_FORMATS:
            raise self._reject(
                f"Invalid value: '{fmt}'. Supported values are: "
                f"{quote_list(list(_SPEECH_FORMATS))}.",
                param="response_format",
                code="invalid_value",
            )
        self._number_param(body, "speed", 0.25, 4.0)
        speed = float(body.get("speed") or 1.0)
        instructions = body.get("instructions")
        if instructions is not None and (
            not isinstance(instructions, str) or len(instructions) > 4096
        ):
            raise self._reject(
                "Invalid 'instructions': expected a string with maximum length 4096.",
                param="instructions",
                code="invalid_value",
            )
        if body.get("stream_format", "audio") != "audio":
            raise self._reject(
                "The calliope simulator does not stream: leave stream_format at 'audio'.",
                param="stream_format",
            )
        # The speech endpoint's refusal is not documented: answered like OpenAI's other
        # safety refusals (HTTP 400, code content_policy_violation).
        if self.sim.blocked(self, request, text):
            return self._fail(
                400,
                "Your request was rejected as a result of our safety system. Your input may "
                "contain text that is not allowed by our safety system.",
                code="content_policy_violation",
            )
        seq = self._seq()
        headers = self._headers(seq)
        container, content_type = _SPEECH_FORMATS[fmt]
        headers["content-type"] = content_type
        if self.sim.emptied(self, request, text):
            return httpx.Response(200, content=b"", headers=headers)
        audio = speech_audio(text, container, rate=24000, speed=speed)
        return httpx.Response(200, content=audio, headers=headers)


_LANGUAGES = {"en": "english", "fr": "french", "de": "german", "es": "spanish", "it": "italian"}


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _duration(data: bytes, ext: str) -> float:
    """Seconds of audio: exact for WAV, estimated (16 kB/s) for compressed formats."""
    if ext == "wav":
        try:
            with wave.open(io.BytesIO(data), "rb") as w:
                return w.getnframes() / float(w.getframerate() or 1)
        except (wave.Error, EOFError):
            return 0.0
    return len(data) / 16000.0
