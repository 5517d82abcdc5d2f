"""``TransportStats.spooled_bytes`` (what a transport's unconfirmed records take in the spool)
and ``TransportStats.delivery_latency`` (seconds from notify() to the transport's
confirmation): exact against the records' frames and the sent count, through stalls, drops,
partial batches, a replay and a wall clock that stepped."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import Notification, Notifier
from notifykit._log import frame_notification
from notifykit.metrics import LATENCY_BUCKETS, LatencyHistogram
from notifykit.testing import MemoryTransport


def frames(name: str, notifications: list[Notification]) -> int:
    """Bytes of the spool records of ``notifications`` (a record's size does not depend on its seq)."""
    return sum(len(frame_notification(0, name.encode(), n)) for n in notifications)


def durable(tmp_path: Path, query: str = "") -> Notifier:
    return Notifier.from_url(f"memory://?name=rabbit&durable=true&max_batch=1{query}", publisher_id="t",
                             spool=tmp_path / "spool", dead_letters=tmp_path / "dl.jsonl", close_timeout=0.05)


def memory(notifier: Notifier) -> MemoryTransport:
    transport = notifier.transports["rabbit"]
    assert isinstance(transport, MemoryTransport)
    return transport


async def until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


@pytest.mark.asyncio
async def test_spooled_bytes_are_the_unconfirmed_records_and_zero_once_delivered(tmp_path: Path) -> None:
    notifier = durable(tmp_path)
    async with notifier:
        transport = memory(notifier)
        transport.stall()  # the broker is down: everything waits, the first one in flight
        sent = [await notifier.info({}, "backup.create.end", {"i": i, "text": "é" * i}) for i in range(6)]
        await wait_all_tasks_blocked()
        stats = notifier.stats()["rabbit"]
        assert stats.sent == 0 and stats.in_flight == 1 and stats.spooled == 5
        assert stats.spooled_bytes == frames("rabbit", sent) > 0  # the batch in flight included: it is on disk
        transport.resume()
        await until(lambda: notifier.stats()["rabbit"].sent == 6)
        stats = notifier.stats()["rabbit"]
        assert stats.spooled_bytes == 0 and stats.spooled == 0
        assert stats.delivery_latency.count == stats.sent == 6


@pytest.mark.asyncio
async def test_non_durable_transports_have_no_spooled_bytes(tmp_path: Path) -> None:
    async with Notifier.from_url("memory://?name=rabbit", publisher_id="t", dead_letters=tmp_path / "dl.jsonl",
                                 spool=tmp_path / "spool") as notifier:
        memory(notifier).stall()
        for i in range(3):
            await notifier.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
        assert notifier.stats()["rabbit"].spooled_bytes == 0
        memory(notifier).resume()


@pytest.mark.asyncio
async def test_dropped_records_leave_the_spooled_bytes(tmp_path: Path) -> None:
    """``drop_oldest`` on a full spool: what remains is exactly what is delivered later."""
    notifier = durable(tmp_path, "&spool_max_messages=3&overflow=drop_oldest")
    async with notifier:
        transport = memory(notifier)
        first = await notifier.info({}, "e.v", {"i": -1})
        await until(lambda: transport.delivered == 1)
        transport.stall()
        for i in range(8):
            await notifier.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
        stats = notifier.stats()["rabbit"]
        assert stats.dropped > 0
        waiting = stats.spooled_bytes
        transport.resume()
        await until(lambda: notifier.stats()["rabbit"].in_flight + notifier.stats()["rabbit"].spooled == 0)
        assert waiting == frames("rabbit", [n for n in transport.messages if n is not first])
        assert notifier.stats()["rabbit"].spooled_bytes == 0


@pytest.mark.asyncio
async def test_a_replayed_spool_counts_its_bytes_and_its_age(tmp_path: Path) -> None:
    first = durable(tmp_path)
    async with first:
        memory(first).stall()
        left = [await first.info({}, "e.v", {"i": i}) for i in range(4)]
        await wait_all_tasks_blocked()
    closing = first.stats()["rabbit"]
    assert closing.spool_full == 0 and closing.spooled_bytes == frames("rabbit", left)

    second = durable(tmp_path)
    memory(second).stall()  # held before the start: the replay waits
    async with second:
        await wait_all_tasks_blocked()
        stats = second.stats()["rabbit"]
        assert stats.replayed == 4 and stats.spooled_bytes == closing.spooled_bytes
        memory(second).resume()
        await until(lambda: second.stats()["rabbit"].sent == 4)
        stats = second.stats()["rabbit"]
        assert stats.spooled_bytes == 0 and stats.delivery_latency.count == 4
        oldest = min(n.timestamp for n in left)
        assert stats.delivery_latency.sum >= 0 and stats.delivery_latency.sum <= 4 * (
            datetime.now(UTC) - oldest).total_seconds()


@pytest.mark.asyncio
async def test_latency_counts_each_sent_notification_once_whatever_the_path(tmp_path: Path) -> None:
    """Sent at once, after retries, partly (a batch error) and through bisection: count == sent."""
    async with Notifier.from_url("memory://?name=rabbit&reject=bad.*&max_batch=10", publisher_id="t",
                                 dead_letters=tmp_path / "dl.jsonl") as notifier:
        transport = memory(notifier)
        transport.fail_next(2)
        for i in range(5):
            await notifier.info({}, "good.e" if i % 2 else "bad.e", {"i": i})
        await until(lambda: (s := notifier.stats()["rabbit"]).sent + s.dead_lettered == 5)
        transport.fail_next(1, permanent=True)  # a permanent error: the batch is bisected
        for i in range(6):
            await notifier.info({}, "good.e", {"i": i})
        await until(lambda: (s := notifier.stats()["rabbit"]).sent + s.dead_lettered == 11)
        stats = notifier.stats()["rabbit"]
        assert stats.dead_lettered >= 3 and stats.sent == transport.delivered
        assert stats.delivery_latency.count == stats.sent
        assert 0 <= stats.delivery_latency.sum < 10 * stats.sent


@pytest.mark.asyncio
async def test_latency_of_a_re_sent_old_notification_and_of_a_clock_stepped_back(tmp_path: Path) -> None:
    async with Notifier.from_url("memory://?name=rabbit", publisher_id="t", dead_letters=tmp_path / "dl.jsonl") as n:
        now = datetime.now(UTC)
        await n.emit(Notification.create("e.v", {}, publisher_id="t", timestamp=now - timedelta(hours=1)))
        await until(lambda: n.stats()["rabbit"].sent == 1)
        histogram = n.stats()["rabbit"].delivery_latency
        assert histogram.counts[-1] == 1 and histogram.sum >= 3600  # above the last bound: +Inf only
        assert histogram.quantile(0.5) == math.inf
        await n.emit(Notification.create("e.v", {}, publisher_id="t", timestamp=now + timedelta(hours=1)))
        await until(lambda: n.stats()["rabbit"].sent == 2)
        histogram = n.stats()["rabbit"].delivery_latency
        assert histogram.counts[0] == 1 and histogram.count == 2  # a negative age counts as 0
        assert 3600 <= histogram.sum < 3700


def test_histogram_round_trips_through_the_status_file_form() -> None:
    histogram = LatencyHistogram()
    stamps = [datetime.now(UTC) - timedelta(seconds=s) for s in (0, 0.2, 0.2, 7, 400)]
    histogram.record([Notification.create("e.v", {}, publisher_id="t", timestamp=t) for t in stamps])
    data = histogram.as_dict()
    assert list(data["buckets"]) == [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
    assert data["count"] == 5 and data["buckets"]["+Inf"] == 5 and data["buckets"]["0.25"] >= 3
    assert LatencyHistogram.from_dict(data) == histogram
    assert histogram.quantile(0.5) == 0.25 and histogram.quantile(0.99) == math.inf


@pytest.mark.parametrize("data", [
    None, [], {"buckets": {"0.001": 1}, "sum": 0, "count": 1},
    {"buckets": dict.fromkeys([*(repr(b) for b in LATENCY_BUCKETS), "+Inf"], 2), "sum": -1.0, "count": 2},
    {"buckets": dict(zip([*(repr(b) for b in LATENCY_BUCKETS), "+Inf"], range(17, 0, -1), strict=True)), "sum": 1},
    {"buckets": dict.fromkeys([*(repr(b) for b in LATENCY_BUCKETS), "+Inf"], 2), "sum": 1.0, "count": 3},
    {"buckets": dict.fromkeys([*(repr(b) for b in LATENCY_BUCKETS), "+Inf"], True), "sum": 1.0},
])
def test_histogram_from_a_damaged_status_file_is_refused(data: object) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram.from_dict(data)


@pytest.mark.parametrize("size", [2, 12])  # one at a time, and the batch path
def test_a_batch_with_a_timestamp_from_the_future_counts_it_as_zero(size: int) -> None:
    now = datetime.now(UTC)
    batch = [Notification.create("e.v", {}, publisher_id="t", timestamp=now + timedelta(hours=1))]
    batch += [Notification.create("e.v", {}, publisher_id="t", timestamp=now - timedelta(seconds=2))
              for _ in range(size - 1)]
    histogram = LatencyHistogram()
    histogram.record(batch)
    assert histogram.count == size and histogram.counts[0] == 1
    assert histogram.counts[LATENCY_BUCKETS.index(2.5)] == size - 1  # 2 s: within le=2.5
    assert 2 * (size - 1) <= histogram.sum < 2.5 * (size - 1)
