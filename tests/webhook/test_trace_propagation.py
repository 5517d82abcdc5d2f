"""The trace context crosses a real webhook receiver: its CloudEvents ``traceparent``
extension lets the receiver continue the trace of the create span."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event

from notifykit import Notifier

from .receiver import Receiver

pytestmark = pytest.mark.asyncio


async def test_the_receiver_continues_the_trace_from_the_cloudevents_extension(
        receiver: Receiver, dead_letter_path: Path, otel_spans: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        async with Notifier.from_url(receiver.url, publisher_id="backup.h", dead_letters=dead_letter_path) as notifier:
            sent = await notifier.info({}, "backup.create.end", {"backup_id": "b-1"})
    (got,) = receiver.requests
    event = from_http_event(HTTPMessage(got.headers, got.body))
    assert event.get_extension("traceparent") == sent.context.traceparent
    carrier = {"traceparent": str(event.get_extension("traceparent"))}
    with tracer.start_as_current_span("process", context=TraceContextTextMapPropagator().extract(carrier)) as process:
        pass
    [create] = [s for s in otel_spans.get_finished_spans() if s.name.startswith("create ")]
    [send] = [s for s in otel_spans.get_finished_spans() if s.name.startswith("send ")]
    assert process.get_span_context().trace_id == request.get_span_context().trace_id
    assert process.parent.span_id == create.context.span_id
    assert send.attributes["messaging.system"] == "http"
