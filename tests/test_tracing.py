"""OpenTelemetry spans with the SDK and an in-memory exporter: create spans at notify(), a send
span per batch delivery linked to them, retries, circuit changes and dead letters as events.

The tracer provider comes from the ``otel_spans`` fixture (tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from notifykit import Notifier
from notifykit.testing import MemoryTransport

trace = pytest.importorskip("opentelemetry.trace")

pytestmark = pytest.mark.asyncio


def memory_notifier(tmp_path: Path, query: str = "") -> Notifier:
    return Notifier.from_url(f"memory://{query}", publisher_id="backup.h", dead_letters=tmp_path / "dl.jsonl")


def by_kind(exporter: Any, name_start: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(name_start)]


def traceparent(span: Any) -> str:
    ctx = span.context
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


async def test_without_a_tracer_provider_nothing_is_traced(tmp_path: Path) -> None:
    async with memory_notifier(tmp_path) as notifier:
        sent = await notifier.info({}, "backup.create.end", {"backup_id": "b-1"})
    assert sent.context.traceparent is None


async def test_create_spans_become_traceparents_and_one_send_span_links_them(tmp_path: Path, otel_spans: Any) -> None:
    tracer = trace.get_tracer("app")
    with tracer.start_as_current_span("backup request") as parent:
        async with memory_notifier(tmp_path) as notifier:
            notes = [await notifier.info({}, "backup.create.end", {"i": i}) for i in range(3)]
    creates = by_kind(otel_spans, "create ")
    [send] = by_kind(otel_spans, "send ")
    assert [c.name for c in creates] == ["create backup.create.end"] * 3
    for note, create in zip(notes, creates, strict=True):
        assert create.kind is trace.SpanKind.PRODUCER and create.parent.span_id == parent.get_span_context().span_id
        assert create.attributes["messaging.message.id"] == note.message_id
        assert create.attributes["messaging.operation.type"] == "create"
        assert create.attributes["messaging.system"] == "memory"
        assert note.context.traceparent == traceparent(create)
    assert send.kind is trace.SpanKind.CLIENT
    assert send.attributes["messaging.batch.message_count"] == 3
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "notifications"
    assert {link.context.span_id for link in send.links} == {c.context.span_id for c in creates}
    assert send.status.status_code is not trace.StatusCode.ERROR


async def test_a_callers_traceparent_is_kept(tmp_path: Path, otel_spans: Any) -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with memory_notifier(tmp_path) as notifier:
        note = await notifier.info({"traceparent": given}, "backup.create.end", {})
    assert note.context.traceparent == given
    [send] = by_kind(otel_spans, "send ")
    assert [format(link.context.span_id, "016x") for link in send.links] == ["b7ad6b7169203331"]


async def test_retries_and_the_state_change_are_events_of_the_send_span(tmp_path: Path, otel_spans: Any) -> None:
    async with memory_notifier(tmp_path, "?retry_initial_delay=0.001&retry_max_delay=0.001") as notifier:
        transport = notifier.transports["memory"]
        assert isinstance(transport, MemoryTransport)
        transport.fail_next(2)
        await notifier.info({}, "backup.create.end", {})
    [send] = by_kind(otel_spans, "send ")
    retries = [e for e in send.events if e.name == "messaging.retry"]
    assert [e.attributes["messaging.retry.attempt"] for e in retries] == [1, 2]
    assert retries[0].attributes["exception.message"] == "memory transport told to fail"
    states = [e.attributes["notifykit.transport.state"] for e in send.events if e.name == "notifykit.transport.state"]
    assert states[0] == "retrying" and states[-1] == "connected"


async def test_a_dead_letter_is_an_event_and_the_send_span_an_error(tmp_path: Path, otel_spans: Any) -> None:
    async with memory_notifier(tmp_path, "?reject=backup.poison") as notifier:
        await notifier.info({}, "backup.poison", {})
    [send] = by_kind(otel_spans, "send ")
    [letter] = [e for e in send.events if e.name == "notifykit.dead_letter"]
    assert letter.attributes["messaging.batch.message_count"] == 1
    assert "rejected by memory transport" in letter.attributes["notifykit.dead_letter.reason"]
    assert send.status.status_code is trace.StatusCode.ERROR
