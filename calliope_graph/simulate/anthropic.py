"""A faithful offline fake of Anthropic's Messages API (PROVIDERS.md §7).

Served on ``api.anthropic.com``: ``POST /v1/messages`` with ``x-api-key`` (or a bearer
token) and the required ``anthropic-version`` header. Bodies are checked as the API does
(``model``, ``max_tokens`` and ``messages`` required; roles ``user``/``assistant``; block
types; base64 image sources of JPEG, PNG, GIF or WebP; ``temperature`` in 0..1; ``tools``
and ``tool_choice``; unknown fields are "Extra inputs are not permitted") and every failure
uses Anthropic's envelope ``{"type": "error", "error": {"type", "message"}, "request_id"}``
with a ``request-id`` header.

Answers are messages: a forced tool (``tool_choice: {"type": "tool"}``) gets a ``tool_use``
block whose ``input`` fits the tool's ``input_schema``; a request carrying an image gets a
JSON description of it; anything else a short story from the prompt. A ``content_policy``
fault answers ``stop_reason: "refusal"``; an ``empty`` fault an empty text block; too small
a ``max_tokens`` cuts the text with ``stop_reason: "max_tokens"``.

Endpoint name for counting: ``messages``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import httpx

from calliope_graph.simulate._anthropic_stream import messages_stream
from calliope_graph.simulate._content import (
    analysis_answer,
    describe_image,
    digest,
    json_for_schema,
    last_user_text,
    story_text,
)
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    LimitHeaders,
    ProviderFake,
    Reject,
)

__all__ = ["FAKE", "AnthropicFake"]

#: The version calliope sends; any dated version is accepted (newer SDKs send later ones).
VERSION = "2023-06-01"
_TOP_LEVEL = """
model max_tokens messages system temperature top_p top_k stop_sequences metadata tools
tool_choice stream thinking service_tier container mcp_servers cache_control diagnostics
inference_geo output_config speed user_profile_id workspace_id
"""
#: Top-level body fields the API knows; anything else is "Extra inputs are not permitted".
_FIELDS = frozenset(_TOP_LEVEL.split())
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_BLOCKS = ("text", "image", "document", "tool_use", "tool_result", "thinking")
#: error.type per HTTP status (PROVIDERS.md §7.2).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

#: Models Anthropic has retired (https://platform.claude.com/docs/en/about-claude/model-deprecations
#: and its release notes, read 2026-12-06): requests naming them get Anthropic's 404
#: ``not_found_error``. Fixed, not computed from today's date, so tests stay reproducible.
RETIRED_MODELS = frozenset(
    (
        "claude-3-5-haiku-20241022",
        "claude-3-5-haiku-latest",
        "claude-3-haiku-20240307",
        "claude-3-5-sonnet-20240620",
        "claude-3-5-sonnet-20241022",
        "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-20250514",
        "claude-sonnet-4-0",
        "claude-opus-4-20250514",
        "claude-opus-4-0",
    )
)
#: What ``GET /v1/models`` lists, newest first (ids and display names).
LISTED_MODELS: tuple[tuple[str, str], ...] = (
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-sonnet-5", "Claude Sonnet 5"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
)


class AnthropicFake(ProviderFake):
    """Anthropic's Messages API on ``api.anthropic.com``."""

    name = "anthropic"
    endpoints = ("messages", "v1.models")
    hosts = ("api.anthropic.com",)

    def endpoint(self, request: httpx.Request) -> str:
        path = request.url.path.rstrip("/")
        if path == "/v1/messages":
            return "messages"
        return path.strip("/").replace("/", ".") or "root"

    def _request_id(self) -> str:
        seq = self.sim.state(self.name).get("seq", 0) + 1
        self.sim.state(self.name)["seq"] = seq
        return f"req_sim{digest(str(seq), str(self.sim.seed))[:20]}"

    def _envelope(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        request_id = self._request_id()
        body = {"type": "error", "error": {"type": kind, "message": message}}
        body["request_id"] = request_id
        return httpx.Response(
            status, json=body, headers={"request-id": request_id, **(headers or {})}
        )

    auth = AuthCheck(
        credentials=(Credential("x-api-key"), Credential("authorization", schemes=("bearer",))),
        missing=Failure(401, "authentication_error", "x-api-key header is required"),
        invalid=Failure(401, "authentication_error", "invalid x-api-key"),
    )
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 "
            "requests per minute (simulated). For details, refer to: "
            "https://docs.anthropic.com/en/api/rate-limits.",
        ),
        server_error=Failure(500, "api_error", "Internal server error"),
        unavailable=Failure(529, "overloaded_error", "Overloaded"),
        overloaded=Failure(529, "overloaded_error", "Overloaded"),
    )

    # Over a configured limit: Anthropic's 429 ``rate_limit_error`` names the limit, with
    # ``retry-after`` (the core adds it) and the anthropic-ratelimit-* headers.
    rate_limited = Failure(
        429,
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (calliope-sim) of "
        "{limit} {unit} per {per}. For details, refer to: "
        "https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for "
        "current usage. Please reduce the prompt length or the maximum tokens requested, or "
        "try again later.",
    )
    # Every response: anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}, the reset
    # as the RFC 3339 moment the window is full again.
    limit_headers = LimitHeaders("anthropic-ratelimit-{resource}-{field}", reset="rfc3339")

    def envelope(self, failure: Failure) -> httpx.Response:
        kind = failure.code or _TYPES.get(failure.status, "invalid_request_error")
        return self._envelope(failure.status, kind, failure.message, dict(failure.headers))

    # -- the endpoint ---------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.rstrip("/") == "/v1/models" and request.method == "GET":
            return self._models(request)
        if request.url.path.rstrip("/") != "/v1/messages":
            return self._envelope(404, "not_found_error", "Not found")
        if request.method != "POST":
            return self._envelope(405, "invalid_request_error", "Method not allowed")
        try:
            return self._messages(request)
        except Reject as rejected:
            return rejected.response

    def _models(self, request: httpx.Request) -> httpx.Response:
        """``GET /v1/models``: pages of ``limit`` (default 20, 1-1000) after ``after_id``,
        with ``has_more``, ``first_id`` and ``last_id`` (Anthropic's list shape)."""
        try:
            limit = int(request.url.params.get("limit", "20"))
        except ValueError:
            return self._envelope(
                400, "invalid_request_error", "limit: Input should be a valid integer"
            )
        if not 1 <= limit <= 1000:
            return self._envelope(
                400, "invalid_request_error", "limit: Input should be between 1 and 1000"
            )
        ids = [model_id for model_id, _ in LISTED_MODELS]
        after = request.url.params.get("after_id")
        start = ids.index(after) + 1 if after in ids else 0
        page = LISTED_MODELS[start : start + limit]
        data = [
            {
                "type": "model",
                "id": model_id,
                "display_name": name,
                "created_at": "2026-06-30T00:00:00Z",
            }
            for model_id, name in page
        ]
        return httpx.Response(
            200,
            json={
                "data": data,
                "has_more": start + limit < len(ids),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    def _bad(self, message: str) -> Reject:
        return Reject(self._envelope(400, "invalid_request_error", message))

    def _messages(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("anthropic-version") is None:
            raise self._bad("anthropic-version: header is required")
        if not re.fullmatch(r"20\d\d-\d\d-\d\d", request.headers["anthropic-version"]):
            raise self._bad(
                f"anthropic-version: invalid version {request.headers['anthropic-version']!r}"
            )
        try:
            body = json.loads(request.content or b"")
        except (ValueError, UnicodeDecodeError):
            raise self._bad("There was an issue with your request body: invalid JSON") from None
        if not isinstance(body, dict):
            raise self._bad("Input should be an object")
        for field in body:
            if field not in _FIELDS:
                raise self._bad(f"{field}: Extra inputs are not permitted")
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                raise self._bad(f"{field}: Field required")
        model = body["model"]
        if not isinstance(model, str) or not model:
            raise self._bad("model: Input should be a valid string")
        if model in RETIRED_MODELS:  # Anthropic's own answer for a retired model
            raise Reject(self._envelope(404, "not_found_error", f"model: {model}"))
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise self._bad("max_tokens: Input should be a valid integer greater than 0")
        temperature = body.get("temperature")
        if temperature is not None and (
            not isinstance(temperature, int | float) or not 0 <= temperature <= 1
        ):
            raise self._bad("temperature: Input should be less than or equal to 1")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise self._bad("stream: Input should be a valid boolean")
        self._check_system(body.get("system"))
        images = self._check_messages(body["messages"])
        forced = self._check_tools(body.get("tools"), body.get("tool_choice"))

        prompt = last_user_text(body["messages"]) or ""
        seed = digest(json.dumps(body["messages"], sort_keys=True), model)
        stop_reason = "end_turn"
        content: list[dict[str, Any]]
        if self.sim.blocked(self, request, prompt):
            content, stop_reason = [], "refusal"
        elif self.sim.emptied(self, request, prompt):
            content = [{"type": "text", "text": "", "citations": None}]
        elif forced is not None:
            tool_input = json_for_schema(forced.get("input_schema", {}), seed)
            block = {"type": "tool_use", "id": f"toolu_{seed[:24]}", "name": forced["name"]}
            block["caller"] = {"type": "direct"}  # the model called it (no server tool did)
            content, stop_reason = [{**block, "input": tool_input}], "tool_use"
        else:
            text = (
                json.dumps(analysis_answer(images[-1]))
                if images
                else story_text(prompt, model=model)
            )
            words = text.split(" ")
            if len(words) > max_tokens:
                text, stop_reason = " ".join(words[:max_tokens]), "max_tokens"
            content = [{"type": "text", "text": text, "citations": None}]
        output_tokens = sum(
            len(json.dumps(b.get("input", b.get("text", "")))) // 4 + 1 for b in content
        )
        message = {
            "id": f"msg_{seed[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            # Required, if null, in Anthropic's published spec (Message, Usage): always sent.
            "stop_details": (
                {"type": "refusal", "category": None, "explanation": None}
                if stop_reason == "refusal"
                else None
            ),
            "container": None,
            "usage": {
                "input_tokens": max(1, len(request.content) // 4),
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "inference_geo": None,
                "server_tool_use": None,
                "service_tier": "standard",
            },
        }
        headers = {"request-id": self._request_id()}
        if stream:  # named server-sent events (simulate/_anthropic_stream.py)
            return messages_stream(self, request, message, headers)
        return httpx.Response(200, json=message, headers=headers)

    # -- validation -----------------------------------------------------------------------
    def _check_system(self, system: Any) -> None:
        if system is None or isinstance(system, str):
            return
        if isinstance(system, list) and all(
            isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
            for b in system
        ):
            return
        raise self._bad("system: Input should be a valid string or a list of text blocks")

    def _check_messages(self, messages: Any) -> list[bytes]:
        if not isinstance(messages, list):
            raise self._bad("messages: Input should be a valid list")
        if not messages:
            raise self._bad("messages: at least one message is required")
        images: list[bytes] = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise self._bad(f"messages.{i}: Input should be a valid dictionary")
            role = message.get("role")
            if role not in ("user", "assistant"):
                raise self._bad(
                    f"messages.{i}.role: Input should be 'user' or 'assistant'"
                    + (
                        "; system prompts go in the top-level system field"
                        if role == "system"
                        else ""
                    )
                )
            content = message.get("content")
            if isinstance(content, str):
                if not content and i < len(messages) - 1:
                    raise self._bad(f"messages.{i}: text content blocks must be non-empty")
                continue
            if not isinstance(content, list):
                raise self._bad(f"messages.{i}.content: Input should be a string or a list")
            for j, block in enumerate(content):
                images.extend(self._check_block(block, f"messages.{i}.content.{j}", role))
        return images

    def _check_block(self, block: Any, where: str, role: str) -> list[bytes]:
        if not isinstance(block, dict) or block.get("type") not in _BLOCKS:
            kinds = ", ".join(repr(k) for k in _BLOCKS)
            raise self._bad(f"{where}.type: Input tag should be one of {kinds}")
        kind = block["type"]
        if kind == "text":
            if not isinstance(block.get("text"), str) or not block["text"]:
                raise self._bad(f"{where}: text content blocks must be non-empty")
            return []
        if kind == "image":
            return [self._check_image(block.get("source"), where)]
        if kind == "tool_use" and role != "assistant":
            raise self._bad(f"{where}: tool_use blocks may only appear in assistant turns")
        if kind == "tool_result":
            if role != "user":
                raise self._bad(f"{where}: tool_result blocks may only appear in user turns")
            if not isinstance(block.get("tool_use_id"), str):
                raise self._bad(f"{where}.tool_use_id: Field required")
        return []

    def _check_image(self, source: Any, where: str) -> bytes:
        if not isinstance(source, dict):
            raise self._bad(f"{where}.image.source: Field required")
        if source.get("type") == "url":
            return b""
        if source.get("type") != "base64":
            raise self._bad(f"{where}.image.source.type: Input tag should be 'base64' or 'url'")
        media = source.get("media_type")
        if media not in _IMAGE_TYPES:
            raise self._bad(
                f"{where}.image.source.base64.media_type: Input should be 'image/jpeg', "
                "'image/png', 'image/gif' or 'image/webp'"
            )
        try:
            data = base64.b64decode(str(source.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise self._bad(f"{where}.image.source.base64: invalid base64 data") from None
        if len(data) > 5 * 1024 * 1024:
            raise self._bad(
                f"{where}.image.source.base64: image exceeds 5 MB maximum: {len(data)} bytes "
                "> 5242880 bytes"
            )
        if describe_image(data)["caption"] == "an unreadable image":
            raise self._bad(f"{where}.image.source.base64: The image could not be processed")
        return data

    def _check_tools(self, tools: Any, choice: Any) -> dict[str, Any] | None:
        """The forced tool (``tool_choice`` type ``tool``), after checking both fields."""
        if tools is None:
            if choice is not None:
                raise self._bad("tool_choice may only be specified while providing tools")
            return None
        if not isinstance(tools, list):
            raise self._bad("tools: Input should be a valid list")
        by_name: dict[str, dict[str, Any]] = {}
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise self._bad(f"tools.{i}.name: Field required")
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                raise self._bad(f"tools.{i}.input_schema.type: Input should be 'object'")
            by_name[tool["name"]] = tool
        if choice is None:
            return None
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            raise self._bad(
                "tool_choice.type: Input tag should be one of 'auto', 'any', 'tool', 'none'"
            )
        if kind == "tool":
            name = choice.get("name")
            if name not in by_name:
                raise self._bad(f"tool_choice.name: no tool named {name!r} was provided")
            return by_name[name]
        if kind == "any" and tools:
            return by_name[next(iter(by_name))]
        return None


FAKE = AnthropicFake
