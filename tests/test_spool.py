"""Durable spool: stored before notify() returns, deleted after confirmation, replayed on start."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import Notifier
from notifykit._spool import Spool
from notifykit.deadletters import read_dead_letters
from notifykit.testing import MemoryTransport

from .helpers import run_publisher_then_sigkill
from .test_notifier import memory, until

pytestmark = pytest.mark.asyncio


def spool_counts(path: Path) -> dict[str, int]:
    spool = Spool(path)
    try:
        return spool.counts_blocking()
    finally:
        spool._close()


async def test_durable_keeps_unconfirmed_and_replays_in_order(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    first = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                              dead_letters=dead_letter_path, close_timeout=0.05)
    async with first:
        memory(first, "events").stall()
        ids = [(await first.info({}, "e.v", {"i": i})).message_id for i in range(25)]
        assert spool_counts(spool) == {"events": 25}  # committed before notify() returned
    assert first.stats()["events"].spooled == 25
    assert first.stats()["events"].dead_lettered == 0 and not dead_letter_path.exists()

    second = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                               dead_letters=dead_letter_path)
    async with second:
        await until(lambda: len(memory(second, "events").messages) == 25)
        await second.info({}, "e.v", {"i": 25})
    delivered = memory(second, "events").messages
    assert [m.message_id for m in delivered[:25]] == ids
    assert [m.payload["i"] for m in delivered] == list(range(26))
    assert second.stats()["events"].replayed == 25
    assert spool_counts(spool) == {}


async def test_durable_deletes_after_confirmation(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    async with Notifier.from_url("memory://?durable=true", publisher_id="t", spool=spool,
                                 dead_letters=dead_letter_path) as n:
        for i in range(300):
            await n.info({}, "e.v", {"i": i})
    assert [m.payload["i"] for m in memory(n).messages] == list(range(300))
    assert spool_counts(spool) == {}
    stats = n.stats()["memory"]
    assert (stats.enqueued, stats.sent, stats.spooled) == (300, 300, 0)


async def test_spool_cap_dead_letters_and_counts(tmp_path: Path, dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://?durable=true&spool_max_messages=3", publisher_id="t",
                          spool=tmp_path / "s.sqlite", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n).stall()
        for i in range(5):
            await n.info({}, "e.v", {"i": i})
    stats = n.stats()["memory"]
    assert (stats.spool_full, stats.dead_lettered, stats.spooled) == (2, 2, 3)
    reasons = [r["reason"] for r in read_dead_letters(dead_letter_path)]
    assert reasons == ["spool full: 3 notifications already waiting"] * 2


async def test_spill_overflow_keeps_order(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "s.sqlite"
    async with Notifier.from_url("memory://?queue_size=2&batch_size=1&overflow=spill", publisher_id="t",
                                 spool=spool, dead_letters=dead_letter_path) as n:
        transport = memory(n)
        transport.stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        for i in range(1, 20):
            await n.info({}, "e.v", {"i": i})  # never blocks: 2 in memory, the rest spilled
        assert spool_counts(spool) == {"memory": 17}
        transport.resume()
        await until(lambda: len(transport.messages) == 20)
        for i in range(20, 25):  # backlog drained: back to the memory queue
            await n.info({}, "e.v", {"i": i})
    assert [m.payload["i"] for m in transport.messages] == list(range(25))
    assert n.stats()["memory"].dropped == 0 and spool_counts(spool) == {}


async def test_sigkill_mid_stream_then_replay(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    # The transport never confirms (delay=1000): everything the publisher emitted is spooled.
    returned = await run_publisher_then_sigkill("memory://?name=events&durable=true&delay=1000", spool,
                                                dead_letter_path, lines=500, timeout=60)
    assert len(returned) >= 500
    out = tmp_path / "delivered.jsonl"
    async with Notifier.from_url(f"log://{out}?name=events&durable=true", publisher_id="replay",
                                 spool=spool, dead_letters=dead_letter_path) as n:
        pass
    delivered = {json.loads(line)["message_id"] for line in out.read_text().splitlines()}
    assert set(returned) <= delivered, f"{len(set(returned) - delivered)} acknowledged notifications lost"
    assert n.stats()["events"].replayed >= len(returned)
    assert spool_counts(spool) == {}


async def test_memory_transport_can_skip_keeping(dead_letter_path: Path) -> None:
    async with Notifier.from_url("memory://?keep=false", publisher_id="t", dead_letters=dead_letter_path) as n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
    transport = n.transports["memory"]
    assert isinstance(transport, MemoryTransport)
    assert transport.messages == [] and transport.delivered == 10


@pytest.mark.parametrize("url", ["memory://?queue_size=5&overflow=spill&max_batch=7",
                                 "memory://?durable=true&queue_size=5&max_batch=7"])
async def test_concurrent_callers_with_stalls_lose_nothing_and_keep_order(tmp_path: Path, url: str) -> None:
    async with Notifier.from_url(url, publisher_id="t", spool=tmp_path / "s.sqlite",
                                 dead_letters=tmp_path / "dl.jsonl") as n:
        transport = memory(n)

        async def caller(c: int) -> None:
            for i in range(200):
                await n.info({}, "e.v", {"c": c, "i": i})
                if i % 17 == 0:
                    await anyio.lowlevel.checkpoint()

        async def flapper() -> None:
            for _ in range(30):
                transport.stall()
                await anyio.sleep(0.002)
                transport.resume()
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(flapper)
            for c in range(8):
                tg.start_soon(caller, c)
    got = [(m.payload["c"], m.payload["i"]) for m in transport.messages]
    assert len(got) == len(set(got)) == 1600
    for c in range(8):
        assert [i for cc, i in got if cc == c] == list(range(200))
    assert spool_counts(tmp_path / "s.sqlite") == {}
