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
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio
from _goals import goal, paired_ratio
from _throughput import EVENT, STATISTIC, Run, argv_int, best, interleaved, json_envelope, notify_loop, prebuilt, rates_json, send_all

from notifykit.transport import TransportSettings, WireFormat, parse_url
from notifykit.transports.redis import RedisTransport

N = argv_int(1, 20_000)
ROUNDS = argv_int(2, 5)
BATCHES = (500, 1000)
URL = "redis://127.0.0.1:6379/0"
PREFIX = f"nk_bench_{uuid.uuid4().hex[:10]}"
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
    return await notify_loop(f"{URL}?stream={key}&block_timeout=600", n, dead_letters), key


def raw_fields(i: int) -> dict[Any, Any]:
    """What a hand-written client appends: the same fields and the same JSON body as notifykit."""
    message_id, body = json_envelope(i)
    return {"message_id": message_id, "event_type": EVENT, "priority": "info",
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
    return await send_all(transport, prebuilt(n, RedisTransport.max_batch_size)), key


def checked(name: str, run: Callable[[], Awaitable[tuple[float, str]]]) -> Run:
    """The run's rate, once XLEN counted all N entries of its stream (then deleted, untimed)."""
    async def rate() -> float:
        elapsed, key = await run()
        assert await stored_and_deleted(key) == N, name
        return N / elapsed
    return rate


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = Path(tmp) / "dl.jsonl"
        runs: list[tuple[str, Callable[[], Awaitable[tuple[float, str]]]]] = [
            ("notifykit", lambda: via_notifykit(N, dead_letters)),
            ("transport_send_prebuilt", lambda: via_transport(N)),
        ]
        for batch in BATCHES:
            runs.append((f"redis_py_pipelined_{batch}", lambda b=batch: via_redis_py(b, N)))  # type: ignore[misc]
        for warm_up in (via_redis_py(1000, 2000), via_notifykit(2000, dead_letters)):  # connections, code paths
            await stored_and_deleted((await warm_up)[1])
        rounds = await interleaved([(name, checked(name, run)) for name, run in runs], ROUNDS)
    anchor = best(rounds, "redis_py_pipelined")
    ratio = paired_ratio(rounds["notifykit"], rounds[anchor])
    alone = paired_ratio(rounds["transport_send_prebuilt"], rounds[anchor])
    print(json.dumps({
        "benchmark": "redis_throughput",
        "n": N,
        "rounds": ROUNDS,
        "statistic": STATISTIC,
        "redis": "127.0.0.1:6379 (the machine's Redis)",
        **rates_json(rounds),
        "best_anchor": anchor,
        "ratio_notifykit_vs_best_redis_py": round(ratio, 3),
        "ratio_transport_alone": round(alone, 3),
        "goals": [
            goal("XADD-confirmed msgs/s, tight caller loop, vs the best pipelined redis-py loop", ratio, ">=", 1.0,
                 anchor=anchor, cause=CAUSE),
        ],
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
