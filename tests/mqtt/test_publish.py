"""Round trips through the machine's Mosquitto, checked by an independent paho subscriber."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit import Notifier
from notifykit.transport import decode_message
from notifykit.transports._mqtt_session import Link
from notifykit.transports.mqtt import MqttTransport

from .support import Subscriber

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def publish(url: str, dead_letters: Path, count: int, event_type: str = "backup.create.end") -> list[str]:
    ids = []
    async with Notifier.from_url(url, publisher_id="backup.host1", dead_letters=dead_letters) as notifier:
        for i in range(count):
            n = await notifier.notify({"traceparent": TRACEPARENT, "request_id": f"req-{i}"}, event_type,
                                      {"backup_id": "b1", "i": i}, priority="error" if i % 10 == 0 else "info")
            ids.append(n.message_id)
    stats = notifier.stats()["mqtt"]
    assert (stats.sent, stats.dead_lettered) == (count, 0)
    return ids


@pytest.mark.parametrize("fmt", ["json", "oslo", "cloudevents"])
async def test_every_message_arrives_once_with_its_envelope_topic_and_properties(
        broker: str, prefix: str, subscriber: Subscriber, dead_letter_path: Path, fmt: str) -> None:
    ids = await publish(f"{broker}?topic={prefix}&format={fmt}", dead_letter_path, 300)
    seen = await anyio.to_thread.run_sync(subscriber.wait_for, set(ids))
    assert set(seen.values()) == {1}, "a message arrived twice without any fault"
    messages = subscriber.snapshot()
    assert [m.user["message_id"] for m in messages] == ids, "one publisher, one topic per priority: order kept"
    for m in messages:
        decoded = decode_message(m.payload)
        assert decoded["message_id"] == m.user["message_id"]
        assert decoded["event_type"] == m.user["event_type"] == "backup.create.end"
        assert decoded["publisher_id"] == "backup.host1"
        priority = m.user["priority"]
        assert m.topic == f"{prefix}/{priority}/backup.create.end"
        assert str(decoded["priority"]).lower() == priority
        assert decoded["payload"]["backup_id"] == "b1"
        assert m.user["traceparent"] == TRACEPARENT
        assert m.content_type == ("application/cloudevents+json" if fmt == "cloudevents" else "application/json")
        assert m.expiry is None
    assert sum(m.user["priority"] == "error" for m in messages) == 30


async def test_qos2_message_expiry_and_several_topics(broker: str, prefix: str, dead_letter_path: Path) -> None:
    second = f"{prefix}-b/sub"
    one, two = Subscriber(prefix).start(), Subscriber(second).start()
    try:
        url = f"{broker}?topic={prefix}&topic={second}&qos=2&message_expiry=600"
        ids = await publish(url, dead_letter_path, 50, event_type="volume.attach")
        for sub, topic in ((one, prefix), (two, second)):
            seen = await anyio.to_thread.run_sync(sub.wait_for, set(ids))
            assert set(seen.values()) == {1}
            assert {m.topic.rsplit("/", 2)[0] for m in sub.snapshot()} == {topic}
            assert all(m.expiry is not None and 590 <= m.expiry <= 600 for m in sub.snapshot())
    finally:
        one.stop()
        two.stop()


async def test_the_window_is_the_brokers_receive_maximum(broker: str, prefix: str, dead_letter_path: Path) -> None:
    """Mosquitto announces Receive Maximum 20 by default: never more unacknowledged publishes."""
    async with Notifier.from_url(f"{broker}?topic={prefix}", publisher_id="p", dead_letters=dead_letter_path) as notifier:
        transport = notifier.transports["mqtt"]
        assert isinstance(transport, MqttTransport)
        await transport.open()
        link = transport._link
        assert link is not None
        window = transport._flight
        assert window.size == min(1000, link.receive_maximum)
        peak = 0
        original = link.client.publish

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal peak
            peak = max(peak, len(window.sent) + 1)  # unacknowledged ones, with this one
            return original(*args, **kwargs)

        link.client.publish = counting  # type: ignore[method-assign]
        for i in range(500):
            await notifier.info({}, "x.y", {"i": i})
    assert notifier.stats()["mqtt"].sent == 500
    assert 1 < peak <= window.size


async def test_a_broker_that_says_quota_exceeded_gets_a_smaller_window(
        broker: str, prefix: str, subscriber: Subscriber, dead_letter_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A broker that announces more than it takes (Mosquitto after restoring QoS 2 messages of a
    session from its database) answers the surplus with PUBREC "Quota exceeded" (and, Mosquitto,
    a closed connection): the window drops to what it took, and the refused ones are sent again."""
    original = Link.connect

    async def connect(self: Link, host: str, port: int, session_expiry: int) -> None:
        await original(self, host, port, session_expiry)
        self.receive_maximum *= 2  # announced twice what Mosquitto takes from a QoS 2 publisher

    monkeypatch.setattr(Link, "connect", connect)
    url = f"{broker}?topic={prefix}&qos=2&retry_initial_delay=0.01&retry_max_delay=0.1&circuit_reset_timeout=0.1"
    with anyio.fail_after(60):
        ids = await publish(url, dead_letter_path, 300)
    seen = await anyio.to_thread.run_sync(subscriber.wait_for, set(ids))
    assert set(seen) == set(ids)
    assert "(Quota exceeded); at most" in caplog.text


async def test_a_connection_lost_right_after_its_connack_is_not_taken_for_connected(
        broker: str, prefix: str, subscriber: Subscriber, dead_letter_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CONNACK and the loss of the connection can both be handled before the connecting task
    resumes (a broker restarted under load closed the socket right after answering): the link
    used to be marked connected anyway, so every retry found it 'connected', its loss already
    recorded, and never reconnected (the SIGKILL fault test stalled that way). Now such a
    connect fails and the next attempt connects again, resuming the session."""
    original = Link._connected
    lost_once: list[bool] = []

    def connected(self: Link, session_present: bool, code: Any, props: Any) -> None:
        if not lost_once:  # the first CONNACK arrives with its connection already gone
            lost_once.append(True)
            self._lost("connection lost (the test's)")
        original(self, session_present, code, props)

    monkeypatch.setattr(Link, "_connected", connected)
    url = f"{broker}?topic={prefix}&qos=2&retry_initial_delay=0.01&retry_max_delay=0.1&circuit_reset_timeout=0.1"
    with anyio.fail_after(30):
        ids = await publish(url, dead_letter_path, 20)
    seen = await anyio.to_thread.run_sync(subscriber.wait_for, set(ids))
    assert set(seen) == set(ids) and lost_once
