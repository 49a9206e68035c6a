"""A faithful offline fake of ElevenLabs' text-to-speech API (PROVIDERS.md §9).

Served on ``api.elevenlabs.io``: ``POST /v1/text-to-speech/{voice_id}`` (and its
``/stream`` twin) with the key in the ``xi-api-key`` header, ``output_format`` in the query
(``mp3_<rate>_<bitrate>``, ``pcm_<rate>``, ``wav_<rate>``, ``opus_48000_<bitrate>``,
``ulaw_8000``, ``alaw_8000``) and a JSON body (``text``, ``model_id``, ``voice_settings``
with ``stability``/``similarity_boost``/``style`` in 0..1 and ``speed`` in 0.7..1.2).
The answer is the audio (``audio/mpeg``...), as long as the text takes to say.

Errors use ElevenLabs' envelope ``{"detail": {"status", "message"}}``: 401
``invalid_api_key`` (and ``needs_authorization`` without a key), 404 ``voice_not_found``,
400 ``max_character_limit_exceeded``, 429 ``too_many_concurrent_requests`` /
``system_busy``; a malformed body is FastAPI's 422 ``{"detail": [{"type", "loc", "msg",
"input"}]}``. A ``content_policy`` fault answers 400 ``bad_prompt`` (the refusal ElevenLabs
documents for prompts that violate its terms).

Endpoint name for counting: ``text_to_speech``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from calliope_graph.simulate._content import digest
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    ProviderFake,
    Reject,
)
from calliope_graph.simulate._speech import speech_audio

__all__ = ["FAKE", "VOICES", "ElevenLabsFake"]

#: Default voices every account has (voice id -> name).
VOICES = {
    "JBFqnCBsd6RMkjVDRZzb": "George",
    "21m00Tcm4TlvDq8ikWAM": "Rachel",
    "EXAVITQu4vr4xnSDxMaL": "Sarah",
    "pNInz6obpgDQGcFmaJgB": "Adam",
    "XB0fDUnXU5powFXDhCwa": "Charlotte",
}
#: model_id -> most characters one request may carry.
MODELS = {
    "eleven_multilingual_v2": 10_000,
    "eleven_v3": 5_000,
    "eleven_flash_v2_5": 40_000,
    "eleven_turbo_v2_5": 40_000,
    "eleven_flash_v2": 30_000,
    "eleven_turbo_v2": 30_000,
    "eleven_monolingual_v1": 10_000,
    "eleven_multilingual_v1": 10_000,
}
_FORMAT = re.compile(
    r"(?:mp3_(?P<mp3>22050_32|24000_48|44100_(?:32|64|96|128|192))"
    r"|pcm_(?P<pcm>8000|16000|22050|24000|32000|44100|48000)"
    r"|wav_(?P<wav>8000|16000|22050|24000|32000|44100|48000)"
    r"|opus_(?P<opus>48000_(?:32|64|96|128|192))"
    r"|(?P<law>ulaw|alaw)_8000)"
)
_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "opus": "audio/opus",
    "law": "audio/basic",
}
_SETTINGS_RANGES = {
    "stability": (0.0, 1.0),
    "similarity_boost": (0.0, 1.0),
    "style": (0.0, 1.0),
    "speed": (0.7, 1.2),
}


#: What ``GET /v1/models`` lists (https://elevenlabs.io/docs/overview/models, read 2026-12-06).
LISTED_MODELS: tuple[tuple[str, str], ...] = (
    ("eleven_v3", "Eleven v3"),
    ("eleven_multilingual_v2", "Eleven Multilingual v2"),
    ("eleven_flash_v2_5", "Eleven Flash v2.5"),
    ("eleven_flash_v2", "Eleven Flash v2"),
)


class ElevenLabsFake(ProviderFake):
    """ElevenLabs' text-to-speech endpoint on ``api.elevenlabs.io``."""

    name = "elevenlabs"
    endpoints = ("text_to_speech", "v1.models")
    hosts = ("api.elevenlabs.io", "api.us.elevenlabs.io", "api.eu.residency.elevenlabs.io")

    auth = AuthCheck(
        credentials=(Credential("xi-api-key"),),
        missing=Failure(
            401,
            "needs_authorization",
            "Neither authorization header nor xi-api-key received, please provide one.",
        ),
        invalid=Failure(401, "invalid_api_key", "Invalid API key"),
    )
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            "too_many_concurrent_requests",
            "Too many concurrent requests. Your current subscription is associated with a "
            "maximum of 2 concurrent requests (running in parallel). Please upgrade your "
            "subscription or contact sales if you want to increase this limit.",
        ),
        server_error=Failure(
            500, "internal_server_error", "An internal server error occurred. Please try again."
        ),
        unavailable=Failure(
            503, "service_unavailable", "The service is temporarily unavailable; try again."
        ),
        overloaded=Failure(
            429,
            "system_busy",
            "Our services are experiencing a high volume of traffic. Please try again later.",
        ),
    )

    def endpoint(self, request: httpx.Request) -> str:
        if re.fullmatch(r"/v1/text-to-speech/[^/]+(/stream)?", request.url.path.rstrip("/")):
            return "text_to_speech"
        return request.url.path.strip("/").replace("/", ".") or "root"

    def _trace_id(self) -> str:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return digest("elevenlabs-trace", str(self.sim.seed), str(state["seq"]))[:32]

    def _detail(self, status: int, code: str, message: str, **headers: str) -> httpx.Response:
        return httpx.Response(
            status,
            json={"detail": {"status": code, "message": message}},
            headers={"x-trace-id": self._trace_id(), **headers},
        )

    def envelope(self, failure: Failure) -> httpx.Response:
        return self._detail(
            failure.status, failure.code or "error", failure.message, **dict(failure.headers)
        )

    def _unprocessable(self, loc: list[str | int], kind: str, msg: str, value: Any) -> Reject:
        item = {"type": kind, "loc": loc, "msg": msg, "input": value}
        return Reject(
            httpx.Response(422, json={"detail": [item]}, headers={"x-trace-id": self._trace_id()})
        )

    # -- the endpoint ---------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/") == "/v1/models" and request.method == "GET":
            # GET /v1/models: a JSON array of model objects (ElevenLabs' list shape).
            return httpx.Response(
                200,
                json=[
                    {"model_id": model_id, "name": name, "can_do_text_to_speech": True}
                    for model_id, name in LISTED_MODELS
                ],
                headers={"x-trace-id": self._trace_id()},
            )
        match = re.fullmatch(r"/v1/text-to-speech/([^/]+)(/stream)?", request.url.path.rstrip("/"))
        if match is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.method != "POST":
            return httpx.Response(405, json={"detail": "Method Not Allowed"})
        try:
            return self._speech(request, match.group(1))
        except Reject as rejected:
            return rejected.response

    def _speech(self, request: httpx.Request, voice_id: str) -> httpx.Response:
        fmt = request.url.params.get("output_format", "mp3_44100_128")
        spec = _FORMAT.fullmatch(fmt)
        if spec is None:
            raise self._unprocessable(
                ["query", "output_format"],
                "enum",
                "Input should be one of the supported output formats (e.g. 'mp3_44100_128', "
                "'pcm_16000', 'wav_44100', 'opus_48000_64', 'ulaw_8000')",
                fmt,
            )
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            raise self._unprocessable(["body"], "json_invalid", "JSON decode error", "") from None
        if not isinstance(body, dict):
            raise self._unprocessable(
                ["body"], "model_attributes_type", "Input should be a valid dictionary", body
            )
        text = body.get("text")
        if text is None:
            raise self._unprocessable(["body", "text"], "missing", "Field required", body)
        if not isinstance(text, str):
            raise self._unprocessable(
                ["body", "text"], "string_type", "Input should be a valid string", text
            )
        model = body.get("model_id") or "eleven_multilingual_v2"
        if model not in MODELS:
            raise Reject(
                self._detail(
                    400,
                    "model_not_found",
                    f"A model with model ID {model} does not exist or does not support "
                    "text-to-speech.",
                )
            )
        speed = self._check_settings(body.get("voice_settings"))
        if voice_id not in VOICES:
            raise Reject(
                self._detail(
                    404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found."
                )
            )
        if not text.strip():
            raise Reject(
                self._detail(400, "empty_text", "The text must contain at least one character.")
            )
        if len(text) > MODELS[model]:
            raise Reject(
                self._detail(
                    400,
                    "max_character_limit_exceeded",
                    f"This request's text has {len(text)} characters and exceeds the character "
                    f"limit of {MODELS[model]} characters for model {model}.",
                )
            )
        if self.sim.blocked(self, request, text):
            return self._detail(
                400,
                "bad_prompt",
                "Your prompt appears to have violated our Terms of Service. Please try again "
                "with a different prompt.",
            )
        codec = next(name for name, value in spec.groupdict().items() if value is not None)
        headers = {
            "content-type": _CONTENT_TYPES[codec],
            "x-trace-id": self._trace_id(),
            "request-id": digest("elevenlabs-request", text, fmt)[:20],
            "character-cost": str(len(text)),
        }
        if self.sim.emptied(self, request, text):
            return httpx.Response(200, content=b"", headers=headers)
        rate = int(str(spec.group(codec)).split("_")[0]) if codec != "law" else 8000
        container = {"mp3": "mp3", "wav": "wav", "opus": "ogg"}.get(codec)
        audio = speech_audio(text, container, rate=rate, speed=speed)
        if codec == "law":
            audio = audio[::2]  # one byte a sample: the high bytes stand in for G.711 codes
        return httpx.Response(200, content=audio, headers=headers)

    def _check_settings(self, settings: Any) -> float:
        """Validate ``voice_settings``; return the speaking speed."""
        if settings is None:
            return 1.0
        if not isinstance(settings, dict):
            raise self._unprocessable(
                ["body", "voice_settings"],
                "model_attributes_type",
                "Input should be a valid dictionary or object to extract fields from",
                settings,
            )
        for key, (lo, hi) in _SETTINGS_RANGES.items():
            value = settings.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self._unprocessable(
                    ["body", "voice_settings", key],
                    "float_parsing",
                    "Input should be a valid number",
                    value,
                )
            if not lo <= value <= hi:
                kind = "greater_than_equal" if value < lo else "less_than_equal"
                bound = lo if value < lo else hi
                word = "greater" if value < lo else "less"
                raise self._unprocessable(
                    ["body", "voice_settings", key],
                    kind,
                    f"Input should be {word} than or equal to {bound:g}",
                    value,
                )
        boost = settings.get("use_speaker_boost")
        if boost is not None and not isinstance(boost, bool):
            raise self._unprocessable(
                ["body", "voice_settings", "use_speaker_boost"],
                "bool_parsing",
                "Input should be a valid boolean",
                boost,
            )
        return float(settings.get("speed") or 1.0)


FAKE = ElevenLabsFake
