"""Sending requests to providers: failure mapping, retries and redaction, in one place.

Every engine calls :func:`request`. It sends through the run's shared client, maps a
failure to the taxonomy in :mod:`calliope_graph.errors` (with the provider's own hook for
codes such as ``content_policy_violation``), retries transient failures with tenacity
(exponential backoff with jitter, honouring ``Retry-After``, bounded in attempts and total
time) and redacts every known secret from messages and logs.

A ``parse`` step runs *inside* the retry loop, so a malformed body is retried like a 5xx.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from calliope_graph._secrets import redact  # re-exported: engines import it from here
from calliope_graph.context import RunContext
from calliope_graph.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    TransientProviderError,
)

__all__ = [
    "CallStats",
    "ErrorHook",
    "RetryAfterHint",
    "call_stats",
    "parse_json",
    "redact",
    "request",
    "retry_after_seconds",
]

log = logging.getLogger("calliope_graph.engines")

T = TypeVar("T")

#: A provider hook: given the response, its message and code, return a more specific error
#: class (e.g. ContentPolicyError for OpenAI's ``content_policy_violation``) or None.
ErrorHook = Callable[[httpx.Response, str, str | None], type[ProviderError] | None]
#: Extracts (message, code) from a provider's error body.
Describe = Callable[[httpx.Response], tuple[str, str | None]]
#: Seconds to wait before retrying a 429 that has no Retry-After header (read from the body).
RetryAfterHint = Callable[[httpx.Response], float | None]


@dataclass
class CallStats:
    """What the engine layer did for one node execution (read by the flow trace)."""

    attempts: int = 0
    retries: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    attempt_times: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) wall-clock seconds of each request, for timelines."""
    on_retry: Callable[[str, BaseException | None], None] | None = None
    """Called before each engine-level retry (provider, the failure); the runner's events."""

    def record(self, provider: str) -> None:
        self.attempts += 1
        self.calls[provider] = self.calls.get(provider, 0) + 1
        if provider not in self.providers:
            self.providers.append(provider)


#: Set by the flow runner around each node execution; engines record into it.
call_stats: ContextVar[CallStats | None] = ContextVar("calliope_call_stats", default=None)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _default_describe(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (response.text[:300] or response.reason_phrase, None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("title") or str(err)
            code = err.get("code") or err.get("type") or err.get("name")
            return (str(msg), None if code is None else str(code))
        if isinstance(err, str):
            return (err, None)
        if isinstance(err, list):
            return ("; ".join(map(str, err)), None)
    return (str(body)[:300], None)


def _classify(status: int) -> type[ProviderError]:
    if status in (401, 403):
        return AuthenticationError
    if status == 429:
        return RateLimitError
    if status in (408, 409) or status >= 500:
        return TransientProviderError
    return InvalidRequestError


_ADVICE: dict[type[ProviderError], str] = {
    AuthenticationError: "check the key (and that it matches this endpoint)",
    RateLimitError: "slow down or raise the provider quota; the call was retried",
    TransientProviderError: "the provider is failing; it was retried, try again later "
    "or add a fallback edge",
    InvalidRequestError: "fix the request parameters or the model config",
}


def error_from_response(
    provider: str,
    response: httpx.Response,
    *,
    secrets: list[str],
    describe: Describe | None = None,
    hook: ErrorHook | None = None,
    retry_after: RetryAfterHint | None = None,
) -> ProviderError:
    """The taxonomy error for a failed ``response``, redacted.

    ``retry_after`` reads a 429's wait from its body when the headers carry none.
    """
    message, code = (describe or _default_describe)(response)
    cls = (hook(response, message, code) if hook else None) or _classify(response.status_code)
    advice = _ADVICE.get(cls, "")
    text = f"{provider} answered HTTP {response.status_code}"
    if code:
        text += f" ({code})"
    text += f": {message}"
    if advice:
        text += f" — {advice}."
    text = redact(text, secrets)
    if cls is RateLimitError:
        wait = retry_after_seconds(response.headers)
        if wait is None and retry_after is not None:
            wait = retry_after(response)
        return RateLimitError(
            text,
            provider=provider,
            status=response.status_code,
            code=code,
            retry_after=wait,
        )
    return cls(text, provider=provider, status=response.status_code, code=code)


def parse_json(response: httpx.Response, provider: str) -> Any:
    """The JSON body, or a (retryable) TransientProviderError for a malformed one."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TransientProviderError(
            f"{provider} returned a malformed body (HTTP {response.status_code}, "
            f"{len(response.content)} bytes that are not JSON); it was retried.",
            provider=provider,
            status=response.status_code,
            code="malformed_body",
        ) from None


def _wait(ctx: RunContext) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(
        multiplier=ctx.retry.initial_wait, max=ctx.retry.max_wait, jitter=ctx.retry.jitter
    )

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimitError) and exc.retry_after is not None:
            return min(exc.retry_after, ctx.retry.max_retry_after)
        return float(backoff(state))

    return wait


def _should_retry_rate_limit(ctx: RunContext) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if isinstance(exc, RateLimitError):
            return exc.retry_after is None or exc.retry_after <= ctx.retry.max_retry_after
        return isinstance(exc, TransientProviderError)

    return check


async def request(
    ctx: RunContext,
    provider: str,
    method: str,
    url: str,
    *,
    parse: Callable[[httpx.Response], T],
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: Mapping[str, Any] | None = None,
    files: Any = None,
    content: bytes | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    describe: Describe | None = None,
    hook: ErrorHook | None = None,
    retry: bool = True,
    retry_after: RetryAfterHint | None = None,
) -> T:
    """Send a request with retries and error mapping; return ``parse(response)``.

    ``parse`` runs inside the retry loop (raise TransientProviderError there to retry). A
    non-2xx status becomes the taxonomy error; transient ones are retried per ``ctx.retry``.
    ``retry_after`` reads a 429's wait from its body when it has no Retry-After header.
    """
    secrets = ctx.keys.secrets()
    stats = call_stats.get()

    async def attempt() -> T:
        if stats is not None:
            stats.record(provider)
        started = time.time()
        try:
            return await _send()
        finally:
            if stats is not None:
                stats.attempt_times.append((started, time.time()))

    async def _send() -> T:
        try:
            response = await ctx.client.request(
                method,
                url,
                headers=headers,
                json=json_body,
                data=data,
                files=files,
                content=content,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                f"{provider} did not answer in time ({type(exc).__name__} on {method} "
                f"{_path(url)}); it was retried — raise the timeout or add a fallback edge.",
                provider=provider,
            ) from None
        except httpx.TransportError as exc:
            raise TransientProviderError(
                redact(
                    f"{provider} connection failed ({type(exc).__name__}: {exc}) on {method} "
                    f"{_path(url)}; check the base URL and network.",
                    secrets,
                ),
                provider=provider,
            ) from None
        if response.status_code >= 400:
            raise error_from_response(
                provider,
                response,
                secrets=secrets,
                describe=describe,
                hook=hook,
                retry_after=retry_after,
            )
        return parse(response)

    if not retry:
        return await attempt()

    retrying = AsyncRetrying(
        retry=retry_if_exception(_should_retry_rate_limit(ctx)),
        stop=stop_after_attempt(ctx.retry.max_attempts) | stop_after_delay(ctx.retry.max_total),
        wait=_wait(ctx),
        sleep=ctx.sleep,
        reraise=True,
        before_sleep=_log_retry(provider, secrets, stats),
    )
    result: T = await retrying(attempt)
    return result


def _log_retry(
    provider: str, secrets: list[str], stats: CallStats | None
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if stats is not None:
            stats.retries += 1
            if stats.on_retry is not None:
                stats.on_retry(provider, exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            provider,
            state.attempt_number,
            redact(str(exc), secrets),
            wait,
        )

    return before_sleep


def _path(url: str) -> str:
    return httpx.URL(url).path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
