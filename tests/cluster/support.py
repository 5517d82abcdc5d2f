"""The 3-node cluster of scripts/rabbitmq-cluster as a module, and the fault scenarios run
against it by tests/cluster and benchmarks/reliability_report.py alike.

Each scenario streams notifications through a Notifier whose URL lists every node, injects
one fault (a node stopped gracefully, a node SIGKILLed, the whole cluster down), and counts
what an independent consumer on a surviving node receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq
import anyio

from notifykit import Notifier, TransportStats
from notifykit.transports.amqp import AmqpTransport

from .._servers import load_script
from ..amqp.support import Names

#: How long a scenario waits for the stream to resume after a fault before it stops waiting.
FAILOVER_WAIT = 120.0


def load_cluster_module() -> ModuleType:
    """scripts/rabbitmq-cluster imported as the module ``rabbitmq_cluster``."""
    return load_script("rabbitmq-cluster")


@dataclass
class Outcome:
    """What one scenario emitted, what the broker confirmed, what a consumer received."""

    scenario: str
    emitted: list[str]
    received: list[str]
    stats: TransportStats
    faults: int = 1
    failover_s: float | None = None  # fault → first confirm after it
    nodes: tuple[str | None, str | None] = (None, None)  # connected before / after the fault
    connects: int = 0
    channel_replacements: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> set[str]:
        return set(self.emitted) - set(self.received)

    @property
    def duplicated(self) -> int:
        return sum(c - 1 for c in Counter(self.received).values())

    def row(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "faults_injected": self.faults,
            "emitted": len(self.emitted),
            "sent": self.stats.sent,
            "received": len(self.received),
            "duplicated": self.duplicated,
            "lost": len(self.lost),
            "dead_lettered": self.stats.dead_lettered,
            "failover_s": None if self.failover_s is None else round(self.failover_s, 3),
            "nodes": list(self.nodes),
            "connects": self.connects,
            "channel_replacements": self.channel_replacements,
            **self.extra,
        }


def stream_url(cluster: Any, names: Names, **extra: str) -> str:
    """A multi-host URL over every node with quorum queues, and the core's default retry and
    circuit policies (the point: failover must finish before they give up)."""
    query = {"exchange": names.exchange, "topic": names.topic, "quorum_queues": "true",
             "connection_name": f"nk-cluster-{names.exchange}", "queue_size": "20000", "batch_size": "500", **extra}
    return str(cluster.url()) + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def count_on(node_url: str, queue: str, expected: Collection[str], timeout: float = 60) -> list[str]:
    """Every message_id in ``queue``, read through ``node_url`` by a consumer of its own: until each
    of ``expected`` arrived and the queue is drained, or ``timeout`` passed (what is missing then is lost).

    queue.declare-ok's message_count is no stop condition: for a quorum queue it is a 250 ms local
    query of the member the queue record names as leader, which just after a whole-cluster restart
    answers 0 or a lagging count while every message is committed, so a count that stopped there
    reported committed messages as lost. Drained is checked with basic.get, a command through the
    queue's log, so its get-empty is not stale.
    """
    connection = await aio_pika.connect(node_url)
    received: list[str] = []
    missing = set(expected)
    arrived = asyncio.Event()
    last_at = time.monotonic()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal last_at
        received.append(message.message_id or "")
        missing.discard(message.message_id or "")
        last_at = time.monotonic()
        if not missing:
            arrived.set()

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=2000)
        consumed = await channel.declare_queue(queue, passive=True)
        checker = await (await connection.channel()).declare_queue(queue, passive=True)
        await consumed.consume(on_message, no_ack=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if missing:
                    await arrived.wait()
                while True:  # then what is left (duplicates), until the consumer idles and get says empty
                    await asyncio.sleep(0.2)
                    if time.monotonic() - last_at < 0.5:
                        continue
                    extra = await checker.get(no_ack=True, fail=False)
                    if extra is None:
                        break
                    received.append(extra.message_id or "")
    finally:
        await connection.close()
    return received


async def delete_entities(node_url: str, names: Names) -> None:
    """Drop the test's queues (quorum ones need if_unused=False) and exchange; missing ones are fine."""
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(node_url)
        try:
            for queue in names.queues():
                channel = await (await connection.channel()).get_underlay_channel()
                with contextlib.suppress(aiormq.exceptions.AMQPError):
                    await channel.queue_delete(queue, if_unused=False, if_empty=False)
            channel = await (await connection.channel()).get_underlay_channel()
            await channel.exchange_delete(names.exchange)
        finally:
            await connection.close()


def _transport(notifier: Notifier) -> AmqpTransport:
    transport = notifier.transports["amqp"]
    assert isinstance(transport, AmqpTransport)
    return transport


async def declare_quorum_queues(node_url: str, names: Names) -> None:
    """Declare the test's exchange and quorum queues through ``node_url``: their leader is that
    node (the default leader locator is client-local), as when an operator made them there."""
    connection = await aio_pika.connect(node_url)
    try:
        channel = await (await connection.channel()).get_underlay_channel()
        await channel.exchange_declare(names.exchange, exchange_type="topic", durable=True)
        for queue in names.queues():
            await channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
            await channel.queue_bind(queue, names.exchange, routing_key=queue)
    finally:
        await connection.close()


async def node_fault_mid_stream(cluster: Any, names: Names, dead_letters: Path, fault: str,
                                n: int = 20_000) -> Outcome:
    """Stream ``n`` notifications; once a third is confirmed, inject ``fault``:

    - ``stop``: rabbitmqctl stop_app of the node the transport is connected to;
    - ``kill``: SIGKILL of that node's VM (its queues' leader too: the transport declared them there);
    - ``kill-leader``: SIGKILL of the node holding the queues' leader, while the transport is
      connected to another node (its connection stays up; only the queue moves).
    """
    if fault == "kill-leader":
        await declare_quorum_queues(cluster.nodes[0].url, names)
        url = stream_url(cluster, names).replace(cluster.url(), cluster.url(*range(1, cluster.size), 0))
    else:
        url = stream_url(cluster, names)
    emitted: list[str] = []
    before = after = None
    failover: float | None = None
    faulted = -1
    async with Notifier.from_url(url, publisher_id="cluster", dead_letters=dead_letters,
                                 close_timeout=120) as notifier:
        transport = _transport(notifier)

        async def injector() -> None:
            nonlocal before, after, failover, faulted
            while notifier.stats()["amqp"].sent < n // 3:
                await anyio.sleep(0.005)
            before = transport.peer
            assert before is not None
            faulted = 0 if fault == "kill-leader" else cluster.node_of_port(int(before.rsplit(":", 1)[1]))
            at = time.monotonic()
            await anyio.to_thread.run_sync(cluster.stop_app if fault == "stop" else cluster.kill, faulted)
            with anyio.move_on_after(FAILOVER_WAIT):  # a bound, so a transport that never recovers ends the run
                while fault != "kill-leader" and transport.peer in (None, before) and notifier.stats()["amqp"].sent < n:
                    await anyio.sleep(0.002)
                after = transport.peer
                sent_then = notifier.stats()["amqp"].sent
                while notifier.stats()["amqp"].sent <= sent_then and notifier.stats()["amqp"].sent < n:
                    await anyio.sleep(0.002)
                failover = time.monotonic() - at  # to the first batch confirmed by another node

        async with anyio.create_task_group() as tg:
            tg.start_soon(injector)
            for i in range(n):
                emitted.append((await notifier.info({}, "backup.createprogress", {"i": i})).message_id)
    survivor = next(node for node in cluster.nodes if node.index != faulted)
    received = await count_on(survivor.url, f"{names.topic}.info", emitted)
    label = {"stop": "connected node stopped (stop_app) mid-stream", "kill": "connected node killed (kill -9) mid-stream",
             "kill-leader": "queue leader's node killed (kill -9), connected elsewhere"}[fault]
    return Outcome(f"rabbitmq cluster: {label}", emitted, received, notifier.stats()["amqp"],
                   failover_s=failover, nodes=(before, after), connects=transport.connects,
                   channel_replacements=transport.channel_replacements)


async def whole_cluster_outage(cluster: Any, names: Names, tmp: Path, before: int = 1000,
                               during: int = 2000) -> Outcome:
    """Durable mode: ``before`` notifications delivered, every node stopped, ``during`` emitted
    while nothing is up (notify() returns once spooled), every node started again."""
    url = stream_url(cluster, names, durable="true", retry_max_delay="1", circuit_reset_timeout="1")
    emitted: list[str] = []
    async with Notifier.from_url(url, publisher_id="cluster", dead_letters=tmp / "dl.jsonl",
                                 spool=tmp / "spool.sqlite", close_timeout=120) as notifier:
        transport = _transport(notifier)
        for i in range(before):
            emitted.append((await notifier.info({}, "backup.createprogress", {"i": i})).message_id)
        with anyio.fail_after(120):
            while notifier.stats()["amqp"].sent < before:
                await anyio.sleep(0.01)
        for i in range(cluster.size):
            await anyio.to_thread.run_sync(cluster.stop_node, i)
        for i in range(during):
            emitted.append((await notifier.info({}, "backup.createprogress", {"i": before + i})).message_id)
        sent_during_outage = notifier.stats()["amqp"].sent - before
        down_at = time.monotonic()
        await anyio.to_thread.run_sync(cluster.start_nodes, list(range(cluster.size)))
        restarted = time.monotonic() - down_at
        with anyio.fail_after(120):
            while notifier.stats()["amqp"].sent < before + during:
                await anyio.sleep(0.02)
        delivered_after = time.monotonic() - down_at
    received = await count_on(cluster.nodes[0].url, f"{names.topic}.info", emitted)
    return Outcome("rabbitmq cluster: whole cluster down then back (durable)", emitted, received,
                   notifier.stats()["amqp"], faults=cluster.size, connects=transport.connects,
                   channel_replacements=transport.channel_replacements,
                   extra={"emitted_during_outage": during, "sent_during_outage": sent_during_outage,
                          "restart_s": round(restarted, 1), "all_sent_after_s": round(delivered_after, 1)})
