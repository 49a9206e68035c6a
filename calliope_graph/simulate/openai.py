"""A faithful offline fake of the OpenAI API (PROVIDERS.md §1).

Served on ``api.openai.com`` under ``/v1``: chat completions (text, vision, JSON mode,
strict JSON Schema structured output, forced tool calls), legacy completions, image
generation (dall-e-2, dall-e-3, GPT image models; ``b64_json`` or ``url`` answers, the
latter served from a CDN-like host), audio transcription (multipart) and speech (the audio
bytes, as long as the text takes to say: :mod:`calliope_graph.simulate._speech`). Requests are
validated the way OpenAI does (missing parameters, unknown arguments, sizes a model does
not accept, ``n`` out of range, a non-strict schema, JSON mode without the word "json"),
and every failure uses OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``.

Endpoint names for counting: ``chat.completions``, ``completions``, ``images.generations``,
``images.edits`` (reference images: simulate/_openai_edits.py),
``audio.transcriptions``, ``audio.speech``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
import wave
from dataclasses import dataclass
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    analysis_answer,
    describe_image,
    digest,
    image_bytes,
    json_for_schema,
    last_user_text,
    story_text,
)
from calliope_graph.simulate._core import Reject
from calliope_graph.simulate._openai_edits import images_edits
from calliope_graph.simulate._openai_stream import chat_stream
from calliope_graph.simulate._openai_stream import stream_options as _stream_options
from calliope_graph.simulate._openai_wire import (
    PREFIX,
    OpenAIWire,
    count_tokens,
    mask_key,
    multipart_form,
    quote_list,
    strict_schema_problem,
    truncate_tokens,
)
from calliope_graph.simulate._speech import speech_audio

__all__ = ["FAKE", "OpenAIFake", "mask_key"]

_CDN = "https://oaidalleapiprodscus.blob.core.windows.net"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CHAT_ARGS = _words(
    "model messages audio frequency_penalty function_call functions logit_bias logprobs "
    "max_completion_tokens max_tokens metadata modalities n parallel_tool_calls "
    "prediction presence_penalty prompt_cache_key reasoning_effort response_format "
    "safety_identifier seed service_tier stop store stream stream_options temperature "
    "tool_choice tools top_logprobs top_p user verbosity web_search_options"
)
_COMPLETION_ARGS = _words(
    "model prompt best_of echo frequency_penalty logit_bias logprobs max_tokens n "
    "presence_penalty seed stop stream stream_options suffix temperature top_p user"
)
_IMAGE_ARGS = _words(
    "prompt model n size quality response_format style user background moderation "
    "output_compression output_format partial_images stream"
)
_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
#: Model-name prefixes OpenAI serves only on /chat/completions.
_CHAT_ONLY = ("gpt-4", "gpt-5", "gpt-6", "o1", "o3", "o4", "chatgpt", "gpt-3.5-turbo")
#: Reasoning models: they refuse ``max_tokens`` (``max_completion_tokens`` replaces it).
_REASONING = ("o1", "o3", "o4", "gpt-5", "gpt-6")
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
#: What ``GET /v1/models`` lists (current models, with OpenAI's optional ``shutdown_date``
#: for those whose retirement is announced).
LISTED_MODELS: dict[str, str | None] = {
    "gpt-6-luna": None,
    "gpt-4o": "2027-01-14",
    "gpt-4o-mini": "2027-01-14",
    "gpt-3.5-turbo-instruct": None,
    "gpt-image-2": None,
    "gpt-transcribe": None,
    "whisper-1": "2027-02-26",
    "tts-1": "2027-01-06",
    "tts-1-hd": "2027-01-06",
    "gpt-4o-mini-tts": "2027-01-06",
}


class OpenAIFake(OpenAIWire):
    """OpenAI's REST API on ``api.openai.com/v1``: the endpoints."""

    #: Shut-down models this fake refuses (tests of wire shapes that OpenAI-compatible
    #: servers still speak, such as DALL·E's ``url`` answers, empty it).
    retired_models: frozenset[str] = RETIRED_MODELS

    async def handle(self, request: httpx.Request) -> httpx.Response:
        route = self._route(request)
        handlers = {
            ("POST", "/chat/completions"): self._chat,
            ("POST", "/completions"): self._completions,
            ("POST", "/images/generations"): self._images,
            ("POST", "/images/edits"): lambda r: images_edits(self, r),
            ("POST", "/audio/transcriptions"): self._transcriptions,
            ("POST", "/audio/speech"): self._speech,
            ("GET", "/models"): self._models,
        }
        handler = handlers.get((request.method, route))
        if handler is None or not request.url.path.startswith(PREFIX + "/"):
            return self._fail(404, f"Invalid URL ({request.method} {request.url.path})")
        try:
            return handler(request)
        except Reject as rejected:
            return rejected.response

    # -- models ---------------------------------------------------------------------------
    def _models(self, request: httpx.Request) -> httpx.Response:
        """``GET /v1/models``: the current models (OpenAI's list shape)."""
        data = [
            {
                "id": name,
                "object": "model",
                "created": 1_767_225_600,
                "owned_by": "system",
                **({"shutdown_date": shutdown} if shutdown else {}),
            }
            for name, shutdown in LISTED_MODELS.items()
        ]
        return self._ok({"object": "list", "data": data}, seq=self._seq())

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

    # -- chat completions -----------------------------------------------------------------
    def _chat(self, request: httpx.Request) -> httpx.Response:
        body = self._json_body(request, _CHAT_ARGS)
        model = self._require_model(body)
        messages = body.get("messages")
        if messages is None:
            raise self._missing("messages")
        if not isinstance(messages, list) or not messages:
            raise self._reject(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        images = self._check_messages(messages)
        self._number_param(body, "temperature", 0, 2)
        self._number_param(body, "top_p", 0, 1)
        self._number_param(body, "presence_penalty", -2, 2)
        self._number_param(body, "frequency_penalty", -2, 2)
        n = self._int_param(body, "n", 1, 1, 128)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if body.get("max_tokens") is not None and model.startswith(_REASONING):
            raise self._reject(
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        streamed = _stream_options(self, body)
        response_format = body.get("response_format") or {"type": "text"}
        schema = self._check_response_format(response_format, messages)
        tool_call = self._forced_tool(body)

        prompt = last_user_text(messages) or ""
        blocked = self.sim.blocked(self, request, prompt)
        emptied = self.sim.emptied(self, request, prompt)
        seq = self._seq()
        prompt_text = json.dumps(messages)
        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        for index in range(n):
            seed = f"{model}|{prompt}|{index}"
            message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
            finish = "stop"
            if blocked and schema is not None:
                message["refusal"] = "I'm sorry, but I can't help with that request."
            elif blocked:
                finish = "content_filter"
            elif tool_call is not None:
                name, parameters = tool_call
                arguments = json.dumps(json_for_schema(parameters, seed))
                message["tool_calls"] = [
                    {
                        "id": "call_" + digest("call", seed, str(seq))[:24],
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
                finish = "tool_calls"
                completion_tokens += count_tokens(arguments)
            else:
                content = self._chat_content(response_format, schema, prompt, images, model, index)
                if emptied and schema is None:
                    content = ""
                if isinstance(limit, int) and count_tokens(content) > limit:
                    content, finish = truncate_tokens(content, limit), "length"
                message["content"] = content
                completion_tokens += count_tokens(content)
            message["annotations"] = []
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            )
        prompt_tokens = count_tokens(prompt_text) + 85 * len(images)
        answer = {
            "id": "chatcmpl-" + digest("chatcmpl", str(seq), prompt_text)[:29],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_" + digest("fingerprint", model)[:10],
        }
        if streamed is not None:  # server-sent chunks (simulate/_openai_stream.py)
            return chat_stream(self, request, answer, streamed, headers=self._headers(seq))
        return self._ok(answer, seq=seq)

    def _check_messages(self, messages: list[Any]) -> list[bytes]:
        """Validate every message; return the bytes of the images they carry."""
        images: list[bytes] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise self._reject(
                    f"Invalid type for 'messages[{i}]': expected an object, but got "
                    f"{type(message).__name__} instead.",
                    param=f"messages[{i}]",
                    code="invalid_type",
                )
            role = message.get("role")
            if role is None:
                raise self._missing(f"messages[{i}].role")
            if role not in _ROLES:
                raise self._reject(
                    f"Invalid value: '{role}'. Supported values are: {quote_list(_ROLES)}.",
                    param=f"messages[{i}].role",
                    code="invalid_value",
                )
            content = message.get("content")
            if content is None and role not in ("assistant", "function"):
                raise self._missing(f"messages[{i}].content")
            if isinstance(content, list):
                for j, part in enumerate(content):
                    images.extend(self._check_part(part, f"messages[{i}].content[{j}]"))
            elif content is not None and not isinstance(content, str):
                raise self._reject(
                    f"Invalid type for 'messages[{i}].content': expected one of a string or "
                    f"array of objects, but got {type(content).__name__} instead.",
                    param=f"messages[{i}].content",
                    code="invalid_type",
                )
        return images

    def _check_part(self, part: Any, where: str) -> list[bytes]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _PART_TYPES:
            raise self._reject(
                f"Invalid value: '{kind}'. Supported values are: {quote_list(_PART_TYPES)}.",
                param=f"{where}.type",
                code="invalid_value",
            )
        assert isinstance(part, dict)
        if kind != "image_url":
            return []
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else None
        if not isinstance(url, str):
            raise self._missing(f"{where}.image_url.url")
        match = re.fullmatch(r"data:([\w/+.-]+);base64,(.*)", url, re.DOTALL)
        if match is None:
            if url.startswith(("http://", "https://")):
                raise self._reject(
                    f"Error while downloading {url}.", param="url", code="invalid_image_url"
                )
            raise self._reject(
                "Invalid 'image_url'. Expected a base64-encoded data URL with an image MIME "
                "type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got an "
                "invalid value.",
                param=f"{where}.image_url.url",
                code="invalid_value",
            )
        mime, payload = match.groups()
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            data = b""
        info = describe_image(data) if data else {"caption": "an unreadable image"}
        if mime not in ("image/png", "image/jpeg", "image/gif", "image/webp") or (
            info["caption"] == "an unreadable image"
        ):
            raise self._reject(
                "You uploaded an unsupported image. Please make sure your image has of one "
                "the following formats: ['png', 'jpeg', 'gif', 'webp'].",
                code="invalid_image_format",
            )
        return [data]

    def _check_response_format(
        self, response_format: Any, messages: list[Any]
    ) -> dict[str, Any] | None:
        """Validate ``response_format``; return the JSON schema when it is ``json_schema``."""
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise self._reject(
                f"Invalid value: '{kind}'. Supported values are: 'json_object', "
                "'json_schema', and 'text'.",
                param="response_format.type",
                code="invalid_value",
            )
        assert isinstance(response_format, dict)
        if kind == "json_object":
            if "json" not in json.dumps(messages).lower():
                raise self._reject(
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                    param="messages",
                )
            return None
        if kind == "text":
            return None
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise self._missing("response_format.json_schema")
        name = spec.get("name")
        if not isinstance(name, str):
            raise self._missing("response_format.json_schema.name")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise self._reject(
                "Invalid 'response_format.json_schema.name': string does not match pattern. "
                "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'.",
                param="response_format.json_schema.name",
                code="invalid_value",
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            schema = {"type": "object", "properties": {}, "additionalProperties": False}
        if spec.get("strict"):
            problem = strict_schema_problem(schema, ())
            if problem is not None:
                raise self._reject(
                    f"Invalid schema for response_format '{name}': {problem}",
                    param="response_format",
                    code="invalid_json_schema",
                )
        return schema

    def _forced_tool(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        tools = body.get("tools")
        choice = body.get("tool_choice", "auto")
        if not tools or choice in ("none", "auto"):
            return None
        functions = {
            t["function"]["name"]: t["function"].get("parameters") or {"type": "object"}
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        if not functions:
            return None
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            if wanted not in functions:
                raise self._reject(
                    f"Invalid value for 'tool_choice': function '{wanted}' not found in 'tools'.",
                    param="tool_choice",
                    code="invalid_value",
                )
            return str(wanted), functions[str(wanted)]
        name = next(iter(functions))
        return name, functions[name]

    def _chat_content(
        self,
        response_format: dict[str, Any],
        schema: dict[str, Any] | None,
        prompt: str,
        images: list[bytes],
        model: str,
        index: int,
    ) -> str:
        seed = f"{model}|{prompt}|{index}"
        analysis = analysis_answer(images[-1]) if images else None
        if schema is not None:
            value = json_for_schema(schema, seed)
            if analysis is not None and isinstance(value, dict):
                props = schema.get("properties", {})
                for key, item in analysis.items():
                    expected = props.get(key, {}).get("type")
                    if (expected == "string" and isinstance(item, str)) or (
                        expected == "array" and isinstance(item, list)
                    ):
                        value[key] = item
            return json.dumps(value)
        if response_format.get("type") == "json_object":
            if analysis is not None:
                return json.dumps(analysis)
            return json.dumps({"response": story_text(prompt, model=f"{model}{index}")})
        if analysis is not None:
            return f"{analysis['description']} Tags: {', '.join(analysis['tags'])}."
        return story_text(prompt, model=f"{model}{index}" if index else model)

    # -- legacy completions ---------------------------------------------------------------
    def _completions(self, request: httpx.Request) -> httpx.Response:
        body = self._json_body(request, _COMPLETION_ARGS)
        model = self._require_model(body)
        if model.startswith(_CHAT_ONLY) and "instruct" not in model:
            raise self._reject(
                "This is a chat model and not supported in the v1/completions endpoint. "
                "Did you mean to use v1/chat/completions?",
                status=404,
                param="model",
            )
        prompt = body.get("prompt")
        if prompt is None:
            raise self._missing("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise self._reject(
                "Invalid type for 'prompt': expected a string or an array of strings.",
                param="prompt",
                code="invalid_type",
            )
        self._number_param(body, "temperature", 0, 2)
        self._number_param(body, "top_p", 0, 1)
        n = self._int_param(body, "n", 1, 1, 128)
        max_tokens = self._int_param(body, "max_tokens", 16, 0, None)
        if body.get("stream"):
            raise self._reject(
                "The calliope simulator does not stream: send the request without 'stream': true.",
                param="stream",
            )
        blocked = self.sim.blocked(self, request, "\n".join(prompts))
        emptied = self.sim.emptied(self, request, "\n".join(prompts))
        seq = self._seq()
        choices: list[dict[str, Any]] = []
        completion_tokens = 0
        for p in prompts:
            for i in range(n):
                text = (
                    "" if blocked or emptied else story_text(p, model=f"{model}{i}" if i else model)
                )
                finish = "content_filter" if blocked else "stop"
                if count_tokens(text) > max_tokens:
                    text, finish = truncate_tokens(text, max_tokens), "length"
                completion_tokens += count_tokens(text)
                choices.append(
                    {
                        "text": text,
                        "index": len(choices),
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                )
        prompt_tokens = sum(count_tokens(p) for p in prompts)
        return self._ok(
            {
                "id": "cmpl-" + digest("cmpl", str(seq), *prompts)[:29],
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": choices,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
            seq=seq,
        )

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


FAKE = OpenAIFake
