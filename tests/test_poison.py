"""Poison isolation: a batch the transport fails for good is bisected, so only the
notification(s) at fault are dead-lettered and every other one is delivered."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from notifykit import ConfigError, InvalidNotificationError, Notification, Notifier
from notifykit.deadletters import read_dead_letters
from notifykit.testing import MemoryTransport
from notifykit.transport import PermanentError

from .helpers import FakeClock
from .test_notifier import memory

pytestmark = pytest.mark.asyncio


def picky(notifier: Notifier, failure: str) -> MemoryTransport:
    """Make the memory transport fail a whole batch as long as it holds a poison payload:
    ``permanent`` (a peer refusing the request) or ``bug`` (a transport raising on it)."""
    transport = memory(notifier)
    original = transport.send

    async def send(batch: Sequence[Notification]) -> None:
        transport.batch_sizes.append(-len(batch))  # every attempt, for the assertions
        if any(n.payload.get("poison") for n in batch):
            if failure == "permanent":
                raise PermanentError("400 Bad Request: one item of the array is malformed")
            raise ValueError("cannot encode this batch")
        await original(batch)

    transport.send = send  # type: ignore[method-assign]
    return transport


@pytest.mark.parametrize("failure", ["permanent", "bug"])
async def test_poison_in_a_batch_is_isolated(tmp_path: Path, fake_clock: FakeClock, failure: str) -> None:
    dead = tmp_path / "dead.jsonl"
    url = "memory://?retry_max_attempts=3&circuit_failure_threshold=1000"
    notifier = Notifier.from_url(url, publisher_id="t", dead_letters=dead, clock=fake_clock)
    poisoned = {7, 40, 41, 99}
    async with notifier as n:
        transport = picky(n, failure)
        transport.stall()  # let a full batch of 100 gather
        for i in range(100):
            await n.info({}, "e.v", {"i": i, "poison": i in poisoned})
        transport.resume()
    delivered = [m.payload["i"] for m in transport.messages]
    assert sorted(delivered) == [i for i in range(100) if i not in poisoned]
    records = list(read_dead_letters(dead))
    assert sorted(r["message"]["payload"]["i"] for r in records) == sorted(poisoned)
    assert all("isolated from a batch of 100" in r["reason"] for r in records)
    stats = n.stats()["memory"]
    assert (stats.enqueued, stats.sent, stats.dead_lettered) == (100, 96, 4)
    attempts = sum(1 for size in transport.batch_sizes if size < 0)
    assert attempts < 60, "bisection, not one send per message"


async def test_a_dead_transport_is_not_bisected_to_pieces(tmp_path: Path, fake_clock: FakeClock) -> None:
    """When every part fails, the transport is down: a few probes, then the batch is
    dead-lettered with the retry reason, not 2n sends."""
    dead = tmp_path / "dead.jsonl"
    url = "memory://?retry_max_attempts=2&circuit_failure_threshold=1000"
    async with Notifier.from_url(url, publisher_id="t", dead_letters=dead, clock=fake_clock) as n:
        transport = memory(n)
        transport.stall()
        for i in range(100):
            await n.info({}, "e.v", {"i": i})
        transport.fail_next(10**6)
        transport.resume()
    assert transport.attempts <= 2 + 100 .bit_length() + 2
    records = list(read_dead_letters(dead))
    assert len(records) == 100 and all(r["reason"].startswith("gave up after 2 attempt(s)") for r in records)
    assert n.stats()["memory"].dead_lettered == 100


async def test_isolation_keeps_the_order_of_the_good_ones(tmp_path: Path, fake_clock: FakeClock) -> None:
    dead = tmp_path / "dead.jsonl"
    async with Notifier.from_url("memory://", publisher_id="t", dead_letters=dead, clock=fake_clock) as n:
        transport = picky(n, "permanent")
        transport.stall()
        for i in range(10):
            await n.info({}, "e.v", {"i": i, "poison": i == 3})
        transport.resume()
    assert [m.payload["i"] for m in transport.messages] == [0, 1, 2, 4, 5, 6, 7, 8, 9]


async def test_durable_poison_is_isolated_and_its_rows_deleted(tmp_path: Path, fake_clock: FakeClock) -> None:
    dead, spool = tmp_path / "dead.jsonl", tmp_path / "spool.sqlite"
    kw: dict[str, Any] = {"publisher_id": "t", "dead_letters": dead, "clock": fake_clock, "spool": spool}
    async with Notifier.from_url("memory://?durable=true", **kw) as n:
        transport = picky(n, "permanent")
        transport.stall()
        for i in range(20):
            await n.info({}, "e.v", {"i": i, "poison": i == 5})
        transport.resume()
    assert sorted(m.payload["i"] for m in transport.messages) == [i for i in range(20) if i != 5]
    assert [r["message"]["payload"]["i"] for r in read_dead_letters(dead)] == [5]
    async with Notifier.from_url("memory://?durable=true", **kw) as again:
        pass
    assert again.stats()["memory"].replayed == 0


@pytest.mark.parametrize("durable", [False, True])
@pytest.mark.parametrize("bad", [
    {"ctx": {"request_id": "r-\ud800"}},
    {"ctx": {"note": "\udc80"}},
    {"publisher_id": "backup.\ud800"},
    {"publisher_id": 123},
])
async def test_poison_is_refused_at_the_call_site_and_the_good_ones_flow(
    tmp_path: Path, durable: bool, bad: dict[str, Any]
) -> None:
    """Reproduction 7: it used to pass notify(), fail every send, hold the good ones of its
    batch and lose them all at close (the dead-letter write failed too)."""
    dead = tmp_path / "dead.jsonl"
    url = f"memory://?durable={str(durable).lower()}"
    async with Notifier.from_url(url, publisher_id="t", dead_letters=dead, spool=tmp_path / "s.sqlite") as n:
        await n.info({}, "e.v", {"i": 0})
        with pytest.raises(InvalidNotificationError):
            await n.prepare(publisher_id=bad.get("publisher_id", "t")).info(bad.get("ctx", {}), "e.v", {"i": -1})
        await n.info({}, "e.v", {"i": 1})
    assert [m.payload["i"] for m in memory(n).messages] == [0, 1]
    stats = n.stats()["memory"]
    assert (stats.enqueued, stats.sent, stats.dead_lettered) == (2, 2, 0)
    assert not dead.exists()


async def test_a_bad_publisher_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="publisher_id must be a string, not int"):
        Notifier.from_url("memory://", publisher_id=123)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lone surrogate"):
        Notifier.from_url("memory://", publisher_id="x\ud800")
