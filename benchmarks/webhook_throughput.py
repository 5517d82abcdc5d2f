"""Webhook throughput: notifykit's http transport vs a hand-written httpx loop, same receiver, same run.

A uvicorn receiver runs in a subprocess (so client and server do not share an event
loop) on 127.0.0.1 and counts the events it gets. Measured in msgs/s, the median of
ROUNDS interleaved rounds (the order rotates each round; a ratio is the median of the
per-round ratios):

* ``httpx_loop`` — the baseline: CONCURRENCY tasks posting one CloudEvent per request
  with one pooled ``httpx.AsyncClient``;
* ``notifykit_per_event`` — ``Notifier.from_url("http://…?max_concurrency=CONCURRENCY")``,
  one request per event, from the first ``notify()`` until every event is acknowledged;
* ``notifykit_batched`` — the same with ``batch=true`` (CloudEvents batch, 100 per request).

Prints JSON with both ratios against the baseline and the goals (per event >= 1.0x,
batched >= 20x).
Usage: python benchmarks/webhook_throughput.py [EVENTS] [CONCURRENCY]
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from _goals import goal, paired_ratio
from _throughput import EVENT, PAYLOAD, STATISTIC, Run, interleaved, rates_json

from notifykit import Notifier

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--serve" else 1000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[1] != "--serve" else 10
BATCH_EVENTS = EVENTS * 10
ROUNDS = 5
#: What the profile says the remaining time goes to (shown on the page when the goal is missed).
CAUSE = ("both sides spend their time in httpx/httpcore's per-request path (header building, h11, the pool) "
         "and the receiver shares the two cores; notifykit adds the core's per-notification work and its "
         "retry/accounting around each request")


# -- the receiver (subprocess) ---------------------------------------------------------

def serve(port: int) -> None:
    import uvicorn

    received = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal received
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["method"] == "GET":  # /count: events received so far
            reply = str(received).encode()
        else:
            headers = dict(scope["headers"])
            batched = headers.get(b"content-type", b"").startswith(b"application/cloudevents-batch+json")
            received += len(json.loads(body)) if batched else 1
            reply = b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(reply)).encode())]})
        await send({"type": "http.response.body", "body": reply})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"receiver did not start on 127.0.0.1:{port}")


# -- the contenders --------------------------------------------------------------------

async def received(client: httpx.AsyncClient, url: str) -> int:
    return int((await client.get(url)).text)


async def httpx_loop(url: str, count: int) -> float:
    """What one would write by hand: N tasks, one pooled client, one CloudEvent per POST."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=10, trust_env=False) as client:
        todo = iter(range(count))

        async def worker() -> None:
            for i in todo:
                event = {
                    "specversion": "1.0", "id": str(uuid.uuid4()), "source": "bench", "type": EVENT,
                    "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "datacontenttype": "application/json",
                    "data": {**PAYLOAD, "seq": i},
                }
                response = await client.post(url, content=json.dumps(event).encode(),
                                             headers={"Content-Type": "application/cloudevents+json"})
                response.raise_for_status()

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(CONCURRENCY):
                tg.start_soon(worker)
        return time.perf_counter() - start


async def via_notifykit(url: str, count: int, dead_letters: Path) -> float:
    notifier = Notifier.from_url(url, publisher_id="bench", dead_letters=dead_letters, queue_size=count)
    async with notifier:
        ctx = {"request_id": "req-1"}
        start = time.perf_counter()
        for i in range(count):
            await notifier.info(ctx, EVENT, {**PAYLOAD, "seq": i})
        while notifier.stats()["http"].sent < count:
            if notifier.stats()["http"].dead_lettered:
                raise SystemExit(f"notifykit dead-lettered events: {notifier.stats()['http'].last_error}")
            await anyio.sleep(0.002)
        return time.perf_counter() - start


def counted(probe: httpx.AsyncClient, base: str, name: str, run: Callable[[], Awaitable[float]], count: int) -> Run:
    """The run's rate, once the receiver counted all ``count`` events of it."""
    async def rate() -> float:
        before = await received(probe, base)
        elapsed = await run()
        got = await received(probe, base) - before
        if got != count:
            raise SystemExit(f"{name}: receiver counted {got} events, expected {count}")
        return count / elapsed
    return rate


async def main(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}/hook"
    with tempfile.TemporaryDirectory() as tmp:
        dead_letters = Path(tmp) / "dl.jsonl"
        contenders = {
            "httpx_loop": (lambda: httpx_loop(base, EVENTS), EVENTS),
            "notifykit_per_event": (lambda: via_notifykit(f"{base}?max_concurrency={CONCURRENCY}", EVENTS, dead_letters),
                                    EVENTS),
            "notifykit_batched": (lambda: via_notifykit(f"{base}?batch=true&max_concurrency={CONCURRENCY}", BATCH_EVENTS,
                                                        dead_letters), BATCH_EVENTS),
        }
        async with httpx.AsyncClient() as probe:
            await httpx_loop(base, 200)  # warm-up: imports, connections, receiver's JIT-free caches
            rounds = await interleaved([(name, counted(probe, base, name, run, count))
                                        for name, (run, count) in contenders.items()], ROUNDS)
    per_event = paired_ratio(rounds["notifykit_per_event"], rounds["httpx_loop"])
    batched = paired_ratio(rounds["notifykit_batched"], rounds["httpx_loop"])
    return {
        "benchmark": "webhook_throughput",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "events": EVENTS,
        "batched_events": BATCH_EVENTS,
        "concurrency": CONCURRENCY,
        "rounds": ROUNDS,
        "statistic": STATISTIC,
        **rates_json(rounds, 1),
        "ratio_per_event_vs_httpx_loop": round(per_event, 3),
        "ratio_batched_vs_httpx_loop": round(batched, 2),
        "goals": [
            goal(f"per-event msgs/s vs the httpx loop at concurrency {CONCURRENCY}", per_event, ">=", 1.0,
                 anchor="httpx_loop", cause=CAUSE),
            goal("batched CloudEvents msgs/s vs the httpx loop", batched, ">=", 20,
                 anchor="httpx_loop", digits=2),
        ],
    }


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        receiver_port = free_port()
        receiver = start_receiver(receiver_port)
        try:
            print(json.dumps(anyio.run(main, receiver_port), indent=2))
        finally:
            receiver.terminate()
            try:
                receiver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                receiver.kill()
                receiver.wait()
