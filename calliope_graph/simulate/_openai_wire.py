"""OpenAI's wire protocol for the fake: routing, auth, the error envelope, request checks.

:class:`OpenAIWire` holds what every OpenAI endpoint shares: ``/v1`` routing and endpoint
names, Bearer auth with OpenAI's 401 bodies (the key masked as OpenAI masks it), the
``{"error": {"message", "type", "param", "code"}}`` envelope with OpenAI's wording for
rejected parameters, response headers (``x-request-id``, rate-limit counters), and the
mapping of injected faults to OpenAI's statuses. :mod:`calliope_graph.simulate.openai`
builds the endpoints on it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import httpx

from calliope_graph.simulate._content import digest
from calliope_graph.simulate._core import (
    AuthCheck,
    Credential,
    Failure,
    FaultErrors,
    LimitHeaders,
    ProviderFake,
    Reject,
)

__all__ = [
    "PREFIX",
    "OpenAIWire",
    "count_tokens",
    "mask_key",
    "multipart_form",
    "multipart_parts",
    "quote_list",
    "strict_schema_problem",
    "truncate_tokens",
]

PREFIX = "/v1"
_ENDPOINTS = {
    "/chat/completions": "chat.completions",
    "/completions": "completions",
    "/images/generations": "images.generations",
    "/images/edits": "images.edits",
    "/audio/transcriptions": "audio.transcriptions",
}


def mask_key(key: str) -> str:
    """A key as OpenAI shows it in a 401: a short prefix, stars, the last four characters."""
    if len(key) <= 12:
        return "*" * len(key)
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def quote_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def count_tokens(text: str) -> int:
    """A rough token count (OpenAI averages about four characters per token)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def truncate_tokens(text: str, max_tokens: int) -> str:
    return text[: max(max_tokens, 0) * 4]


_OVERLOADED = Failure(
    503,
    None,
    "The engine is currently overloaded, please try again later.",
    extra={"type": "server_error"},
)


class OpenAIWire(ProviderFake):
    """The parts of OpenAI's API every endpoint shares (see the module docstring)."""

    name = "openai"
    endpoints = (
        "chat.completions",
        "completions",
        "images.generations",
        "images.edits",
        "audio.transcriptions",
        "audio.speech",
        "models",
    )
    hosts = ("api.openai.com",)

    # -- plumbing -------------------------------------------------------------------------
    def _route(self, request: httpx.Request) -> str:
        path = request.url.path
        return path[len(PREFIX) :] if path.startswith(PREFIX + "/") else path

    def endpoint(self, request: httpx.Request) -> str:
        route = self._route(request)
        return _ENDPOINTS.get(route) or route.strip("/").replace("/", ".") or "root"

    def _seq(self) -> int:
        state = self.sim.state(self.name)
        state["seq"] = int(state.get("seq", 0)) + 1
        return int(state["seq"])

    def _headers(self, seq: int, *, processing_ms: int = 180) -> dict[str, str]:
        return {
            "x-request-id": "req_" + digest("openai-request", str(self.sim.seed), str(seq))[:32],
            "openai-organization": "user-calliope-sim",
            "openai-processing-ms": str(processing_ms),
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "2ms",
        }

    def _fail(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> httpx.Response:
        error: dict[str, Any] = {"message": message, "type": type_, "param": param, "code": code}
        error.update(extra or {})
        all_headers = self._headers(self._seq())
        all_headers.update(headers or {})
        return httpx.Response(status, json={"error": error}, headers=all_headers)

    def _reject(self, message: str, **kwargs: Any) -> Reject:
        return Reject(self._fail(kwargs.pop("status", 400), message, **kwargs))

    def _ok(self, body: Any, *, seq: int) -> httpx.Response:
        return httpx.Response(200, json=body, headers=self._headers(seq))

    # -- ProviderFake ---------------------------------------------------------------------
    auth = AuthCheck(
        credentials=(Credential("authorization", schemes=("bearer",)),),
        missing=Failure(
            401,
            None,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
            "or as the password field (with blank username) if you're accessing the API "
            "from your browser and are prompted for a username and password. You can "
            "obtain an API key from https://platform.openai.com/account/api-keys.",
        ),
        invalid=Failure(
            401,
            "invalid_api_key",
            "Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        ),
        show=mask_key,
    )
    # OpenAI has no 529: an overloaded engine is a 503.
    errors = FaultErrors(
        rate_limit=Failure(
            429,
            "rate_limit_exceeded",
            "Rate limit reached for requests in organization org-calliope-sim on requests "
            "per min (RPM): Limit 500, Used 500, Requested 1. Please try again in "
            "{retry_after}s. Visit https://platform.openai.com/account/rate-limits to learn "
            "more.",
            headers={
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "{retry_after}s",
            },
            extra={"type": "requests"},
        ),
        server_error=Failure(
            500,
            None,
            "The server had an error while processing your request. Sorry about that!",
            extra={"type": "server_error"},
        ),
        unavailable=_OVERLOADED,
        overloaded=_OVERLOADED,
    )

    # Over a configured limit (``Simulator(limits=...)``): OpenAI's 429 names the model, the
    # window, the numbers and the wait, and carries ``retry-after`` and ``retry-after-ms``.
    rate_limited = Failure(
        429,
        "rate_limit_exceeded",
        "Rate limit reached for {model} in organization org-calliope-sim on {window}: "
        "Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more.",
        headers={"retry-after-ms": "{retry_after_ms}"},
        extra={"type": "{resource}"},
    )
    # Every response reports what is left: x-ratelimit-{limit,remaining,reset}-{requests,
    # tokens}, resets as Go durations until the window is full again (``6m0s``, ``12ms``).
    limit_headers = LimitHeaders("x-ratelimit-{field}-{resource}", reset="duration")

    def envelope(self, failure: Failure) -> httpx.Response:
        return self._fail(
            failure.status,
            failure.message,
            type_=str(failure.extra.get("type", "invalid_request_error")),
            code=failure.code,
            headers=dict(failure.headers),
        )

    # -- request reading ------------------------------------------------------------------
    def _json_body(self, request: httpx.Request, allowed: frozenset[str]) -> dict[str, Any]:
        try:
            body = json.loads(request.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise self._reject(
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON. If you have trouble figuring "
                "out how to fix this, please contact us through our help center at "
                "help.openai.com.)"
            )
        for key in body:
            if key not in allowed:
                raise self._reject(
                    f"Unrecognized request argument supplied: {key}", param=key, code=None
                )
        return body

    def _int_param(
        self, body: dict[str, Any], name: str, default: int, lo: int, hi: int | None
    ) -> int:
        value = body.get(name, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._reject(
                f"Invalid type for '{name}': expected an integer, but got "
                f"{type(value).__name__} instead.",
                param=name,
                code="invalid_type",
            )
        if value < lo:
            raise self._reject(
                f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, "
                f"but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        if hi is not None and value > hi:
            raise self._reject(
                f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, "
                f"but got {value} instead.",
                param=name,
                code="integer_above_max_value",
            )
        return value

    def _number_param(self, body: dict[str, Any], name: str, lo: float, hi: float) -> None:
        value = body.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._reject(
                f"Invalid type for '{name}': expected a decimal, but got "
                f"{type(value).__name__} instead.",
                param=name,
                code="invalid_type",
            )
        if value < lo:
            raise self._reject(
                f"Invalid '{name}': decimal below minimum value. Expected a value >= {lo:g}, "
                f"but got {value:g} instead.",
                param=name,
                code="decimal_below_min_value",
            )
        if value > hi:
            raise self._reject(
                f"Invalid '{name}': decimal above maximum value. Expected a value <= {hi:g}, "
                f"but got {value:g} instead.",
                param=name,
                code="decimal_above_max_value",
            )

    def _require_model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not model:
            raise self._reject("you must provide a model parameter")
        if not isinstance(model, str):
            raise self._reject(
                "Invalid type for 'model': expected a string, but got "
                f"{type(model).__name__} instead.",
                param="model",
                code="invalid_type",
            )
        return model

    def _missing(self, name: str) -> Reject:
        return self._reject(
            f"Missing required parameter: '{name}'.",
            param=name,
            code="missing_required_parameter",
        )


def strict_schema_problem(node: Any, context: tuple[str, ...]) -> str | None:
    """Why ``node`` is not a valid strict-mode schema (OpenAI's wording), or None."""
    if not isinstance(node, dict):
        return None
    where = f"In context={context!r}, "
    if "$ref" in node and len(node) > 1:
        extra = sorted(k for k in node if k != "$ref")
        return f"{where}$ref cannot have keywords {set(extra)!r}."
    properties = node.get("properties")
    if node.get("type") == "object" or isinstance(properties, dict):
        if node.get("additionalProperties") is not False:
            return f"{where}'additionalProperties' is required to be supplied and to be false."
        props = properties if isinstance(properties, dict) else {}
        required = node.get("required")
        missing = [k for k in props if not isinstance(required, list) or k not in required]
        if missing:
            return (
                f"{where}'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        for key, child in props.items():
            problem = strict_schema_problem(child, (*context, "properties", key))
            if problem:
                return problem
    for group in ("$defs", "definitions"):
        defs = node.get(group)
        if isinstance(defs, dict):
            for key, child in defs.items():
                problem = strict_schema_problem(child, (*context, group, key))
                if problem:
                    return problem
    if isinstance(node.get("items"), dict):
        problem = strict_schema_problem(node["items"], (*context, "items"))
        if problem:
            return problem
    for group in ("anyOf", "allOf"):
        options = node.get(group)
        if isinstance(options, list):
            for i, child in enumerate(options):
                problem = strict_schema_problem(child, (*context, group, str(i)))
                if problem:
                    return problem
    return None


def multipart_form(request: httpx.Request) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The form fields and files of a multipart/form-data body (byte-exact).

    Raises ValueError (with OpenAI's wording) when the body is not multipart.
    """
    ctype = request.headers.get("content-type", "")
    match = re.search(r'boundary="?([^";]+)"?', ctype)
    if not ctype.lower().startswith("multipart/form-data") or match is None:
        raise ValueError(
            f"Invalid Content-Type header ({ctype or 'none'}), expected multipart/form-data. "
            "(HINT: If you're using curl, you can pass -H 'Content-Type: multipart/form-data')"
        )
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for name, filename, payload in multipart_parts(request, match.group(1)):
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files


def multipart_parts(request: httpx.Request, boundary: str) -> list[tuple[str, str | None, bytes]]:
    """Every part of a multipart body in order: (name, filename or None, bytes); a name may
    repeat (``image[]``, one part per file)."""
    delimiter = b"--" + boundary.encode()
    parts: list[tuple[str, str | None, bytes]] = []
    for chunk in request.content.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, _, payload = chunk.partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        params = dict(re.findall(r'(\w+)="([^"]*)"', disposition))
        name = params.get("name")
        if name is not None:
            parts.append((name, params.get("filename"), payload))
    return parts
