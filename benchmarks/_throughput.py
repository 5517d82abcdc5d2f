"""What the message-throughput benchmarks share: the notification, the loops, the rounds.

Every contender sends the same notification (PAYLOAD with a sequence number, CTX), and a
hand-written anchor builds, per message, the same ``json`` envelope notifykit sends
(``json_envelope``), so a ratio compares the clients, not what they carry. ``interleaved``
runs the rounds as _goals describes (every contender once a round, in an order that
rotates); a script keeps only its anchors, its runs and the figures of its JSON.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _goals import median, rotated

from notifykit import Notification, Notifier
from notifykit.transport import Transport

__all__ = ["COMPACT", "CTX", "EVENT", "PAYLOAD", "STATISTIC", "Run", "argv_int", "best", "interleaved",
           "json_envelope", "notify_loop", "numbered", "prebuilt", "rates_json", "record", "send_all"]

EVENT = "backup.createprogress"
PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}
CTX = {"request_id": "req-1", "project_id": "p-1", "user_id": "u-1"}
COMPACT = (",", ":")
STATISTIC = "median of interleaved rounds"

#: One timed run of a contender, returning its rate in messages per second.
Run = Callable[[], Awaitable[float]]


def argv_int(index: int, default: int) -> int:
    """A count from the command line (``script.py [N [ROUNDS]]``), else its default."""
    return int(sys.argv[index]) if len(sys.argv) > index else default


def numbered(i: int) -> dict[str, Any]:
    """The payload of the i-th notification: each one differs, as a real stream's do."""
    return {**PAYLOAD, "i": i}


def json_envelope(i: int, payload: Callable[[int], dict[str, Any]] = numbered,
                  context: Mapping[str, Any] = CTX) -> tuple[str, str]:
    """(message_id, body): notifykit's ``json`` envelope, built per message as a hand-written client would."""
    message_id = str(uuid.uuid4())
    timestamp = datetime.now(UTC).isoformat(timespec="microseconds")
    body = json.dumps({"message_id": message_id, "event_type": EVENT, "priority": "info", "publisher_id": "bench",
                       "timestamp": timestamp, "context": context, "payload": payload(i)}, separators=COMPACT)
    return message_id, body


async def notify_loop(url: str, n: int, dead_letters: Path) -> float:
    """Seconds from the first of n ``notify()`` in a tight loop until ``aclose()`` returned (all confirmed).

    block_timeout in the URL and close_timeout: on a loaded machine the loop waits for room in
    the queue, and draining the last of it may take longer than the defaults.
    """
    start = time.perf_counter()
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters, close_timeout=600) as notifier:
        for i in range(n):
            await notifier.info(CTX, EVENT, numbered(i))
    elapsed = time.perf_counter() - start
    (stats,) = notifier.stats().values()
    assert stats.sent == n and stats.dead_lettered == 0, stats
    return elapsed


def prebuilt(n: int, size: int, payload: Callable[[int], dict[str, Any]] = numbered,
             context: Mapping[str, Any] = CTX) -> list[list[Notification]]:
    """n notifications in batches of ``size``, created (validated, payload serialised) before any clock starts."""
    return [[Notification.create(EVENT, payload(i), publisher_id="bench", context=context)
             for i in range(first, min(n, first + size))] for first in range(0, n, size)]


async def send_all(transport: Transport, batches: Sequence[Sequence[Notification]]) -> float:
    """Seconds ``transport.send()`` takes for every batch: the transport's own cost (connected untimed)."""
    await transport.open()
    try:
        start = time.perf_counter()
        for batch in batches:
            await transport.send(batch)
        return time.perf_counter() - start
    finally:
        await transport.aclose()


def record(rounds: dict[str, list[float]], name: str, rate: float) -> None:
    """Keeps one rate of a contender and shows it on stderr (stdout is the JSON)."""
    rounds.setdefault(name, []).append(rate)
    print(f"# {name}: {rate:.0f} msgs/s", file=sys.stderr, flush=True)


async def interleaved(contenders: Sequence[tuple[str, Run]], rounds: int,
                      results: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Every contender's rates, ``rounds`` rounds in an order that rotates, so drift of a shared
    machine hits all alike; added to ``results`` when given."""
    results = {} if results is None else results
    for number in range(rounds):
        for name, run in rotated(contenders, number):
            record(results, name, await run())
    return results


def best(rounds: Mapping[str, Sequence[float]], *prefixes: str) -> str:
    """The anchor: among the contenders whose names start with one of ``prefixes``, the best median."""
    return max((k for k in rounds if k.startswith(prefixes)), key=lambda k: median(rounds[k]))


def rates_json(rounds: Mapping[str, Sequence[float]], digits: int | None = None) -> dict[str, Any]:
    """The JSON's ``msgs_per_s`` (median of the rounds) and ``rounds_msgs_per_s`` (each round's)."""
    return {"msgs_per_s": {k: round(median(v), digits) for k, v in rounds.items()},
            "rounds_msgs_per_s": {k: [round(x, digits) for x in v] for k, v in rounds.items()}}
