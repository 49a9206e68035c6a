"""OpenTelemetry, only when asked for: whether a run is traced, decided without importing it.

Telemetry is on when the standard environment configures an exporter
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or an
``OTEL_TRACES_EXPORTER`` other than ``none``), or when the application has installed its own
``TracerProvider`` (seen without importing anything: ``opentelemetry.trace`` is then already
in ``sys.modules`` and its global provider is not the default proxy). ``OTEL_SDK_DISABLED=true``
turns it off. Off, nothing of OpenTelemetry is imported and a run pays one check per run.

On, :mod:`calliope_graph._otel` (the ``otel`` extra) turns the runner's events — the same
ones the trace records — into spans and metrics (docs/architecture.md, "Telemetry").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calliope_graph.flow.trace import Trace

__all__ = ["batch_scope", "enabled", "run_recorder"]

log = logging.getLogger(__name__)
#: The "otel extra missing" warning was given (once per process: a log memo, not state).
_warned = False


def _env_on() -> bool:
    env = os.environ
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return exporters not in ("", "none")


def _app_provider() -> bool:
    """The application configured a TracerProvider of its own (SDK or vendor)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return False
    try:
        provider = api.get_tracer_provider()
        default = (api.ProxyTracerProvider, api.NoOpTracerProvider)
    except Exception:
        return False
    return not isinstance(provider, default)


def enabled() -> bool:
    """Whether runs are traced now (see the module docstring)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    # the provider first: a missing variable costs os.environ two exceptions (~2 µs each)
    return _app_provider() or _env_on()


def _otel() -> Any:
    """The OpenTelemetry layer, or None (warned once) when the ``otel`` extra is missing."""
    global _warned
    try:
        from calliope_graph import _otel
    except ImportError as exc:
        if not _warned:
            _warned = True
            log.warning(
                "OpenTelemetry is configured (OTEL_*) but not installed (%s): runs are not "
                "traced. Install it with: pip install 'calliope-graph[otel]'",
                exc,
            )
        return None
    return _otel


def run_recorder(trace: Trace) -> Any:
    """The recorder of one run's spans and metrics, or False when telemetry is off."""
    if not enabled():
        return False
    otel = _otel()
    if otel is None:
        return False
    try:
        return otel.RunRecorder(trace)
    except Exception as exc:  # telemetry never fails a run
        log.warning("OpenTelemetry could not record this run: %s", exc)
        return False


@contextlib.contextmanager
def batch_scope(flow: str, summary: Callable[[], dict[str, Any]]) -> Iterator[None]:
    """A span for a whole batch, which each item's trace links to (nothing when off)."""
    otel = _otel() if enabled() else None
    if otel is None:
        yield
        return
    with otel.batch_span(flow, summary):
        yield
