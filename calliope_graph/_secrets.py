"""Redaction, in one place: what a log line, error, trace or report may not show.

- :func:`redact` masks the known secret values (a run's keys) and anything shaped like a
  well-known key (``sk-…``, ``r8_…``, ``hf_…``) in a string. Engines use it on every error
  message and log line, the runner on everything it writes into the trace.
- :func:`redact_tree` does the same through nested values (dicts, lists, tuples, pydantic
  models — media references included), returning a redacted copy.
- ``strict=True`` is for pages people read (the HTML report): it also masks the credential
  after ``Bearer``/``token``/``basic`` and replaces the value of any entry whose *name* says
  it is a secret (``api_key``, ``hf_token``, ``Authorization`` — not ``max_tokens``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["REDACTED", "is_secret_name", "redact", "redact_tree"]

#: What stands in for the value of a secret-named entry (``strict`` redaction).
REDACTED = "••• redacted"
_MASK = "***"

_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,}|r8_[A-Za-z0-9]{6,}|hf_[A-Za-z0-9]{6,})")
_BEARER = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")
_SECRET_EXACT = {"key", "auth", "authorization", "bearer", "cookie", "password", "passwd"}
_SECRET_SUFFIXES = (
    "apikey",
    "secret",
    "secretkey",
    "accesskey",
    "privatekey",
    "password",
    "passwd",
    "token",
    "credential",
    "credentials",
    "authorization",
    "signature",
)

T = TypeVar("T")


def redact(text: str, secrets: Sequence[str] | None = None, *, strict: bool = False) -> str:
    """``text`` with every secret (and anything shaped like a well-known key) masked."""
    if secrets:
        pattern = _secrets_pattern(tuple(secrets))
        if pattern is not None:
            text = pattern.sub(_MASK, text)
    text = _KEYLIKE.sub(_MASK, text)
    if strict:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {_MASK}", text)
    return text


@functools.lru_cache(maxsize=64)
def _secrets_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for a set of secrets (longest first, so a secret containing another is
    masked whole; shorter than 4 characters would mask ordinary text). Compiled once per
    set: every string of every trace goes through it."""
    usable = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, usable))) if usable else None


def is_secret_name(name: str) -> bool:
    """Whether an entry called ``name`` holds a secret (``api_key``, ``hf_token``...).

    ``max_tokens`` and friends are not secrets: only a singular ``token`` ending counts.
    """
    norm = re.sub(r"[^a-z0-9]", "", name.lower())
    return norm in _SECRET_EXACT or norm.endswith(_SECRET_SUFFIXES)


def redact_tree(value: T, secrets: Sequence[str] | None = None, *, strict: bool = False) -> T:
    """A copy of ``value`` with every string in it redacted (see :func:`redact`).

    Walks dicts (values; keys are names and stay), lists, tuples and pydantic models (a
    model comes back as a ``model_copy`` with its redacted fields, frozen media references
    included; a model with nothing to redact comes back as itself). Other values are
    returned unchanged. With ``strict``, a dict entry or model field whose name says it is a
    secret (:func:`is_secret_name`) becomes :data:`REDACTED` unless it is empty.
    """
    return _walk(value, list(secrets or []), strict)  # type: ignore[no-any-return]


def _named(name: str, value: Any, secrets: list[str], strict: bool) -> Any:
    if strict and value not in (None, "", [], {}) and is_secret_name(name):
        return REDACTED
    return _walk(value, secrets, strict)


def _walk(value: Any, secrets: list[str], strict: bool) -> Any:
    if isinstance(value, str):
        return redact(value, secrets, strict=strict)
    if isinstance(value, dict):
        return {k: _named(str(k), v, secrets, strict) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, secrets, strict) for v in value]
    if isinstance(value, tuple):
        return tuple(_walk(v, secrets, strict) for v in value)
    if isinstance(value, BaseModel):
        changes: dict[str, Any] = {}
        for name in type(value).model_fields:
            old = getattr(value, name)
            new = _named(name, old, secrets, strict)
            if new is not old and new != old:
                changes[name] = new
        return value.model_copy(update=changes) if changes else value
    return value
