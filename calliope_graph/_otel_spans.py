"""How the telemetry recorder makes the spans of node executions and provider requests.

A run's own span goes through the tracer as any span does (its sampler decides, its
processors see it start). Its children are made one of two ways:

- **Written when they end** (:class:`_Writer`), when the tracer is the OpenTelemetry SDK's,
  the run's span is sampled, and the sampler is the SDK's ``ParentBased`` (its default)
  sampling every child of a sampled parent (probed once per tracer through its public
  ``should_sample``): each child's decision is then the run's. A node's span is then one finished ``ReadableSpan`` handed to the
  tracer's span processor — the SDK's public ``Tracer.span_processor``, ``resource`` and
  ``id_generator`` — with its processors told of its start (``on_start``) as the SDK tells
  them. Written by hand because the SDK has no cheaper way to record a span whose whole life
  is known at once: its ``start_span``/``end`` cost ~35–45 µs (sampling again, attribute
  validation under a lock, a copy at the end), about a tenth of a LangGraph node, where the
  span written here costs ~5 µs (``make bench``: ``otel_overhead_ratio``).
- **Through the API** (:class:`_Api`) otherwise — another SDK's tracer, a vendor's, a sampler
  of its own, a run not sampled: ``start_span`` under the parent's context, as any
  instrumentation does.

Both give the recorder the same :class:`opentelemetry.trace.Span` interface.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode

__all__ = ["SpanMaker", "span_maker"]

_UNSET = Status(StatusCode.UNSET)


class SpanMaker(Protocol):
    """Starts the spans of one run's node executions and provider requests."""

    def start(
        self,
        name: str,
        parent: Span,
        *,
        start_time: int | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span: ...


class _Api:
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start(
        self,
        name: str,
        parent: Span,
        *,
        start_time: int | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        return self.tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            kind=kind,
            start_time=start_time,
            attributes=attributes,
        )


class _Writer:
    def __init__(self, tracer: SdkTracer, run: Any) -> None:
        self.processor = tracer.span_processor
        self.new_id = tracer.id_generator.generate_span_id
        self.resource = tracer.resource
        self.scope = run.instrumentation_scope  # the run's span: the tracer's scope

    def start(
        self,
        name: str,
        parent: Span,
        *,
        start_time: int | None,
        attributes: dict[str, Any],
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> Span:
        above = parent.get_span_context()
        # SpanContext is a tuple (trace id, span id, remote, flags, state, valid): unpacked
        # rather than read through its properties, a call each
        trace_id, _, _, flags, state, _ = above
        # flags: sampled (and random) as the run's
        context = SpanContext(trace_id, self.new_id(), False, flags, state)
        span = _Written(self, name, context, above, kind, start_time or time.time_ns(), attributes)
        self.processor.on_start(span, parent_context=None)  # type: ignore[arg-type]
        return span


class _Written(Span):
    """A span kept as plain data until it ends, then handed over as one ``ReadableSpan``.
    It has the attributes processors read at ``on_start`` (``name``, ``context``,
    ``attributes``, ...)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_ended",
        "_events",
        "_kind",
        "_maker",
        "_name",
        "_parent",
        "_start",
        "_status",
    )

    def __init__(
        self,
        maker: _Writer,
        name: str,
        context: SpanContext,
        parent: SpanContext,
        kind: SpanKind,
        start: int,
        attributes: dict[str, Any],
    ) -> None:
        self._maker, self._name, self._context, self._parent = maker, name, context, parent
        self._kind, self._start, self._attributes = kind, start, attributes
        self._events: list[Event] = []
        self._status = _UNSET
        self._ended = False

    # what a processor's on_start may read (the SDK span's names)
    name = property(lambda self: self._name)
    context = property(lambda self: self._context)
    parent = property(lambda self: self._parent)
    kind = property(lambda self: self._kind)
    start_time = property(lambda self: self._start)
    attributes = property(lambda self: self._attributes)
    resource = property(lambda self: self._maker.resource)
    instrumentation_scope = property(lambda self: self._maker.scope)

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[key] = value

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if not self._ended:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        pass  # the recorder links run spans only (made by the tracer)

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if isinstance(status, StatusCode):
            status = Status(status, description)
        self._status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.add_event("exception", {"exception.type": type(exception).__name__}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        maker = self._maker
        maker.processor.on_end(
            ReadableSpan(
                self._name,
                self._context,
                self._parent,
                maker.resource,
                self._attributes,  # (the recorder gives sequences as tuples, as the SDK)
                tuple(self._events),
                (),
                self._kind,
                None,
                self._status,
                self._start,
                end_time or time.time_ns(),
                maker.scope,
            )
        )


#: Per tracer (by id, the tracer kept and compared by identity): whether its sampler samples
#: a sampled parent's children as they are.
_follows: dict[int, tuple[Any, bool]] = {}


def _follows_parent(tracer: SdkTracer) -> bool:
    """The SDK's ``ParentBased`` (the default) as it is, whose choice for the children of a
    sampled local parent is to sample them all (its default, probed once): any other
    sampler may decide per span (by name, attributes, ...) and is asked for each."""
    cached = _follows.get(id(tracer))
    if cached is not None and cached[0] is tracer:
        return cached[1]
    if type(tracer.sampler).should_sample is not ParentBased.should_sample:
        _follows[id(tracer)] = (tracer, False)
        return False
    parent = SpanContext(1, 1, is_remote=False, trace_flags=trace.TraceFlags(1))
    try:
        result = tracer.sampler.should_sample(
            trace.set_span_in_context(trace.NonRecordingSpan(parent)), 1, "node", SpanKind.INTERNAL
        )
        follows = result.decision is Decision.RECORD_AND_SAMPLE and not result.attributes
        follows = follows and not (result.trace_state or ())
    except Exception:
        follows = False
    _follows[id(tracer)] = (tracer, follows)
    return follows


def span_maker(tracer: trace.Tracer, run: Span) -> SpanMaker:
    """The way to make the children of ``run``, a span ``tracer`` started."""
    if (
        isinstance(tracer, SdkTracer)
        and run.is_recording()
        and run.get_span_context().trace_flags.sampled
        and hasattr(run, "instrumentation_scope")
        and _follows_parent(tracer)
    ):
        return _Writer(tracer, run)
    return _Api(tracer)
