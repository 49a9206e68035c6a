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
``audio.transcriptions``, ``audio.speech``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import httpx

from calliope_graph.simulate._content import (
    analysis_answer,
    describe_image,
    digest,
    json_for_schema,
    last_user_text,
    story_text,
)
from calliope_graph.simulate._core import Reject
from calliope_graph.simulate._openai_media import RETIRED_MODELS, OpenAIMediaEndpoints
from calliope_graph.simulate._openai_wire import (
    PREFIX,
    count_tokens,
    mask_key,
    quote_list,
    strict_schema_problem,
    truncate_tokens,
)

__all__ = ["FAKE", "RETIRED_MODELS", "OpenAIFake", "mask_key"]


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
_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")
#: Model-name prefixes OpenAI serves only on /chat/completions.
_CHAT_ONLY = ("gpt-4", "gpt-5", "gpt-6", "o1", "o3", "o4", "chatgpt", "gpt-3.5-turbo")
#: Reasoning models: they refuse ``max_tokens`` (``max_completion_tokens`` replaces it).
_REASONING = ("o1", "o3", "o4", "gpt-5", "gpt-6")
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


class OpenAIFake(OpenAIMediaEndpoints):
    """OpenAI's REST API on ``api.openai.com/v1``: the endpoints (images and audio come from
    :class:`~calliope_graph.simulate._openai_media.OpenAIMediaEndpoints`)."""

    async def handle(self, request: httpx.Request) -> httpx.Response:
        route = self._route(request)
        handlers = {
            ("POST", "/chat/completions"): self._chat,
            ("POST", "/completions"): self._completions,
            ("POST", "/images/generations"): self._images,
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
        if body.get("stream"):
            raise self._reject(
                "The calliope simulator does not stream: send the request without 'stream': true.",
                param="stream",
            )
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
        return self._ok(
            {
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
            },
            seq=seq,
        )

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


FAKE = OpenAIFake
