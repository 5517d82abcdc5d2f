"""The Kafka transport against a real Kafka-protocol broker (Tansu on loopback)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

from notifykit import Notifier, TransportState
from notifykit.deadletters import read_dead_letters

from .records import NO_IDEMPOTENCE, consume, create_topic, unique_topic
from .tansu import Tansu

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def url(broker: Tansu, topic: str, extra: str = "", timeout_ms: int = 5000) -> str:
    return f"kafka://{broker.bootstrap}/?topic={topic}&{NO_IDEMPOTENCE}&request_timeout_ms={timeout_ms}{extra}"


def expected_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), as Java clients compute it."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def test_delivery_topic_per_priority_key_partition_and_headers(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    topic = unique_topic()
    await create_topic(kafka_broker.bootstrap, f"{topic}.info", 4)
    await create_topic(kafka_broker.bootstrap, f"{topic}.error", 4)
    ctx = {"request_id": "req-1", "traceparent": TRACEPARENT}
    async with Notifier.from_url(url(kafka_broker, topic), publisher_id="backup.h1", dead_letters=dead_letter_path) as n:
        start = await n.info(ctx, "backup.create.start", {"backup_id": "b-42", "volume_id": "v-1", "size": 1})
        failed = await n.error({}, "backup.create.error", {"volume_id": "v-7"})
    assert n.stats()["kafka"].sent == 2 and n.stats()["kafka"].dead_lettered == 0

    [info] = await consume(kafka_broker.bootstrap, [f"{topic}.info"], 1)
    assert info.topic == f"{topic}.info"
    assert info.key == b"b-42"  # backup_id wins over volume_id
    assert info.partition == expected_partition(b"b-42", 4)
    headers = dict(info.headers)
    assert headers == {
        "event_type": b"backup.create.start", "priority": b"info", "message_id": start.message_id.encode(),
        "content-type": b"application/json", "traceparent": TRACEPARENT.encode(),
    }
    body = json.loads(info.value)
    assert body["message_id"] == start.message_id and body["payload"]["backup_id"] == "b-42"

    [error] = await consume(kafka_broker.bootstrap, [f"{topic}.error"], 1)
    assert error.key == b"v-7" and error.partition == expected_partition(b"v-7", 4)
    assert dict(error.headers)["message_id"] == failed.message_id.encode()
    assert "traceparent" not in dict(error.headers)


async def test_single_topic_mode_carries_priority_in_header(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    topic = unique_topic()
    async with Notifier.from_url(url(kafka_broker, topic, "&topic_mode=single&key_field=tenant"),
                                 publisher_id="p", dead_letters=dead_letter_path) as n:
        await n.warn({}, "backup.delete.warn", {"tenant": "t-1", "backup_id": "b-1"})
        await n.audit({}, "backup.delete.end", {"backup_id": "b-1"})
    records = await consume(kafka_broker.bootstrap, [topic], 2)
    assert [r.topic for r in records] == [topic, topic]
    # Two partitions may hold them: compare per event, not in arrival order.
    seen = {dict(r.headers)["event_type"]: (dict(r.headers)["priority"], r.key) for r in records}
    assert seen == {b"backup.delete.warn": (b"warn", b"t-1"),  # key_field replaced the default list
                    b"backup.delete.end": (b"audit", None)}


async def test_every_configured_topic_gets_each_notification(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    first, second = unique_topic("a"), unique_topic("b")
    async with Notifier.from_url(url(kafka_broker, first, f"&topic={second}"), publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        sent = await n.sample({}, "backup.usage", {"backup_id": "b-1"})
    assert n.stats()["kafka"].sent == 1
    for topic in (first, second):
        [record] = await consume(kafka_broker.bootstrap, [f"{topic}.sample"], 1)
        assert json.loads(record.value)["message_id"] == sent.message_id


async def test_each_backup_keeps_its_order_on_one_partition(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    topic = unique_topic()
    await create_topic(kafka_broker.bootstrap, f"{topic}.info", 8)
    backups = [f"b-{i}" for i in range(6)]
    per_backup = 40
    async with Notifier.from_url(url(kafka_broker, topic, "&linger_ms=1"), publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        for seq in range(per_backup):
            for backup in backups:  # interleaved, as concurrent backups emit them
                await n.info({}, "backup.createprogress", {"backup_id": backup, "seq": seq})
    total = per_backup * len(backups)
    assert n.stats()["kafka"].sent == total
    records = await consume(kafka_broker.bootstrap, [f"{topic}.info"], total)
    by_backup: dict[str, list[tuple[int, int, int]]] = {}
    for r in records:
        payload = json.loads(r.value)["payload"]
        by_backup.setdefault(payload["backup_id"], []).append((r.partition, r.offset, payload["seq"]))
    assert sorted(by_backup) == sorted(backups)
    for backup, seen in by_backup.items():
        assert {p for p, _, _ in seen} == {expected_partition(backup.encode(), 8)}, backup
        in_log_order = [seq for _, _, seq in sorted(seen, key=lambda item: item[1])]
        assert in_log_order == list(range(per_backup)), backup
    assert len({p for seen in by_backup.values() for p, _, _ in seen}) > 1  # the topic really was spread


async def test_keyless_notifications_of_one_batch_share_a_partition(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    """No resource id to key on: the records of one send() go to one (random) partition,
    so they travel as one record batch instead of one per partition."""
    topic = unique_topic()
    await create_topic(kafka_broker.bootstrap, f"{topic}.info", 4)
    async with Notifier.from_url(url(kafka_broker, topic), publisher_id="p", dead_letters=dead_letter_path) as n:
        for seq in range(20):  # one batch: the worker takes them together
            await n.info({}, "service.heartbeat", {"seq": seq})
    assert n.stats()["kafka"].sent == 20
    records = await consume(kafka_broker.bootstrap, [f"{topic}.info"], 20)
    assert len({r.partition for r in records}) == 1 and all(r.key is None for r in records)
    assert [json.loads(r.value)["payload"]["seq"] for r in sorted(records, key=lambda r: r.offset)] == list(range(20))


async def test_notifications_emitted_while_the_broker_is_down_arrive_after_restart(
    own_broker: Tansu, dead_letter_path: Path
) -> None:
    own_broker.start()
    topic = unique_topic()
    await create_topic(own_broker.bootstrap, f"{topic}.info", 4)
    # Small core retry delays; the circuit opens at the first failure and stays open 3 s, so
    # that the test can re-create the topic on the new broker before the trial batch (below).
    options = ("&retry_backoff_ms=50&retry_initial_delay=0.05&retry_max_delay=0.5&retry_max_elapsed=120"
               "&circuit_failure_threshold=1&circuit_reset_timeout=3&batch_size=10")
    notifier = Notifier.from_url(url(own_broker, topic, options, timeout_ms=1000), publisher_id="p",
                                 dead_letters=dead_letter_path)
    before, during = 10, 30
    async with notifier as n:
        for i in range(before):
            await n.info({}, "backup.createprogress", {"backup_id": "b-1", "i": i})
        with anyio.fail_after(15):
            while n.stats()["kafka"].sent < before:
                await anyio.sleep(0.02)

        own_broker.stop(grace=0.5)  # Tansu waits for its clients on SIGTERM: SIGKILL soon after
        outage_ids = set()
        for i in range(before, before + during):
            outage_ids.add((await n.info({}, "backup.createprogress", {"backup_id": "b-1", "i": i})).message_id)
        with anyio.fail_after(15):  # the transport reported the outage; the core retried, then opened the circuit
            while n.stats()["kafka"].state is not TransportState.CIRCUIT_OPEN:
                await anyio.sleep(0.01)
        assert n.stats()["kafka"].sent == before

        own_broker.start()  # a new, empty broker on the same port
        # Tansu's memory storage forgot the topic, and it acks records sent to a partition it
        # does not know without keeping them (a real cluster keeps its topics across restarts).
        # Re-create it as it was, as an operator's pre-created topic, while the circuit is open.
        await create_topic(own_broker.bootstrap, f"{topic}.info", 4)
        with anyio.fail_after(30):
            while n.stats()["kafka"].sent < before + during:
                await anyio.sleep(0.05)
    stats = n.stats()["kafka"]
    assert stats.sent == before + during
    assert stats.dead_lettered == 0 and stats.retried > 0

    # The new broker holds what was sent after it started: every notification emitted
    # during the outage, in order (at least once: a retried batch may repeat some).
    records = await consume(own_broker.bootstrap, [f"{topic}.info"], during)
    bodies = [json.loads(r.value) for r in records]
    assert {b["message_id"] for b in bodies} == outage_ids
    indexes = [b["payload"]["i"] for b in bodies]
    assert sorted(set(indexes)) == list(range(before, before + during))
    assert indexes == sorted(indexes)


async def test_oversize_message_is_dead_lettered_and_the_rest_delivered(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    topic = unique_topic()
    async with Notifier.from_url(url(kafka_broker, topic, "&max_request_size=4096"), publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        small = await n.info({}, "backup.create.start", {"backup_id": "b-1"})
        big = await n.info({}, "backup.create.end", {"backup_id": "b-1", "blob": "x" * 10_000})
        after = await n.info({}, "backup.create.end", {"backup_id": "b-2"})
    stats = n.stats()["kafka"]
    assert (stats.sent, stats.dead_lettered) == (2, 1)
    [letter] = list(read_dead_letters(dead_letter_path))
    assert letter["message"]["message_id"] == big.message_id
    assert "MessageSizeTooLarge" in letter["reason"]
    records = await consume(kafka_broker.bootstrap, [f"{topic}.info"], 2)
    assert sorted(json.loads(r.value)["message_id"] for r in records) == sorted([small.message_id, after.message_id])


def decode_by_hand(body: bytes) -> dict[str, Any]:
    """What a consumer that has never heard of notifykit does with each documented format."""
    data = json.loads(body)
    if "oslo.message" in data:
        inner = json.loads(data["oslo.message"])
        return {"event_type": inner["event_type"], "priority": inner["priority"].lower(), "payload": inner["payload"]}
    if data.get("specversion") == "1.0":
        return {"event_type": data["type"], "priority": data["priority"], "payload": data["data"]}
    return {"event_type": data["event_type"], "priority": data["priority"], "payload": data["payload"]}


@pytest.mark.parametrize("wire_format", ["oslo", "cloudevents", "json"])
async def test_plain_aiokafka_consumer_decodes_every_format(
    kafka_broker: Tansu, dead_letter_path: Path, wire_format: str
) -> None:
    topic = unique_topic()
    payload = {"backup_id": "b-9", "size": 3, "name": "nächtlich"}
    async with Notifier.from_url(url(kafka_broker, topic, f"&format={wire_format}"), publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        await n.critical({}, "backup.restore.error", payload)
    [record] = await consume(kafka_broker.bootstrap, [f"{topic}.critical"], 1)
    assert decode_by_hand(record.value) == {"event_type": "backup.restore.error", "priority": "critical", "payload": payload}
    content_type = "application/cloudevents+json" if wire_format == "cloudevents" else "application/json"
    assert dict(record.headers)["content-type"] == content_type.encode()


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_compressed_batches_are_readable(kafka_broker: Tansu, dead_letter_path: Path, codec: str) -> None:
    topic = unique_topic()
    async with Notifier.from_url(url(kafka_broker, topic, f"&compression_type={codec}"), publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        for i in range(20):
            await n.info({}, "backup.createprogress", {"backup_id": "b-1", "i": i, "pad": "abc" * 50})
    records = await consume(kafka_broker.bootstrap, [f"{topic}.info"], 20)
    assert [json.loads(r.value)["payload"]["i"] for r in records] == list(range(20))
