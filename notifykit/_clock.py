"""Time as the Notifier sees it, replaceable so retry and circuit tests need no sleeps.

``Clock`` and ``EventLoopClock`` are public in ``notifykit`` (a component such as the backup
service takes a clock too); ``ManualClock`` is the test clock of ``notifykit.testing``.
"""

from __future__ import annotations

from typing import Protocol

import anyio
import anyio.lowlevel

__all__ = ["Clock", "EventLoopClock", "ManualClock"]


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class EventLoopClock:
    """Real time from the event loop."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ManualClock:
    """Virtual time for tests: ``sleep()`` advances it at once and records how long was asked."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await anyio.lowlevel.checkpoint()
