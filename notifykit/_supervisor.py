"""Supervision of the Notifier's background tasks (dispatcher workers, status writer, …).

Every background task runs in the Notifier's task group, and that task group is entered
in the caller's task: an exception escaping a child would cancel the caller's code inside
``async with notifier:``. So nothing escapes. A failure is logged once per burst (with
its traceback), counted, shown in ``Notifier.background_tasks()`` and in the status file,
and the task is run again after a backoff. Cancellation (the Notifier closing) is never
caught.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ._clock import Clock

__all__ = ["Supervisor", "TaskHealth", "TaskState"]

log = logging.getLogger("notifykit")

#: A failure this long (seconds) after the previous one starts a new burst, logged again.
BURST_GAP = 60.0
#: Restart backoff: RESTART_INITIAL doubling per consecutive failure, at most RESTART_MAX.
RESTART_INITIAL = 0.1
RESTART_MAX = 30.0


class TaskState(enum.StrEnum):
    """``running``; ``retrying``: it failed and runs (or tries) again after a backoff;
    ``stopped``: finished, or cancelled at close."""

    RUNNING = "running"
    RETRYING = "retrying"  # it failed; it runs (or tries) again after a backoff
    STOPPED = "stopped"


@dataclass(slots=True)
class TaskHealth:
    """One background task: its state, how often it failed and the last failure."""

    name: str
    state: TaskState = TaskState.RUNNING
    failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


def describe(exc: BaseException) -> str:
    """``Type: message`` in one line (what ``last_error`` shows)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Keeps every background task's TaskHealth and runs tasks so that they cannot fail outward."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.health: dict[str, TaskHealth] = {}
        self._bursting: set[str] = set()  # failed since their last ok(), within BURST_GAP

    def register(self, name: str) -> TaskHealth:
        return self.health.setdefault(name, TaskHealth(name))

    def failed(self, name: str, exc: BaseException, what: str = "failed") -> None:
        """Count a failure; log it (with traceback) only when it starts a burst."""
        health = self.register(name)
        now = self._clock.now()
        new_burst = (name not in self._bursting or health.last_failure_at is None
                     or now - health.last_failure_at >= BURST_GAP)
        self._bursting.add(name)
        health.failures += 1
        health.last_error = describe(exc)
        health.last_failure_at = now
        health.state = TaskState.RETRYING
        if new_burst:
            log.error("notifykit background task %r %s: %s (retrying; further failures of this burst are"
                      " only counted)", name, what, health.last_error, exc_info=exc)
        else:
            log.debug("notifykit background task %r %s again (%d failures): %s", name, what, health.failures,
                      health.last_error)

    def ok(self, name: str) -> None:
        """The task did its work again: end the burst."""
        health = self.register(name)
        if name in self._bursting:
            self._bursting.discard(name)
            log.info("notifykit background task %r recovered (%d failure(s) in all)", name, health.failures)
        if health.state is TaskState.RETRYING:
            health.state = TaskState.RUNNING

    def stopped(self, name: str) -> None:
        self.register(name).state = TaskState.STOPPED

    async def run(self, name: str, work: Callable[[], Awaitable[None]],
                  on_failure: Callable[[BaseException], None] | None = None) -> None:
        """Run ``work`` until it returns; if it raises, record it and run it again after a
        backoff (RESTART_INITIAL doubling up to RESTART_MAX)."""
        self.register(name)
        delay = RESTART_INITIAL
        try:
            while True:
                try:
                    await work()
                    return
                except Exception as exc:
                    self.failed(name, exc, "crashed")
                    if on_failure is not None:
                        on_failure(exc)
                await self._clock.sleep(delay)
                delay = min(delay * 2, RESTART_MAX)
                self.register(name).state = TaskState.RUNNING
        finally:
            self.stopped(name)
