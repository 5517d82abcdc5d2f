"""Reliability report: memory stays bounded, and what durable mode costs.

Prints JSON. Sections:
* ``memory_bound`` — RSS after 10,000 and after N (default 1,000,000) notifications through
  a Notifier with a memory transport that keeps nothing (``keep=false``);
* ``durable_cost`` — msgs/s with the SQLite spool off vs on, one caller and 16 concurrent
  callers (group commit), same run, same transport; ratio = durable / in-memory.
* ``faults`` — faults injected into real brokers and processes (RabbitMQ connection cuts,
  a SIGKILLed durable publisher, a flapping webhook receiver, a status file that cannot be
  written (faults = failed status writes), a Kafka restart, and on a 3-node RabbitMQ cluster
  with quorum queues: a node stopped, a node killed, the queue leader's node killed, the whole
  cluster down then back; with failover times), with
  notifications emitted, sent, received by an independent consumer, duplicated, lost
  (must be 0) and dead-lettered; the same faults the tests/reliability suite asserts on.

Usage: ``python benchmarks/reliability_report.py [N_MEMORY [N_DURABLE [N_RABBIT_MEMORY]]]``.
"""

from __future__ import annotations

import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _faults import all_faults  # benchmarks/_faults.py

from notifykit import Notifier

PAYLOAD = {"backup_id": "b-1", "tenant_id": "p-1", "size": 10, "percentage": 50.0, "status": "creating"}


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


async def memory_bound(url: str, total: int, tmp: Path) -> dict[str, Any]:
    """RSS after the first 10,000 notifications and after ``total`` through one Notifier."""
    marks: dict[str, int] = {}
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=tmp / "dl.jsonl") as n:
        for i in range(total):
            await n.info({}, "backup.createprogress", PAYLOAD)
            if i == 9_999:
                gc.collect()
                marks["rss_after_10k_kib"] = rss_kib()
    gc.collect()
    marks["rss_after_all_kib"] = rss_kib()
    (stats,) = n.stats().values()
    return {
        "notifications": total,
        **marks,
        "growth_kib": marks["rss_after_all_kib"] - marks["rss_after_10k_kib"],
        "sent": stats.sent,
        "lost": total - stats.sent - stats.dropped - stats.dead_lettered,
    }


async def throughput(url: str, total: int, callers: int, tmp: Path, spool: Path | None) -> float:
    async with Notifier.from_url(url, publisher_id="bench", dead_letters=tmp / "dl.jsonl",
                                 spool=spool) as n:
        per_caller = total // callers
        start = time.perf_counter()

        async def caller() -> None:
            for _ in range(per_caller):
                await n.info({}, "backup.createprogress", PAYLOAD)

        async with anyio.create_task_group() as tg:
            for _ in range(callers):
                tg.start_soon(caller)
    elapsed = time.perf_counter() - start  # includes the drain at close: delivered, not just accepted
    assert n.stats()["memory"].sent == per_caller * callers
    return per_caller * callers / elapsed


async def rabbitmq_memory_bound(total: int, tmp: Path) -> dict[str, Any]:
    """The same through RabbitMQ (confirmed; nothing bound to the exchange, so the broker keeps nothing)."""
    exchange = f"nk_report_{int(time.time())}"
    url = (f"amqp://guest:guest@127.0.0.1:5672/?exchange={exchange}&declare_queues=false&mandatory=false"
           "&durable_queues=false&queue_size=2000")  # the queue is the bound: queue_size x ~1.3 KiB per notification
    try:
        return await memory_bound(url, total, tmp)
    finally:
        import aio_pika

        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(exchange)


async def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    durable_n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    rabbit_n = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bound = await memory_bound("memory://?keep=false&queue_size=10000", total, tmp)
        rabbit_bound = await rabbitmq_memory_bound(rabbit_n, tmp)
        cost: dict[str, Any] = {}
        for callers in (1, 16):
            plain = await throughput("memory://?keep=false", durable_n, callers, tmp, None)
            durable = await throughput("memory://?keep=false&durable=true", durable_n, callers, tmp,
                                       tmp / f"spool-{callers}.sqlite")
            cost[f"callers_{callers}"] = {
                "in_memory_msgs_per_s": round(plain),
                "durable_msgs_per_s": round(durable),
                "ratio_durable_vs_in_memory": round(durable / plain, 3),
            }
    faults = await all_faults()
    print(json.dumps({
        "benchmark": "reliability_report",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "memory_bound": {"memory_transport": bound, "rabbitmq": rabbit_bound},
        "durable_cost": {"notifications": durable_n, "spool_synchronous": "normal", **cost},
        "faults": faults,
        "lost_total": sum(int(r.get("lost", 0)) for r in faults),
    }, indent=2))


if __name__ == "__main__":
    anyio.run(main)
