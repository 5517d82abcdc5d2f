"""Confirmed AMQP throughput: notifykit vs hand-written raw aiormq and aio-pika loops vs oslo.messaging.

All against the RabbitMQ on 127.0.0.1:5672, in one run, same payload, persistent
messages to a durable queue bound to a topic exchange, publisher confirms on:

* ``notifykit``: ``await notifier.info(...)`` N times, timed until ``aclose()`` returned,
  i.e. until the broker confirmed every message (``stats.sent == N`` is checked);
* ``raw_aiormq_pipelined_B``: aiormq (aio-pika's own engine) ``channel.basic_publish``
  of B messages started at once, then gathered (confirms pipelined), mandatory, with
  the same properties notifykit sets (content type, persistent, message id, timestamp);
* ``raw_aio_pika_pipelined_B``: the same through aio-pika's ``exchange.publish``;
* ``raw_aio_pika_one_by_one``: ``await exchange.publish(...)``, one confirm at a time;
* ``oslo_messaging_notifier``: ``oslo_messaging.Notifier.info`` (rabbit driver,
  messagingv2), which does not wait for confirms.

Each raw client serialises, per message, the same oslo envelope notifykit sends (same
fields, same size), like a real oslo-compatible client. Several B are tried; the one with
the best median is the anchor. The pipelined clients and notifykit run ROUNDS interleaved
rounds (the order rotates each round); a rate is the median of its rounds, a ratio the
median of the per-round ratios. The slow
one-message-at-a-time clients publish ``min(N, 5000)`` once (their rate does not depend on N).
Usage: ``python benchmarks/amqp_throughput.py [N [ROUNDS]]`` (defaults 10000 and 5).
"""

from __future__ import annotations

import asyncio
import json
import platform
import tempfile
import time
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
from _goals import goal, median, paired_ratio
from _throughput import COMPACT, CTX, EVENT, PAYLOAD, STATISTIC, Run, argv_int, best, interleaved, notify_loop, numbered, rates_json, record

N = argv_int(1, 10_000)
ROUNDS = argv_int(2, 5)
N_SLOW = min(N, 5_000)
BATCHES = (1000, 2500)
URL = "amqp://guest:guest@127.0.0.1:5672/"
SUFFIX = uuid.uuid4().hex[:10]
EXCHANGE, TOPIC = f"nk_bench_x_{SUFFIX}", f"nk_bench_t_{SUFFIX}"
OSLO_EXCHANGE, OSLO_TOPIC = f"nk_bench_ox_{SUFFIX}", f"nk_bench_ot_{SUFFIX}"
QUEUE, OSLO_QUEUE = f"{TOPIC}.info", f"{OSLO_TOPIC}.info"
#: What the profile says the remaining time goes to (shown on the page when a goal is missed).
CAUSE_AIORMQ = ("notifykit publishes through the same aiormq channel call as the anchor; what it adds per "
                "message is the core's path (Notification.create: validation, payload JSON, id; the queue "
                "hand-off; the dispatcher) and one asyncio task per publish to collect per-message confirms")
CAUSE_AIO_PIKA = CAUSE_AIORMQ


def oslo_body(i: int) -> tuple[str, datetime, bytes]:
    """What a hand-written oslo-compatible client sends: the same envelope and fields as notifykit's
    ``oslo`` format (``_unique_id``, ``_context_*``, payload), with a message_id."""
    message_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    inner: dict[str, Any] = {
        "message_id": message_id, "publisher_id": "bench", "event_type": EVENT, "priority": "INFO",
        "timestamp": str(now.replace(tzinfo=None)), "_unique_id": message_id.replace("-", ""),
    }
    inner.update({f"_context_{k}": v for k, v in CTX.items()})
    inner["payload"] = numbered(i)
    body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner, separators=COMPACT)}, separators=COMPACT)
    return message_id, now, body.encode()


def pika_message(i: int) -> aio_pika.Message:
    message_id, now, body = oslo_body(i)
    return aio_pika.Message(body, content_type="application/json", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message_id, timestamp=now)


async def purge(queue: str) -> int:
    connection = await aio_pika.connect(URL)
    try:
        channel = await (await connection.channel()).get_underlay_channel()
        result = await channel.queue_purge(queue)
        return int(result.message_count or 0)
    finally:
        await connection.close()


async def setup() -> None:
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.bind(exchange, QUEUE)
    finally:
        await connection.close()


async def teardown() -> None:
    connection = await aio_pika.connect(URL)
    try:
        channel = await (await connection.channel()).get_underlay_channel()
        for queue in (QUEUE, OSLO_QUEUE):
            await channel.queue_delete(queue)
        for exchange in (EXCHANGE, OSLO_EXCHANGE):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


async def bench_notifykit(dead_letters: Path) -> float:
    elapsed = await notify_loop(f"{URL}?exchange={EXCHANGE}&topic={TOPIC}&block_timeout=600", N, dead_letters)
    assert await purge(QUEUE) == N
    return N / elapsed


async def bench_aiormq(batch: int, n: int) -> float:
    """aiormq directly: what aio-pika does under the hood, without its Message/Exchange layer."""
    connection = await aiormq.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)

        def publish(i: int) -> Awaitable[Any]:
            message_id, now, body = oslo_body(i)
            properties = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=2,
                                                      message_id=message_id, timestamp=now)
            return channel.basic_publish(body, exchange=EXCHANGE, routing_key=QUEUE, properties=properties,
                                         mandatory=True)

        start = time.perf_counter()
        for first in range(0, n, batch):
            confirms = await asyncio.gather(*(publish(i) for i in range(first, min(n, first + batch))))
            assert all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirms)
        elapsed = time.perf_counter() - start
    finally:
        await connection.close()
    assert await purge(QUEUE) == n
    return n / elapsed


async def bench_aio_pika(batch: int, n: int) -> float:
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        start = time.perf_counter()
        if batch == 1:
            for i in range(n):
                await exchange.publish(pika_message(i), QUEUE)
        else:
            for first in range(0, n, batch):
                await asyncio.gather(*(exchange.publish(pika_message(i), QUEUE) for i in range(first, min(n, first + batch))))
        elapsed = time.perf_counter() - start
    finally:
        await connection.close()
    assert await purge(QUEUE) == n
    return n / elapsed


def bench_oslo(n: int) -> float:
    """oslo.messaging's Notifier, as a service would use it (blocking, rabbit driver)."""
    import oslo_messaging
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    conf([], project="notifykit-bench")
    url = URL.replace("amqp://", "rabbit://")
    oslo_messaging.get_notification_transport(conf, url=url).cleanup()  # registers the options set below
    conf.set_override("control_exchange", OSLO_EXCHANGE)
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")  # durable + persistent, like ours
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    notifier = oslo_messaging.Notifier(transport, publisher_id="bench", driver="messagingv2", topics=[OSLO_TOPIC])
    try:
        notifier.info(CTX, EVENT, PAYLOAD)  # connects and declares the queue, untimed
        start = time.perf_counter()
        for i in range(n):
            notifier.info(CTX, EVENT, numbered(i))
        elapsed = time.perf_counter() - start
    finally:
        transport.cleanup()
    return n / elapsed


async def bench_asyncio_clients(rounds: dict[str, list[float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        contenders: list[tuple[str, Run]] = [("notifykit", lambda: bench_notifykit(Path(tmp) / "dl.jsonl"))]
        for batch in BATCHES:
            contenders.append((f"raw_aiormq_pipelined_{batch}", lambda b=batch: bench_aiormq(b, N)))  # type: ignore[misc]
            contenders.append((f"raw_aio_pika_pipelined_{batch}", lambda b=batch: bench_aio_pika(b, N)))  # type: ignore[misc]
        await bench_aiormq(1000, 2000)  # warm-up: connections, code paths
        await bench_notifykit(Path(tmp) / "dl.jsonl")
        await interleaved(contenders, ROUNDS, rounds)
        record(rounds, "raw_aio_pika_one_by_one", await bench_aio_pika(1, N_SLOW))


def main() -> dict[str, Any]:
    rounds: dict[str, list[float]] = {}
    asyncio.run(setup())
    try:
        asyncio.run(bench_asyncio_clients(rounds))
        # oslo.messaging is blocking (kombu); it runs in the main thread, outside any event loop
        record(rounds, "oslo_messaging_notifier", bench_oslo(N_SLOW))
        delivered = asyncio.run(purge(OSLO_QUEUE))
        assert delivered == N_SLOW + 1, f"oslo.messaging delivered {delivered} of {N_SLOW + 1}"
    finally:
        asyncio.run(teardown())
    best_aiormq = best(rounds, "raw_aiormq_pipelined")
    best_pika = best(rounds, "raw_aio_pika_pipelined")
    ours, oslo = median(rounds["notifykit"]), median(rounds["oslo_messaging_notifier"])
    vs_aiormq = paired_ratio(rounds["notifykit"], rounds[best_aiormq])
    vs_pika = paired_ratio(rounds["notifykit"], rounds[best_pika])
    return {
        "benchmark": "amqp_throughput",
        "n": N,
        "n_one_at_a_time_clients": N_SLOW,
        "rounds": ROUNDS,
        "statistic": STATISTIC,
        "python": platform.python_version(),
        **rates_json(rounds),
        "best_raw_aiormq": best_aiormq,
        "best_raw_aio_pika": best_pika,
        "ratio_notifykit_vs_best_raw_aiormq": round(vs_aiormq, 3),
        "ratio_notifykit_vs_best_raw_aio_pika": round(vs_pika, 3),
        "ratio_notifykit_vs_oslo_messaging": round(ours / oslo, 3),
        "goals": [
            goal("confirmed msgs/s vs the best pipelined raw aiormq loop", vs_aiormq, ">=", 1.0,
                 anchor=best_aiormq, cause=CAUSE_AIORMQ),
            goal("confirmed msgs/s vs the best pipelined aio-pika loop", vs_pika, ">=", 1.1,
                 anchor=best_pika, cause=CAUSE_AIO_PIKA),
            goal("msgs/s vs oslo.messaging's Notifier", ours / oslo, ">=", 2.0, anchor="oslo_messaging_notifier"),
        ],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
