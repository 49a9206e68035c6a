"""Faults the simulator injects: what a fault is (:class:`Fault`, its kinds and options), the
fault specs ``--faults`` reads (:func:`parse_faults`, refusing what it cannot read), and the
provider fakes a fault may name (one per module in :data:`FAKE_MODULES`); and the failures
a fake answers with (:class:`Failure` as data, :class:`FaultErrors` per fault kind,
:class:`Reject` to refuse a request)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from calliope_graph.errors import FaultSpecError
from calliope_graph.simulate._fakes import FAKE_MODULES, fake_classes, fake_names

if TYPE_CHECKING:
    pass

__all__ = [
    "FAKE_MODULES",
    "FAULT_KINDS",
    "FAULT_OPTIONS",
    "Failure",
    "Fault",
    "FaultErrors",
    "FaultKind",
    "Reject",
    "fake_classes",
    "fake_names",
    "parse_faults",
]

FaultKind = Literal[
    "rate_limit",
    "server_error",
    "unavailable",
    "overloaded",
    "hang",
    "malformed",
    "latency",
    "content_policy",
    "auth",
    "empty",
    "stream_break",
]
#: Faults a fake applies itself, to the request's prompt (the core only answers the others).
_PROMPT_FAULTS = ("content_policy", "empty")
#: Faults a fake applies itself (the core only answers the others): the prompt faults, and
#: ``stream_break`` (a streamed answer cut off after some of its text: :meth:`Simulator.breaks`).
_FAKE_FAULTS = (*_PROMPT_FAULTS, "stream_break")
#: Faults answered from the fake's ``errors`` (a :class:`FaultErrors`).
_ERROR_FAULTS = ("rate_limit", "server_error", "unavailable", "overloaded")


def _pattern_refusal(kind: str) -> str:
    return (
        f"pattern= applies only to the faults about a prompt ({', '.join(_PROMPT_FAULTS)}); "
        f"a {kind} fault does not depend on the prompt: drop pattern=, and use endpoint=, "
        "first_n= or probability= to choose which calls it hits"
    )


class Fault(BaseModel):
    """One injected fault.

    ``provider`` limits it to one provider (None: all), ``endpoint`` to endpoints whose name
    contains the string. It fires on the first ``first_n`` matching calls, or with
    ``probability`` (seeded), or on every matching call when neither is set. ``pattern``
    (``content_policy``, ``empty``: the faults about a prompt) fires only for prompts
    matching the regex; the other kinds refuse it. ``seconds`` is how long ``latency`` adds,
    and how long a ``hang`` lasts before the client gives up (default: the client's read
    timeout).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    provider: str | None = None
    endpoint: str | None = None
    first_n: int | None = Field(default=None, ge=0)
    probability: float | None = Field(default=None, ge=0.0, le=1.0)
    retry_after: float | None = Field(default=1.0, ge=0.0)
    seconds: float | None = Field(default=None, ge=0.0)
    pattern: str | None = None

    @model_validator(mode="after")
    def _pattern_only_for_prompts(self) -> Self:
        # A regex over the prompt means something only to the faults a provider answers
        # because of the prompt. Another kind (a revoked key, a 500, a hang) does not depend
        # on what is asked, so applying one there would model nothing real: refused, so that
        # a spec never silently does less than it says.
        if self.pattern is not None and self.kind not in _PROMPT_FAULTS:
            raise ValueError(_pattern_refusal(self.kind))
        return self

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
        return value

    def describe(self) -> str:
        where = self.provider or "all providers"
        when = (
            f"first {self.first_n} calls"
            if self.first_n is not None
            else (f"p={self.probability}" if self.probability is not None else "every call")
        )
        return f"{self.kind} on {where} ({when})"


#: The fault kinds, in the order the docs list them.
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
#: The ``key=value`` options a fault spec accepts, and what each takes.
FAULT_OPTIONS: dict[str, str] = {
    "endpoint": "part of an endpoint name, e.g. chat",
    "first_n": "a whole number of calls, 0 or more",
    "probability": "a number from 0 to 1",
    "retry_after": "seconds, 0 or more",
    "seconds": "seconds, 0 or more",
    "pattern": "a regular expression",
}


def _check_endpoint(where: str, endpoint: str, provider: str | None) -> None:
    """Refuse an ``endpoint=`` that is part of no endpoint name of ``provider`` (of any fake
    when None): such a fault would inject nothing, silently."""
    fakes = [f for f in fake_classes() if provider is None or f.name == provider]
    names = sorted({name for f in fakes for name in f.endpoints})
    if any(endpoint in name for name in names):
        return
    whose = f"{provider}'s endpoints" if provider else "endpoints of the simulated providers"
    raise FaultSpecError(
        f"{where}: endpoint={endpoint!r} is part of no endpoint name, so the fault would never "
        f"fire{_choices(endpoint, whose, names)}."
    )


def _choices(word: str, what: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; the {what} are: {', '.join(choices)}"


def _canonical(provider: str) -> str:
    """A provider's one name (``azure`` → ``azure_vision``, ``huggingface`` → ``hugging_face``)."""
    from calliope_graph.config import InferenceModelProvider

    try:
        return InferenceModelProvider(provider).value if provider else provider
    except ValueError:
        return provider


def parse_faults(spec: str) -> list[Fault]:
    """Faults from the CLI syntax: ``kind[@provider][:key=value,...];...``.

    Example: ``rate_limit@openai:first_n=2;hang@azure_vision;latency@openai:seconds=0.3``.
    A part that cannot be read raises one :class:`FaultSpecError` naming it and listing the
    valid kinds, providers or options.
    """
    faults: list[Fault] = []
    providers = fake_names()
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        head, _, opts = part.partition(":")
        kind, at, provider = (s.strip() for s in head.partition("@"))
        provider = _canonical(provider)
        where = f"fault {part!r}"
        if kind not in FAULT_KINDS:
            what = f"unknown kind {kind!r}" if kind else "no kind"
            raise FaultSpecError(f"{where}: {what}{_choices(kind, 'kinds', FAULT_KINDS)}.")
        if at and provider not in providers:
            what = f"unknown provider {provider!r}" if provider else "no provider after '@'"
            raise FaultSpecError(f"{where}: {what}{_choices(provider, 'providers', providers)}.")
        values: dict[str, Any] = {"kind": kind, "provider": provider or None}
        for opt in filter(None, (o.strip() for o in opts.split(","))):
            key, eq, value = (s.strip() for s in opt.partition("="))
            if key not in FAULT_OPTIONS:
                raise FaultSpecError(
                    f"{where}: unknown option {key!r}{_choices(key, 'options', FAULT_OPTIONS)}."
                )
            if not eq:
                raise FaultSpecError(
                    f"{where}: option {key!r} has no value; write {key}=<{FAULT_OPTIONS[key]}>."
                )
            values[key] = value
        if "pattern" in values and kind not in _PROMPT_FAULTS:
            raise FaultSpecError(f"{where}: {_pattern_refusal(kind)}.")
        if "endpoint" in values:
            _check_endpoint(where, values["endpoint"], provider or None)
        try:
            faults.append(Fault.model_validate(values))
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0]) if error["loc"] else "kind"
            reason = str(error["msg"]).removeprefix("Value error, ")
            raise FaultSpecError(
                f"{where}: {key}={values.get(key)!r} is invalid ({reason}); "
                f"write {key}=<{FAULT_OPTIONS.get(key, 'a valid value')}>."
            ) from None
    return faults


class Reject(Exception):
    """Raised inside a fake to refuse a request; carries the provider's ready error response."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Failure:
    """An error answer as data, for a fake's :meth:`ProviderFake.envelope` to shape.

    ``status`` and the provider's own error ``code`` (its type/name; None if it has none) and
    ``message``; ``headers`` added to the response; ``extra``: fields only that provider's
    envelope knows (OpenAI's ``type``, Azure's inner error...). ``{retry_after}`` in the message
    or a header value becomes the fault's Retry-After (or the fake's ``retry_after`` default);
    ``{key}`` in an auth message becomes the presented key as the fake's ``AuthCheck.show``
    shows it. A ``rate_limited`` failure (over a configured limit) may also use ``{limit}``,
    ``{used}``, ``{requested}``, ``{resource}``, ``{unit}``, ``{per}``, ``{window}``,
    ``{wait}``, ``{retry_after_ms}``, ``{window_seconds}`` and ``{model}`` (see
    :meth:`calliope_graph.simulate._limits.Refusal.values`); string values in ``extra`` are
    filled too.
    """

    status: int
    code: str | None
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def filled(self, **values: str) -> Failure:
        def fill(text: str) -> str:
            for name, value in values.items():
                text = text.replace("{" + name + "}", value)
            return text

        return replace(
            self,
            message=fill(self.message),
            headers={k: fill(v) for k, v in self.headers.items()},
            extra={k: fill(v) if isinstance(v, str) else v for k, v in self.extra.items()},
        )


@dataclass(frozen=True)
class FaultErrors:
    """What a fake answers to each injected error fault (``auth`` answers ``AuthCheck.invalid``)."""

    rate_limit: Failure
    server_error: Failure
    unavailable: Failure
    overloaded: Failure
