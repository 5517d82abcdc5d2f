"""The Notifier's own task, which owns its task group from start() to aclose().

anyio's rule: a task group is entered and left with ``async with`` in one task. A Notifier
is started and closed from whatever task its user likes (a fixture's setup and teardown,
a signal handler, a supervisor, under a deadline), so its task group cannot live in the
caller's task or cancel scope. It lives in a task of its own, started beside the event
loop's other tasks (a plain task on asyncio, a system task on trio), held here and
awaited at close. Nothing of it reaches the caller: no scope, no deadline, no exception.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

__all__ = ["Runner"]

log = logging.getLogger("notifykit")


class Runner:
    """Runs a task group in a task of its own until :meth:`stop`.

    ``on_abandoned`` is called once if the event loop cancels the task while the group
    still runs (the program ended without ``aclose()``): the owner says what it loses.
    """

    def __init__(self, name: str, on_abandoned: Callable[[], None]) -> None:
        self.name = name
        self._on_abandoned = on_abandoned
        self._task_group: TaskGroup | None = None
        self._stopping = False
        self._stop: anyio.Event | None = None
        self._done: anyio.Event | None = None

    @property
    def task_group(self) -> TaskGroup:
        """The running task group (only between :meth:`start` and :meth:`stop`)."""
        if self._task_group is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._task_group

    async def start(self) -> None:
        """Start the task and wait until its task group is open. Shielded: it finishes."""
        started, self._stop, self._done = anyio.Event(), anyio.Event(), anyio.Event()
        with anyio.CancelScope(shield=True):
            _spawn(self.name, self._main, started)
            await started.wait()

    async def stop(self) -> None:
        """Cancel the task group's remaining tasks and wait until the task has left it."""
        if self._stop is None or self._done is None:
            return
        self._stopping = True
        self._stop.set()
        with anyio.CancelScope(shield=True):
            await self._done.wait()

    async def _main(self, started: anyio.Event) -> None:
        assert self._stop is not None and self._done is not None
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                started.set()
                await self._stop.wait()
                group.cancel_scope.cancel()
        except BaseException as exc:
            if not self._stopping:
                self._stopping = True
                self._on_abandoned()
            if not isinstance(exc, anyio.get_cancelled_exc_class()):
                log.exception("notifykit %s: its task group failed", self.name)
            else:
                raise
        finally:
            self._task_group = None
            started.set()  # never leave start() waiting
            self._done.set()


def _spawn(name: str, main: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Start ``main(*args)`` as a task of the event loop, outside the caller's task tree."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio's system tasks are the same thing there
        importlib.import_module("trio.lowlevel").spawn_system_task(main, *args, name=f"notifykit:{name}")
        return
    task = loop.create_task(main(*args), name=f"notifykit:{name}")
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


#: The runners' asyncio tasks, kept alive until they finish (the loop keeps only weak references).
_TASKS: set[asyncio.Task[None]] = set()
