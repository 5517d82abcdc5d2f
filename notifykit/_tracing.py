"""OpenTelemetry tracing, when the application set it up, and nothing otherwise.

opentelemetry-api is optional (``notifykit[otel]``). :func:`find_tracing` is called when a
Notifier starts: without the package, or with no tracer provider set (the API's default
proxy), it returns None and the hot paths skip tracing with one ``is None`` check.

With a provider, following OpenTelemetry's messaging conventions: ``notify()`` opens a
``create`` span (PRODUCER) whose context becomes the notification's ``traceparent`` when
the caller gave none (the caller's current span is its parent), and each batch delivery
is one ``send`` span (CLIENT) linked to the create contexts of its messages, with retries,
circuit changes and dead letters as events and an error status when it ends in a dead
letter.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._message import Notification
from ._transport import Transport

__all__ = ["NO_SPAN", "DeliverySpan", "Tracing", "find_tracing", "messaging_system"]


def messaging_system(transport: Transport) -> str:
    """OpenTelemetry's ``messaging.system`` for ``transport``'s spans: what its class declares
    (``rabbitmq`` for ``amqp://`` and ``amqps://``), else its URL scheme."""
    return type(transport).messaging_system or transport.settings.url.scheme


class DeliverySpan:
    """The ``send`` span of one batch delivery; this base is the no-op one."""

    def retry(self, attempt: int, delay: float, error: BaseException) -> None:
        """A failed attempt, retried after ``delay`` seconds."""

    def circuit(self, state: str) -> None:
        """The transport's state changed (``circuit_open``, ``connected`` …)."""

    def dead_letter(self, count: int, reason: str) -> None:
        """``count`` notifications of this batch went to the dead letters."""


NO_SPAN = DeliverySpan()


class _Span(DeliverySpan):
    def __init__(self, span: Any, status: Any) -> None:
        self._span = span
        self._status = status

    def retry(self, attempt: int, delay: float, error: BaseException) -> None:
        self._span.add_event("messaging.retry", {"messaging.retry.attempt": attempt, "messaging.retry.delay_s": delay,
                                                 "exception.type": type(error).__name__,
                                                 "exception.message": str(error)})

    def circuit(self, state: str) -> None:
        self._span.add_event("notifykit.transport.state", {"notifykit.transport.state": state})

    def dead_letter(self, count: int, reason: str) -> None:
        self._span.add_event("notifykit.dead_letter", {"messaging.batch.message_count": count,
                                                       "notifykit.dead_letter.reason": reason})
        self._span.set_status(self._status(self._status_code.ERROR, reason))

    @property
    def _status_code(self) -> Any:
        return importlib.import_module("opentelemetry.trace").StatusCode


class Tracing:
    """Spans for one Notifier, through the application's tracer provider."""

    def __init__(self, trace: Any) -> None:
        self._trace = trace
        self._tracer = trace.get_tracer("notifykit")
        self._format = importlib.import_module("opentelemetry.trace.propagation.tracecontext")

    @contextmanager
    def create(self, system: str, destination: str, event_type: str) -> Iterator[Any]:
        """The ``create`` span of one notification; yields it (``traceparent_of`` reads it)."""
        attributes = {"messaging.system": system, "messaging.destination.name": destination,
                      "messaging.operation.type": "create", "messaging.operation.name": "create",
                      "notifykit.event_type": event_type}
        with self._tracer.start_as_current_span(f"create {destination}", kind=self._trace.SpanKind.PRODUCER,
                                                attributes=attributes) as span:
            yield span

    def traceparent_of(self, span: Any) -> tuple[str, str | None]:
        """The W3C ``traceparent`` (and ``tracestate``) of ``span``'s context."""
        ctx = span.get_span_context()
        tracestate = ctx.trace_state.to_header() if ctx.trace_state else None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}", tracestate or None

    @contextmanager
    def send(self, system: str, destination: str, transport: str,
             batch: Sequence[Notification]) -> Iterator[DeliverySpan]:
        """The ``send`` span of one batch delivery (all its attempts)."""
        links = [self._trace.Link(ctx) for ctx in (self._context_of(n) for n in batch) if ctx is not None]
        attributes: dict[str, Any] = {
            "messaging.system": system, "messaging.destination.name": destination,
            "messaging.operation.type": "send", "messaging.operation.name": "send",
            "messaging.batch.message_count": len(batch), "notifykit.transport": transport}
        if len(batch) == 1:
            attributes["messaging.message.id"] = batch[0].message_id
        with self._tracer.start_as_current_span(f"send {destination}", kind=self._trace.SpanKind.CLIENT,
                                                links=links, attributes=attributes) as span:
            yield _Span(span, self._trace.Status)

    def _context_of(self, notification: Notification) -> Any:
        traceparent = notification.context.traceparent
        if not traceparent:
            return None
        _version, trace_id, span_id, flags = traceparent.split("-")
        return self._trace.SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True,
                                       trace_flags=self._trace.TraceFlags(int(flags, 16)))


def find_tracing() -> Tracing | None:
    """A Tracing when opentelemetry-api is installed and a tracer provider is set, else None."""
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if type(provider).__name__ in ("ProxyTracerProvider", "NoOpTracerProvider"):
        return None
    return Tracing(trace)
