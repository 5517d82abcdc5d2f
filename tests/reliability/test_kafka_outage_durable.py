"""Kafka stopped mid-stream, and the publishing process restarted while it is down: in
durable mode, everything emitted during the outage reaches the new broker."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier

from ..kafka.records import NO_IDEMPOTENCE, consume, create_topic, unique_topic
from ..kafka.tansu import Tansu
from ..test_spool import spool_counts

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


async def test_outage_then_process_restart_then_broker_back(own_broker: Tansu, tmp_path: Path) -> None:
    own_broker.start()
    topic = unique_topic("durable")
    await create_topic(own_broker.bootstrap, f"{topic}.info", 2)
    spool, dead = tmp_path / "spool.sqlite", tmp_path / "dead.jsonl"
    url = (f"kafka://{own_broker.bootstrap}/?topic={topic}&{NO_IDEMPOTENCE}&request_timeout_ms=1000"
           "&name=kafka&durable=true&retry_initial_delay=0.05&retry_max_delay=0.3&retry_max_elapsed=300"
           "&circuit_failure_threshold=3&circuit_reset_timeout=0.5")

    first = Notifier.from_url(url, publisher_id="p", spool=spool, dead_letters=dead, close_timeout=0.5)
    async with first:
        for i in range(20):
            await first.info({}, "backup.createprogress", {"backup_id": "b-1", "i": i})
        with anyio.fail_after(20):
            while first.stats()["kafka"].sent < 20:
                await anyio.sleep(0.02)
        own_broker.stop(grace=0.5)
        outage = [(await first.info({}, "backup.createprogress", {"backup_id": "b-1", "i": i})).message_id
                  for i in range(20, 120)]
    # The process "restarts" while the broker is still down: nothing was lost, it is spooled.
    assert first.stats()["kafka"].dead_lettered == 0
    assert spool_counts(spool) == {"kafka": 100}

    own_broker.start()  # an empty broker on the same port (Tansu keeps nothing): re-create the topic
    await create_topic(own_broker.bootstrap, f"{topic}.info", 2)
    second = Notifier.from_url(url, publisher_id="p", spool=spool, dead_letters=dead)
    async with second:
        with anyio.fail_after(30):
            while second.stats()["kafka"].sent < 100:
                await anyio.sleep(0.05)
    assert second.stats()["kafka"].replayed == 100
    records = await consume(own_broker.bootstrap, [f"{topic}.info"], 100)
    bodies = [json.loads(r.value) for r in records]
    assert {b["message_id"] for b in bodies} == set(outage)
    assert [b["payload"]["i"] for b in bodies] == list(range(20, 120))  # one key: one partition, in order
    assert spool_counts(spool) == {} and not dead.exists()
