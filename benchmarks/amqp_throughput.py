"""Confirmed AMQP throughput: notifykit end-to-end vs hand-written aio-pika vs oslo.messaging.

All against the RabbitMQ on 127.0.0.1:5672, in one run, same payload, persistent
messages to a durable queue bound to a topic exchange:

* ``notifykit``: ``await notifier.info(...)`` N times, timed until ``aclose()`` returned,
  i.e. until the broker confirmed every message (``stats.sent == N`` is checked);
* ``raw_aio_pika_one_by_one``: ``await exchange.publish(...)`` with confirms, one at a time;
* ``raw_aio_pika_pipelined_B``: batches of B publishes started at once, then gathered
  (confirms pipelined) — the best a hand-written aio-pika client does; several B are
  tried and the best is the baseline;
* ``oslo_messaging_notifier``: ``oslo_messaging.Notifier.info`` (rabbit driver,
  messagingv2), which does not wait for confirms.

Each raw client serialises, per message, the same oslo envelope notifykit sends (same
fields, same size), like a real oslo-compatible client.
The slow one-message-at-a-time clients publish ``min(N, 10000)`` (their rate does not
depend on N). The machine and broker are shared, so the pipelined clients and notifykit
run ROUNDS interleaved rounds and each keeps its best round (same treatment for all).
Usage: ``python benchmarks/amqp_throughput.py [N [ROUNDS]]`` (defaults 50000 and 3).
"""

from __future__ import annotations

import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika

from notifykit import Notifier

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
N_SLOW = min(N, 10_000)
BATCHES = (1000, 5000)
URL = "amqp://guest:guest@127.0.0.1:5672/"
SUFFIX = uuid.uuid4().hex[:10]
EXCHANGE, TOPIC = f"nk_bench_x_{SUFFIX}", f"nk_bench_t_{SUFFIX}"
OSLO_EXCHANGE, OSLO_TOPIC = f"nk_bench_ox_{SUFFIX}", f"nk_bench_ot_{SUFFIX}"
QUEUE, OSLO_QUEUE = f"{TOPIC}.info", f"{OSLO_TOPIC}.info"
PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}
CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
COMPACT = (",", ":")


def raw_message(i: int) -> aio_pika.Message:
    """What a hand-written oslo-compatible client sends: the same envelope and fields as notifykit's
    ``oslo`` format (``_unique_id``, ``_context_*``, payload), persistent, with a message_id."""
    message_id = str(uuid.uuid4())
    inner: dict[str, Any] = {
        "message_id": message_id, "publisher_id": "bench", "event_type": "backup.createprogress", "priority": "INFO",
        "timestamp": str(datetime.now(UTC).replace(tzinfo=None)), "_unique_id": message_id.replace("-", ""),
    }
    inner.update({f"_context_{k}": v for k, v in CTX.items()})
    inner["payload"] = {**PAYLOAD, "i": i}
    body = json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner, separators=COMPACT)}, separators=COMPACT)
    return aio_pika.Message(body.encode(), content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message_id)


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
    url = f"{URL}?exchange={EXCHANGE}&topic={TOPIC}"
    start = time.perf_counter()
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters) as notifier:
        for i in range(N):
            await notifier.info(CTX, "backup.createprogress", {**PAYLOAD, "i": i})
    elapsed = time.perf_counter() - start
    stats = notifier.stats()["amqp"]
    assert stats.sent == N and stats.dead_lettered == 0, stats
    assert await purge(QUEUE) == N
    return N / elapsed


async def bench_raw(batch: int, n: int) -> float:
    connection = await aio_pika.connect(URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE)
        start = time.perf_counter()
        if batch == 1:
            for i in range(n):
                await exchange.publish(raw_message(i), QUEUE)
        else:
            for first in range(0, n, batch):
                await asyncio.gather(*(exchange.publish(raw_message(i), QUEUE) for i in range(first, min(n, first + batch))))
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
        notifier.info(CTX, "backup.createprogress", PAYLOAD)  # connects and declares the queue, untimed
        start = time.perf_counter()
        for i in range(n):
            notifier.info(CTX, "backup.createprogress", {**PAYLOAD, "i": i})
        elapsed = time.perf_counter() - start
    finally:
        transport.cleanup()
    return n / elapsed


def progress(what: str, rate: float) -> None:
    print(f"# {what}: {rate:.0f} msgs/s", file=sys.stderr, flush=True)


async def bench_asyncio_clients(results: dict[str, float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(ROUNDS):
            for batch in BATCHES:
                key = f"raw_aio_pika_pipelined_{batch}"
                rate = await bench_raw(batch, N)
                progress(key, rate)
                results[key] = max(results.get(key, 0.0), rate)
            rate = await bench_notifykit(Path(tmp) / "dl.jsonl")
            progress("notifykit", rate)
            results["notifykit"] = max(results.get("notifykit", 0.0), rate)
        results["raw_aio_pika_one_by_one"] = await bench_raw(1, N_SLOW)
        progress("raw_aio_pika_one_by_one", results["raw_aio_pika_one_by_one"])


def main() -> dict[str, Any]:
    results: dict[str, float] = {}
    asyncio.run(setup())
    try:
        asyncio.run(bench_asyncio_clients(results))
        # oslo.messaging is blocking (kombu); it runs in the main thread, outside any event loop
        results["oslo_messaging_notifier"] = bench_oslo(N_SLOW)
        progress("oslo_messaging_notifier", results["oslo_messaging_notifier"])
        delivered = asyncio.run(purge(OSLO_QUEUE))
        assert delivered == N_SLOW + 1, f"oslo.messaging delivered {delivered} of {N_SLOW + 1}"
    finally:
        asyncio.run(teardown())
    best_raw_key = max((k for k in results if k.startswith("raw_aio_pika_pipelined")), key=results.__getitem__)
    best_raw, oslo, ours = results[best_raw_key], results["oslo_messaging_notifier"], results["notifykit"]
    return {
        "benchmark": "amqp_throughput",
        "n": N,
        "n_one_at_a_time_clients": N_SLOW,
        "rounds_best_of": ROUNDS,
        "python": platform.python_version(),
        "msgs_per_s": {k: round(v) for k, v in results.items()},
        "best_raw": best_raw_key,
        "ratio_notifykit_vs_best_raw_aio_pika": round(ours / best_raw, 3),
        "ratio_notifykit_vs_oslo_messaging": round(ours / oslo, 3),
        "ratio_best_raw_vs_oslo_messaging": round(best_raw / oslo, 3),
        "targets": {"vs_best_raw": 0.9, "vs_oslo": 2.0},
        "meets_targets": ours / best_raw >= 0.9 and ours / oslo >= 2.0,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
