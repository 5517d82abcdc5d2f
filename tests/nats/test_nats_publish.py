"""Round trips through the machine's NATS JetStream, read back by an independent nats-py consumer."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import nats
import pytest
from nats.js import api

from notifykit import Notification, Notifier
from notifykit.transport import BatchError, PermanentError, TransportSettings, decode_message, parse_url
from notifykit.transports.nats import NatsTransport

from .support import Names, read_stream, stream_config

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
EVENTS = [("info", "backup.create.start"), ("warn", "backup.createprogress"), ("error", "backup.create.error"),
          ("info", "volume.attach")]


def url_of(server: str, names: Names, extra: str = "") -> str:
    return f"nats://{server}/?stream={names.stream}&subject={names.subject}{extra}"


def transport_for(url: str) -> NatsTransport:
    parsed = parse_url(url)
    options = {key: [value] for key, value in parsed.query}
    return NatsTransport.from_settings(
        TransportSettings.build("nats", parsed, NatsTransport.default_format, ("notifications",), options))


@pytest.mark.parametrize("fmt", ["json", "oslo", "cloudevents"])
async def test_every_notification_is_stored_once_with_its_subject_headers_and_envelope(
        machine_nats: str, names: Names, dead_letter_path: Path, fmt: str) -> None:
    sent: list[Notification] = []
    async with Notifier.from_url(url_of(machine_nats, names, f"&format={fmt}&batch_size=250"), publisher_id="backup.h1",
                                 dead_letters=dead_letter_path) as notifier:
        for i in range(1000):
            priority, event_type = EVENTS[i % len(EVENTS)]
            sent.append(await notifier.notify({"traceparent": TRACEPARENT, "request_id": f"req-{i}"}, event_type,
                                              {"backup_id": f"b-{i % 7}", "i": i}, priority=priority))
    stats = notifier.stats()["nats"]
    assert (stats.sent, stats.dead_lettered, stats.dropped) == (1000, 0, 0)
    config = await stream_config(machine_nats, names.stream)  # created with the documented defaults
    assert (config.storage, config.duplicate_window, config.subjects) == (api.StorageType.FILE, 120.0,
                                                                          [f"{names.subject}.>"])
    got = await read_stream(machine_nats, names.stream)
    assert [m.headers["Nats-Msg-Id"] for m in got if m.headers] == [n.message_id for n in sent]  # once each, in order
    content_type = {"json": "application/json", "oslo": "application/json",
                    "cloudevents": "application/cloudevents+json"}[fmt]
    for n, msg in zip(sent, got, strict=True):
        assert msg.subject == f"{names.subject}.{n.event_type}"
        assert msg.headers == {"Nats-Msg-Id": n.message_id, "message_id": n.message_id, "event_type": n.event_type,
                               "priority": n.priority.value, "traceparent": TRACEPARENT, "content-type": content_type}
        envelope = decode_message(msg.data)
        assert envelope["format"] == fmt
        assert (envelope["message_id"], envelope["event_type"], envelope["priority"], envelope["publisher_id"]) == \
            (n.message_id, n.event_type, n.priority.value, "backup.h1")
        assert envelope["payload"] == dict(n.payload)
        assert envelope["context"]["request_id"] == n.context.request_id
    if fmt == "oslo":
        assert "oslo.message" in json.loads(got[0].data)


async def test_a_resent_notification_is_dropped_by_the_duplicate_window(machine_nats: str, names: Names) -> None:
    transport = transport_for(url_of(machine_nats, names))
    batch = [Notification.create("backup.create.end", {"i": i}, publisher_id="p") for i in range(50)]
    await transport.open()
    try:
        await transport.send(batch)
        await transport.send(batch[10:20])  # a retry after a lost PubAck, a spool replay after a crash
    finally:
        await transport.aclose()
    assert transport.duplicates == 10
    got = await read_stream(machine_nats, names.stream)
    assert Counter(m.headers["Nats-Msg-Id"] for m in got if m.headers) == Counter(n.message_id for n in batch)


async def test_an_existing_stream_is_used_as_it_is(machine_nats: str, names: Names, dead_letter_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    nc = await nats.connect(f"nats://{machine_nats}")
    try:
        await nc.jetstream().add_stream(api.StreamConfig(name=names.stream, subjects=[f"{names.subject}.backup.>"],
                                                         storage=api.StorageType.MEMORY, duplicate_window=30))
    finally:
        await nc.close()
    caplog.set_level(logging.WARNING, "notifykit.nats")
    async with Notifier.from_url(url_of(machine_nats, names), publisher_id="p", dead_letters=dead_letter_path) as n:
        for _ in range(3):
            await n.info({}, "backup.create.end", {})
    assert n.stats()["nats"].sent == 3
    config = await stream_config(machine_nats, names.stream)
    assert (config.storage, config.duplicate_window) == (api.StorageType.MEMORY, 30.0)  # untouched
    warnings = [r.getMessage() for r in caplog.records if r.name == "notifykit.nats"]
    assert any("duplicate window is 30s" in w for w in warnings)
    assert any(f"do not cover {names.subject}.>" in w for w in warnings)
    assert len(warnings) == 2  # once each, not per send
    assert len(await read_stream(machine_nats, names.stream)) == 3


async def test_a_missing_stream_with_create_stream_false_is_a_permanent_error(machine_nats: str, names: Names) -> None:
    transport = transport_for(url_of(machine_nats, names, "&create_stream=false"))
    with pytest.raises(PermanentError, match=f"stream '{names.stream}' does not exist"):
        await transport.open()
    await transport.aclose()


async def test_a_message_over_max_payload_fails_alone(machine_nats: str, names: Names) -> None:
    transport = transport_for(url_of(machine_nats, names))
    await transport.open()
    try:
        assert transport._nc is not None
        big = "x" * (transport._nc.max_payload + 1)
        batch = [Notification.create("e.t", {"i": 0}, publisher_id="p"),
                 Notification.create("e.t", {"big": big}, publisher_id="p", max_payload_bytes=1 << 30),
                 Notification.create("e.t", {"i": 2}, publisher_id="p")]
        with pytest.raises(BatchError) as info:
            await transport.send(batch)
    finally:
        await transport.aclose()
    assert list(info.value.failures) == [1]
    assert isinstance(info.value.failures[1], PermanentError) and "max_payload" in str(info.value.failures[1])
    got = await read_stream(machine_nats, names.stream)
    assert [m.headers["Nats-Msg-Id"] for m in got if m.headers] == [batch[0].message_id, batch[2].message_id]
