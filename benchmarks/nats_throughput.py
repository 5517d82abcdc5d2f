"""Confirmed NATS JetStream throughput: notifykit vs hand-written nats-py loops.

All against the NATS on 127.0.0.1:4222 (JetStream on), in one run, same payload, to one
file-storage stream with a 2-minute duplicate window, every message with ``Nats-Msg-Id``:

* ``notifykit``: ``await notifier.info(...)`` N times, timed until ``aclose()`` returned,
  i.e. until JetStream acknowledged every message (``stats.sent == N`` is checked);
* ``raw_js_publish_async_B``: nats-py's own pipelined publish, ``js.publish_async`` of B
  messages (one PubAck future each), then the B futures gathered, with the headers
  notifykit sets (``Nats-Msg-Id``, ``event_type``, ``priority``, ``message_id``,
  ``content-type``) and the same JSON envelope serialised per message;
* ``raw_js_publish_one_by_one``: ``await js.publish(...)``, one PubAck at a time.

Several B are tried; the one with the best median is the anchor. notifykit and the
pipelined loops run ROUNDS interleaved rounds (the order rotates each round); a rate is the
median of its rounds, a ratio the median of the per-round ratios. The one-by-one loop
publishes ``min(N, 5000)`` once. The stream is purged (and its count checked) after each run.
Usage: ``python benchmarks/nats_throughput.py [N [ROUNDS]]`` (defaults 20000 and 5).
"""

from __future__ import annotations

import asyncio
import json
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
from _goals import goal, median, paired_ratio
from _throughput import EVENT, STATISTIC, Run, argv_int, best, interleaved, json_envelope, notify_loop, rates_json, record
from nats.js import api

N = argv_int(1, 20_000)
ROUNDS = argv_int(2, 5)
N_SLOW = min(N, 5_000)
BATCHES = (250, 1000, 4000)
SERVER = "nats://127.0.0.1:4222"
SUFFIX = uuid.uuid4().hex[:10]
STREAM, SUBJECT = f"NKBENCH_{SUFFIX}", f"nkbench.{SUFFIX}"
CAUSE = ("notifykit publishes through the same nats-py call as the anchor (nc.publish with a reply subject and "
         "headers); what it adds per message is the core's path (Notification.create: validation, payload JSON, "
         "id; the queue hand-off; the dispatcher)")


def message(i: int) -> tuple[bytes, dict[str, str]]:
    """What a hand-written client sends: notifykit's ``json`` envelope and headers, built per message."""
    message_id, body = json_envelope(i)
    headers = {"Nats-Msg-Id": message_id, "event_type": EVENT, "priority": "info", "message_id": message_id,
               "content-type": "application/json"}
    return body.encode(), headers


async def purge() -> int:
    nc = await nats.connect(SERVER)
    try:
        js = nc.jetstream()
        count = (await js.stream_info(STREAM)).state.messages
        await js.purge_stream(STREAM)
        return int(count)
    finally:
        await nc.close()


async def setup() -> None:
    nc = await nats.connect(SERVER)
    try:
        await nc.jetstream().add_stream(api.StreamConfig(name=STREAM, subjects=[f"{SUBJECT}.>"],
                                                         storage=api.StorageType.FILE, duplicate_window=120))
    finally:
        await nc.close()


async def teardown() -> None:
    nc = await nats.connect(SERVER)
    try:
        await nc.jetstream().delete_stream(STREAM)
    finally:
        await nc.close()


async def bench_notifykit(dead_letters: Path) -> float:
    elapsed = await notify_loop(f"{SERVER}/?stream={STREAM}&subject={SUBJECT}&block_timeout=600", N, dead_letters)
    assert await purge() == N
    return N / elapsed


async def bench_publish_async(batch: int, n: int) -> float:
    nc = await nats.connect(SERVER)
    try:
        js = nc.jetstream(publish_async_max_pending=batch)
        subject = f"{SUBJECT}.{EVENT}"
        start = time.perf_counter()
        for first in range(0, n, batch):
            futures = []
            for i in range(first, min(n, first + batch)):
                body, headers = message(i)
                futures.append(await js.publish_async(subject, body, headers=headers))
            acks = await asyncio.gather(*futures)
            assert all(not ack.duplicate for ack in acks)
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    assert await purge() == n
    return n / elapsed


async def bench_one_by_one(n: int) -> float:
    nc = await nats.connect(SERVER)
    try:
        js = nc.jetstream()
        subject = f"{SUBJECT}.{EVENT}"
        start = time.perf_counter()
        for i in range(n):
            body, headers = message(i)
            await js.publish(subject, body, headers=headers)
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    assert await purge() == n
    return n / elapsed


async def bench(rounds: dict[str, list[float]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        contenders: list[tuple[str, Run]] = [("notifykit", lambda: bench_notifykit(Path(tmp) / "dl.jsonl"))]
        for batch in BATCHES:
            contenders.append((f"raw_js_publish_async_{batch}", lambda b=batch: bench_publish_async(b, N)))  # type: ignore[misc]
        await bench_publish_async(1000, 2000)  # warm-up: connections, code paths
        await bench_notifykit(Path(tmp) / "dl.jsonl")
        await interleaved(contenders, ROUNDS, rounds)
        record(rounds, "raw_js_publish_one_by_one", await bench_one_by_one(N_SLOW))


def main() -> dict[str, Any]:
    rounds: dict[str, list[float]] = {}
    asyncio.run(setup())
    try:
        asyncio.run(bench(rounds))
    finally:
        asyncio.run(teardown())
    anchor = best(rounds, "raw_js_publish_async")
    ratio = paired_ratio(rounds["notifykit"], rounds[anchor])
    return {
        "benchmark": "nats_throughput",
        "n": N,
        "n_one_at_a_time_clients": N_SLOW,
        "rounds": ROUNDS,
        "statistic": STATISTIC,
        "python": platform.python_version(),
        **rates_json(rounds),
        "best_raw_js_publish_async": anchor,
        "ratio_notifykit_vs_best_raw_js_publish_async": round(ratio, 3),
        "ratio_notifykit_vs_one_by_one": round(median(rounds["notifykit"]) / median(rounds["raw_js_publish_one_by_one"]), 3),
        "goals": [
            goal("confirmed msgs/s vs the best pipelined nats-py js.publish_async loop", ratio, ">=", 1.0,
                 anchor=anchor, cause=CAUSE),
        ],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
