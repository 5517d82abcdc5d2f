"""How long ``await notifier.info(...)`` keeps the caller, vs calling a transport directly.

Prints JSON: p50/p99/max in microseconds for (a) notify() through the queue to a
memory transport, (b) Notification.create + direct MemoryTransport.send(), and (c) a
direct send() of a prebuilt notification; plus ratios against (b), measured in one run.
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
import anyio.lowlevel

from notifykit import Notification, Notifier
from transports.memory import MemoryTransport

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
PAYLOAD: dict[str, Any] = {
    "tenant_id": "p-1", "user_id": "u-1", "backup_id": "b-1", "volume_id": "v-1", "size": 10,
    "status": "creating", "display_name": "nightly", "availability_zone": "nova", "percentage": 42.5,
}


def summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return {"p50_us": round(pick(0.50), 2), "p99_us": round(pick(0.99), 2), "max_us": round(ordered[-1] / 1000, 2)}


async def via_notifier(dead_letters: Path) -> list[int]:
    samples: list[int] = []
    async with Notifier.from_url("memory://", publisher_id="bench", dead_letters=dead_letters) as notifier:
        ctx = {"request_id": "req-1"}
        for i in range(N):
            start = time.perf_counter_ns()
            await notifier.info(ctx, "backup.createprogress", PAYLOAD)
            samples.append(time.perf_counter_ns() - start)
            if i % 100 == 99:
                await anyio.lowlevel.checkpoint()  # let the worker drain, outside the timed region
    transport = notifier.transports["memory"]
    assert isinstance(transport, MemoryTransport) and len(transport.messages) == N
    return samples


async def direct(prebuilt: bool, transport: MemoryTransport) -> list[int]:
    samples: list[int] = []
    ready = Notification.create("backup.createprogress", PAYLOAD, publisher_id="bench", context={"request_id": "r"})
    for _ in range(N):
        start = time.perf_counter_ns()
        if prebuilt:
            await transport.send([ready])
        else:
            n = Notification.create("backup.createprogress", PAYLOAD, publisher_id="bench",
                                    context={"request_id": "req-1"})
            await transport.send([n])
        samples.append(time.perf_counter_ns() - start)
    return samples


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        notifier = Notifier.from_url("memory://", publisher_id="bench", dead_letters=Path(tmp) / "dl.jsonl")
        transport = notifier.transports["memory"]
        assert isinstance(transport, MemoryTransport)
        gc.collect()
        await via_notifier(Path(tmp) / "dl.jsonl")  # warm-up
        gc.collect()
        results = {
            "notify_via_queue": summary(await via_notifier(Path(tmp) / "dl.jsonl")),
            "direct_create_and_send": summary(await direct(False, transport)),
            "direct_send_prebuilt": summary(await direct(True, transport)),
        }
    base = results["direct_create_and_send"]
    report = {
        "benchmark": "notify_latency",
        "n": N,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
        "ratio_notify_vs_direct_create_and_send": {
            "p50": round(results["notify_via_queue"]["p50_us"] / base["p50_us"], 2),
            "p99": round(results["notify_via_queue"]["p99_us"] / base["p99_us"], 2),
        },
        "target_p99_us": 50,
        "meets_target": results["notify_via_queue"]["p99_us"] < 50,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    anyio.run(main)
