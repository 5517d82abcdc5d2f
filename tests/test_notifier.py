"""The Notifier and its dispatchers, proven against the memory transport."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import (
    InvalidNotificationError,
    Notifier,
    NotifierClosedError,
    Priority,
    QueueFullError,
    RetryPolicy,
    TransportConfig,
    TransportState,
)
from notifykit.deadletters import read_dead_letters
from notifykit.testing import MemoryTransport

from .helpers import FakeClock

pytestmark = pytest.mark.asyncio


def memory(notifier: Notifier, name: str = "memory") -> MemoryTransport:
    transport = notifier.transports[name]
    assert isinstance(transport, MemoryTransport)
    return transport


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the event loop until ``condition`` holds (bounded, so a bug fails instead of hanging)."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.001)


def notifier_for(url: str, dead_letter_path: Path, clock: FakeClock | None = None, **kw: Any) -> Notifier:
    return Notifier.from_url(url, publisher_id="test.host", dead_letters=dead_letter_path, clock=clock, **kw)


async def test_delivers_in_order_and_counts(dead_letter_path: Path) -> None:
    async with notifier_for("memory://", dead_letter_path) as n:
        for i in range(250):
            await n.info({"request_id": f"r{i}"}, "backup.create.start", {"i": i})
        transport = memory(n)
    assert [m.payload["i"] for m in transport.messages] == list(range(250))
    assert transport.opened and transport.closed
    stats = n.stats()["memory"]
    assert (stats.enqueued, stats.sent, stats.dead_lettered, stats.dropped) == (250, 250, 0, 0)
    assert stats.state is TransportState.CLOSED
    assert max(transport.batch_sizes) <= 100


async def test_priority_methods_and_publisher(dead_letter_path: Path) -> None:
    async with notifier_for("memory://", dead_letter_path) as n:
        for method in (n.audit, n.debug, n.info, n.warn, n.warning, n.error, n.critical, n.sample):
            await method({}, "x.y", {})
        await n.prepare(publisher_id="backup.host9").error({}, "backup.create.error", {"fail_reason": "x"})
    got = [(m.priority, m.publisher_id) for m in memory(n).messages]
    assert [p for p, _ in got] == [Priority.AUDIT, Priority.DEBUG, Priority.INFO, Priority.WARN, Priority.WARN,
                                   Priority.ERROR, Priority.CRITICAL, Priority.SAMPLE, Priority.ERROR]
    assert got[-1][1] == "backup.host9" and got[0][1] == "test.host"


async def test_notify_requires_open_notifier(dead_letter_path: Path) -> None:
    n = notifier_for("memory://", dead_letter_path)
    with pytest.raises(NotifierClosedError, match="async with"):
        await n.info({}, "a.b", {})
    async with n:
        pass
    with pytest.raises(NotifierClosedError, match="closed"):
        await n.info({}, "a.b", {})


async def test_bad_input_raises_at_call_site_and_enqueues_nothing(dead_letter_path: Path) -> None:
    async with notifier_for("memory://", dead_letter_path) as n:
        with pytest.raises(InvalidNotificationError, match=r"not JSON-serialisable: payload\.when"):
            await n.info({}, "backup.create.start", {"when": object()})
        with pytest.raises(InvalidNotificationError, match="event_type"):
            await n.info({}, "not an event", {})
    assert n.stats()["memory"].enqueued == 0 and memory(n).messages == []


async def test_block_policy_waits_for_room(dead_letter_path: Path) -> None:
    async with notifier_for("memory://?queue_size=2&batch_size=1&block_timeout=none", dead_letter_path) as n:
        transport = memory(n)
        transport.stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()  # worker took #0 and is stuck in send()
        await n.info({}, "e.v", {"i": 1})
        await n.info({}, "e.v", {"i": 2})  # queue now full
        returned = anyio.Event()

        async def fourth() -> None:
            await n.info({}, "e.v", {"i": 3})
            returned.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(fourth)
            await wait_all_tasks_blocked()
            assert not returned.is_set(), "notify() must wait while the queue is full"
            assert n.stats()["memory"].queue_depth == 2
            transport.resume()
        assert returned.is_set()
    assert [m.payload["i"] for m in transport.messages] == [0, 1, 2, 3]


async def test_block_timeout_raises_queue_full_and_counts_it_refused(dead_letter_path: Path) -> None:
    async with notifier_for("memory://?queue_size=1&batch_size=1&block_timeout=0.05", dead_letter_path,
                            close_timeout=0) as n:
        memory(n).stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        await n.info({}, "e.v", {"i": 1})
        with pytest.raises(QueueFullError, match=r"transport\(s\) 'memory' had no room within block_timeout") as caught:
            await n.info({}, "e.v", {"i": 2})  # no room within 50 ms: the caller's own policy
        assert caught.value.notification.payload == {"i": 2} and caught.value.transports == ("memory",)
        stats = n.stats()["memory"]
        assert (stats.enqueued, stats.refused, stats.dead_lettered) == (2, 1, 0)
    assert [r["message"]["payload"] for r in read_dead_letters(dead_letter_path)] == [{"i": 0}, {"i": 1}]


@pytest.mark.parametrize(("policy", "expected"), [("drop_newest", [0, 1, 2]), ("drop_oldest", [0, 4, 5])])
async def test_drop_policies(dead_letter_path: Path, policy: str, expected: list[int]) -> None:
    async with notifier_for(f"memory://?queue_size=2&batch_size=1&overflow={policy}", dead_letter_path) as n:
        transport = memory(n)
        transport.stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        for i in range(1, 6):
            await n.info({}, "e.v", {"i": i})  # never waits
        stats = n.stats()["memory"]
        assert stats.dropped == 3 and stats.queue_depth == 2
        transport.resume()
    assert [m.payload["i"] for m in transport.messages] == expected


async def test_transient_failures_are_retried_with_backoff(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = "memory://?retry_initial_delay=1&retry_max_delay=4&circuit_failure_threshold=100"
    async with notifier_for(url, dead_letter_path, fake_clock) as n:
        transport = memory(n)
        transport.fail_next(5)
        await n.info({}, "e.v", {"i": 1})
    assert [m.payload for m in transport.messages] == [{"i": 1}]
    assert transport.attempts == 6
    policy = RetryPolicy(initial_delay=1, max_delay=4)
    assert len(fake_clock.sleeps) == 5
    for attempt, slept in enumerate(fake_clock.sleeps):
        assert 0 <= slept <= policy.ceiling(attempt)
    stats = n.stats()["memory"]
    assert (stats.sent, stats.retried, stats.dead_lettered) == (1, 5, 0)


async def test_retry_after_is_honoured_and_capped(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = "memory://?retry_initial_delay=0&retry_max_delay=30"
    async with notifier_for(url, dead_letter_path, fake_clock) as n:
        memory(n).fail_next(2, retry_after=12.5)
        await n.info({}, "e.v", {})
        await until(lambda: len(memory(n).messages) == 1)
        memory(n).fail_next(1, retry_after=3600)
        await n.info({}, "e.v", {})
    assert fake_clock.sleeps == [12.5, 12.5, 30.0]


async def test_exhausted_retries_dead_letter(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = "memory://?retry_initial_delay=1&retry_max_delay=2&retry_max_elapsed=10&circuit_failure_threshold=1000"
    async with notifier_for(url, dead_letter_path, fake_clock) as n:
        memory(n).fail_next(10**6)
        await n.info({}, "e.v", {"lost": False})
    stats = n.stats()["memory"]
    assert stats.dead_lettered == 1 and stats.sent == 0
    assert fake_clock.t >= 10
    (record,) = read_dead_letters(dead_letter_path)
    assert record["transport"] == "memory"
    assert record["reason"].startswith("gave up after") and "memory transport told to fail" in record["reason"]
    assert record["message"]["payload"] == {"lost": False}


async def test_permanent_failure_dead_letters_without_retry(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    async with notifier_for("memory://?batch_size=1", dead_letter_path, fake_clock) as n:
        memory(n).fail_next(1, permanent=True)
        await n.info({}, "e.v", {"n": 1})
        await n.info({}, "e.v", {"n": 2})
    assert fake_clock.sleeps == []
    assert [m.payload for m in memory(n).messages] == [{"n": 2}]
    (record,) = read_dead_letters(dead_letter_path)
    assert record["reason"].startswith("permanent error") and record["message"]["payload"] == {"n": 1}


async def test_partial_batch_failure(dead_letter_path: Path) -> None:
    async with notifier_for("memory://?reject=bad.*", dead_letter_path) as n:
        memory(n).stall()
        for event in ["ok.a", "bad.b", "ok.c", "bad.d"]:
            await n.info({}, event, {})
        memory(n).resume()
    assert memory(n).event_types == ["ok.a", "ok.c"]
    stats = n.stats()["memory"]
    assert (stats.sent, stats.dead_lettered) == (2, 2)
    assert sorted(r["message"]["event_type"] for r in read_dead_letters(dead_letter_path)) == ["bad.b", "bad.d"]


async def test_circuit_breaker_stops_hammering(dead_letter_path: Path, fake_clock: FakeClock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    url = ("memory://?retry_initial_delay=0.01&retry_max_delay=0.02&retry_max_elapsed=100"
           "&circuit_failure_threshold=3&circuit_reset_timeout=10")
    async with notifier_for(url, dead_letter_path, fake_clock) as n:
        transport = memory(n)
        transport.clock = fake_clock.now
        transport.fail_next(10**6)
        await n.info({}, "e.v", {})
        await until(lambda: n.stats()["memory"].dead_lettered == 1)
    times = transport.attempt_times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g < 1 for g in gaps[:2])  # plain backoff before the threshold
    assert all(g >= 10 - 1e-9 for g in gaps[2:])  # then one trial per reset_timeout
    assert len(times) <= 3 + 100 / 10 + 1
    assert "circuit open" in caplog.text


async def test_circuit_closes_after_successful_trial(dead_letter_path: Path, fake_clock: FakeClock) -> None:
    url = "memory://?retry_initial_delay=0.01&circuit_failure_threshold=2&circuit_reset_timeout=5"
    async with notifier_for(url, dead_letter_path, fake_clock) as n:
        transport = memory(n)
        transport.fail_next(3)
        await n.info({}, "e.v", {"i": 1})
        await until(lambda: len(transport.messages) == 1)
        assert n.stats()["memory"].state is TransportState.CONNECTED
        before = len(fake_clock.sleeps)
        await n.info({}, "e.v", {"i": 2})
    assert len(fake_clock.sleeps) == before  # closed again: next send went straight through
    assert len(transport.messages) == 2


async def test_unexpected_transport_exception_does_not_kill_worker(dead_letter_path: Path,
                                                                   fake_clock: FakeClock) -> None:
    async with notifier_for("memory://", dead_letter_path, fake_clock) as n:
        transport = memory(n)
        original = transport.send
        calls = 0

        async def flaky(batch: Any) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise KeyError("bug")
            await original(batch)

        transport.send = flaky  # type: ignore[method-assign]
        await n.info({}, "e.v", {})
    assert len(transport.messages) == 1 and n.stats()["memory"].retried == 1


async def test_drain_on_close(dead_letter_path: Path) -> None:
    async with notifier_for("memory://?delay=0.001&max_batch=10", dead_letter_path) as n:
        for i in range(300):
            await n.info({}, "e.v", {"i": i})
        assert n.stats()["memory"].queue_depth > 0
    assert len(memory(n).messages) == 300
    assert not dead_letter_path.exists()


async def test_close_deadline_dead_letters_the_rest(dead_letter_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="notifykit")
    n = notifier_for("memory://?max_batch=5", dead_letter_path)
    async with n:
        memory(n).stall()
        for i in range(20):
            await n.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
        final = await n.aclose(timeout=0.05)
    assert final["memory"].dead_lettered == 20 and final["memory"].sent == 0
    records = list(read_dead_letters(dead_letter_path))
    assert sorted(r["message"]["payload"]["i"] for r in records) == list(range(20))
    assert all("close deadline" in r["reason"] for r in records)
    assert "20 notification(s) undelivered at close" in caplog.text
    assert "enqueued=20 sent=0 retried=0 dropped=0 dead_lettered=20" in caplog.text


async def test_stuck_transport_does_not_delay_the_other(dead_letter_path: Path) -> None:
    config = {
        "transports": {
            "stuck": {"url": "memory://stuck", "queue_size": 10, "overflow": "drop_newest"},
            "healthy": {"url": "memory://healthy"},
        }
    }
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path)
    async with n:
        memory(n, "stuck").stall()
        with anyio.fail_after(5):  # generous: the point is that it returns at all
            for i in range(1000):
                await n.info({}, "e.v", {"i": i})
            while len(memory(n, "healthy").messages) < 1000:
                await anyio.sleep(0.001)
        assert n.stats()["stuck"].dropped > 0
        await n.aclose(timeout=0.05)
    assert [m.payload["i"] for m in memory(n, "healthy").messages] == list(range(1000))
    stuck = n.stats()["stuck"]
    assert stuck.dropped + stuck.dead_lettered + stuck.sent == 1000


async def test_filters(dead_letter_path: Path) -> None:
    config = {
        "transports": {
            "ends": {"url": "memory://a", "filter": {"event_types": ["backup.*.end"]}},
            "errors": {"url": "memory://b", "filter": {"min_priority": "error"}},
            "all": {"url": "memory://c"},
        }
    }
    async with Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path) as n:
        await n.info({}, "backup.create.start", {})
        await n.info({}, "backup.create.end", {})
        await n.error({}, "backup.create.error", {})
        await n.critical({}, "volume.delete.end", {})
    assert memory(n, "ends").event_types == ["backup.create.end"]
    assert memory(n, "errors").event_types == ["backup.create.error", "volume.delete.end"]
    assert len(memory(n, "all").messages) == 4
    assert n.stats()["ends"].filtered == 3 and n.stats()["errors"].filtered == 2


async def test_one_encoding_shared_by_transports_with_same_format(dead_letter_path: Path) -> None:
    config = {"transports": {name: {"url": f"memory://{name}", "format": "oslo"} for name in ("a", "b")}}
    async with Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path) as n:
        await n.info({}, "e.v", {"x": 1})
    assert memory(n, "a").bodies[0] is memory(n, "b").bodies[0]


async def test_duplicate_names_are_suffixed(dead_letter_path: Path) -> None:
    n = Notifier([TransportConfig.from_url("memory://"), TransportConfig.from_url("memory://")],
                 publisher_id="t", dead_letters=dead_letter_path)
    assert list(n.transports) == ["memory", "memory-2"]


async def test_cancelled_caller_still_dead_letters_queue(dead_letter_path: Path) -> None:
    n = notifier_for("memory://", dead_letter_path, close_timeout=0.05)
    with anyio.CancelScope() as scope:
        async with n:
            memory(n).stall()
            for i in range(5):
                await n.info({}, "e.v", {"i": i})
            scope.cancel()
            await anyio.sleep(1)
    assert len(list(read_dead_letters(dead_letter_path))) == 5


async def test_log_transport_writes_json_lines(tmp_path: Path, dead_letter_path: Path) -> None:
    path = tmp_path / "out" / "events.jsonl"
    async with notifier_for(f"log://{path}", dead_letter_path) as n:
        await n.info({}, "backup.create.start", {"a": 1})
        await n.error({}, "backup.create.error", {"fail_reason": "boom"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x["event_type"], x["priority"]) for x in lines] == [("backup.create.start", "info"),
                                                                 ("backup.create.error", "error")]


async def test_log_transport_to_logging(dead_letter_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="audit.events")
    async with notifier_for("log://?logger=audit.events&format=cloudevents", dead_letter_path) as n:
        await n.warn({}, "backup.slow", {"s": 1})
    (record,) = [r for r in caplog.records if r.name == "audit.events"]
    assert record.levelno == logging.WARNING
    assert json.loads(record.getMessage())["type"] == "backup.slow"


async def test_repr_hides_secrets(dead_letter_path: Path) -> None:
    n = notifier_for("memory://user:hunter2@x/", dead_letter_path)
    assert "hunter2" not in repr(n) and "hunter2" not in repr(n.transports["memory"])


async def test_cancelled_caller_still_gets_its_queue_drained(dead_letter_path: Path) -> None:
    """Cancelling the scope around ``async with notifier`` (SIGTERM in a CLI) must not cancel the
    workers before aclose() drained: the last notifications, e.g. an error event, are delivered."""
    n = notifier_for("memory://?delay=0.01&max_batch=1", dead_letter_path, close_timeout=10)
    with anyio.CancelScope() as scope:
        async with n:
            for i in range(5):
                await n.info({}, "e.v", {"i": i})
            scope.cancel()
            await anyio.sleep(1)
    assert [m.payload["i"] for m in memory(n).messages] == list(range(5))
    assert not dead_letter_path.exists()


async def test_close_right_after_start_with_a_stuck_transport_returns(dead_letter_path: Path) -> None:
    n = notifier_for("memory://?delay=1000", dead_letter_path)
    with anyio.fail_after(10):
        await n.start()
        await n.info({}, "e.v", {})
        final = await n.aclose(timeout=0.05)  # the worker may not have started yet
    assert final["memory"].dead_lettered == 1


async def test_delivery_overlaps_a_caller_that_never_yields(dead_letter_path: Path) -> None:
    """With more than a batch queued, notify() gives the worker one turn per batch, so a
    tight loop (room in the queue: notify() never waits) is delivered while it runs, not
    only once it ends."""
    async with Notifier.from_url("memory://?max_batch=10&queue_size=1000", publisher_id="p",
                                 dead_letters=dead_letter_path) as n:
        transport = memory(n)
        delivered_while_looping = []
        for i in range(100):
            await n.info({}, "backup.createprogress", {"i": i})
            delivered_while_looping.append(len(transport.messages))
    assert delivered_while_looping[9] == 0  # up to a batch queued: no turn taken
    assert delivered_while_looping[-1] >= 100 - 2 * 10
    assert [m.payload["i"] for m in transport.messages] == list(range(100))
