"""Waiting for long jobs: one loop for Replicate predictions, Runway tasks and Hugging Face
model loading.

:func:`poll_job` asks ``check()`` for the job's state until it is done. ``check`` answers
the job's final value, :class:`Waiting` (still running; the provider may suggest how long to
wait) or :class:`Cancelled`. Waits go through ``ctx.sleep`` every ``interval`` seconds (or
the provider's longer suggestion), bounded by ``timeout`` seconds of waiting — by default
``ctx.poll`` (:class:`~calliope_graph.context.PollSettings`), overridden per model config by
the ``poll_interval`` and ``poll_timeout`` parameters (:func:`poll_bounds`). Each check is
an ordinary request, so it has the usual retries.

Two outcomes mean the same everywhere:

* **past the bound**: :class:`~calliope_graph.errors.ProviderTimeoutError` whose ``job_id``
  names the job (a prediction id, a task id, the loading model) and whose ``code`` is the
  job's last status; an ``on_timeout`` hook may cancel it first (Replicate does);
* **cancelled** — by a person (the dashboard), another client or the provider, before it
  finished: a plain :class:`~calliope_graph.errors.ProviderError` with code ``"cancelled"``
  whose message names the job. It is not transient (someone chose to stop the job, so it is not
  retried); a flow catches it with ``when: [provider]``. Replicate's ``canceled`` and
  Runway's ``CANCELLED`` both end here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from calliope_graph.context import RunContext
from calliope_graph.errors import ConfigurationError, ProviderError, ProviderTimeoutError

__all__ = ["CANCELLED", "Cancelled", "Waiting", "cancelled_error", "poll_bounds", "poll_job"]

log = logging.getLogger("calliope_graph.engines")

T = TypeVar("T")

#: The ``code`` of the error a cancelled job raises, for every provider.
CANCELLED = "cancelled"


@dataclass(frozen=True)
class Waiting:
    """The job is not finished: its provider status (``processing``, ``RUNNING``,
    ``model_loading``), how it reads in a message, and the provider's suggested wait."""

    status: str
    shown: str = ""
    """How the state reads in "was still …" (the status when empty)."""
    retry_in: float | None = None
    """Seconds the provider suggests before asking again (never less than the interval)."""
    http_status: int | None = None
    """The HTTP status that said "not yet" (HF's 503), kept on the timeout error."""


@dataclass(frozen=True)
class Cancelled:
    """The job was cancelled before it finished; ``status`` is the provider's word for it."""

    status: str = CANCELLED


def cancelled_error(
    provider: str, what: str, job_id: str, status: str = CANCELLED
) -> ProviderError:
    """The error every cancelled job raises (see the module docstring)."""
    return ProviderError(
        f"{provider} {what} {job_id} was cancelled (status {status}: through the API, the "
        "dashboard or by the provider) before it finished; it was not retried. Run the node "
        "again if that was not intended, or add a fallback edge on provider.",
        provider=provider,
        code=CANCELLED,
    )


def _seconds(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or seconds <= 0:
        raise ConfigurationError(
            f"The {key} model parameter must be a positive number of seconds, not {value!r}."
        )
    return seconds


def poll_bounds(
    ctx: RunContext, params: Mapping[str, Any], *, timeout_keys: tuple[str, ...] = ()
) -> tuple[float, float]:
    """(interval, timeout) in seconds: ``poll_interval`` / ``poll_timeout`` (or the first of
    ``timeout_keys`` that is set) from the model parameters, else ``ctx.poll``."""
    interval = _seconds(params, "poll_interval") or ctx.poll.interval
    timeout = None
    for key in (*timeout_keys, "poll_timeout"):
        timeout = _seconds(params, key)
        if timeout is not None:
            break
    return interval, timeout or ctx.poll.timeout


async def poll_job(
    ctx: RunContext,
    check: Callable[[], Awaitable[T | Waiting | Cancelled]],
    *,
    provider: str,
    what: str,
    job_id: str,
    label: str = "",
    interval: float,
    timeout: float,
    first: T | Waiting | Cancelled | None = None,
    on_timeout: Callable[[Waiting], Awaitable[str]] | None = None,
    advice: str = "raise the poll_timeout model parameter (or PollSettings.timeout), or add "
    "a fallback edge on timeout",
) -> T:
    """Poll ``check()`` until the job is done and return its value (see the module docstring).

    ``label`` follows the id in messages (the model). ``first`` is a state already known
    (the answer that created the job); without it ``check`` is called at once.
    ``on_timeout`` runs before the timeout error is raised and returns words for its
    message (``" and was cancelled"``). The bound counts the seconds slept between checks,
    not the checks' own time.
    """
    name = f"{job_id} ({label})" if label else job_id
    state = first if first is not None else await check()
    waited = 0.0
    while isinstance(state, Waiting | Cancelled):
        if isinstance(state, Cancelled):
            raise cancelled_error(provider, what, name, state.status)
        if waited >= timeout:
            note = await on_timeout(state) if on_timeout is not None else ""
            raise ProviderTimeoutError(
                f"{provider} {what} {name} was still {state.shown or state.status} after "
                f"{waited:.0f}s of polling{note}. {advice[:1].upper()}{advice[1:]}.",
                provider=provider,
                status=state.http_status,
                code=state.status,
                job_id=job_id,
            )
        step = min(max(state.retry_in or 0.0, interval), timeout - waited)
        log.debug(
            "%s: %s %s is %s; asking again in %.1fs", provider, what, job_id, state.status, step
        )
        await ctx.sleep(step)
        waited += step
        state = await check()
    return state
