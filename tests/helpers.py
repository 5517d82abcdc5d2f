"""Helpers shared by the tests: broker gating, a controllable clock, a crashing publisher."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio.streams.text import TextReceiveStream

REQUIRE_BROKERS = os.environ.get("NOTIFYKIT_REQUIRE_BROKERS") == "1"


def require_tcp(host: str, port: int, what: str) -> None:
    """Skip (or fail under NOTIFYKIT_REQUIRE_BROKERS=1) when nothing listens on host:port."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        reason = f"{what} not reachable on {host}:{port} ({exc.strerror or exc})"
    if REQUIRE_BROKERS:
        pytest.fail(f"{reason}; NOTIFYKIT_REQUIRE_BROKERS=1 makes this a failure")
    pytest.skip(reason)


class FakeClock:
    """Virtual time: sleep() advances it at once, so retry and circuit tests need no sleeping."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await anyio.lowlevel.checkpoint()


#: A durable publisher for crash tests: emits forever and prints each message_id once
#: notify() returned. argv: URL SPOOL DEAD_LETTERS.
CRASHING_PUBLISHER = """
import anyio, sys
from notifykit import Notifier

async def main():
    async with Notifier.from_url(sys.argv[1], publisher_id="crash", spool=sys.argv[2], dead_letters=sys.argv[3]) as n:
        i = 0
        while True:
            print((await n.info({}, "backup.createprogress", {"i": i})).message_id, flush=True)
            i += 1

anyio.run(main)
"""


async def run_publisher_then_sigkill(url: str, spool: Path, dead_letters: Path, lines: int,
                                     timeout: float = 120) -> list[str]:
    """Run CRASHING_PUBLISHER until it printed ``lines`` ids, SIGKILL it, and return the ids
    whose notify() had returned (complete lines only)."""
    script = spool.with_name(f"publisher-{os.getpid()}.py")
    script.write_text(CRASHING_PUBLISHER)
    proc = await anyio.open_process([sys.executable, str(script), url, str(spool), str(dead_letters)])
    assert proc.stdout is not None
    text = ""
    try:
        with anyio.fail_after(timeout):
            async for chunk in TextReceiveStream(proc.stdout):
                text += chunk
                if text.count("\n") >= lines:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return text.split("\n")[:-1]
