"""The dispatcher's view of time, replaceable so retry and circuit tests need no sleeps."""

from __future__ import annotations

from typing import Protocol

import anyio

__all__ = ["Clock", "EventLoopClock"]


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class EventLoopClock:
    """Real time from the event loop."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
