"""Rate-limit specs: :class:`LimitSpec`, the ``--limits`` syntax and the provider defaults.

Part of :mod:`calliope_graph.limits` (import the public names from there): parsing
(:func:`parse_limits`, :func:`parse_limit_mapping`, Go and RFC 3339 durations), the
conservative :data:`DEFAULT_LIMITS`, and :func:`estimate_tokens` for the ``tpm`` limit.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PositiveFloat,
    PositiveInt,
    ValidationError,
)

from calliope_graph._providers import InferenceModelProvider
from calliope_graph.errors import ConfigurationError

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Seconds everyone waits after a 429 that says nothing about how long.
DEFAULT_COOLDOWN = 1.0
#: Tokens counted for one image in a chat request (OpenAI's cost of a 512 px high-detail
#: tile pair; a rough figure, corrected by the usage the answer reports).
IMAGE_TOKENS = 765
_TOKEN_WINDOW = 60.0
_FIELDS_HELP = (
    "rps, rpm (requests per second / minute), requests (N per window, e.g. 150/10s), "
    "tpm (tokens per minute), concurrency (calls in flight), daily (requests per 24 h), "
    "block (seconds the provider refuses everything after a 429), burst (requests that may "
    "go at once; default 1: spread evenly), share (this process's share: every limit "
    "divided by it); 'none' removes a limit"
)
_EXAMPLE = '--limits "openai:rpm=500,tpm=200000;stability:rps=15;openai/gpt-4o:tpm=30000"'


# --------------------------------------------------------------------------- parsing


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_GO_UNITS["h"] = 3600.0
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``6m0s``, ``12ms``, ``1h2m3.5s``) or a bare number.

    OpenAI reports its ``x-ratelimit-reset-*`` values this way. Raises ``ValueError`` on
    anything else.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        raise ValueError(f"not a duration: {text!r}")
    pos, total = 0, 0.0
    while pos < len(value):
        match = _GO_PART.match(value, pos)
        if match is None:
            raise ValueError(f"not a duration: {text!r}")
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    if not value:
        raise ValueError("empty duration")
    return total


def parse_rfc3339(text: str) -> float:
    """POSIX seconds of an RFC 3339 timestamp (``2025-10-25T12:01:00Z``), as Anthropic sends."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp without a time zone: {text!r}")
    return when.timestamp()


def _parse_count(value: Any) -> Any:
    """``200000``, ``200_000``, ``200k`` or ``2M`` as an int; anything else unchanged."""
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        scale = 1
        if text[-1:] in ("k", "K"):
            scale, text = 1000, text[:-1]
        elif text[-1:] == "M":
            scale, text = 1_000_000, text[:-1]
        if text.isdigit():
            return int(text) * scale
    return value


def _parse_seconds(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


def _parse_window(value: Any) -> Any:
    """``"150/10s"`` (or ``"150/10"``, ``[150, 10]``) as ``(150, 10.0)``."""
    if isinstance(value, str):
        count, sep, window = value.partition("/")
        if not sep:
            raise ValueError("write a request window as N/DURATION, e.g. 150/10s")
        try:
            return (_parse_count(count), parse_duration(window))
        except ValueError:
            raise ValueError(
                "write a request window as N/DURATION, e.g. 150/10s or 500/1m"
            ) from None
    return value


Count = Annotated[PositiveInt, BeforeValidator(_parse_count)]
Seconds = Annotated[PositiveFloat, BeforeValidator(_parse_seconds)]
Window = Annotated[tuple[Count, Seconds], BeforeValidator(_parse_window)]


class LimitSpec(BaseModel):
    """The limits of one provider or ``provider/model``; every field is optional.

    ``rps``/``rpm``/``requests`` are request windows (all that are set apply), ``tpm``
    tokens per minute (prompt plus output, estimated then corrected), ``concurrency`` calls
    in flight, ``daily`` requests in any 24 hours, ``block`` how long the provider refuses
    every request after a 429 (Stability: 60 s), used as the least cooldown after one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rps: Count | None = None
    rpm: Count | None = None
    requests: Window | None = None
    tpm: Count | None = None
    concurrency: Count | None = None
    daily: Count | None = None
    block: Seconds | None = None
    burst: Count | None = None
    """Requests that may be sent together. Unset: admissions are spread evenly over the
    strictest request window (one every window/count seconds), so processes that each take
    a share of a limit never exceed it together, even though the provider counts a request
    when it arrives, later than its admission. Set it where the provider allows bursts."""
    share: Count | None = None
    """How many processes split this limit: tokens, the daily cap and concurrency are
    divided by it, and each request window too, less one request kept in hand for arrival
    delays (``stability:rpm=120,share=2`` admits 59 a minute here, spread evenly)."""

    def merged(self, over: LimitSpec) -> LimitSpec:
        """This spec with the fields ``over`` sets explicitly (``None`` included) replaced."""
        return LimitSpec.model_validate(
            {**self.model_dump(), **over.model_dump(include=set(over.model_fields_set))}
        )

    def request_windows(self) -> list[tuple[int, float]]:
        """Every request window as (count, seconds), this process's share of it."""
        windows = []
        if self.rps:
            windows.append((self.rps, 1.0))
        if self.rpm:
            windows.append((self.rpm, 60.0))
        if self.requests:
            windows.append(self.requests)
        if not self.share or self.share == 1:
            return windows
        # Each process keeps one request a window in hand: a provider counts a request when
        # it arrives, and one delayed on its way can land in the window its successor opens.
        return [(max(1, count // self.share - 1), seconds) for count, seconds in windows]

    def _shared(self, count: int) -> int:
        return max(1, count // self.share) if self.share else count

    def local(self, name: Literal["tpm", "concurrency", "daily"]) -> int | None:
        """A count limit (``tpm``, ``concurrency``, ``daily``) as this process's share."""
        value: int | None = getattr(self, name)
        return None if value is None else self._shared(value)

    def spacing(self) -> float:
        """Seconds between admissions when not bursting: the strictest window's count
        spread over its length (0 without a request window)."""
        return max((seconds / count for count, seconds in self.request_windows()), default=0.0)

    def describe(self) -> str:
        """The ``--limits`` form of the fields that are set (``rpm=500,tpm=30000``)."""
        parts = []
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "requests":
                value = f"{value[0]}/{value[1]:g}s"
            elif name == "block":
                value = f"{value:g}s"
            parts.append(f"{name}={value}")
        return ",".join(parts) or "unlimited"


#: Conservative defaults per provider; a user's values override them field by field
#: (``--limits``, the catalog's ``limits:``). Each is the lowest paid tier we could find.
DEFAULT_LIMITS: dict[str, LimitSpec] = {
    # OpenAI usage tier 1, gpt-4o: 500 RPM, 30,000 TPM (platform.openai.com/docs/guides/
    # rate-limits, "usage tiers"; higher tiers and mini models allow far more: override).
    "openai": LimitSpec(rpm=500, tpm=30_000),
    # Anthropic tier 1, Claude Sonnet: 50 RPM, ~40,000 input + 8,000 output tokens per
    # minute (docs.anthropic.com/en/api/rate-limits).
    "anthropic": LimitSpec(rpm=50, tpm=48_000),
    # Stability AI: 150 requests per 10 s, then every request refused for 60 s
    # (Stability support article "API Key Rate Limit Information").
    "stability": LimitSpec(requests=(150, 10.0), block=60.0),
    # Replicate: 600 prediction creates per minute (replicate.com/docs/topics/predictions/
    # rate-limits); polls are not counted (they take `poll=True` slots).
    "replicate": LimitSpec(rpm=600),
    # Azure AI Vision free tier F0: 20 calls per minute (S1: 10 per second, override with
    # azure:rps=10) (learn.microsoft.com, Azure AI Vision pricing and limits).
    "azure_vision": LimitSpec(rpm=20),
    # Hugging Face serverless: the policy its SDK reads, 500 requests per 5 minutes
    # (`RateLimit-Policy: "fixed window";"api";q=500;w=300`).
    "hugging_face": LimitSpec(requests=(500, 300.0)),
    # Runway limits concurrent *generations* and generations per day by tier (tier 1: 1-2
    # concurrent, 50 a day; docs.dev.runwayml.com/usage/tiers). Extra tasks wait on Runway's
    # side (THROTTLED) and the daily cap answers 429, so no default here; set
    # runway:daily=N to stop before it.
    "runway": LimitSpec(),
    # ElevenLabs limits concurrent requests by plan (free 2, starter 3, creator 5, pro 10;
    # a 429 `too_many_concurrent_requests` beyond): the free plan's, override upwards.
    "elevenlabs": LimitSpec(concurrency=2),
    # fal limits requests *in progress* per account (new accounts 2, up to 40 as credits are
    # bought); past it requests wait IN_QUEUE and are never refused (docs.fal.ai/faq,
    # docs.fal.ai/documentation/model-apis/concurrency-limits). Nothing to hold back here.
    "fal": LimitSpec(),
    # Luma, "Build" tier: Ray 10 concurrent generations and 20 creates per minute, Photon 40
    # and 80 (docs.lumalabs.ai/docs/rate-limits). Creates only: polls take poll slots.
    "luma": LimitSpec(),
    "luma/ray-2": LimitSpec(rpm=20),
    "luma/ray-flash-2": LimitSpec(rpm=20),
    "luma/photon-1": LimitSpec(rpm=80),
    "luma/photon-flash-1": LimitSpec(rpm=80),
    # Gemini API: limits are per project and per model, by usage tier, shown in AI Studio
    # rather than published as one table (ai.google.dev/gemini-api/docs/rate-limits); 150 RPM
    # is the lowest paid-tier text-model figure the page has listed (Tier 1, Pro models), so
    # one budget for the whole provider stays under every model's. Preview and video models
    # allow less: set e.g. google/veo-3.1-generate-preview:rpm=2.
    "google": LimitSpec(rpm=150),
}


def _known_providers() -> tuple[str, ...]:
    return tuple(p.value for p in InferenceModelProvider)


def _normalise_key(key: str, where: str) -> str:
    provider, slash, model = key.strip().partition("/")
    provider = provider.strip().lower()
    model = model.strip()
    known = _known_providers()
    with contextlib.suppress(ValueError):  # earlier names: azure, huggingface
        provider = InferenceModelProvider(provider).value
    if provider not in known:
        raise ConfigurationError(
            f"{where}: unknown provider {provider!r} in limit key {key!r}; "
            f"use one of {', '.join(known)}, optionally with /MODEL (openai/gpt-4o)."
        )
    if slash and not model:
        raise ConfigurationError(f"{where}: limit key {key!r} has a '/' but no model after it.")
    return f"{provider}/{model}" if model else provider


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _spec_from(values: Mapping[str, Any], where: str) -> LimitSpec:
    unknown = [name for name in values if name not in LimitSpec.model_fields]
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown limit field {unknown[0]!r}. Valid fields: {_FIELDS_HELP}."
        )
    cleaned = {
        name: None if isinstance(v, str) and v.strip().lower() in ("none", "off") else v
        for name, v in values.items()
    }
    try:
        return LimitSpec.model_validate(cleaned)
    except ValidationError as exc:
        raise ConfigurationError(
            f"{where}: {_first_error(exc)}. Valid fields: {_FIELDS_HELP}."
        ) from None


def parse_limits(text: str, *, where: str = "--limits") -> dict[str, LimitSpec]:
    """``"openai:rpm=500,tpm=200000;stability:rps=15;openai/gpt-4o:tpm=30000"`` as specs.

    Keys are a provider or ``provider/model``; groups are separated by ``;``, fields by
    ``,``. A repeated key merges (later fields win). Malformed input raises a
    :class:`ConfigurationError` naming the bad part and listing the valid fields.
    """
    out: dict[str, LimitSpec] = {}
    for raw in text.split(";"):
        group = raw.strip()
        if not group:
            continue
        # The last ':' separates the key from the fields (model names may contain ':').
        key, sep, body = group.rpartition(":")
        if not sep or not key.strip() or "=" in key:
            raise ConfigurationError(
                f"{where}: {group!r} is not PROVIDER[/MODEL]:FIELD=VALUE,...; e.g. {_EXAMPLE}."
            )
        norm = _normalise_key(key, f"{where}: {group!r}")
        values: dict[str, str] = {}
        for item in body.split(","):
            name, eq, value = item.partition("=")
            if not eq or not name.strip() or not value.strip():
                raise ConfigurationError(
                    f"{where}: {group!r}: {item.strip()!r} is not FIELD=VALUE. "
                    f"Valid fields: {_FIELDS_HELP}."
                )
            values[name.strip().lower()] = value.strip()
        spec = _spec_from(values, f"{where}: {group!r}")
        out[norm] = out[norm].merged(spec) if norm in out else spec
    if not out:
        raise ConfigurationError(f"{where}: no limits given; e.g. {_EXAMPLE}.")
    return out


def parse_limit_mapping(data: Any, *, where: str = "limits") -> dict[str, LimitSpec]:
    """The YAML/dict form: ``{openai: {rpm: 500}, "openai/gpt-4o": "tpm=30000"}``.

    Values may be a mapping of fields, a ``"rpm=500,tpm=200000"`` string or a
    :class:`LimitSpec`.
    """
    if not isinstance(data, Mapping):
        raise ConfigurationError(
            f"{where}: limits are a mapping from provider (or provider/model) to limits, "
            f"got {type(data).__name__}; e.g. limits: {{openai: {{rpm: 500, tpm: 200000}}}}."
        )
    out: dict[str, LimitSpec] = {}
    for key, body in data.items():
        norm = _normalise_key(str(key), where)
        here = f"{where}: {key}"
        if isinstance(body, LimitSpec):
            spec = body
        elif isinstance(body, str):
            spec = parse_limits(f"{norm}:{body}", where=here)[norm]
        elif isinstance(body, Mapping):
            spec = _spec_from({str(k).lower(): v for k, v in body.items()}, here)
        elif body is None:
            spec = LimitSpec()
        else:
            raise ConfigurationError(
                f"{here}: expected a mapping of fields (rpm: 500) or 'rpm=500,...', "
                f"got {type(body).__name__}."
            )
        out[norm] = out[norm].merged(spec) if norm in out else spec
    return out


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """A rough token count of a chat/completions request body, for the ``tpm`` limit.

    Characters / 4 of the messages (OpenAI and Anthropic shapes, ``system``, ``prompt``,
    ``input``), :data:`IMAGE_TOKENS` per image, 4 per message, plus the output allowance
    (``max_tokens`` / ``max_completion_tokens`` / ``max_output_tokens``, times ``n``) —
    providers count that up front too. It is only an estimate: :meth:`Slot.used` corrects
    it from the usage the answer reports.
    """
    chars = 0
    images = 0
    overhead = 0

    def add(content: Any) -> None:
        nonlocal chars, images
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, Mapping):
            kind = content.get("type")
            if kind in ("image_url", "image", "input_image"):
                images += 1
            elif isinstance(content.get("text"), str):
                chars += len(content["text"])
            elif "content" in content:
                add(content["content"])
            elif kind not in (None, "text"):
                chars += len(json.dumps(content, default=str))
        elif isinstance(content, Sequence) and not isinstance(content, bytes | bytearray):
            for part in content:
                add(part)

    for message in body.get("messages") or []:
        overhead += 4
        if isinstance(message, Mapping):
            add(message.get("content"))
        else:
            add(message)
    for name in ("system", "prompt", "input"):
        if name in body:
            add(body[name])
    output = 0
    for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            output = value
            break
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        output *= n
    return math.ceil(chars / 4) + images * IMAGE_TOKENS + overhead + output
