"""The exception taxonomy.

Every failure calliope-graph raises is a :class:`CalliopeError`. Flows branch on these
classes: an ``on_error`` route lists the ``error_class`` names it catches (``when:
[content_policy]``, in brackets below), and a route for a class also catches its subclasses
(``transient`` catches ``timeout``). The tree is part of the public contract::

    CalliopeError                                                                             [any]
    ├── ConfigurationError    missing key, no engine for (conversion, provider)     [configuration]
    ├── MediaError            unreadable / corrupt / oversized / unsupported media          [media]
    ├── ProviderError         a provider answered with a failure (provider, status, code)
    │   ├── AuthenticationError     401/403: the key is wrong or lacks permission            [auth]
    │   ├── InvalidRequestError     4xx: the request itself is wrong; not retried [invalid_request]
    │   ├── ContentPolicyError      the provider's safety system refused           [content_policy]
    │   ├── RateLimitError          429 (retry_after)                                  [rate_limit]
    │   └── TransientProviderError  5xx, 529, malformed body, connection reset          [transient]
    │       └── ProviderTimeoutError  no answer in time, or a job that never finished     [timeout]
    ├── EmptyOutputError      a node produced nothing where something was required          [empty]
    ├── FlowSpecError         a bad flow description (names the node/edge and the line)
    └── FlowRunError          a run failed (node, attempts, path taken)

A node's own ``timeout`` (LangGraph's) counts as ``timeout`` and ``transient`` too.
Messages say what went wrong *and what to do*. No message ever contains a secret: the
engine layer redacts every key it knows before an error is built.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ERROR_CLASSES",
    "AuthenticationError",
    "CalliopeError",
    "ConfigurationError",
    "ContentPolicyError",
    "EmptyOutputError",
    "FlowRunError",
    "FlowSpecError",
    "InvalidRequestError",
    "MediaError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "TransientProviderError",
    "error_class_of",
]


class CalliopeError(Exception):
    """Root of every error raised by calliope-graph."""

    #: The name an ``on_error`` route lists to catch this class of error (``when: [transient]``).
    error_class: ClassVar[str] = "any"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(CalliopeError):
    """The configuration cannot work: a missing key, an unknown model, no engine for a pair."""

    error_class = "configuration"


class MediaError(CalliopeError):
    """A media file is missing, empty, corrupt, oversized or of an unsupported type."""

    error_class = "media"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class ProviderError(CalliopeError):
    """A provider answered with a failure.

    ``provider`` is the provider's name (``openai``), ``status`` the HTTP status when there
    was one, ``code`` the provider's own error code (``content_policy_violation``).
    """

    error_class = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep keyword-only constructor arguments through pickling (checkpoints, processes).
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[CalliopeError], message: str, state: dict[str, Any]) -> CalliopeError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class AuthenticationError(ProviderError):
    """The provider refused the credentials (401) or their permissions (403)."""

    error_class = "auth"


class InvalidRequestError(ProviderError):
    """The provider rejected the request as malformed; retrying will not help."""

    error_class = "invalid_request"


class ContentPolicyError(ProviderError):
    """The provider's safety system refused the prompt, the input or the output."""

    error_class = "content_policy"


class RateLimitError(ProviderError):
    """429: too many requests. ``retry_after`` is the provider's advice in seconds."""

    error_class = "rate_limit"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """A failure that may pass: 5xx, 529 overloaded, a malformed body, a dropped connection."""

    error_class = "transient"


class ProviderTimeoutError(TransientProviderError):
    """No answer in time: a request timed out, or a polled job never finished."""

    error_class = "timeout"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        job_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code)
        self.job_id = job_id


class EmptyOutputError(CalliopeError):
    """A node produced an empty result where one was required (``empty_is_error``)."""

    error_class = "empty"


class FlowSpecError(CalliopeError):
    """A flow description is wrong. ``where`` names the node/edge, ``line`` the YAML line."""

    error_class = "flow_spec"

    def __init__(
        self,
        message: str,
        *,
        where: str | None = None,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        prefix = ""
        if source and line:
            prefix = f"{source}, line {line}: "
        elif line:
            prefix = f"line {line}: "
        super().__init__(prefix + message)
        self.where = where
        self.line = line
        self.source = source


class FlowRunError(CalliopeError):
    """A flow run failed at ``node`` after ``attempts``; ``path`` lists the nodes that ran."""

    error_class = "flow_run"

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        attempts: int = 0,
        path: list[str] | None = None,
        cause_class: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.attempts = attempts
        self.path = list(path or [])
        self.cause_class = cause_class
        self.thread_id = thread_id


#: Error classes a fallback edge may name, each with what it catches.
ERROR_CLASSES: dict[str, str] = {
    "content_policy": "the provider's safety system refused (ContentPolicyError)",
    "rate_limit": "429 after the engine's own retries (RateLimitError)",
    "transient": "5xx, overload, malformed answer, timeout (TransientProviderError)",
    "timeout": "no answer in time (ProviderTimeoutError, or the node's own timeout)",
    "auth": "the key was refused (AuthenticationError)",
    "invalid_request": "the provider rejected the request (InvalidRequestError)",
    "media": "unreadable input media (MediaError)",
    "configuration": "no engine, missing key (ConfigurationError)",
    "empty": "the node produced an empty result",
    "any": "any error",
}


def error_class_of(exc: BaseException) -> str:
    """The fallback class name of ``exc`` (``timeout`` for asyncio/LangGraph timeouts)."""
    if isinstance(exc, CalliopeError):
        return exc.error_class
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "NodeTimeoutError":
        return "timeout"
    return "any"
