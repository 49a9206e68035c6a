"""Replicate's failures as calliope-graph errors: an HTTP error answer (``describe``: its
detail and code, a throttle's wait) and a prediction that failed (``error_for_failure``: a
safety refusal, an invalid input, a transient failure, or a plain provider error)."""

from __future__ import annotations

import json
import re

import httpx

from calliope_graph.config import InferenceModelProvider
from calliope_graph.errors import (
    ContentPolicyError,
    InvalidRequestError,
    ProviderError,
    TransientProviderError,
)

__all__ = ["describe", "error_for_failure"]

_NAME = InferenceModelProvider.REPLICATE.value

_POLICY = re.compile(
    r"nsfw|safety|sensitive|flagged|content polic|moderation|inappropriate|explicit",
    re.IGNORECASE,
)
_INVALID = re.compile(
    r"invalid|must be|is required|not a valid|unsupported|cannot identify image|"
    r"valueerror|out of range|too (long|large|big|many)",
    re.IGNORECASE,
)
_TRANSIENT = re.compile(
    r"out of memory|cuda|timed? ?out|timeout|connection|internal (server )?error|"
    r"unavailable|temporar|retry|try again later|director",
    re.IGNORECASE,
)


# -- errors ----------------------------------------------------------------------------------
def describe(response: httpx.Response) -> tuple[str, str | None]:
    """(message, code) from Replicate's problem details ``{"title", "detail", "status",
    "invalid_fields"?}``; the code is the title in snake case."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300].strip() or response.reason_phrase, None)
    if not isinstance(body, dict):
        return (str(body)[:300], None)
    title = body.get("title")
    detail = body.get("detail")
    fields = body.get("invalid_fields")
    parts: list[str] = []
    if isinstance(fields, list) and fields:
        for item in fields[:6]:
            if isinstance(item, dict):
                where = item.get("field") or "(body)"
                parts.append(f"{where}: {item.get('description', item.get('type', '?'))}")
    elif detail:
        parts.append(" ".join(line.strip(" -") for line in str(detail).splitlines() if line))
    message = (f"{title}: " if title else "") + ("; ".join(parts) or response.reason_phrase)
    if response.status_code == 404:
        message += (
            " — check the model name: 'owner/name' works only for official models, others "
            "need 'owner/name:<version id>'"
        )
    code = re.sub(r"\W+", "_", str(title).lower()).strip("_") if title else None
    return (message, code or None)


def _throttle_wait(response: httpx.Response) -> float | None:
    """Replicate's 429 says "Your rate limit resets in ~30s." rather than sending a header."""
    message, _ = describe(response)
    match = re.search(r"resets in ~?\s*(\d+(?:\.\d+)?)\s*s", message)
    return float(match.group(1)) if match else None


def error_for_failure(prediction_id: str, error: str, logs: str = "") -> ProviderError:
    """The taxonomy error for a ``failed`` prediction's ``error`` text."""
    reason = error.strip() or "no error message"
    text = f"replicate prediction {prediction_id} failed: {reason[:400]}"
    tail = [line for line in (logs or "").strip().splitlines() if line.strip()][-1:]
    if tail and tail[0].strip() not in reason:
        text += f" (last log line: {tail[0].strip()[:160]})"
    if _POLICY.search(reason):
        return ContentPolicyError(
            f"{text} — the model's safety checker refused; change the prompt or input (a "
            "censor_text node can rewrite it) or add a fallback edge on content_policy.",
            provider=_NAME,
            code="content_filtered",
        )
    if _TRANSIENT.search(reason):
        return TransientProviderError(
            f"{text} — this may pass; run the node again or add a fallback edge on transient.",
            provider=_NAME,
            code="model_error",
        )
    if _INVALID.search(reason):
        return InvalidRequestError(
            f"{text} — the model rejected its input; check the model parameters.",
            provider=_NAME,
            code="invalid_input",
        )
    return ProviderError(
        f"{text} — the model itself failed; check its inputs or try another model.",
        provider=_NAME,
        code="model_error",
    )
