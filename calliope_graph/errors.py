"""The exception taxonomy.

Every failure calliope-graph raises is a :class:`CalliopeError`. Flows branch on these
classes: an ``on_error`` route lists the ``error_class`` names it catches (``when:
[content_policy]``, in brackets below), and a route for a class also catches its subclasses
(``transient`` catches ``timeout``). The tree is part of the public contract::

    CalliopeError                                                                             [any]
    ├── ConfigurationError    missing key, no engine for (conversion, provider)     [configuration]
    │   ├── BatchInputError         a batch input file or row that cannot be read (path, line)
    │   ├── DiskFullError           the disk of an output folder is full (folder, needed)
    │   └── FaultSpecError          a simulator fault spec (--faults) that cannot be read
    ├── MediaError            unreadable / corrupt / oversized / unsupported media          [media]
    │   └── FetchError              a media URL that could not be downloaded
    │       └── FetchRefusedError     the fetch policy refused the address; nothing was sent
    ├── ProviderError         a provider answered with a failure (provider, status, code)
    │   ├── AuthenticationError     401/403: the key is wrong or lacks permission            [auth]
    │   ├── InvalidRequestError     4xx: the request itself is wrong; not retried [invalid_request]
    │   ├── ContentPolicyError      the provider's safety system refused           [content_policy]
    │   ├── RateLimitError          429 (retry_after)                                  [rate_limit]
    │   │   └── DailyCapError         a limiter's daily cap is used up; nothing was sent
    │   └── TransientProviderError  5xx, 529, malformed body, connection reset          [transient]
    │       └── ProviderTimeoutError  no answer in time, or a job that never finished     [timeout]
    ├── EmptyOutputError      a node produced nothing where something was required          [empty]
    ├── FlowSpecError         a bad flow description (names the node/edge and the line)
    ├── FlowRunError          a run failed (node, attempts, path taken)
    └── WaitingForChoice      not a failure: the run paused for a person's choice (thread,
                              nodes, candidates, the commands that continue it; CLI exit 6)

A node's own ``timeout`` (LangGraph's) counts as ``timeout`` and ``transient`` too.
A full disk (``DiskFullError``, or a raw ``ENOSPC``/``EDQUOT`` ``OSError`` or SQLite's
"database or disk is full" from any library) is ``disk_full`` only: no route catches it,
not even ``when: [any]``, and no retry policy retries it — it is the machine's failure, not
the provider's, and falling back would pay another provider for nothing.
Messages say what went wrong *and what to do*. No message ever contains a secret: the
engine layer redacts every key it knows before an error is built.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "BatchInputError",
    "CalliopeError",
    "ConfigurationError",
    "ContentPolicyError",
    "DailyCapError",
    "DiskFullError",
    "EmptyOutputError",
    "FaultSpecError",
    "FetchError",
    "FetchRefusedError",
    "FlowRunError",
    "FlowSpecError",
    "InvalidRequestError",
    "MediaError",
    "ProviderError",
    "ProviderTimeoutError",
    "RateLimitError",
    "TransientProviderError",
    "WaitingForChoice",
    "error_class",
    "error_class_names",
    "error_classes",
    "is_disk_full",
    "show_paths_under",
]


#: The server's media root (see :func:`calliope_graph.media.set_media_root`): messages name
#: files under it relative to it. None (the default): messages are as written.
#: Process-wide, not session state: an error message is built wherever an error is raised
#: (a node, LangGraph's own code, a route), with no session in reach, and it must read the
#: same in every one of them. Only the server process sets it, once, at start.
_MEDIA_ROOT: str | None = None


def show_paths_under(root: str | None) -> None:
    """Make every error message built from now on name files under ``root`` (an absolute
    path) by their place under it, and ``root`` itself as ``<media root>``; None: as written.

    A server's errors reach its clients (run errors, interrupts, progress events, and the
    thread history LangGraph keeps of a node's error): they must never show the server's
    own paths. Set process-wide by :func:`calliope_graph.media.set_media_root`.
    """
    global _MEDIA_ROOT
    _MEDIA_ROOT = root.rstrip("/\\") if root else None


def _shown(message: str) -> str:
    root = _MEDIA_ROOT
    if root is None or root not in message:
        return message
    message = message.replace(root + "/", "")
    # the root itself, not a longer name (``media2``, ``media.bak``): a sentence may end on it
    return re.sub(re.escape(root) + r"(?![\w-]|\.\w)", "<media root>", message)


class CalliopeError(Exception):
    """Root of every error raised by calliope-graph."""

    #: The name an error route uses to catch this class of error (``when: [transient]``).
    error_class: ClassVar[str] = "any"

    def __init__(self, message: str) -> None:
        message = _shown(message)  # a server's paths: relative to its media root
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(CalliopeError):
    """The configuration cannot work: a missing key, an unknown model, no engine for a pair."""

    error_class = "configuration"


class BatchInputError(ConfigurationError):
    """A batch input file (or one of its rows) cannot be read; names the file and line."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line
        #: The :class:`~calliope_graph.batch.BatchSummary` of the items run before the bad row.
        self.summary: Any = None


class DiskFullError(ConfigurationError, OSError):
    """The disk (or the quota) of a folder the run writes to is full.

    ``folder`` is the folder, ``needed`` an estimate of the space needed in bytes (what was
    being written; None when unknown). Everything already paid for is kept (see
    docs/architecture.md, "A full disk"): free space, then resume. It is an ``OSError``
    (``errno`` ENOSPC) too, so code that handled a failed write still does.
    """

    error_class = "disk_full"

    def __init__(
        self,
        message: str | None = None,
        *,
        folder: str | os.PathLike[str],
        needed: int | None = None,
        what: str | None = None,
    ) -> None:
        self.folder = str(folder)
        self.needed = needed
        if message is None:
            space = f"at least {_size(needed)} more" if needed else "more space"
            message = (
                f"The disk holding {self.folder} is full"
                f"{f' (writing {what})' if what else ''}: it needs {space}. Free space there "
                "(or give --out on another disk) and resume: nothing already paid for is lost."
            )
        super().__init__(message)
        self.errno = errno.ENOSPC
        #: The :class:`~calliope_graph.batch.BatchSummary` of a batch the full disk stopped.
        self.summary: Any = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__))


def _size(n: int) -> str:
    if n < 1 << 10:
        return f"{n} bytes"
    if n < 1 << 20:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


#: ``errno`` values of a full disk or quota.
_DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)


def is_disk_full(exc: BaseException | None) -> bool:
    """``exc`` (or an exception it was raised from) is a full disk: a :class:`DiskFullError`,
    an ``OSError`` with ``ENOSPC``/``EDQUOT``, or SQLite's ``SQLITE_FULL`` ("database or disk
    is full", matched by name so this base module does not import sqlite3)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError):
            return True
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if type(exc).__module__ == "sqlite3" and (
            getattr(exc, "sqlite_errorcode", None) == 13  # SQLITE_FULL
            or "database or disk is full" in str(exc)
        ):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def disk_full(
    exc: BaseException,
    folder: str | os.PathLike[str],
    *,
    needed: int | None = None,
    what: str | None = None,
) -> DiskFullError | None:
    """``exc`` as a :class:`DiskFullError` if it is a full disk (``exc`` itself when it is
    one already), else None."""
    if isinstance(exc, DiskFullError):
        return exc
    if not is_disk_full(exc) and not (_sqlite_io_error(exc) and _nearly_full(folder)):
        return None
    return DiskFullError(folder=folder, needed=needed, what=what)


#: Free space under which an SQLite "disk I/O error" in a folder is taken for a full disk.
NEARLY_FULL = 8 << 20


def _sqlite_io_error(exc: BaseException | None) -> bool:
    """``exc`` (or one it was raised from) is SQLite's ``SQLITE_IOERR`` ("disk I/O error"):
    what SQLite says when growing its WAL index (``-shm``) fails on a full disk, where a
    failed page write would say ``SQLITE_FULL``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__ == "sqlite3" and (
            (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF == 10  # SQLITE_IOERR_*
            or "disk I/O error" in str(exc)
        ):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def _nearly_full(folder: str | os.PathLike[str]) -> bool:
    """The disk holding ``folder`` (or its nearest existing parent) has under
    :data:`NEARLY_FULL` bytes free for this user."""
    path = os.path.abspath(folder)
    while True:
        try:
            stat = os.statvfs(path)
        except (OSError, AttributeError):  # gone: try its parent; no statvfs (Windows): no
            parent = os.path.dirname(path)
            if parent == path or not hasattr(os, "statvfs"):
                return False
            path = parent
            continue
        return stat.f_bavail * stat.f_frsize < NEARLY_FULL


class FaultSpecError(ConfigurationError, ValueError):
    """A fault spec (``--faults``, :func:`calliope_graph.simulate.parse_faults`) that cannot be
    read; says which part."""


class MediaError(CalliopeError):
    """A media file is missing, empty, corrupt, oversized or of an unsupported type."""

    error_class = "media"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class FetchError(MediaError):
    """A media input could not be downloaded (bad URL, unreachable, too large, too slow)."""


class FetchRefusedError(FetchError):
    """The fetch policy refused the address a URL leads to; nothing was sent to it."""


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


class DailyCapError(RateLimitError):
    """A limiter's daily cap is used up; raised before the request is sent.

    Not worth retrying soon: ``retry_after`` says when the rolling 24-hour window next has
    room. It is a ``rate_limit`` error, so a flow's ``when: [rate_limit]`` fallback takes it.
    """


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
        elif source:
            prefix = f"{source}: "
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
        resume_hint: str = "",
    ) -> None:
        super().__init__(message)
        self.node = node
        self.attempts = attempts
        self.path = list(path or [])
        self.cause_class = cause_class
        self.thread_id = thread_id
        #: The end of the message saying how to resume (empty: none), so the CLI can put
        #: its own command there (:func:`calliope_graph.commands.command_line`).
        self.resume_hint = resume_hint


class WaitingForChoice(CalliopeError):
    """A run paused for a person's choice (a ``choose`` node with ``by: human``).

    Not a failure: everything the run did is checkpointed, and resuming the thread with a
    choice continues it without paying for anything again (Python: ``resume=True,
    choices={node: index}``; CLI: ``--resume THREAD --choose NODE=INDEX``, exit code 6;
    LangGraph Server: ``command={"resume": {node: index}}``). Raised rather than returned,
    so no caller mistakes a paused run (no outputs yet) for a finished one.

    ``candidates``: node → its candidates, summarised as in the trace (media as
    ``{"type": "image", "path": ...}``, text as text); ``commands``: node → the exact
    ``calliope-graph run`` command continuing with each candidate (index ``i`` at ``[i]``);
    ``out_dir``: where the run writes (its ``report.html`` shows the candidates).
    """

    def __init__(
        self,
        message: str,
        *,
        thread_id: str,
        candidates: dict[str, list[Any]],
        commands: dict[str, list[str]] | None = None,
        out_dir: str | None = None,
    ) -> None:
        super().__init__(message)
        self.thread_id = thread_id
        self.candidates = candidates
        self.commands = commands or {}
        self.out_dir = out_dir

    @property
    def nodes(self) -> list[str]:
        """The nodes waiting for a choice."""
        return list(self.candidates)


def _subclasses(cls: type[CalliopeError]) -> list[type[CalliopeError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


#: Error classes no ``when:`` list may name and no route catches (see the module docstring).
_UNROUTED = frozenset({"disk_full"})


def error_class_names() -> dict[str, str]:
    """Every name a ``when:`` list may use, with what it catches (``any`` catches all).

    Derived from the tree above — each class's ``error_class`` — so adding a class adds its
    name; ``flow.spec.ErrorClassName`` is checked against this by a test.
    """
    names: dict[str, str] = {}
    for cls in _subclasses(CalliopeError):
        # A subclass made elsewhere (the server's) names none; disk_full is never routed.
        if cls.__module__ != __name__ or cls.error_class in _UNROUTED:
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        names.setdefault(cls.error_class, f"{doc} ({cls.__name__})")
    names["any"] = "any error at all"
    return names


def error_classes(exc: BaseException) -> tuple[str, ...]:
    """The error classes ``exc`` belongs to, most specific first, ``"any"`` last.

    This is the one classifier: ``when:`` routes, node retry policies, the trace's
    ``error_class`` and :class:`FlowRunError`'s ``cause_class`` all read it. A
    :class:`CalliopeError` belongs to its class's name and every ancestor's
    (a ``ProviderTimeoutError`` is ``timeout``, ``transient``, ``provider``); an asyncio or
    LangGraph node timeout is ``timeout`` and ``transient``; a full disk (whatever raised
    it) is ``disk_full`` only, so no route — not even ``any`` — catches it; anything else
    only ``any``.
    """
    if is_disk_full(exc):
        return ("disk_full",)
    if isinstance(exc, CalliopeError):
        names = [
            c.__dict__["error_class"]
            for c in type(exc).__mro__
            if isinstance(c.__dict__.get("error_class"), str)
        ]
        return (*dict.fromkeys(names),) if names[-1] == "any" else (*dict.fromkeys(names), "any")
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "NodeTimeoutError":
        # LangGraph's NodeTimeoutError (a node's ``timeout=``) is matched by name so this
        # base module does not import LangGraph; it subclasses neither TimeoutError nor ours.
        return ("timeout", "transient", "any")
    return ("any",)


def error_class(exc: BaseException) -> str:
    """The most specific error class of ``exc`` (what the trace shows)."""
    return error_classes(exc)[0]
