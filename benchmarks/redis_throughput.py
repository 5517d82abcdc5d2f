"""Confirmed Redis Streams throughput: notifykit vs a hand-written pipelined redis-py XADD loop.

All against the Redis on 127.0.0.1:6379, in one run, same payload, same entry fields
(the envelope and the ``json`` body notifykit writes), each contender on a stream key of
its own, deleted after its run (untimed):

* ``notifykit``: ``await notifier.info(...)`` N times in a tight loop, timed until
  ``aclose()`` returned, i.e. until Redis answered every XADD (``stats.sent == N`` checked);
* ``redis_py_pipelined_B``: redis-py's asyncio client, ``pipeline(transaction=False)`` of B
  ``XADD``s (each entry built per message: uuid4 id, timestamp, JSON body), then
  ``execute()``, every reply checked to be an entry id;
* ``transport_send_prebuilt`` (information): ``RedisTransport.send()`` alone, on batches of
  1,000 notifications created before the clock starts — the transport's own cost.

Rounds are interleaved (the order rotates each round); a rate is the median of its rounds,
a ratio the median of the per-round ratios. Every stream is read back with XLEN.
Usage: ``python benchmarks/redis_throughput.py [N [ROUNDS]]`` (defaults 20000 and 5).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio
from _goals import goal, median, paired_ratio, rotated

from notifykit import Notification, Notifier
from notifykit.transport import TransportSettings, WireFormat, parse_url
from notifykit.transports.redis import RedisTransport

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
BATCHES = (500, 1000)
URL = "redis://127.0.0.1:6379/0"
PREFIX = f"nk_bench_{uuid.uuid4().hex[:10]}"
PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}
CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
COMPACT = (",", ":")
CAUSE = ("the transport alone (transport_send_prebuilt) is the anchor's pipeline plus the entry fields; end to end "
         "the caller's notify() also does the core's per-notification work (Notification.create: validation, "
         "payload JSON, id, timestamp; the queue hand-off), on the core the event loop needs")
_keys = iter(range(1_000_000))


def fresh_key(name: str) -> str:
    return f"{PREFIX}_{name}_{next(_keys)}"


async def stored_and_deleted(key: str) -> int:
    client = redis.asyncio.Redis.from_url(URL)
    try:
        count = int(await client.xlen(key))
        await client.delete(key)
        return count
    finally:
        await client.aclose()


async def via_notifykit(n: int, dead_letters: Path) -> tuple[float, str]:
    key = fresh_key("notifykit")
    # block_timeout, close_timeout: on a loaded machine the tight loop waits for room in the queue
    url = f"{URL}?stream={key}&block_timeout=600"
    start = time.perf_counter()
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters, close_timeout=600) as notifier:
        for i in range(n):
            await notifier.info(CTX, "backup.createprogress", {**PAYLOAD, "i": i})
    elapsed = time.perf_counter() - start
    stats = notifier.stats()["redis"]
    assert stats.sent == n and stats.dead_lettered == 0, stats
    return elapsed, key


def raw_fields(i: int) -> dict[Any, Any]:
    """What a hand-written client appends: the same fields and the same JSON body as notifykit."""
    message_id = str(uuid.uuid4())
    timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
    body = json.dumps({"message_id": message_id, "event_type": "backup.createprogress", "priority": "info",
                       "publisher_id": "bench", "timestamp": timestamp, "context": CTX,
                       "payload": {**PAYLOAD, "i": i}}, separators=COMPACT)
    return {"message_id": message_id, "event_type": "backup.createprogress", "priority": "info",
            "content-type": "application/json", "body": body}


async def via_redis_py(batch: int, n: int) -> tuple[float, str]:
    key = fresh_key(f"raw{batch}")
    client = redis.asyncio.Redis.from_url(URL)
    try:
        await client.ping()  # connected before the clock starts, as notifykit's open() is not either
        start = time.perf_counter()
        for first in range(0, n, batch):
            pipe = client.pipeline(transaction=False)
            for i in range(first, min(n, first + batch)):
                pipe.xadd(key, raw_fields(i))
            replies = await pipe.execute()
            assert all(isinstance(r, bytes) for r in replies)
        elapsed = time.perf_counter() - start
    finally:
        await client.aclose()
    return elapsed, key


async def via_transport(n: int) -> tuple[float, str]:
    key = fresh_key("transport")
    settings = TransportSettings.build("bench", parse_url(URL), WireFormat.JSON, ("notifications",), {"stream": key})
    transport = RedisTransport.from_settings(settings)
    batches = [[Notification.create("backup.createprogress", {**PAYLOAD, "i": i}, publisher_id="bench", context=CTX)
                for i in range(first, min(n, first + RedisTransport.max_batch_size))]
               for first in range(0, n, RedisTransport.max_batch_size)]
    await transport.open()
    try:
        start = time.perf_counter()
        for batch in batches:
            await transport.send(batch)
        elapsed = time.perf_counter() - start
    finally:
        await transport.aclose()
    return elapsed, key


def progress(what: str, rate: float) -> None:
    print(f"# {what}: {rate:.0f} msgs/s", file=sys.stderr, flush=True)


async def main() -> None:
    rounds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = Path(tmp) / "dl.jsonl"
        contenders: list[tuple[str, Callable[[], Awaitable[tuple[float, str]]]]] = [
            ("notifykit", lambda: via_notifykit(N, dead_letters)),
            ("transport_send_prebuilt", lambda: via_transport(N)),
        ]
        for batch in BATCHES:
            contenders.append((f"redis_py_pipelined_{batch}", lambda b=batch: via_redis_py(b, N)))  # type: ignore[misc]
        for warm_up in (via_redis_py(1000, 2000), via_notifykit(2000, dead_letters)):  # connections, code paths
            await stored_and_deleted((await warm_up)[1])
        for number in range(ROUNDS):  # interleaved, so drift of a shared machine hits all alike
            for name, run in rotated(contenders, number):
                elapsed, key = await run()
                assert await stored_and_deleted(key) == N, name
                rounds.setdefault(name, []).append(N / elapsed)
                progress(name, N / elapsed)
    rates = {k: median(v) for k, v in rounds.items()}
    best = max((k for k in rates if k.startswith("redis_py_pipelined")), key=rates.__getitem__)
    ratio = paired_ratio(rounds["notifykit"], rounds[best])
    alone = paired_ratio(rounds["transport_send_prebuilt"], rounds[best])
    print(json.dumps({
        "benchmark": "redis_throughput",
        "n": N,
        "rounds": ROUNDS,
        "statistic": "median of interleaved rounds",
        "redis": "127.0.0.1:6379 (the machine's Redis)",
        "msgs_per_s": {k: round(v) for k, v in rates.items()},
        "rounds_msgs_per_s": {k: [round(x) for x in v] for k, v in rounds.items()},
        "best_anchor": best,
        "ratio_notifykit_vs_best_redis_py": round(ratio, 3),
        "ratio_transport_alone": round(alone, 3),
        "goals": [
            goal("XADD-confirmed msgs/s, tight caller loop, vs the best pipelined redis-py loop", ratio, ">=", 1.0,
                 anchor=best, cause=CAUSE),
        ],
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
