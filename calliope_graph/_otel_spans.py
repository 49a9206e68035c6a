"""How the telemetry recorder makes the spans of node executions and provider requests.

A run's own span goes through the tracer as any span does (its sampler decides, its
processors see it start). Its children are made one of two ways:

- **Written when they end** (:class:`_Writer`), when the tracer is the OpenTelemetry SDK's,
  the run's span is sampled, and the sampler is the SDK's ``ParentBased`` (its default)
  sampling every child of a sampled parent (probed once per tracer through its public
  ``should_sample``): each child's decision is then the run's. A node's span is then a
  ``ReadableSpan`` of ours (:class:`_Written`) handed to the tracer's span processor — the
  SDK's public ``Tracer.span_processor``, ``resource`` and ``id_generator`` — at its start
  (``on_start``) and when it ends (``on_end``), as the SDK hands its own. Written by hand
  because the SDK has no cheaper way to record a span: its ``start_span``/``end`` cost
  ~35–45 µs (the sampler asked again, attribute cleaning under a lock, a copy at the end),
  about a tenth of a LangGraph node, where the span written here costs ~4 µs
  (``make bench``: ``otel_overhead_ratio``).
- **Through the API** (:class:`SpanMaker` itself) otherwise — another SDK's tracer, a
  vendor's, a sampler of its own, a run not sampled: ``start_span`` under the parent's
  context, as any instrumentation does.

Both give the recorder the same :class:`opentelemetry.trace.Span` interface.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["SpanMaker", "span_maker"]

_UNSET = Status(StatusCode.UNSET)


class SpanMaker:
    """Starts the spans of one run: its own (``root``), its node executions' and provider
    requests' (``start``) — here through the tracer's API; :class:`_Writer` writes them."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def root(
        self,
        name: str,
        *,
        context: Context | None,
        links: Sequence[Link],
        start_time: int | None,
        attributes: dict[str, Any],
    ) -> Span:
        return self.tracer.start_span(
            name, context=context, links=links, start_time=start_time, attributes=attributes
        )

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


class _Writer(SpanMaker):
    def __init__(self, tracer: SdkTracer) -> None:
        super().__init__(tracer)
        self.sampler = tracer.sampler
        self.processor = tracer.span_processor
        self.ids = tracer.id_generator
        self.new_id = tracer.id_generator.generate_span_id
        self.resource = tracer.resource
        info = tracer.instrumentation_info  # what get_tracer made the tracer's scope from
        self.scope = InstrumentationScope(info.name, info.version, info.schema_url)
        # The SDK's tracer configuration (experimental: ``_set_tracer_configurator``) may
        # disable a tracer; its tracer then makes no spans, and neither do we.
        self.enabled = getattr(tracer, "_is_enabled", lambda: True)

    def root(
        self,
        name: str,
        *,
        context: Context | None,
        links: Sequence[Link],
        start_time: int | None,
        attributes: dict[str, Any],
    ) -> Span:
        """What the SDK's ``Tracer.start_span`` does for the run's span: the same sampler
        asked the same question, the same ids and flags (opentelemetry-sdk
        ``trace/__init__.py``, ``Tracer.start_span``)."""
        above = trace.get_current_span(context).get_span_context()
        if not self.enabled():
            return trace.NonRecordingSpan(above)
        parent = above if above.is_valid else None
        trace_id = parent.trace_id if parent else self.ids.generate_trace_id()
        result = self.sampler.should_sample(
            context, trace_id, name, SpanKind.INTERNAL, attributes, links
        )
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
        # W3C Trace Context level 2's random flag, where this SDK version has it
        random_flag = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
        if parent is not None:
            random = getattr(parent.trace_flags, "random_trace_id", False)
        else:
            random = getattr(self.ids, "is_trace_id_random", lambda: False)()
        if random and random_flag:
            flags |= random_flag
        own = SpanContext(trace_id, self.new_id(), False, TraceFlags(flags), result.trace_state)
        if result.decision is Decision.DROP:
            return trace.NonRecordingSpan(own)
        span = _Written(
            self, name, own, parent, SpanKind.INTERNAL, start_time or time.time_ns(),
            dict(result.attributes or {}), links=tuple(links),
        )  # fmt: skip
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

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
        if not flags & TraceFlags.SAMPLED:  # a run not sampled: its sampler decides
            return super().start(
                name, parent, start_time=start_time, attributes=attributes, kind=kind
            )
        # flags: sampled (and random) as the run's
        context = SpanContext(trace_id, self.new_id(), False, flags, state)
        span = _Written(self, name, context, above, kind, start_time or time.time_ns(), attributes)
        self.processor.on_start(span, parent_context=None)  # type: ignore[arg-type]
        return span


class _Written(Span, ReadableSpan):
    """A span that is its own ``ReadableSpan``, as the SDK's is (``sdk.trace.Span`` is both):
    processors read it at ``on_start`` and receive it at ``on_end``, when it is finished."""

    def __init__(
        self,
        maker: _Writer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start: int,
        attributes: dict[str, Any],
        links: tuple[Link, ...] = (),
    ) -> None:
        ReadableSpan.__init__(
            self, name, context, parent, maker.resource, attributes, [], links, kind, None,
            _UNSET, start, None, maker.scope,
        )  # fmt: skip
        self._processor = maker.processor

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # (set: never None here)

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            self._attributes.update(attributes)  # type: ignore[union-attr]  # (our dict)

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._attributes[key] = value  # type: ignore[index]  # (our dict)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is None:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))  # type: ignore[attr-defined]

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        return  # the recorder links run spans only (made by the tracer)

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
        if self._end_time is not None:
            return
        self._end_time = end_time or time.time_ns()
        self._processor.on_end(self)


def _follows_parent(tracer: SdkTracer) -> bool:
    """The SDK's ``ParentBased`` (the default) as it is, whose choice for the children of a
    sampled local parent is to sample them all (its default, probed once): any other
    sampler may decide per span (by name, attributes, ...) and is asked for each."""
    if type(tracer.sampler).should_sample is not ParentBased.should_sample:
        return False
    parent = SpanContext(1, 1, is_remote=False, trace_flags=trace.TraceFlags(1))
    try:
        result = tracer.sampler.should_sample(
            trace.set_span_in_context(trace.NonRecordingSpan(parent)), 1, "node", SpanKind.INTERNAL
        )
        follows = result.decision is Decision.RECORD_AND_SAMPLE and not result.attributes
        follows = follows and not (result.trace_state or ())
    except Exception:
        return False
    return follows


#: Per tracer (by id, the tracer kept and compared by identity): its maker (a run is short).
_makers: dict[int, tuple[Any, SpanMaker]] = {}


def span_maker(tracer: trace.Tracer) -> SpanMaker:
    """The way to make a run's spans with ``tracer``."""
    cached = _makers.get(id(tracer))
    if cached is not None and cached[0] is tracer:
        return cached[1]
    maker: SpanMaker
    if isinstance(tracer, SdkTracer) and _follows_parent(tracer):
        maker = _Writer(tracer)
    else:
        maker = SpanMaker(tracer)
    _makers[id(tracer)] = (tracer, maker)
    return maker
