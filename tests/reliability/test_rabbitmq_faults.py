"""RabbitMQ faults: connections cut ten times mid-stream, and a publisher SIGKILLed in
durable mode; every message_id whose notify() returned reaches the broker."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from notifykit import Notifier

from ..amqp.support import CuttableProxy, Names, consume, queue_length
from ..helpers import run_publisher_then_sigkill
from ..test_spool import spool_counts

pytestmark = [pytest.mark.asyncio, pytest.mark.broker, pytest.mark.slow]

N = 20_000
CUTS = 10


async def test_ten_cuts_during_twenty_thousand(broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        # A queue far smaller than the stream: callers wait while the link is down, but
        # never past block_timeout (past it a notification would be dead-lettered: none is).
        url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
               "&queue_size=2000&overflow=block&block_timeout=30&batch_size=500"
               "&retry_initial_delay=0.02&retry_max_delay=0.2&circuit_reset_timeout=0.2&heartbeat=0")
        cuts: list[int] = []
        # close_timeout 120 s: on a loaded machine (load 17) the default 10 s ran out with 1,000
        # notifications still queued, which were then dead-lettered (nothing lost, but not sent).
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path,
                                     close_timeout=120) as notifier:

            async def cutter() -> None:
                for k in range(1, CUTS + 1):
                    threshold = k * N // (CUTS + 1)
                    while notifier.stats()["amqp"].sent < threshold:
                        await anyio.sleep(0.001)
                    if proxy.cut():
                        cuts.append(notifier.stats()["amqp"].sent)

            with anyio.fail_after(240):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cutter)
                    ids = [(await notifier.info({}, "backup.createprogress", {"i": i})).message_id for i in range(N)]
        stats = notifier.stats()["amqp"]
    assert len(cuts) == CUTS and max(cuts) < N  # every cut landed mid-stream
    assert (stats.enqueued, stats.sent, stats.dead_lettered, stats.dropped) == (N, N, 0, 0)
    assert stats.retried > 0
    assert not dead_letter_path.exists()
    queued = await queue_length(f"{names.topic}.info")
    got = await consume(f"{names.topic}.info", queued, timeout=60)
    received = [m.message_id for m in got]
    assert set(received) == set(ids)  # none lost, nothing foreign
    assert len(received) - len(set(received)) == queued - N  # duplicates are the at-least-once re-sends


async def test_sigkill_in_durable_mode_then_replay(broker: str, names: Names, tmp_path: Path,
                                                   dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&name=rabbit&durable=true&batch_size=200"
    returned = set(await run_publisher_then_sigkill(url, spool, dead_letter_path, lines=3000))
    left = spool_counts(spool).get("rabbit", 0)

    # The replay drains within close_timeout; on a loaded machine 3,000 records may take more than
    # the default 10 s (a CI run stopped at 2,000 sent, the rest still spooled): allow 120 s.
    async with Notifier.from_url(url, publisher_id="replay", spool=spool, dead_letters=dead_letter_path,
                                 close_timeout=120) as n:
        pass
    assert n.stats()["rabbit"].replayed == left
    assert n.stats()["rabbit"].sent == left and spool_counts(spool) == {}
    queued = await queue_length(f"{names.topic}.info")
    got = await consume(f"{names.topic}.info", queued, timeout=60)
    assert returned <= {m.message_id for m in got}, "a notification acknowledged to the caller was lost"
