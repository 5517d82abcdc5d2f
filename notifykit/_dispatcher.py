"""One dispatcher per transport: the coordinator of its queue, its worker and its delivery.

It sits between the Notifier and a transport, so that the caller's only exposure to a
slow or dead peer is its transport's overflow policy, and transports never see each
other's trouble. This module owns what the Notifier talks to: ``offer()``/``put()`` from
notify(), the worker loop that moves batches from the queue to delivery, the worker's
lifecycle (supervised, shielded, stopped at the close deadline), the close's taking of the
leftovers, and ``snapshot()``. The rooms below it, each building on the next, are one
straight line from notify() to the transport:

* ``notifykit/_spooled_queue.py``: the spool behind a durable or ``spill`` transport;
* ``notifykit/_memory_queue.py``: the bounded memory queue and its overflow policies;
* ``notifykit/_delivery.py``: send, retry, circuit, batch bisection, dead letters.

Their contract is the accounting invariant, per transport, true at every await point::

    enqueued == sent + dropped + dead_lettered + dead_letter_failed + queue_depth + in_flight + spooled
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import anyio

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetterSink
from ._message import Notification
from ._policies import OverflowPolicy
from ._spool import SPOOL_TASK, Spool
from ._spooled_queue import RELEASE_IDLE, SpooledQueue
from ._stats import TransportState, TransportStats
from ._supervisor import Supervisor, describe
from ._transport import Transport

__all__ = ["Dispatcher"]


class Dispatcher(SpooledQueue):
    """Owns one transport's queue and the worker task that drains it."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        config: TransportConfig,
        sink: DeadLetterSink,
        clock: Clock,
        rng: random.Random | None = None,
        spool: Spool | None = None,
    ) -> None:
        super().__init__(name, transport, config, sink, clock, rng, spool)
        self.filter = config.filter
        # Counted as in flight too, so the accounting invariant holds at every await point
        # (and so are the dead letters being written or kept, self._letters.pending):
        self._putting_away = 0  # taken out of the queue at close, not yet spooled
        self.finished = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._input_closed = False

    # -- caller side -------------------------------------------------------------------

    def offer(self, notification: Notification) -> bool:
        """Enqueue without waiting. False means: call (and await) :meth:`put`, or
        :meth:`release` if the caller gives up before it could (cancelled)."""
        spool = self._spool
        if spool is not None and (self.durable or self._spilling):
            if not self._closed and self._append_now(spool, notification):
                return True
            if (not spool.writable and not self._closed and not self._reserved and not self._blocked
                    and self._try_enqueue(notification)):
                self.stats.unspooled += 1  # degraded spool: kept in memory, counted in queue_depth
                return True
            self._reserved += 1  # until put() has stored it, the worker must not stop spilling
            return False
        if self._blocked or self._closed:
            return False  # earlier callers wait first (block keeps arrival order); closed: put() handles it
        try:
            self._send.send_nowait(notification)
        except anyio.WouldBlock:
            if self.overflow is OverflowPolicy.BLOCK:
                return False
            if self.overflow is OverflowPolicy.SPILL and spool is not None:
                self._spilling = True
                self._spill_queue(spool)
                if self._append_now(spool, notification):
                    return True
                self._reserved += 1
                return False
            if self.overflow is OverflowPolicy.DROP_OLDEST:
                try:
                    self._receive.receive_nowait()
                except anyio.WouldBlock:  # pragma: no cover - a full queue always has one
                    pass
                self._send.send_nowait(notification)
            self.stats.enqueued += 1  # taken on, then dropped: counted in both
            self._count_drop()
            return True
        self.stats.enqueued += 1
        self.unturned += 1
        self._wakeup.set()
        return True

    @property
    def waits(self) -> bool:
        """Whether :meth:`put` may wait for room (rather than commit to the spool)."""
        return not (self._spool is not None and (self.durable or self._spilling))

    def release(self) -> None:
        """The caller of a refused :meth:`offer` gives up before :meth:`put` (cancelled)."""
        if not self.waits:
            self._reserved -= 1

    async def put(self, notification: Notification, started: float | None = None) -> bool:
        """After a refused :meth:`offer`: commit to the spool (durable, spill), or wait for
        room (``block``). False: no room within ``block_timeout`` counted from ``started``
        (counted as ``refused``; the caller raises QueueFullError)."""
        if self._closed:  # this notify() was waiting on another transport while the Notifier closed
            if not self.waits:
                self._reserved -= 1
            self.stats.enqueued += 1
            await self._dead_letter([notification], "arrived after the Notifier closed")
            return True
        if not self.waits:
            assert self._spool is not None
            try:
                return await self._spool_put(self._spool, notification, started=started)
            finally:
                self._reserved -= 1
        return await self._wait_for_room(notification, started)

    def close_input(self) -> None:
        """No more notifications: the worker drains what is queued, then stops."""
        self._input_closed = True
        self._wakeup.set()

    def snapshot(self) -> TransportStats:
        in_flight = len(self._in_flight) + self._letters.pending + self._putting_away
        spool, letters = self._spool, self._letters.failing
        degraded = (spool.fault.describe() if spool is not None and spool.fault is not None
                    else f"dead_letters: {letters}" if letters is not None else None)
        return replace(self.stats, queue_depth=self.queue_depth, in_flight=in_flight,
                       spooled=self._spooled - self._in_flight_spooled,
                       spooled_bytes=spool.pending_bytes(self.name) if spool is not None else 0,
                       degraded=degraded, delivery_latency=self.stats.delivery_latency.copy())

    # -- worker side -------------------------------------------------------------------

    @property
    def task_name(self) -> str:
        """The worker's name in ``Notifier.background_tasks()``."""
        return f"worker:{self.name}"

    async def run_shielded(self, supervisor: Supervisor) -> None:
        """run(), supervised (a crash is recorded and the worker restarted, never raised into
        the task group) and shielded from the caller's cancellation: a caller cancelled
        inside ``async with notifier`` still gets its queue drained by aclose() (within
        close_timeout), which alone stops the worker, through :meth:`stop`."""
        if self._spool is not None:  # its degraded state shows in the spool task's health too
            self._spool.attach_health(supervisor.register(SPOOL_TASK))
        try:
            with anyio.CancelScope(shield=True) as scope:
                self._scope = scope
                if self._stopped:  # stopped before this task even started
                    scope.cancel()
                await supervisor.run(self.task_name, self.run, on_failure=self._crashed)
        finally:
            self.finished.set()

    def _crashed(self, exc: BaseException) -> None:
        """The worker raised (a bug, a broken spool): show it; the supervisor restarts run()."""
        self.stats.last_error = describe(exc)
        self._set_state(TransportState.FAILED)
        if self._in_flight_spooled:  # those rows are still in the spool: read them again
            self._in_flight, self._in_flight_spooled = [], 0
            self._cache.clear()
            self._cache_complete = False

    def stop(self) -> None:
        """Cancel the worker (the close deadline passed)."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Worker: deliver batches from the memory queue, then from the spool, until closed.
        Run again by the supervisor after a crash: a memory batch that was in flight goes first."""
        spool = self._spool
        if self._in_flight:
            await self._deliver(self._in_flight)
            self._memory_batch_done(spool)
        while True:
            self._wakeup = anyio.Event()  # fresh before looking, so no wake-up is lost
            if self._letters.retry_due():
                await self._letters.retry()
                self._ack_delivered()
            batch = self._take_queued()
            if batch:
                self._in_flight = batch
                await self._deliver(batch)
                self._memory_batch_done(spool)
                continue
            if spool is not None and (self.durable or self._spilling):
                rows, through, quarantined = await self._next_spooled(spool)
                if rows or through > self._after:
                    await self._deliver_spooled(spool, rows, through, quarantined)
                    continue
                if self._committed_max > self._after:
                    continue  # appended while we were reading
                self._cache_complete = True  # everything appended is delivered
                if self._spilling and self._spooled <= 0 and self._reserved == 0:
                    self._spilling = False
                    continue
            if self._input_closed and not self._spilling and not self._blocked:
                return
            if spool is not None and self._unreleased:
                with anyio.move_on_after(RELEASE_IDLE) as idle:
                    await self._wakeup.wait()
                if idle.cancelled_caught:
                    await self._flush_deletes(spool)  # idle: write confirmations, free segments
                continue
            with anyio.move_on_at(self._letters.retry_at if self._letters.held else math.inf):
                await self._wakeup.wait()

    # -- close -------------------------------------------------------------------------

    async def dead_letter_leftovers(self, reason: str) -> tuple[int, int]:
        """After the worker stopped: what is still queued goes to the spool when there is
        one (replayed by the next Notifier), else to dead letters. Returns (dead-lettered,
        left in spool)."""
        self._closed = True
        if self._spool is not None:
            await self._flush_deletes(self._spool)  # before anything leaves the counters
        leftovers = [] if self._in_flight_spooled else list(self._in_flight)
        self._in_flight, self._in_flight_spooled = [], 0
        while True:
            try:
                leftovers.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        # Callers still waiting under ``block``: their notify() returns normally, their
        # notification is taken on here (counted enqueued) and kept or dead-lettered below.
        for admitted, notification in self._blocked.items():
            self.stats.enqueued += 1
            leftovers.append(notification)
            admitted.set()
        self._blocked.clear()
        self._send.close()
        self._receive.close()
        before = self.stats.dead_lettered
        spool = self._spool
        if spool is not None:
            await spool.check()  # a deleted directory is recreated (or reported) before anything counts as kept
            if not spool.on_disk:
                await self._dead_letter_unsaved(spool)
            self._putting_away = len(leftovers)
            for index, notification in enumerate(leftovers):
                if not spool.writable:  # degraded: the rest at once, not one dead-letter write each
                    rest = leftovers[index:]
                    self._putting_away -= len(rest)
                    fault = spool.fault.describe() if spool.fault is not None else "not writable"
                    await self._dead_letter(rest, f"{reason}; not kept: the spool is degraded ({fault})")
                    break
                self._putting_away -= 1  # _spool_put counts it before its first await
                await self._spool_put(spool, notification, new=False, closing=True)
        else:
            await self._dead_letter(leftovers, reason)
        await self._letters.retry(final=True)  # the kept ones: one last attempt
        if self._spool is not None:
            self._respool_unwritten(self._spool)
            self._ack_delivered()
            await self._flush_deletes(self._spool)
        return self.stats.dead_lettered - before, self._spooled if self._spool is not None else 0
