"""Round trips through the machine's Redis, read back by an independent XRANGE reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from notifykit import Notifier
from notifykit.deadletters import read_dead_letters

from .support import HOST, PORT, read_stream

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_every_notification_is_one_entry_in_order_with_its_envelope(
        machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path) -> None:
    stream = keys("s")
    n = 3000
    priorities = ["info", "warn", "error", "debug"]
    async with Notifier.from_url(f"{machine_redis}?stream={stream}&queue_size=5000", publisher_id="backup.h1",
                                 dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.notify({"request_id": f"req-{i}", "traceparent": TRACEPARENT} if i % 2 else {},
                                      f"backup.event.{i % 3}", {"backup_id": "b-1", "i": i},
                                      priority=priorities[i % 4]) for i in range(n)]
    stats = notifier.stats()["redis"]
    assert (stats.enqueued, stats.sent, stats.dead_lettered, stats.retried) == (n, n, 0, 0)
    entries = read_stream(PORT, stream)
    assert [e.message_id for e in entries] == [s.message_id for s in sent]  # each once, in notify() order
    ids = [tuple(map(int, e.entry_id.split("-"))) for e in entries]
    assert ids == sorted(ids)
    for entry, notification in zip(entries, sent, strict=True):
        fields, message = entry.fields, entry.message
        assert fields["event_type"] == message["event_type"] == notification.event_type
        assert fields["priority"] == message["priority"] == notification.priority.value
        assert message["publisher_id"] == "backup.h1" and message["timestamp"] == notification.iso_timestamp
        assert fields["content-type"] == "application/json"
        assert message["format"] == "json" and message["message_id"] == notification.message_id
        assert message["payload"] == {"backup_id": "b-1", "i": sent.index(notification)}
        assert fields.get("traceparent") == notification.context.traceparent
        assert list(fields) == ["message_id", "event_type", "priority", "content-type",
                                *(["traceparent"] if notification.context.traceparent else []), "body"]


@pytest.mark.parametrize(("fmt", "content_type"), [("oslo", "application/json"),
                                                   ("cloudevents", "application/cloudevents+json")])
async def test_oslo_and_cloudevents_bodies(machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path,
                                           fmt: str, content_type: str) -> None:
    stream = keys("s")
    async with Notifier.from_url(f"{machine_redis}?stream={stream}&format={fmt}", publisher_id="p",
                                 dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.info({"request_id": "r1"}, "volume.create.end", {"volume_id": f"v{i}"}) for i in range(5)]
    entries = read_stream(PORT, stream)
    assert [e.message_id for e in entries] == [s.message_id for s in sent]
    for entry, notification in zip(entries, sent, strict=True):
        assert entry.fields["content-type"] == content_type
        assert entry.message["format"] == fmt
        assert entry.message["message_id"] == notification.message_id
        assert entry.message["event_type"] == "volume.create.end"
        assert entry.message["payload"] == notification.payload
        assert entry.message["context"]["request_id"] == "r1"


async def test_every_topic_is_a_stream_of_its_own(machine_redis: str, keys: Callable[[str], str],
                                                  dead_letter_path: Path) -> None:
    first, second = keys("a"), keys("b")
    async with Notifier.from_url(f"{machine_redis}?topic={first}&topic={second}", publisher_id="p",
                                 dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.info({}, "e.t", {"i": i}) for i in range(50)]
    for stream in (first, second):
        assert [e.message_id for e in read_stream(PORT, stream)] == [s.message_id for s in sent]


async def test_maxlen_exact_keeps_the_newest_entries(machine_redis: str, keys: Callable[[str], str],
                                                     dead_letter_path: Path) -> None:
    stream = keys("s")
    async with Notifier.from_url(f"{machine_redis}?stream={stream}&maxlen=100&maxlen_approximate=false",
                                 publisher_id="p", dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.info({}, "e.t", {"i": i}) for i in range(500)]
    assert notifier.stats()["redis"].sent == 500
    assert [e.message_id for e in read_stream(PORT, stream)] == [s.message_id for s in sent[-100:]]


async def test_maxlen_approximate_trims_whole_nodes(machine_redis: str, keys: Callable[[str], str],
                                                    dead_letter_path: Path) -> None:
    stream = keys("s")
    async with Notifier.from_url(f"{machine_redis}?stream={stream}&maxlen=100", publisher_id="p",
                                 dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.info({}, "e.t", {"i": i}) for i in range(1000)]
    entries = read_stream(PORT, stream)
    assert 100 <= len(entries) < 1000  # trimmed, to about 100: at least 100, whole nodes at a time
    assert [e.message_id for e in entries] == [s.message_id for s in sent[-len(entries):]]


async def test_a_key_of_another_type_is_a_permanent_error_in_the_servers_words(
        machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path) -> None:
    wrong = keys("string")
    with redis.Redis(host=HOST, port=PORT) as client:
        client.set(wrong, "not a stream")
    async with Notifier.from_url(f"{machine_redis}?stream={wrong}", publisher_id="p",
                                 dead_letters=dead_letter_path) as notifier:
        await notifier.info({}, "e.t", {"i": 1})
    stats = notifier.stats()["redis"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (0, 1, 0)  # dead-lettered at once, no retry
    [letter] = read_dead_letters(dead_letter_path)
    assert letter["reason"] == (f"permanent error: redis {machine_redis}?stream={wrong} stream {wrong!r}: "
                                "WRONGTYPE Operation against a key holding the wrong kind of value")
    with redis.Redis(host=HOST, port=PORT) as client:
        assert client.get(wrong) == b"not a stream"


async def test_one_bad_stream_fails_only_on_that_stream(machine_redis: str, keys: Callable[[str], str],
                                                        dead_letter_path: Path) -> None:
    """With two topics, a notification refused by one stream is dead-lettered (permanent wins);
    the other stream got it (at-least-once), and nothing else of the batch is affected."""
    good, wrong = keys("good"), keys("string")
    with redis.Redis(host=HOST, port=PORT) as client:
        client.set(wrong, "x")
    async with Notifier.from_url(f"{machine_redis}?topic={good}&topic={wrong}", publisher_id="p",
                                 dead_letters=dead_letter_path) as notifier:
        sent = [await notifier.info({}, "e.t", {"i": i}) for i in range(3)]
    stats = notifier.stats()["redis"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (0, 3, 0)
    assert all("WRONGTYPE" in letter["reason"] for letter in read_dead_letters(dead_letter_path))
    assert [e.message_id for e in read_stream(PORT, good)] == [s.message_id for s in sent]
