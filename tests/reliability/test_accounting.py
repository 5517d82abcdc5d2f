"""Under overload, faults and bad payloads, every notification is accounted for by a counter.

``assert_accounted`` (tests/helpers.py) checks the invariant ``enqueued == sent + dropped +
dead_lettered + dead_letter_failed + queue_depth + in_flight + spooled`` and the counters
against what the memory transport received and what the dead-letter file holds. Each
fault scenario below ends with it, and the ones that can be observed mid-flight check it
there too.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import Notifier, NotifyKitError
from notifykit.deadletters import DeadLetter, read_dead_letters

from ..helpers import HELD, FakeClock, assert_accounted
from ..test_notifier import memory, until

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "block", "spill"])
async def test_queue_full_policy_is_counted(tmp_path: Path, policy: str) -> None:
    dead = tmp_path / "dead.jsonl"
    url = f"memory://?queue_size=50&batch_size=10&overflow={policy}&block_timeout=0.001"
    n = Notifier.from_url(url, publisher_id="t", dead_letters=dead, spool=tmp_path / "s.sqlite")
    refused = 0
    async with n:
        transport = memory(n)
        transport.stall()
        with anyio.fail_after(30):  # callers are never blocked beyond the policy's bound
            for i in range(500):
                try:
                    await n.info({}, "e.v", {"i": i})
                except NotifyKitError as exc:  # block: the caller's own policy, told to the caller
                    assert type(exc).__name__ == "QueueFullError"
                    refused += 1
        assert_accounted(n, dead)  # mid-flight: one batch in flight, the rest queued or spooled
        transport.resume()
    stats = n.stats()["memory"]
    delivered = len(transport.messages)
    assert stats.refused == refused
    assert delivered + stats.dropped + stats.dead_lettered + refused == 500, "a notification vanished"
    assert len({m.message_id for m in transport.messages}) == delivered
    assert_accounted(n, dead)
    if policy == "spill":
        assert (delivered, stats.dropped, stats.dead_lettered, refused) == (500, 0, 0, 0)
    if policy.startswith("drop"):
        assert stats.dropped > 0 and stats.dead_lettered == 0 and refused == 0
        assert stats.enqueued == 500  # taken on, then dropped: counted in both
    if policy == "block":
        assert stats.dropped == 0 and refused > 0 and stats.enqueued == 500 - refused


async def test_block_timeout_refusals_keep_the_invariant(dead_letter_path: Path) -> None:
    """Reproduction 11: refused after block_timeout used to count dead_lettered without enqueued."""
    n = Notifier.from_url("memory://?queue_size=1&batch_size=1&block_timeout=0", publisher_id="t",
                          dead_letters=dead_letter_path, close_timeout=0)
    raised: list[BaseException] = []
    async with n:
        memory(n).stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        for i in range(1, 6):
            try:
                await n.info({}, "e.v", {"i": i})
            except NotifyKitError as exc:
                raised.append(exc)
        assert_accounted(n, dead_letter_path)
    rows = assert_accounted(n, dead_letter_path)
    assert [type(e).__name__ for e in raised] == ["QueueFullError"] * 4
    assert (rows["memory"]["enqueued"], rows["memory"]["refused"], rows["memory"]["dead_lettered"]) == (2, 4, 2)


async def test_spool_full_is_counted(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    n = Notifier.from_url("memory://?durable=true&spool_max_messages=100&block_timeout=0", publisher_id="t", dead_letters=dead,
                          spool=tmp_path / "s.sqlite", close_timeout=0.05)
    async with n:
        memory(n).stall()
        for i in range(150):
            await n.info({}, "e.v", {"i": i})
        assert_accounted(n, dead)
    stats = n.stats()["memory"]
    assert (stats.spool_full, stats.spooled, stats.dead_lettered, stats.enqueued) == (50, 100, 50, 150)
    assert [r["message"]["payload"]["i"] for r in read_dead_letters(dead)] == list(range(100, 150))
    assert_accounted(n, dead)


async def test_rejected_payload_is_dead_lettered_and_the_rest_flow(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    config = {"transports": {"picky": {"url": "memory://picky?reject=backup.poison"},
                             "easy": {"url": "memory://easy"}}}
    async with Notifier.from_config(config, publisher_id="t", dead_letters=dead) as n:
        for i in range(300):
            await n.info({}, "backup.poison" if i % 7 == 0 else "backup.ok", {"i": i})
        await until(lambda: n.stats()["picky"].sent + n.stats()["picky"].dead_lettered == 300)
        await n.info({}, "backup.ok", {"i": "after"})  # the worker is alive
    poisoned = [i for i in range(300) if i % 7 == 0]
    assert [r["message"]["payload"]["i"] for r in read_dead_letters(dead)] == poisoned
    assert [m.payload["i"] for m in memory(n, "picky").messages] == [i for i in range(300) if i % 7] + ["after"]
    assert len(memory(n, "easy").messages) == 301
    assert_accounted(n, dead)


# -- the invariant after every fault scenario -------------------------------------------------

Scenario = Callable[[Path, FakeClock], Awaitable[Notifier]]


async def retries_exhausted(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://?fail=1000&retry_max_attempts=3&batch_size=4", publisher_id="t",
                          dead_letters=tmp / "dead.jsonl", clock=clock)
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.stats()["memory"].dead_lettered == 10)
    return n


async def transient_then_recovered(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://?fail=5", publisher_id="t", dead_letters=tmp / "dead.jsonl", clock=clock)
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
    return n


async def permanent_failure(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://?fail=1&failure=permanent", publisher_id="t", dead_letters=tmp / "dead.jsonl",
                          clock=clock)
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
    return n


async def close_deadline(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://?queue_size=5", publisher_id="t", dead_letters=tmp / "dead.jsonl",
                          close_timeout=0)
    async with n:
        memory(n).stall()
        for i in range(5):
            await n.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
    return n


async def durable_close_deadline_then_replay(tmp: Path, clock: FakeClock) -> Notifier:
    url = "memory://?durable=true"
    first = Notifier.from_url(url, publisher_id="t", dead_letters=tmp / "dead.jsonl", spool=tmp / "s.sqlite",
                              close_timeout=0)
    async with first:
        memory(first).stall()
        for i in range(20):
            await first.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
    assert_accounted(first, tmp / "dead.jsonl")
    assert first.stats()["memory"].spooled == 20
    second = Notifier.from_url(url, publisher_id="t", dead_letters=tmp / "dead.jsonl", spool=tmp / "s.sqlite")
    async with second:
        await second.info({}, "e.v", {"i": 20})
        await until(lambda: second.stats()["memory"].sent == 21)
    assert (second.stats()["memory"].replayed, second.stats()["memory"].enqueued) == (20, 21)
    return second


async def spill_overflow_at_close(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://?queue_size=3&overflow=spill", publisher_id="t", dead_letters=tmp / "dead.jsonl",
                          spool=tmp / "s.sqlite", close_timeout=0)
    async with n:
        memory(n).stall()
        for i in range(12):  # one in flight, three queued, the rest spilled
            await n.info({}, "e.v", {"i": i})
        await wait_all_tasks_blocked()
        assert_accounted(n, tmp / "dead.jsonl")
    assert n.stats()["memory"].spooled == 12  # the memory queue and the batch in flight too: kept, not lost
    return n


async def worker_crash(tmp: Path, clock: FakeClock) -> Notifier:
    n = Notifier.from_url("memory://", publisher_id="t", dead_letters=tmp / "dead.jsonl", clock=clock)
    dispatcher = n._dispatchers[0]
    real = dispatcher._take_queued
    crashes = iter(range(2))

    def take() -> list[object]:
        if next(crashes, None) is not None:
            raise RuntimeError("bug")
        return real()  # type: ignore[return-value]

    dispatcher._take_queued = take  # type: ignore[method-assign]
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
    return n


async def status_file_unwritable(tmp: Path, clock: FakeClock) -> Notifier:
    (tmp / "file").write_text("x")
    n = Notifier.from_config({"status_path": str(tmp / "file" / "status.json"), "status_interval": 0.001,
                              "transports": {"memory": {"url": "memory://"}}},
                             publisher_id="t", dead_letters=tmp / "dead.jsonl")
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.background_tasks()["status"].failures >= 2)
    return n


async def filtered_and_fanned_out(tmp: Path, clock: FakeClock) -> Notifier:
    config = {"transports": {"all": {"url": "memory://all"},
                             "ends": {"url": "memory://ends", "filter": {"event_types": ["*.end"]}},
                             "drops": {"url": "memory://drops", "queue_size": 1, "overflow": "drop_newest"}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=tmp / "dead.jsonl", clock=clock)
    async with n:
        memory(n, "drops").stall()
        for i in range(20):
            await n.info({}, "backup.end" if i % 2 else "backup.start", {"i": i})
        memory(n, "drops").resume()
    assert n.stats()["ends"].filtered == 10 and n.stats()["drops"].dropped > 0
    return n


class FullDiskSink:
    """A dead-letter sink on a full disk."""

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


async def dead_letter_write_fails(tmp: Path, clock: FakeClock) -> Notifier:
    # fail=1000: a single permanent failure of the batch would be isolated (bisected) and delivered
    n = Notifier.from_url("memory://?fail=1000&failure=permanent&batch_size=5", publisher_id="t",
                          dead_letters=FullDiskSink(), clock=clock)
    async with n:
        memory(n).stall()
        for i in range(5):
            await n.info({}, "e.v", {"i": i})
        memory(n).resume()
    stats = n.stats()["memory"]
    assert (stats.dead_lettered, stats.dead_letter_failed) == (0, 5)  # never counted as on disk
    return n


SCENARIOS = [dead_letter_write_fails, retries_exhausted, transient_then_recovered, permanent_failure, close_deadline,
             durable_close_deadline_then_replay, spill_overflow_at_close, worker_crash, status_file_unwritable,
             filtered_and_fanned_out]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
async def test_invariant_holds_after_fault(tmp_path: Path, fake_clock: FakeClock, scenario: Scenario) -> None:
    with anyio.fail_after(60):
        n = await scenario(tmp_path, fake_clock)
    rows = assert_accounted(n, tmp_path / "dead.jsonl")
    assert all(row["state"] == "closed" for row in rows.values())
    assert sum(row["enqueued"] for row in rows.values()) > 0


@pytest.fixture
def quick_gil_handover() -> Iterator[None]:
    """The auditor below never lets the event loop idle, so worker threads (dead-letter
    writes) wait the interpreter's 5 ms switch interval for the GIL at every step."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.slow
@pytest.mark.usefixtures("quick_gil_handover")
async def test_invariant_holds_at_every_await_point(tmp_path: Path, fake_clock: FakeClock) -> None:
    """An auditor task checks the invariant each time it is scheduled, i.e. while every
    other task is suspended at an await, through poison batches, retries, drops, spills,
    blocked callers, refusals, durable writes and a close deadline that leaves work behind."""
    dead = tmp_path / "dead.jsonl"
    config = {"close_timeout": 0, "transports": {
        "picky": {"url": "memory://picky?reject=poison.*", "batch_size": 7},
        "flaky": {"url": "memory://flaky?fail=3"},
        "doomed": {"url": "memory://doomed?fail=1000&failure=permanent", "batch_size": 5},
        "dropper": {"url": "memory://dropper", "queue_size": 5, "overflow": "drop_oldest"},  # stalled below
        "spiller": {"url": "memory://spiller", "queue_size": 5, "overflow": "spill"},  # stalled below
        "blocker": {"url": "memory://blocker?delay=0.0005", "queue_size": 5, "block_timeout": "none"},
        "refuser": {"url": "memory://refuser", "queue_size": 5, "block_timeout": 0},  # stalled below
        "durable": {"url": "memory://durable", "durable": True},
    }}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead, clock=fake_clock,
                             spool=tmp_path / "s.sqlite")
    violations: list[tuple[str, dict[str, int]]] = []
    checks = 0
    closed = anyio.Event()

    async def auditor() -> None:
        nonlocal checks
        while not closed.is_set():
            # stats.unaccounted() is the invariant itself; as_dict() here (a deep copy of
            # eight snapshots per loop turn) kept the GIL from the dead-letter threads and
            # stretched this test from 0.2 s to over 60 s on a busy machine.
            for name, stats in n.stats().items():
                if stats.unaccounted():
                    violations.append((name, {k: getattr(stats, k) for k in ("enqueued", *HELD)}))
            checks += 1
            await anyio.lowlevel.checkpoint()

    async def caller(k: int) -> None:
        for i in range(60):
            try:
                await n.info({}, "poison.x" if i % 5 == 0 else "backup.ok", {"caller": k, "i": i})
            except NotifyKitError as exc:
                assert type(exc).__name__ == "QueueFullError"

    with anyio.fail_after(120):
        async with anyio.create_task_group() as audit:
            audit.start_soon(auditor)
            async with n:
                # Stuck until the callers are done, so their queues fill whatever the machine's
                # load: drops, spills and refusals happen for certain, not by timing.
                stalled = [memory(n, name) for name in ("dropper", "spiller", "refuser")]
                for transport in stalled:
                    transport.stall()
                async with anyio.create_task_group() as callers:
                    for k in range(4):
                        callers.start_soon(caller, k)
                for transport in stalled:
                    transport.resume()
            closed.set()
    assert violations[:3] == [] and checks > 100
    rows = assert_accounted(n, dead)
    assert rows["picky"]["dead_lettered"] > 0 and rows["doomed"]["dead_lettered"] > 0
    assert rows["refuser"]["refused"] > 0 and rows["dropper"]["dropped"] > 0
