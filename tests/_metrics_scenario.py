"""The scenario that tests/test_metrics.py (a Prometheus scrape) and tests/test_otel_metrics.py
(an OpenTelemetry collection) both compare with ``stats()``: one Notifier whose transports
are each in another state, so that every series has something to show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio import wait_all_tasks_blocked

from notifykit import Notifier
from notifykit.testing import MemoryTransport

from .helpers import FakeClock

#: notifications the scenario sends: 4 info, 1 error
SENT = 5


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "transports": {
            "ok": {"url": "memory://a", "retry": {"initial_delay": 1, "max_delay": 1},
                   "circuit": {"failure_threshold": 100}},
            "errors": {"url": "memory://b", "filter": {"min_priority": "error"}},
            "slow": {"url": "memory://c", "queue_size": 1, "batch_size": 1, "overflow": "drop_newest"},
            "durable": {"url": "memory://d", "durable": True, "batch_size": 1},
        },
        "spool_path": str(tmp_path / "spool"),
        # a directory where the status file should be: the status task fails, and says so
        "status_path": str(tmp_path),
    }


def make_notifier(tmp_path: Path, clock: FakeClock) -> Notifier:
    return Notifier.from_config(config(tmp_path), publisher_id="metrics.test", dead_letters=tmp_path / "dl.jsonl",
                                clock=clock, close_timeout=0.05)


@asynccontextmanager
async def busy(notifier: Notifier) -> AsyncIterator[None]:
    """Open ``notifier`` and, inside the block, hold it still: ``ok`` sent all after two
    retries, ``errors`` sent the one error (4 filtered), ``slow`` (stalled, a queue of one)
    dropped some and holds the rest, ``durable`` (a stalled broker) holds what it took in
    its spool, and the status task has failed. Nothing moves until the block ends; then the
    stalled transports resume, and ``durable`` delivers everything before the close."""
    async with notifier:
        ok, slow, durable = (notifier.transports[name] for name in ("ok", "slow", "durable"))
        assert isinstance(ok, MemoryTransport) and isinstance(slow, MemoryTransport)
        assert isinstance(durable, MemoryTransport)
        ok.fail_next(2)  # two retries, then sent
        slow.stall()
        durable.stall()
        await notifier.info({}, "backup.create.start", {"i": 0})
        await wait_all_tasks_blocked()
        for i in range(1, SENT - 1):
            await notifier.info({}, "backup.create.start", {"i": i})
        await notifier.error({}, "backup.create.error", {"i": 9})
        with anyio.fail_after(10):
            while notifier.stats()["ok"].sent < SENT or notifier.stats()["errors"].sent < 1 \
                    or not any(t.failures for t in notifier.background_tasks().values()):
                await anyio.sleep(0.001)
        await wait_all_tasks_blocked()
        stats = notifier.stats()
        assert stats["ok"].retried == 2 and stats["errors"].filtered == SENT - 1 and stats["slow"].dropped > 0
        assert stats["slow"].in_flight + stats["slow"].queue_depth > 0
        assert stats["durable"].sent == 0 and stats["durable"].spooled_bytes > 0  # the broker holds it all
        yield
        slow.resume()
        durable.resume()
        with anyio.fail_after(10):
            while notifier.stats()["durable"].sent < SENT:
                await anyio.sleep(0.001)
