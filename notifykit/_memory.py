"""``memory://`` — keeps what it is sent, for assertions; the test double of the project.

URL options: ``fail=N`` (fail the next N sends), ``failure=transient|permanent``,
``delay=SECONDS`` (slow peer), ``max_batch=N``, ``reject=GLOB`` (permanently reject
matching event types, per message), ``keep=false`` (count deliveries without keeping
them, for memory benchmarks). Tests reach the instance through
``notifier.transports[name]`` and steer it with :meth:`fail_next`, :meth:`stall`, …

It lives in the core (public as ``notifykit.testing.MemoryTransport``) so that an
application's tests can steer it without importing ``transports``; the ``memory``
entry point still finds it through ``transports.memory``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, ClassVar, Self

import anyio

from ._errors import BatchError, PermanentError, TransientError
from ._formats import WireFormat
from ._message import Notification
from ._settings import TransportSettings
from ._transport import Transport

__all__ = ["MemoryTransport"]


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """``fail``, ``failure``, ``delay``, ``max_batch``, ``reject`` and ``keep`` from the URL."""

    fail: int = 0
    permanent: bool = False
    delay: float = 0.0
    max_batch: int = 100
    reject: tuple[str, ...] = ()
    keep: bool = True

    @classmethod
    def from_settings(cls, settings: TransportSettings) -> Self:
        return cls(
            fail=settings.take_int("fail", 0, minimum=0) or 0,
            permanent=settings.take_choice("failure", ("transient", "permanent"), "transient") == "permanent",
            delay=settings.take_float("delay", 0.0, minimum=0.0) or 0.0,
            max_batch=settings.take_int("max_batch", 100, minimum=1) or 100,
            reject=tuple(settings.take_list("reject")),
            keep=settings.take_bool("keep", True),
        )


class MemoryTransport(Transport):
    """In-process transport recording every delivered notification in order."""

    default_format: ClassVar[WireFormat] = WireFormat.JSON
    Options = MemoryOptions
    options: MemoryOptions

    def __init__(self, settings: TransportSettings, options: MemoryOptions | None = None) -> None:
        options = options or MemoryOptions()
        super().__init__(settings, options)
        self.messages: list[Notification] = []
        self.batch_sizes: list[int] = []
        self.attempts = 0
        self.attempt_times: list[float] = []
        self.clock: Callable[[], float] = anyio.current_time
        self.opened = False
        self.closed = False
        self._fail_remaining = options.fail
        self._permanent = options.permanent
        self._retry_after: float | None = None
        self._reject = list(options.reject)
        self._stalled: anyio.Event | None = None
        self.delay = options.delay
        self.keep = options.keep
        self.max_batch_size = options.max_batch
        self.delivered = 0

    # -- steering from tests -----------------------------------------------------------

    def fail_next(self, count: int, *, permanent: bool = False, retry_after: float | None = None) -> None:
        """Make the next ``count`` send() calls raise a transient (or permanent) error."""
        self._fail_remaining = count
        self._permanent = permanent
        self._retry_after = retry_after

    def stall(self) -> None:
        """Make send() hang until :meth:`resume` — a stuck broker."""
        if self._stalled is None:
            self._stalled = anyio.Event()

    def resume(self) -> None:
        if self._stalled is not None:
            self._stalled.set()
            self._stalled = None

    # -- views for assertions ----------------------------------------------------------

    @property
    def bodies(self) -> list[bytes]:
        """Each delivered notification encoded in this transport's wire format."""
        return [n.encode(self.format) for n in self.messages]

    @property
    def event_types(self) -> list[str]:
        return [n.event_type for n in self.messages]

    @property
    def payloads(self) -> list[Any]:
        return [n.payload for n in self.messages]

    # -- Transport ---------------------------------------------------------------------

    async def open(self) -> None:
        self.opened = True

    async def send(self, batch: Sequence[Notification]) -> None:
        self.attempts += 1
        self.attempt_times.append(self.clock())
        if self.delay:
            await anyio.sleep(self.delay)
        while self._stalled is not None:
            await self._stalled.wait()
        if self._fail_remaining > 0:
            self._fail_remaining -= 1
            if self._permanent:
                raise PermanentError("memory transport told to fail permanently")
            raise TransientError("memory transport told to fail", retry_after=self._retry_after)
        for n in batch:
            n.encode(self.format)  # encoding errors surface here, as on a real transport
        if self._reject:
            failures: dict[int, TransientError | PermanentError] = {
                i: PermanentError(f"event_type {n.event_type!r} rejected by memory transport")
                for i, n in enumerate(batch)
                if any(fnmatchcase(n.event_type, glob) for glob in self._reject)
            }
            self._record([n for i, n in enumerate(batch) if i not in failures])
            if failures:
                raise BatchError(failures)
            return
        self._record(batch)

    def _record(self, delivered: Sequence[Notification]) -> None:
        self.delivered += len(delivered)
        if self.keep:
            self.messages.extend(delivered)
            self.batch_sizes.append(len(delivered))

    async def aclose(self) -> None:
        self.closed = True
