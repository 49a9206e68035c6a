"""Runs as OpenTelemetry traces and metrics, following the GenAI semantic conventions.

Imported only when telemetry is on (:mod:`calliope_graph._telemetry`). It reads the runner's
events — the same ones ``trace.json`` records, so spans and trace never disagree — and
makes:

- a span per run (``flow <name>``; a batch item's is the root of its own trace, linked to
  the batch's span), per node execution (``node <name>``, nested under the node that ran it:
  map items and subflow nodes under their map or subflow node) and per provider request
  (``<operation> <model>``, kind CLIENT), with times taken from the trace itself;
- the metrics ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``
  (histograms per provider, model and operation), ``gen_ai.client.operation.cost`` and
  the counters ``calliope.client.cost``, ``calliope.client.rate_limited`` and
  ``calliope.limiter.wait``.

Attribute names are those of open-telemetry/semantic-conventions-genai
(``model/gen-ai/registry.yaml``: ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``, ``gen_ai.usage.{text,image,audio}.input_tokens``; metrics in
``model/gen-ai/metrics.yaml``). The cost is ``gen_ai.usage.cost.amount`` / ``.currency`` /
``.source`` and the ``gen_ai.client.operation.cost`` histogram, as that repository's
``changelog.d/443.enhancement.md`` adds them (``source: local``: computed here from list
prices). What the conventions do not name yet is ``calliope.*``.

Nothing sensitive or heavy: no key (values are the trace's redacted summaries), no media
bytes, no base64. Prompts and outputs only with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``, as ``gen_ai.input.messages`` /
``gen_ai.output.messages`` whose media parts are ``uri`` parts naming the file's path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from calliope_graph._otel_parts import messages as _messages
from calliope_graph._otel_spans import span_maker
from calliope_graph._usage import ProviderCall

if TYPE_CHECKING:
    from calliope_graph.flow.trace import NodeExecution, Trace

__all__ = ["RunRecorder", "batch_span", "configure"]

log = logging.getLogger(__name__)

SCOPE = "calliope_graph"
CAPTURE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

#: Our provider names → ``gen_ai.provider.name`` where the conventions list the provider;
#: the others keep our name (the conventions ask for the instrumentation's best knowledge).
#: ``gcp.gemini``: "Used when accessing the 'generativelanguage.googleapis.com' endpoint"
#: (open-telemetry/semantic-conventions, model/gen-ai/registry.yaml), the one ours calls.
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "google": "gcp.gemini"}

#: Usage figures → span attributes (``gen_ai.usage.*`` where the conventions name one).
_USAGE_ATTRIBUTES = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "text_input_tokens": "gen_ai.usage.text.input_tokens",
    "image_input_tokens": "gen_ai.usage.image.input_tokens",
    "audio_input_tokens": "gen_ai.usage.audio.input_tokens",
    "audio_output_tokens": "gen_ai.usage.audio.output_tokens",
    "images": "calliope.usage.images",
    "video_seconds": "calliope.usage.video_seconds",
    "audio_seconds": "calliope.usage.audio_seconds",
    "characters": "calliope.usage.characters",
}

#: The node execution whose work is running (a child execution nests under its span).
_parent: ContextVar[_Open | None] = ContextVar("calliope_otel_parent", default=None)
#: The batch span items link to.
_batch: ContextVar[Span | None] = ContextVar("calliope_otel_batch", default=None)

# Process-level on purpose, not session state: OpenTelemetry's tracer and meter providers
# are process-global by its API design (``trace.set_tracer_provider`` takes effect once per
# process), so "configured from the environment" is a fact about the process; the caches
# below are memos of those global providers (keyed and compared by provider identity).
_lock = threading.Lock()
_configured = False
#: Per meter provider (by id, with the provider kept and compared by identity: a provider
#: that was shut down and freed may leave its id to a new one, whose spans and points
#: would otherwise go to the old, shut-down instruments).
_instruments: dict[int, tuple[Any, dict[str, Any]]] = {}


def _ns(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1e9)


# -- setting up from the environment ----------------------------------------------------------
def configure() -> None:
    """Install SDK providers from the standard environment, once — unless the application
    installed its own. Written out here rather than through the SDK's auto-configuration
    (``opentelemetry-instrument``), which is a private module of the SDK."""
    global _configured
    if _configured:  # every run asks: the common case takes no lock
        return
    with _lock:
        if _configured:
            return
        _configured = True
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return  # the application's own provider
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": "calliope-graph"}).merge(
            OTELResourceDetector().detect()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        )
        if os.environ.get("OTEL_SERVICE_NAME"):
            resource = resource.merge(Resource({"service.name": os.environ["OTEL_SERVICE_NAME"]}))
        provider = TracerProvider(resource=resource)  # flushed at exit (shutdown_on_exit)
        for name in _exporters("OTEL_TRACES_EXPORTER"):
            exporter = _span_exporter(name)
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        readers = [r for r in map(_metric_reader, _metric_exporters()) if r]
        if readers:
            from opentelemetry.sdk.metrics import MeterProvider

            metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))


def _exporters(variable: str) -> list[str]:
    names = os.environ.get(variable, "otlp").lower().replace(" ", "").split(",")
    return [n for n in names if n and n != "none"]


def _metric_exporters() -> list[str]:
    """``OTEL_METRICS_EXPORTER``; unset, OTLP only when an OTLP endpoint is configured. The
    specification's default is ``otlp`` to localhost, but someone who asked for
    ``OTEL_TRACES_EXPORTER=console`` alone has no collector there: each run would retry it
    for seconds and print connection errors."""
    env = os.environ
    if "OTEL_METRICS_EXPORTER" in env:
        return _exporters("OTEL_METRICS_EXPORTER")
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    )
    return ["otlp"] if endpoint else []


def _protocol(signal: str) -> str:
    env = os.environ
    return (
        env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def _span_exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console)", name)
        return None
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter()


def _metric_reader(name: str) -> Any:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if name == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return PeriodicExportingMetricReader(ConsoleMetricExporter())
    if name != "otlp":
        return None
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return PeriodicExportingMetricReader(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return PeriodicExportingMetricReader(HttpMetricExporter())


_tracers: dict[int, tuple[Any, Any]] = {}  # id → (provider, its tracer), as _instruments


def _tracer() -> Any:
    """The tracer of the current tracer provider (made once per provider: a run is short)."""
    provider = trace.get_tracer_provider()
    cached = _tracers.get(id(provider))
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer(SCOPE)
    _tracers[id(provider)] = (provider, tracer)
    return tracer


def _meters() -> dict[str, Any]:
    """The instruments of the current meter provider (made once per provider)."""
    provider = metrics.get_meter_provider()
    cached = _instruments.get(id(provider))
    if cached is not None and cached[0] is provider:
        return cached[1]
    meter = metrics.get_meter(SCOPE)
    found = {
        # model/gen-ai/metrics.yaml: seconds, and tokens per gen_ai.token.type
        "duration": meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration"
        ),
        "tokens": meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per request"
        ),
        "cost_histogram": meter.create_histogram(
            "gen_ai.client.operation.cost", unit="USD", description="Cost of each GenAI request"
        ),
        "cost": meter.create_counter(
            "calliope.client.cost", unit="USD", description="Spent on provider requests"
        ),
        "rate_limited": meter.create_counter(
            "calliope.client.rate_limited",
            unit="{request}",
            description="Provider answers HTTP 429 (rate limited)",
        ),
        "limiter_wait": meter.create_counter(
            "calliope.limiter.wait",
            unit="s",
            description="Time node executions waited on the shared provider rate limiter",
        ),
    }
    _instruments[id(provider)] = (provider, found)
    return found


def _item(execution: NodeExecution) -> int | None:
    if execution.item is not None or "[" not in execution.node:
        return execution.item
    found = re.findall(r"\[(\d+)\]/", execution.node)
    return int(found[-1]) if found else None


# -- one run -------------------------------------------------------------------------------------
_RUNNING: Any = object()  # RunRecorder._start's default parent: the running execution


class _Open:
    """A running node execution. Its span is made when it ends, with every attribute in the
    one call (the SDK's per-call cost, paid once per node), or earlier when something needs
    it: a child execution's parent, an engine retry's event, the run stopping mid-node."""

    __slots__ = ("execution", "parent", "recorder", "span")

    def __init__(self, recorder: RunRecorder, execution: NodeExecution) -> None:
        self.recorder, self.execution, self.parent = recorder, execution, _parent.get()
        self.span: Span | None = None

    def get(self) -> Span:
        if self.span is None:
            self.span = self.recorder._start(self.execution, self.parent)
        return self.span


class RunRecorder:
    """Spans and metrics of one run, fed the runner's events (``event``, ``finish``)."""

    def __init__(self, run_trace: Trace) -> None:
        configure()
        self.tracer = _tracer()
        self.meters = _meters()
        self.capture = os.environ.get(CAPTURE, "").strip().lower() == "true"
        self.trace = run_trace
        self.spans: dict[int, _Open] = {}
        self.tokens: dict[int, Token[_Open | None]] = {}
        self.failed: dict[int, Span] = {}
        self.finished = False
        batch = _batch.get()
        attributes: dict[str, Any] = {
            "calliope.flow": run_trace.flow,
            "calliope.thread_id": run_trace.thread_id,
            "gen_ai.conversation.id": run_trace.thread_id,
        }
        if run_trace.resumed_from:
            attributes["calliope.resumed"] = True
        links: tuple[Link, ...] = ()
        ctx = None
        if batch is not None:  # each item is its own trace, linked to the batch's span
            links, ctx = (Link(batch.get_span_context()),), otel_context.Context()
        elif (parent := _parent.get()) is not None:
            ctx = trace.set_span_in_context(parent.get())
        self.maker = span_maker(self.tracer)
        self.span = self.maker.root(
            f"flow {run_trace.flow}",
            context=ctx,
            links=links,
            start_time=_ns(run_trace.started_at),
            attributes=attributes,
        )

    # -- events ---------------------------------------------------------------------------
    def event(self, kind: str, execution: NodeExecution) -> None:
        key = id(execution)
        try:
            if kind == "started":  # (the common two first, inline: each runs per node)
                self.spans[key] = running = _Open(self, execution)
                self.tokens[key] = _parent.set(running)
            elif kind == "finished" and not execution.provider_calls:
                opened = self.spans.pop(key, None)
                self._release(key)
                self._close(self._ended(execution, opened), execution)
            else:
                self._event(kind, key, execution)
        except Exception as exc:  # telemetry never fails a run
            log.debug("telemetry event %s failed: %s", kind, exc)

    def _event(self, kind: str, key: int, execution: NodeExecution) -> None:
        if kind == "retried":
            retrying = self.spans.get(key)
            if retrying is not None:  # an engine retry inside the execution
                retrying.get().add_event("retry", {"error.type": execution.error_class or "_OTHER"})
            elif key in self.failed:  # LangGraph runs the failed execution again
                self._end(self.failed.pop(key), execution, count=False)
        elif kind in ("finished", "failed"):
            opened = self.spans.pop(key, None)
            self._release(key)
            if kind == "failed":
                span = opened.get() if opened is not None else self._start(execution)
                self._calls(span, execution)
                self._attributes(span, execution)
                self.failed[key] = span  # a route may still take it: ended then, or at the end
            else:
                span = self._ended(execution, opened)
                self._calls(span, execution)
                self._close(span, execution)
        elif kind in ("skipped", "fallback"):
            if key in self.failed:  # counted when it failed
                self._end(self.failed.pop(key), execution, count=False)
            else:  # a node a switch did not take
                opened = self.spans.pop(key, None)
                self._release(key)
                self._close(self._ended(execution, opened), execution)
        elif kind == "cache_hit":
            self._close(self._ended(execution, None), execution)

    def _release(self, key: int) -> None:
        token = self.tokens.pop(key, None)
        if token is not None:
            try:  # (not contextlib.suppress: a context manager per node costs more)
                _parent.reset(token)
            except ValueError:  # set in another context: nothing to undo
                return

    def _start(self, execution: NodeExecution, parent: Any = _RUNNING, ended: bool = False) -> Span:
        """The span of ``execution`` under ``parent`` (an :class:`_Open`, None: the run's;
        default: the running execution's); ``ended``: with its closing attributes too."""
        parent = _parent.get() if parent is _RUNNING else parent
        above = self.span if parent is None else parent.get()
        attributes: dict[str, Any] = {
            "calliope.node": execution.node,
            "calliope.node.kind": execution.kind,
        }
        if execution.iteration != 1:  # (as below: defaults left out, each costs the SDK)
            attributes["calliope.iteration"] = execution.iteration
        item = execution.item if "[" not in execution.node else _item(execution)
        if item is not None:
            attributes["calliope.item"] = item
        if ended:
            attributes.update(self._closing(execution))
        span = self.maker.start(
            f"node {execution.node}",
            above,
            start_time=int(execution.started_at * 1e9),
            attributes=attributes,
        )
        if ended:
            if execution.status in ("failed", "interrupted"):
                self._status(span, execution)
            if execution.limit_wait:
                self._count(execution)
        return span

    def _ended(self, execution: NodeExecution, opened: _Open | None) -> Span:
        """The span of an execution that ended, its attributes all set (made now in one
        call unless something made it while it ran): :meth:`_close` ends it."""
        if opened is not None and opened.span is not None:
            self._attributes(opened.span, execution)
            return opened.span
        return self._start(execution, opened.parent if opened else _RUNNING, ended=True)

    def _close(self, span: Span, execution: NodeExecution) -> None:
        span.end(end_time=int((execution.ended_at or execution.started_at) * 1e9))

    def _closing(self, execution: NodeExecution) -> dict[str, Any]:
        """What an execution's span says when it ends (zeros and defaults left out)."""
        attributes: dict[str, Any] = {"calliope.status": execution.status}
        if execution.cache_hit:
            attributes["calliope.cache_hit"] = True
        if execution.attempts:
            attributes["calliope.attempts"] = execution.attempts
            attributes["calliope.retries"] = execution.retries
        if execution.limit_wait:
            attributes["calliope.limiter.wait"] = execution.limit_wait
        if execution.resumed:
            attributes["calliope.resumed"] = True
        if execution.provider:
            attributes["gen_ai.provider.name"] = _provider(execution.provider)
        if execution.model:
            attributes["calliope.model"] = execution.model
        if execution.branch:
            attributes["calliope.route"] = execution.branch
        if execution.cost_usd is not None and execution.provider_calls:
            attributes["calliope.cost.usd"] = execution.cost_usd
        if execution.error_class:
            attributes["error.type"] = execution.error_class
        return attributes

    def _status(self, span: Span, execution: NodeExecution) -> None:
        if execution.status in ("failed", "interrupted"):
            span.set_status(Status(StatusCode.ERROR, execution.error_class or execution.status))

    def _count(self, execution: NodeExecution) -> None:
        """The limiter wait goes on its counter (once per execution: a failed execution's
        span gets its attributes again when a route takes it)."""
        if execution.limit_wait and execution.provider and not execution.resumed:
            self.meters["limiter_wait"].add(
                execution.limit_wait, {"gen_ai.provider.name": _provider(execution.provider)}
            )

    def _attributes(self, span: Span, execution: NodeExecution, *, count: bool = True) -> None:
        span.set_attributes(self._closing(execution))  # one call: the SDK locks per call
        self._status(span, execution)
        if count:
            self._count(execution)

    def _end(self, span: Span, execution: NodeExecution, *, count: bool = True) -> None:
        self._attributes(span, execution, count=count)
        self._close(span, execution)

    # -- provider requests ------------------------------------------------------------------
    def _calls(self, parent: Span, execution: NodeExecution) -> None:
        if execution.resumed:  # made (and recorded) by an earlier attempt
            return
        ok = [c for c in execution.provider_calls if c.status == "ok"]
        last = ok[-1] if ok else None
        for call in execution.provider_calls:
            span = self.maker.start(
                f"{call.operation or 'generate_content'} {call.model or ''}".strip(),
                parent,
                kind=SpanKind.CLIENT,
                start_time=_ns(call.started_at),
                attributes=self._call_attributes(call),
            )
            if self.capture and call is last:
                span.set_attribute("gen_ai.input.messages", _messages("user", execution.inputs))
                span.set_attribute(
                    "gen_ai.output.messages", _messages("assistant", execution.outputs)
                )
            if call.status != "ok":
                span.set_status(Status(StatusCode.ERROR, call.error_class or "error"))
            span.end(end_time=_ns(call.ended_at or call.started_at))
            self._measure(call)

    def _call_attributes(self, call: ProviderCall) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": call.operation or "generate_content",
            "gen_ai.provider.name": _provider(call.provider),
        }
        if call.model:
            attributes["gen_ai.request.model"] = call.model
        if call.response_model:
            attributes["gen_ai.response.model"] = call.response_model
        for figure, value in call.usage.items():
            name = _USAGE_ATTRIBUTES.get(figure)
            if name is not None:
                attributes[name] = int(value) if name.endswith("tokens") else value
        if call.reported:  # (sequences as tuples, as the SDK keeps them)
            attributes["calliope.usage.reported"] = tuple(call.reported)
        if call.estimated:
            attributes["calliope.usage.estimated"] = tuple(call.estimated)
        if call.cost_usd is not None:
            attributes["gen_ai.usage.cost.amount"] = call.cost_usd
            attributes["gen_ai.usage.cost.currency"] = "USD"
            attributes["gen_ai.usage.cost.source"] = call.cost_source
        if call.error_class:
            attributes["error.type"] = call.error_class
        return attributes

    def _measure(self, call: ProviderCall) -> None:
        common: dict[str, Any] = {
            "gen_ai.operation.name": call.operation or "generate_content",
            "gen_ai.provider.name": _provider(call.provider),
        }
        if call.model:
            common["gen_ai.request.model"] = call.model
        if call.response_model:
            common["gen_ai.response.model"] = call.response_model
        timed = dict(common)
        if call.error_class:
            timed["error.type"] = call.error_class
        self.meters["duration"].record(call.duration, timed)
        for figure, token_type in (("input_tokens", "input"), ("output_tokens", "output")):
            if figure in call.usage:
                self.meters["tokens"].record(
                    int(call.usage[figure]), {**common, "gen_ai.token.type": token_type}
                )
        if call.cost_usd:
            self.meters["cost_histogram"].record(call.cost_usd, common)
            self.meters["cost"].add(call.cost_usd, common)
        if call.error_class == "rate_limit":
            self.meters["rate_limited"].add(1, common)

    # -- the end of the run -----------------------------------------------------------------
    def finish(self, run_trace: Trace) -> None:
        """The run stopped (ok, failed or interrupted): end what is open, then the run."""
        if self.finished:
            return
        self.finished = True
        try:
            for key, span in list(self.failed.items()):
                span.end(end_time=_ns(run_trace.ended_at))
                self.failed.pop(key, None)
            for key, opened in list(self.spans.items()):  # stopped mid-node
                span = opened.get()
                span.set_status(Status(StatusCode.ERROR, "interrupted"))
                span.end(end_time=_ns(run_trace.ended_at))
                self.spans.pop(key, None)
            self.span.set_attribute("calliope.status", run_trace.status)
            cost = sum(
                c.cost_usd or 0.0
                for e in run_trace.executions
                if not e.resumed
                for c in e.provider_calls
            )
            self.span.set_attribute("calliope.cost.usd", round(cost, 8))
            if run_trace.status == "failed":
                self.span.set_status(Status(StatusCode.ERROR, run_trace.error or "failed"))
            self.span.end(end_time=_ns(run_trace.ended_at))
        except Exception as exc:
            log.debug("telemetry could not end the run: %s", exc)


def _provider(name: str) -> str:
    return _PROVIDER_NAMES.get(name, name)


@contextlib.contextmanager
def batch_span(flow: str, summary: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """The batch's span, current for its items (their run spans link to it)."""
    configure()
    tracer = _tracer()
    span = tracer.start_span(f"batch {flow}", attributes={"calliope.flow": flow})
    token = _batch.set(span)
    try:
        yield
    finally:
        _batch.reset(token)
        with contextlib.suppress(Exception):
            for name, value in summary().items():
                if isinstance(value, int | float | str | bool):
                    span.set_attribute(f"calliope.batch.{name}", value)
        span.end()
