"""Helpers shared by the tests: broker gating and a controllable clock."""

from __future__ import annotations

import os
import socket

import anyio
import anyio.lowlevel
import pytest

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
