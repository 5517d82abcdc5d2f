"""Under overload and bad payloads, every notification is accounted for by a counter."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from notifykit import Notifier, read_dead_letters

from ..test_notifier import memory, until

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest", "block", "spill"])
async def test_queue_full_policy_is_counted(tmp_path: Path, policy: str) -> None:
    dead = tmp_path / "dead.jsonl"
    url = f"memory://?queue_size=50&batch_size=10&overflow={policy}&block_timeout=0.001"
    n = Notifier.from_url(url, publisher_id="t", dead_letters=dead, spool=tmp_path / "s.sqlite")
    async with n:
        transport = memory(n)
        transport.stall()
        with anyio.fail_after(30):  # callers are never blocked beyond the policy's bound
            for i in range(500):
                await n.info({}, "e.v", {"i": i})
        transport.resume()
    stats = n.stats()["memory"]
    delivered = len(transport.messages)
    dead_letters = len(list(read_dead_letters(dead))) if dead.exists() else 0
    assert stats.sent == delivered
    assert stats.dead_lettered == dead_letters
    assert delivered + stats.dropped + dead_letters == 500, "a notification vanished without a counter"
    assert len({m.message_id for m in transport.messages}) == delivered
    if policy == "spill":
        assert (delivered, stats.dropped, dead_letters) == (500, 0, 0)
    if policy.startswith("drop"):
        assert stats.dropped > 0 and dead_letters == 0
    if policy == "block":
        assert stats.dropped == 0 and dead_letters > 0


async def test_spool_full_is_counted(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    n = Notifier.from_url("memory://?durable=true&spool_max_messages=100", publisher_id="t", dead_letters=dead,
                          spool=tmp_path / "s.sqlite", close_timeout=0.05)
    async with n:
        memory(n).stall()
        for i in range(150):
            await n.info({}, "e.v", {"i": i})
    stats = n.stats()["memory"]
    assert (stats.spool_full, stats.spooled, stats.dead_lettered) == (50, 100, 50)
    assert [r["message"]["payload"]["i"] for r in read_dead_letters(dead)] == list(range(100, 150))


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
