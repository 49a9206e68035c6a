"""Sending requests to providers: failure mapping, retries and redaction, in one place.

Every HTTP engine calls :func:`request`. It sends through the run's shared client, maps a
failure to the taxonomy in :mod:`calliope_graph.errors` (an HTTP status through
:func:`error_from_response`, with the provider's own hook for codes such as
``content_policy_violation``; a transport failure through
:func:`calliope_graph._transport.map_transport_errors`), retries transient failures and
redacts every known secret from messages and logs.

:func:`with_retries` is the one retry loop: tenacity, exponential backoff with jitter,
honouring ``Retry-After`` (up to ``RetrySettings.max_retry_after``), bounded in attempts
and total time by ``ctx.retry``, waiting on ``ctx.sleep``, recording each attempt in the
node's :class:`CallStats` and calling its ``on_retry``. :func:`request` and the LangChain
engine both run their attempts through it.

A ``parse`` step runs *inside* the retry loop, so a malformed body is retried like a 5xx.
"""

from __future__ import annotations

import email.utils
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
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
from calliope_graph._transport import map_transport_errors, transport_error
from calliope_graph._usage import ProviderCall, current_call, usage_from_body
from calliope_graph.config import KeysModel
from calliope_graph.context import RunContext
from calliope_graph.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
    TransientProviderError,
    error_class,
)
from calliope_graph.limits import Slot, estimate_tokens

__all__ = [
    "CallStats",
    "ErrorHook",
    "RetryAfterHint",
    "call_stats",
    "classify_status",
    "error_from_response",
    "parse_json",
    "redact",
    "request",
    "retry_after_seconds",
    "with_retries",
]

log = logging.getLogger("calliope_graph.engines")
#: One warning per engine-level retry. Its own logger so a front end that already reports
#: retries (the CLI's progress lines) can silence exactly these and each retry shows once.
retry_log = logging.getLogger("calliope_graph.engines.retries")

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
    limit_wait: float = 0.0
    """Seconds spent waiting on the shared rate limiter before the requests."""
    records: list[ProviderCall] = field(default_factory=list)
    """One record per request sent (polls and downloads excepted), with the usage the
    provider reported (see calliope_graph/_usage.py)."""

    def record(self, provider: str) -> None:
        self.attempts += 1
        self.calls[provider] = self.calls.get(provider, 0) + 1
        if provider not in self.providers:
            self.providers.append(provider)


#: Set by the flow runner around each node execution; engines record into it.
call_stats: ContextVar[CallStats | None] = ContextVar("calliope_call_stats", default=None)
#: The limiter slot of the attempt in progress (its answer corrects the token estimate).
current_slot: ContextVar[Slot | None] = ContextVar("calliope_limit_slot", default=None)
#: 429 codes that are not a rate window (a spend cap, a daily cap): no cooldown for them.
_NOT_A_WINDOW = frozenset({"enforced_spend_limit_reached", "daily_cap"})


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


def classify_status(status: int) -> type[ProviderError]:
    """The taxonomy class of a failed HTTP ``status`` (no provider-specific hook)."""
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
    cls = (hook(response, message, code) if hook else None) or classify_status(response.status_code)
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
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        what = f"HTTP {response.status_code}, {len(response.content)} bytes that are not JSON"
        error: BaseException = transport_error(exc, provider, what=what) or exc
        if isinstance(error, ProviderError):
            error.status = response.status_code
        raise error from None
    usage_from_body(body)  # the usage the answer reports goes on the call's record
    return body


def _backoff(initial: float, max_wait: float, jitter: float) -> wait_exponential_jitter:
    """tenacity's exponential backoff with jitter, on any tenacity from 8.2.

    tenacity 9.2 renamed the first wait ``initial`` → ``multiplier`` (the old name warns);
    google-genai pins ``tenacity<9.2`` (its package metadata, up to 3.6.1), so both
    spellings must work for the two to be installed together.
    """
    params = inspect.signature(wait_exponential_jitter).parameters
    first = {("multiplier" if "multiplier" in params else "initial"): initial}
    return wait_exponential_jitter(**first, max=max_wait, jitter=jitter)


def _wait(ctx: RunContext) -> Callable[[RetryCallState], float]:
    backoff = _backoff(ctx.retry.initial_wait, ctx.retry.max_wait, ctx.retry.jitter)

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


async def with_retries(
    ctx: RunContext,
    provider: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    retry: bool = True,
    model: str | None = None,
    tokens: int = 0,
    poll: bool = False,
) -> T:
    """Run ``attempt`` (one call to ``provider``) under the engine layer's retry policy.

    Each attempt first takes a slot of the provider's (and ``model``'s) shared limiter
    (``ctx.limits``), with ``tokens`` as its estimate; ``poll`` requests (job status) only
    wait out a cooldown. A 429 cools the limiter down for everyone sharing it.

    Each attempt is recorded in the node's :class:`CallStats` (count and wall-clock times).
    A :class:`TransientProviderError` (5xx, timeouts, resets, malformed bodies) or a
    :class:`RateLimitError` whose Retry-After is within ``ctx.retry.max_retry_after`` is
    retried with exponential backoff and jitter (a rate limit waits its Retry-After), per
    ``ctx.retry`` and on ``ctx.sleep``; before each retry ``CallStats.on_retry`` is called
    and a redacted warning logged. Anything else — and the last failure — is raised as is.
    ``retry=False`` makes one recorded attempt.
    """
    stats = call_stats.get()
    limits = ctx.limits.for_call(provider, model)

    async def recorded() -> T:
        # Every attempt waits on the provider's shared limiter (requests, tokens,
        # concurrency, a cooldown after anyone's 429) before it is sent.
        async with limits.slot(tokens, poll=poll, max_wait=ctx.retry.max_retry_after) as slot:
            if stats is not None:
                stats.limit_wait += slot.waited
                stats.record(provider)
            token = current_slot.set(slot)
            started = time.time()
            call = None
            if stats is not None and not poll:  # a status poll or download is not billed
                call = ProviderCall(provider=provider, model=model, started_at=started)
                stats.records.append(call)
            call_token = current_call.set(call)
            try:
                return await attempt()
            except RateLimitError as exc:
                if exc.code not in _NOT_A_WINDOW:
                    limits.note_429(exc.retry_after)  # everyone sharing it cools down
                if call is not None:
                    call.status, call.error_class = "error", error_class(exc)
                raise
            except BaseException as exc:
                if call is not None:
                    call.status, call.error_class = "error", error_class(exc)
                raise
            finally:
                current_slot.reset(token)
                current_call.reset(call_token)
                ended = time.time()
                if call is not None:
                    call.ended_at = ended
                if stats is not None:
                    stats.attempt_times.append((started, ended))

    if not retry:
        return await recorded()
    retrying = AsyncRetrying(
        retry=retry_if_exception(_should_retry_rate_limit(ctx)),
        stop=stop_after_attempt(ctx.retry.max_attempts) | stop_after_delay(ctx.retry.max_total),
        wait=_wait(ctx),
        sleep=ctx.sleep,
        reraise=True,
        before_sleep=_log_retry(provider, ctx.keys, stats),
    )
    result: T = await retrying(recorded)
    return result


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
    model: str | None = None,
    tokens: int | None = None,
) -> T:
    """Send a request with retries and error mapping; return ``parse(response)``.

    ``parse`` runs inside the retry loop (raise TransientProviderError there to retry). A
    non-2xx status becomes the taxonomy error; transient ones are retried per ``ctx.retry``.
    ``retry_after`` reads a 429's wait from its body when it has no Retry-After header.
    ``model`` names the model for per-model limits when the body does not (Gemini puts it
    in the path); ``tokens`` is the request's token estimate when the body is not a chat
    body :func:`estimate_tokens` reads.
    """
    secrets = ctx.keys.secrets()

    async def send() -> T:
        async with map_transport_errors(provider, what="request", secrets=secrets):
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
        limits.observe(response.headers)  # slow down before the limit, from its headers
        if response.status_code >= 400:
            raise error_from_response(
                provider,
                response,
                secrets=secrets,
                describe=describe,
                hook=hook,
                retry_after=retry_after,
            )
        if tokens:
            _settle_usage(response)
        return parse(response)

    body = json_body if isinstance(json_body, Mapping) else None
    if model is None and body is not None and "model" in body:
        model = str(body["model"])
    if tokens is None:
        tokens = estimate_tokens(body) if body is not None and "messages" in body else 0
    limits = ctx.limits.for_call(provider, model)
    return await with_retries(
        ctx, provider, send, retry=retry, model=model, tokens=tokens, poll=method == "GET"
    )


def _settle_usage(response: httpx.Response) -> None:
    """Correct the limiter's token estimate from the usage a chat answer reports."""
    slot = current_slot.get()
    if slot is None:
        return
    try:
        answer = response.json()
        usage = answer.get("usage") or {}
        gemini = answer.get("usageMetadata") or {}
    except (ValueError, AttributeError):
        return
    total = usage.get("total_tokens", gemini.get("totalTokenCount"))  # Gemini: usageMetadata
    if total is None and "input_tokens" in usage:  # Anthropic
        total = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    if isinstance(total, int):
        slot.used(total)


def _log_retry(
    provider: str, keys: KeysModel, stats: CallStats | None
) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if stats is not None:
            stats.retries += 1
            if stats.on_retry is not None:
                stats.on_retry(provider, exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        retry_log.warning(
            "%s: attempt %d failed (%s); retrying in %.2fs",
            provider,
            state.attempt_number,
            redact(str(exc), keys.secrets()),  # only when a retry happens
            wait,
        )

    return before_sleep


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
