"""OpenAI's media endpoints, faked (PROVIDERS.md §1.3-1.5): image generation (dall-e-2,
dall-e-3, GPT image models; ``b64_json`` or ``url`` answers served from a CDN-like host), audio
transcription (multipart) and speech; and the models OpenAI has shut down, refused on every
endpoint. :class:`calliope_graph.simulate.openai.OpenAIFake` adds chat and completions."""

from __future__ import annotations

import base64
import io
import time
import wave
from dataclasses import dataclass
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    digest,
    image_bytes,
    story_text,
)
from calliope_graph.simulate._openai_wire import (
    OpenAIWire,
    count_tokens,
    multipart_form,
    quote_list,
)
from calliope_graph.simulate._speech import speech_audio

__all__ = ["RETIRED_MODELS", "OpenAIMediaEndpoints"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IMAGE_ARGS = _words(
    "prompt model n size quality response_format style user background moderation "
    "output_compression output_format partial_images stream"
)
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


@dataclass(frozen=True)
class _ImageModel:
    """What an image model accepts (PROVIDERS.md §1.3)."""

    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    max_prompt: int
    max_n: int
    gpt_image: bool = False


_IMAGE_MODELS: dict[str, _ImageModel] = {
    "dall-e-2": _ImageModel(("256x256", "512x512", "1024x1024"), ("standard",), 1000, 10),
    "dall-e-3": _ImageModel(("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"), 4000, 1),
    "gpt-image-1": _ImageModel(
        ("1024x1024", "1536x1024", "1024x1536", "auto"),
        ("low", "medium", "high", "auto"),
        32000,
        10,
        gpt_image=True,
    ),
}
_IMAGE_MODELS["gpt-image-1-mini"] = _IMAGE_MODELS["gpt-image-1"]
_IMAGE_MODELS["gpt-image-1.5"] = _IMAGE_MODELS["gpt-image-1"]
_IMAGE_MODELS["gpt-image-2"] = _IMAGE_MODELS["gpt-image-1"]

#: Models OpenAI has shut down (https://developers.openai.com/api/docs/deprecations and the
#: models' own pages, read 2026-12-06): requests naming them get OpenAI's 404
#: ``model_not_found``. Fixed, not computed from today's date, so tests stay reproducible.
RETIRED_MODELS = frozenset(
    (
        "dall-e-2",
        "dall-e-3",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "gpt-image-1.5-2025-12-16",
        "chatgpt-image-latest",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-4",
        "gpt-4-turbo",
        "gpt-4o-2024-05-13",
    )
)
_CDN = "https://oaidalleapiprodscus.blob.core.windows.net"
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


class OpenAIMediaEndpoints(OpenAIWire):
    """OpenAI's image and audio endpoints, and the model checks every endpoint shares."""

    #: Shut-down models this fake refuses (tests of wire shapes that OpenAI-compatible
    #: servers still speak, such as DALL·E's ``url`` answers, empty it).
    retired_models: frozenset[str] = RETIRED_MODELS

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

    # -- images ---------------------------------------------------------------------------
    def _images(self, request: httpx.Request) -> httpx.Response:
        body = self._json_body(request, _IMAGE_ARGS)
        model_name = self._not_retired(body.get("model") or "dall-e-2")
        spec = _IMAGE_MODELS.get(model_name)
        if spec is None:
            raise self._reject(
                f"Invalid value: '{model_name}'. Supported values are: "
                f"{quote_list(['gpt-image-2'])}.",
                param="model",
                code="invalid_value",
            )
        prompt = body.get("prompt")
        if prompt is None:
            raise self._missing("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise self._reject(
                "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
                "but got an empty string instead.",
                param="prompt",
                code="empty_string",
            )
        if len(prompt) > spec.max_prompt:
            raise self._reject(
                f"Invalid 'prompt': string too long. Expected a string with maximum length "
                f"{spec.max_prompt}, but got a string with length {len(prompt)} instead.",
                param="prompt",
                code="string_above_max_length",
            )
        n = self._int_param(body, "n", 1, 1, 10)
        if n > spec.max_n:
            raise self._reject("You must provide n=1 for this model.", param="n")
        size = body.get("size") or ("auto" if spec.gpt_image else "1024x1024")
        if size not in spec.sizes:
            raise self._reject(
                f"Invalid value: '{size}'. Supported values are: {quote_list(spec.sizes)}.",
                param="size",
                code="invalid_value",
            )
        quality = body.get("quality")
        if quality is not None and quality not in spec.qualities:
            raise self._reject(
                f"Invalid value: '{quality}'. Supported values are: {quote_list(spec.qualities)}.",
                param="quality",
                code="invalid_value",
            )
        gpt_only = ("background", "moderation", "output_compression", "output_format")
        for key in gpt_only if not spec.gpt_image else ():
            if key in body:
                raise self._reject(
                    f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter"
                )
        if spec.gpt_image and "response_format" in body:
            raise self._reject(
                "Unknown parameter: 'response_format'.",
                param="response_format",
                code="unknown_parameter",
            )
        if "style" in body and model_name != "dall-e-3":
            raise self._reject(
                "Unknown parameter: 'style'.", param="style", code="unknown_parameter"
            )
        response_format = body.get("response_format") or ("b64_json" if spec.gpt_image else "url")
        if response_format not in ("url", "b64_json"):
            raise self._reject(
                f"Invalid value: '{response_format}'. Supported values are: 'url' and 'b64_json'.",
                param="response_format",
                code="invalid_value",
            )
        output_format = body.get("output_format", "png")
        if output_format not in ("png", "jpeg", "webp"):
            raise self._reject(
                f"Invalid value: '{output_format}'. Supported values are: 'png', 'jpeg', and "
                "'webp'.",
                param="output_format",
                code="invalid_value",
            )

        if self.sim.blocked(self, request, prompt):
            if spec.gpt_image:
                return self._fail(
                    400,
                    "Your request was rejected by the safety system. If you believe this is an "
                    "error, contact us at help.openai.com and include the request ID.",
                    type_="image_generation_user_error",
                    code="moderation_blocked",
                    extra={
                        "moderation_details": {
                            "moderation_stage": "input",
                            "categories": ["violence"],
                        }
                    },
                )
            return self._fail(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system.",
                code="content_policy_violation",
            )

        seq = self._seq()
        width, height = (int(v) for v in ("1024x1024" if size == "auto" else size).split("x"))
        fmt = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]
        data: list[dict[str, Any]] = []
        for i in range(n):
            drawn = prompt if i == 0 else f"{prompt} ({i + 1})"
            raw = image_bytes(drawn, *self.sim.drawn_size(width, height), fmt)
            item: dict[str, Any] = {}
            if response_format == "b64_json":
                item["b64_json"] = base64.b64encode(raw).decode("ascii")
            else:
                url = self._cdn_url(raw, output_format, seq, i)
                self.sim.serve_download(
                    url,
                    httpx.Response(
                        200,
                        content=raw,
                        headers={
                            "content-type": f"image/{output_format}",
                            "content-length": str(len(raw)),
                            "x-ms-blob-type": "BlockBlob",
                        },
                    ),
                )
                item["url"] = url
            if model_name == "dall-e-3":
                item["revised_prompt"] = f"A detailed illustration of {prompt.strip()}"
            data.append(item)
        out: dict[str, Any] = {"created": int(time.time()), "data": data}
        if spec.gpt_image:
            prompt_tokens = count_tokens(prompt)
            out.update(
                {
                    "background": body.get("background", "opaque"),
                    "output_format": output_format,
                    "quality": quality or "high",
                    "size": f"{width}x{height}",
                    "usage": {
                        "input_tokens": prompt_tokens,
                        "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
                        "output_tokens": 4160 * n,
                        "total_tokens": prompt_tokens + 4160 * n,
                    },
                }
            )
        return self._ok(out, seq=seq)

    def _cdn_url(self, raw: bytes, ext: str, seq: int, index: int) -> str:
        name = digest(raw, str(seq), str(index))
        signature = digest("sig", name)[:43]
        return (
            f"{_CDN}/private/org-calliopesim/user-calliopesim/img-{name[:24]}.{ext}"
            f"?st=2025-01-01T00%3A00%3A00Z&se=2025-01-01T01%3A00%3A00Z&sp=r&sv=2024-08-04"
            f"&sr=b&sig={signature}"
        )

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
