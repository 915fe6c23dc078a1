"""OpenTelemetry traces, on only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over HTTP,
https://opentelemetry.io/docs/specs/otel/protocol/exporter/).

One trace per message: the ingress's `publish` span (the HTTP request that stored it) carries
its W3C `traceparent` into the inbox entry; the worker's `process` span is its child and links
to it, as the messaging conventions describe
(https://opentelemetry.io/docs/specs/semconv/messaging/messaging-spans/); pipeline stages, the
model call (GenAI conventions, https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/),
action runs and the platform send are children of `process`. No message text is recorded.

Spans go through a batch processor (exported on its own thread, never on the request path).
Shutdown is bounded: an unreachable collector delays exit by at most `SHUTDOWN_S` (the SDK's
own defaults take 12-13 s). Off, every helper here is a no-op and the OpenTelemetry SDK is
not even imported.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

#: The longest an exit waits for the last spans to be exported, seconds.
SHUTDOWN_S = 2.0
#: The exporter's limit per request, seconds.
EXPORT_TIMEOUT_S = 2.0

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def start(role: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up tracing for this process (`role`: "run", "worker", ...) when
    OTEL_EXPORTER_OTLP_ENDPOINT is set; True if it is now on. The standard OTEL_* variables
    apply (OTEL_SERVICE_NAME, default "switchboard"; OTEL_BSP_SCHEDULE_DELAY, ...)."""
    global _tracer, _provider
    if _tracer is not None or not environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "switchboard"),
                                "switchboard.role": role})
    # no exit hook of the SDK's own: `stop` bounds the shutdown instead
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(timeout=EXPORT_TIMEOUT_S)))
    _provider, _tracer = provider, provider.get_tracer("switchboard")
    return True


def stop() -> None:
    """Export what is left and stop, waiting at most SHUTDOWN_S."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is None:
        return
    done = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    done.start()
    done.join(SHUTDOWN_S)


@contextlib.contextmanager
def span(name: str, kind: str = "internal", attributes: Mapping[str, Any] | None = None,
         parent: str | None = None) -> Iterator[Span | None]:
    """A span named `name` around the block (None when tracing is off). `kind`: internal,
    server, client, producer or consumer; `parent`: a W3C traceparent to continue (the span is
    then also linked to it); otherwise the current span is the parent."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = None
    links = []
    if parent:
        context = TraceContextTextMapPropagator().extract({"traceparent": parent})
        remote = trace.get_current_span(context).get_span_context()
        if remote.is_valid:
            links.append(Link(remote))
    with _tracer.start_as_current_span(name, context=context, kind=SpanKind[kind.upper()],
                                       attributes=dict(attributes or {}), links=links) as current:
        yield current


def traceparent() -> str:
    """The current span's W3C traceparent ("" when tracing is off or no span is current)."""
    if _tracer is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def trace_id() -> str:
    """The current trace's id, 32 hex digits ("" when off or outside a span)."""
    if _tracer is None:
        return ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def set_attributes(current: Span | None, attributes: Mapping[str, Any]) -> None:
    """Add attributes to `current` (a span from `span`, or None when off)."""
    if current is not None:
        current.set_attributes(dict(attributes))
