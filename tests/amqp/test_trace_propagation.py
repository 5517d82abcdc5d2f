"""The trace context crosses a real RabbitMQ: the consumer reads the AMQP headers and continues the trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifykit import Notifier

from .support import Names, consume

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


async def test_a_consumer_continues_the_trace_from_the_amqp_headers(broker: str, names: Names,
                                                                    dead_letter_path: Path, otel_spans: Any) -> None:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    url = f"{broker}?exchange={names.exchange}&topic={names.topic}"
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        async with Notifier.from_url(url, publisher_id="backup.h", dead_letters=dead_letter_path) as notifier:
            sent = await notifier.info({}, "backup.create.end", {"backup_id": "b-1"})
    [got] = await consume(f"{names.topic}.info", 1, timeout=5)
    assert got.headers["traceparent"] == sent.context.traceparent
    carrier = {k: str(v) for k, v in got.headers.items()}
    with tracer.start_as_current_span("process", context=TraceContextTextMapPropagator().extract(carrier)) as process:
        pass
    [create] = [s for s in otel_spans.get_finished_spans() if s.name.startswith("create ")]
    [send] = [s for s in otel_spans.get_finished_spans() if s.name.startswith("send ")]
    assert process.get_span_context().trace_id == request.get_span_context().trace_id
    assert process.parent.span_id == create.context.span_id  # the consumer's span hangs under the message's
    assert send.attributes["messaging.system"] == "rabbitmq"
    assert send.attributes["messaging.destination.name"] == names.topic
