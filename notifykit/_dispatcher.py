"""One dispatcher per transport: bounded queue, batching, retry, circuit breaker, dead letters.

It sits between the Notifier and a transport, so that the caller's only exposure to a
slow or dead peer is its transport's overflow policy, and transports never see each
other's trouble.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from operator import itemgetter

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetterSink, DeadLetterWriter
from ._errors import BatchError, PermanentError, TransientError, TransportError
from ._message import Notification
from ._policies import OverflowPolicy
from ._spool import SPOOL_TASK, Spool, SpoolFaultError, SpoolFullError, SpoolSync
from ._stats import TransportState, TransportStats
from ._supervisor import Supervisor, describe
from ._tracing import NO_SPAN, DeliverySpan, Tracing, messaging_system
from ._transport import Transport

__all__ = ["Dispatcher"]

log = logging.getLogger("notifykit")

#: Confirmations are written to the spool (and confirmed segments deleted) every this many
#: delivered records, or once the worker was idle for RELEASE_IDLE seconds: a crash re-sends
#: at most that many (at-least-once).
RELEASE_BATCH = 256
RELEASE_IDLE = 0.05
#: A durable caller finding the in-memory copy full waits this long for the worker before
#: leaving the backlog to the log (read back later, which costs more than the copy).
CACHE_WAIT = 0.05
_second = itemgetter(1)  # (seq, notification) -> notification



class _Circuit:
    """Closed → open after N consecutive failures → half-open after reset_timeout."""

    def __init__(self, threshold: int, reset_timeout: float) -> None:
        self.threshold = threshold
        self.reset_timeout = reset_timeout
        self.failures = 0
        self.opened_at: float | None = None

    def record_failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def wait_time(self, now: float) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.reset_timeout - now)


class Dispatcher:
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
        self.name = name
        self.transport = transport
        #: OpenTelemetry, when the Notifier found a tracer provider at start (None: no spans)
        self.tracing: Tracing | None = None
        self.messaging_system = messaging_system(transport.settings.url.scheme)
        self._span: DeliverySpan = NO_SPAN
        self.config = config
        self.filter = config.filter
        self.overflow = config.overflow
        self.batch_size = config.batch_size or transport.max_batch_size
        self.stats = TransportStats(name=name)
        # Dead letters the sink refused are kept here and written again (in flight until then).
        self._letters = DeadLetterWriter(name, sink, self.stats, held_max=max(config.queue_size, 1000),
                                         on_kept=self._kept_in_spool)
        # The spooled batch in flight, (seq, notification) in order; its dead letters need the seqs.
        self._flying_rows: Sequence[tuple[int, Notification]] = ()
        self._clock = clock
        self._rng = rng or random.Random()
        self._circuit = _Circuit(config.circuit.failure_threshold, config.circuit.reset_timeout)
        send, receive = anyio.create_memory_object_stream[Notification](config.queue_size)
        self._send: MemoryObjectSendStream[Notification] = send
        self._receive: MemoryObjectReceiveStream[Notification] = receive
        self._in_flight: list[Notification] = []
        #: Notifications enqueued since the worker last took a batch or the caller last
        #: gave it a turn (the Notifier yields once this passes batch_size).
        self.unturned = 0
        self._in_flight_spooled = 0  # rows of the batch in flight that are still counted in _spooled
        self._flying_through = 0  # the last seq of a batch in flight that has records in the log
        # Counted as in flight too, so the accounting invariant holds at every await point
        # (and so are the dead letters being written or kept, self._letters.pending):
        self._putting_away = 0  # taken out of the queue at close, not yet spooled
        # Callers waiting under ``block``, in arrival order; the worker admits them into the
        # queue as it makes room (setting each one's event), the close takes over the rest.
        self._blocked: dict[anyio.Event, Notification] = {}
        self._refusals = 0
        self._closed = False  # leftovers taken: the worker is gone
        self._opened = False
        self.finished = anyio.Event()
        self._scope: anyio.CancelScope | None = None
        self._stopped = False
        self._input_closed = False
        self._wakeup = anyio.Event()
        # Durable outbox (durable = true, or overflow = spill once the queue is full).
        self.durable = config.durable
        self._spool = spool if (config.durable or config.overflow is OverflowPolicy.SPILL) else None
        self._spilling = False
        self._after = 0  # highest spool sequence number taken by the worker
        self._committed_max = 0  # highest spool sequence number appended by a caller
        self._spooled = 0  # records of this transport in the spool, not yet delivered
        self._reserved = 0  # callers in put() on the spool path (keeps spilling on, keeps order)
        # Records this process appended, in order, so the worker need not read them back;
        # complete=False means some spooled records are only in the log (replay, overflow).
        self._cache: deque[tuple[int, Notification]] = deque()  # (seq, notification), oldest first
        self._cache_complete = True
        self._cache_size = config.queue_size
        self._spool_cap = config.spool_max_messages
        self._unreleased = 0  # delivered records whose confirmation is not yet written
        self._room = anyio.Event()  # set when spooled records were delivered (a full spool has room)
        self._cache_room = anyio.Event()  # set when the worker took from a full in-memory copy
        self._cache_waiters = 0

    # -- caller side -------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """This transport uses the spool (durable, or overflow = spill)."""
        return self._spool is not None

    def recover_from_spool(self) -> None:
        """After the spool was opened (once, at start): what a previous process left for this
        transport is taken on (counted enqueued and replayed) and delivered first, in order,
        read back from the log."""
        if self._spool is None:
            return
        left = self._spool.pending_counts().get(self.name, 0)
        self._spooled = self.stats.replayed = left
        self.stats.enqueued += left  # taken on by this process
        if left:
            self._spilling = True
            self._cache_complete = False
            log.info("notifykit transport %r: replaying %d notification(s) left in %r",
                     self.name, left, self._spool)

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

    async def _wait_for_room(self, notification: Notification, started: float | None) -> bool:
        """``block``: enqueue when the queue has room, else wait for it up to block_timeout
        (counted from ``started``) behind earlier waiters; False when refused."""
        if not self._blocked and self._try_enqueue(notification):
            return True
        timeout = self.config.block_timeout
        admitted = anyio.Event()
        self._blocked[admitted] = notification
        try:
            deadline = math.inf if timeout is None else (started or anyio.current_time()) + timeout
            with anyio.move_on_at(deadline):
                self._admit_blocked()
                await admitted.wait()
        finally:
            waiting = self._blocked.pop(admitted, None) is not None
        if not waiting:
            return True  # admitted into the queue, or taken over by the close: counted there
        self._count_refusal(timeout)
        return False

    def _try_enqueue(self, notification: Notification) -> bool:
        try:
            self._send.send_nowait(notification)
        except anyio.WouldBlock:
            return False
        self.stats.enqueued += 1
        self._wakeup.set()
        return True

    def _admit_blocked(self) -> None:
        """Move waiting callers' notifications into the queue while it has room, oldest first."""
        while self._blocked:
            admitted, notification = next(iter(self._blocked.items()))
            if not self._try_enqueue(notification):
                return
            del self._blocked[admitted]
            admitted.set()

    def _count_refusal(self, timeout: float | None) -> None:
        self.stats.refused += 1
        self._refusals += 1
        if self._refusals == 1 or self._refusals % 1000 == 0:
            log.warning("notifykit transport %r queue full (%d): block_timeout=%ss passed, %d notification(s)"
                        " refused so far (QueueFullError)", self.name, self.config.queue_size, timeout,
                        self.stats.refused)

    def _spill_queue(self, spool: Spool) -> None:
        """Spilling starts: copy the memory batch in flight and move what is queued to the
        log first (one write), so the log holds this transport's backlog in order and a
        close or crash keeps that order. The batch in flight is still being sent: once it
        is done the worker confirms its copy (:meth:`_memory_batch_done`)."""
        flying = list(self._in_flight) if not self._in_flight_spooled else []
        queued = self._take_queued(limit=self.config.queue_size)
        if not queued and not flying:
            return
        try:
            first = spool.append_many(self.name, [*flying, *queued])
        except (SpoolFullError, SpoolFaultError, OSError):
            for notification in queued:  # they fit: they were there a moment ago
                self._send.send_nowait(notification)
            return
        if flying:
            self._spooled += len(flying)
            self._in_flight_spooled = len(flying)
            self._flying_rows = list(enumerate(flying, first))  # for their dead letters
            self._flying_through = first + len(flying) - 1
            self._committed_max = self._flying_through
        for seq, notification in enumerate(queued, first + len(flying)):
            self._appended(seq, notification, new=False)

    def _memory_batch_done(self, spool: Spool | None) -> None:
        """A memory batch was sent or dead-lettered. If spilling copied it to the log while
        it was in flight, that copy (the oldest records of this transport) is confirmed."""
        self._in_flight = []
        if self._in_flight_spooled and spool is not None:
            self._spooled -= self._in_flight_spooled
            self._unreleased += self._in_flight_spooled
            self._in_flight_spooled = 0
            self._flying_rows = ()
            self._after = max(self._after, self._flying_through)
            self._ack_delivered()

    def _append_now(self, spool: Spool, notification: Notification) -> bool:
        """The fast path: one copy into the log on the loop, nothing awaited. False when
        put() must decide (spool full, a write error, fsync to wait for, earlier callers
        waiting, the in-memory copy full)."""
        cache = self._cache
        if (self._reserved or self._spooled >= self._spool_cap or spool.fsync
                or (self._cache_complete and len(cache) >= self._cache_size)):
            return False
        try:
            seq = spool.append(self.name, notification)
        except (SpoolFullError, SpoolFaultError, OSError):
            return False
        self.stats.enqueued += 1
        self._spooled += 1
        self._committed_max = seq
        if self._cache_complete:
            cache.append((seq, notification))
        self.unturned += 1
        self._wakeup.set()
        return True

    def _appended(self, seq: int, notification: Notification, *, new: bool = True) -> None:
        if new:
            self.stats.enqueued += 1
        self._spooled += 1
        self._on_committed(seq, notification)

    async def _spool_put(self, spool: Spool, notification: Notification, *, new: bool = True,
                         closing: bool = False, started: float | None = None) -> bool:
        """Store before returning (and fsync under ``spool_sync = fsync``). When the spool is
        full (``spool_max_messages`` or ``spool_max_bytes``) the overflow policy applies:
        ``block`` waits up to ``block_timeout`` for room, then dead-letters; ``drop_*``
        drop it; ``spill`` dead-letters it. Each is counted as ``spool_full`` too. When the
        spool's disk is failing (degraded) it is kept in memory instead (:meth:`_keep_in_memory`).
        ``new=False``: already counted as enqueued; ``closing``: a leftover at close, never waits.
        False: refused (``block`` past block_timeout, counted ``refused``)."""
        self.stats.enqueued += new  # taken on: spooled, dropped or dead-lettered below
        if self.durable and spool.writable and self._cache_full() and not closing and self.stats.state in (
                TransportState.STARTING, TransportState.CONNECTED):
            # A healthy worker drains the in-memory copy faster than the log can be read back:
            # wait a moment for it; a stalled one leaves the backlog to the log. (spill never
            # waits: it commits before any block wait of another transport.)
            self._cache_waiters += 1
            try:
                with anyio.move_on_after(CACHE_WAIT):
                    while self._cache_full():
                        await self._cache_room.wait()
            finally:
                self._cache_waiters -= 1
        cap = self.config.spool_max_messages
        timeout = self.config.block_timeout
        deadline = None if timeout is None else anyio.current_time() + timeout
        released = False
        while True:
            bytes_full = False
            if self._spooled < cap:
                try:
                    seq = spool.append(self.name, notification)
                except SpoolFullError as exc:
                    if not released:  # confirmed segments may be waiting for deletion: free them first
                        released = True
                        await spool.make_room()
                        continue
                    reason, bytes_full = f"spool full: {exc}", True
                except (SpoolFaultError, OSError):
                    return await self._keep_in_memory(spool, notification, new=new, closing=closing, started=started)
                else:
                    self._appended(seq, notification, new=False)
                    if spool.sync is SpoolSync.FSYNC:
                        await spool.synced(seq)
                    return True
            else:
                reason = f"spool full: {cap} notifications already waiting"
            if self.overflow is OverflowPolicy.BLOCK and not closing:
                remaining = math.inf if deadline is None else deadline - anyio.current_time()
                if remaining > 0:
                    with anyio.move_on_after(remaining):
                        await self._room.wait()
                    continue
            if self.overflow is OverflowPolicy.DROP_OLDEST and not closing:
                if await self._drop_oldest(spool, bytes_full=bytes_full):
                    continue  # room was made: write the new one
            self.stats.spool_full += 1
            if self.overflow in (OverflowPolicy.DROP_NEWEST, OverflowPolicy.DROP_OLDEST) and not closing:
                self._count_drop()
                return True
            await self._dead_letter([notification], reason)
            return True

    async def _keep_in_memory(self, spool: Spool, notification: Notification, *, new: bool, closing: bool,
                              started: float | None) -> bool:
        """The spool's disk is failing (see ``Spool.fault``; logged once, by the spool): the
        notification is kept in memory, in the queue (counted ``unspooled``, shown in
        queue_depth, never as spooled), and once the queue is full the overflow policy
        applies as to any in-memory transport: ``block`` waits for room (then refuses),
        ``drop_*`` drop, ``spill`` dead-letters it (there is no disk to spill to). At close
        it is dead-lettered: nothing in memory outlives the process."""
        fault = spool.fault.describe() if spool.fault is not None else "not writable"
        if closing:
            await self._dead_letter([notification], f"not kept: the spool is degraded ({fault})")
            return True
        self.stats.enqueued -= new  # counted again below, where it is taken on (or not: refused)
        if not self._blocked and self._try_enqueue(notification):
            self.stats.unspooled += 1
            return True
        if self.overflow is OverflowPolicy.BLOCK:
            if await self._wait_for_room(notification, started):
                self.stats.unspooled += 1
                return True
            return False
        self.stats.enqueued += 1
        if self.overflow is OverflowPolicy.DROP_OLDEST:
            with contextlib.suppress(anyio.WouldBlock):
                self._receive.receive_nowait()
            self._send.send_nowait(notification)
            self.stats.unspooled += 1
            self._count_drop()
        elif self.overflow is OverflowPolicy.DROP_NEWEST:
            self._count_drop()
        else:
            await self._dead_letter([notification], f"the spool is degraded ({fault}) and the queue is full"
                                                    f" ({self.config.queue_size})")
        return True

    async def _drop_oldest(self, spool: Spool, *, bytes_full: bool) -> int:
        """``overflow = drop_oldest`` on a full spool: drop this transport's oldest waiting
        notifications (never the batch in flight) to make room for the new one — the oldest
        one under ``spool_max_messages``; under ``spool_max_bytes`` as many as free the
        oldest segment they alone hold. Returns how many were dropped; 0 when no room can
        be made that way (other transports' records or the batch in flight hold every
        closed segment): the new one is dropped instead."""
        for _ in range(3):  # the worker may take a batch while the log is counted: count again
            after = self._flying_through if self._in_flight_spooled else self._after
            cache = self._cache if self._cache_complete else None
            if bytes_full:
                through = spool.freeable_through(self.name, after)
            elif cache is not None:
                through = cache[0][0] if cache else None
            else:
                through = await spool.next_waiting(self.name, after)
            if through is None:
                return 0
            if cache is not None and (not cache or cache[0][0] > after):
                count = 0
                while cache and cache[0][0] <= through:
                    cache.popleft()
                    count += 1
                break
            count = await spool.count(self.name, after, through)
            if after == (self._flying_through if self._in_flight_spooled else self._after) and not self._cache_complete:
                break
        else:
            return 0
        spool.drop(self.name, after, through)
        self._spooled -= count
        self.stats.spool_full += count
        for _ in range(count):
            self._count_drop()
        if bytes_full:
            await spool.release()  # deletes what the drop freed
        return count

    def _cache_full(self) -> bool:
        return self._cache_complete and len(self._cache) >= self._cache_size

    def _on_committed(self, seq: int, notification: Notification) -> None:
        self._committed_max = seq  # sequence numbers only grow
        if self._cache_complete and len(self._cache) < self._cache_size:
            self._cache.append((seq, notification))
        else:
            self._cache_complete = False
            self._cache.clear()
        self._wakeup.set()

    def _count_drop(self) -> None:
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.warning(
                "notifykit transport %r queue full (%d): %s policy dropped %d notification(s) so far",
                self.name, self.config.queue_size, self.overflow.value, self.stats.dropped,
            )

    def close_input(self) -> None:
        """No more notifications: the worker drains what is queued, then stops."""
        self._input_closed = True
        self._wakeup.set()

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def snapshot(self) -> TransportStats:
        in_flight = len(self._in_flight) + self._letters.pending + self._putting_away
        spool, letters = self._spool, self._letters.failing
        degraded = (spool.fault.describe() if spool is not None and spool.fault is not None
                    else f"dead_letters: {letters}" if letters is not None else None)
        return replace(self.stats, queue_depth=self.queue_depth, in_flight=in_flight,
                       spooled=self._spooled - self._in_flight_spooled, degraded=degraded)

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

    def _take_queued(self, limit: int | None = None) -> list[Notification]:
        self.unturned = 0
        batch: list[Notification] = []
        limit = limit or self.batch_size
        while len(batch) < limit:
            try:
                batch.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        if batch and self._blocked:
            self._admit_blocked()
        return batch

    async def _next_spooled(self, spool: Spool) -> tuple[Sequence[tuple[int, Notification]], int, int]:
        """The next records after ``_after``, how far that got, and how many were
        quarantined: from the in-memory copy when it is complete (the steady state: the
        objects notify() appended, nothing read back or decoded), else read from the log
        (a replay, or a backlog larger than the copy)."""
        if self._cache_complete:
            cache = self._cache
            if len(cache) <= 2 * self.batch_size:  # about a batch (the steady state): list copies, in C
                rows = list(cache)
                cache.clear()
                if len(rows) > self.batch_size:
                    cache.extend(rows[self.batch_size:])
                    del rows[self.batch_size:]
            else:  # a backlog: one popleft() per row, O(batch) whatever its length
                rows = [cache.popleft() for _ in range(self.batch_size)]
            if self._cache_waiters:
                self._cache_room.set()
                self._cache_room = anyio.Event()
            return rows, rows[-1][0] if rows else self._after, 0
        read = await spool.read(self.name, self._after, self.batch_size)
        return read.rows, read.through, read.quarantined

    async def _deliver_spooled(self, spool: Spool, rows: Sequence[tuple[int, Notification]], through: int,
                               quarantined: int) -> None:
        """Deliver spooled records, then confirm them (all up to ``through``) once sent or
        dead-lettered; the confirmation reaches the log every RELEASE_BATCH records or when
        idle, so a crash re-sends at most that many (at-least-once)."""
        if rows:
            self._in_flight, self._in_flight_spooled = list(map(_second, rows)), len(rows)
            self._flying_rows = rows
            self._flying_through = through
            try:
                await self._deliver(self._in_flight)
            finally:
                self._flying_rows = ()
        self._after = through
        self._spooled -= len(rows) + quarantined
        self._in_flight, self._in_flight_spooled = [], 0
        self._ack_delivered()
        self._unreleased += len(rows) + quarantined
        self._room.set()
        self._room = anyio.Event()
        if self._unreleased >= RELEASE_BATCH:
            await self._flush_deletes(spool)

    def _ack_delivered(self) -> None:
        """Confirm the spooled records taken so far, short of the first one whose dead letter
        is not on disk yet (it stays in the spool until it is)."""
        if self._spool is not None and self._after:
            floor = self._letters.ack_floor
            self._spool.ack(self.name, self._after if floor is None else min(self._after, floor - 1))

    def _respool_unwritten(self, spool: Spool) -> None:
        """At close: spooled records whose dead letter could not be written are appended to the
        log again (the next Notifier replays them), so that the records delivered after them are
        confirmed rather than re-sent. If even that fails, their confirmation stays held back."""
        kept, self._letters.kept = self._letters.kept, []
        if not kept:
            return
        try:
            spool.append_many(self.name, kept)
        except (SpoolFullError, SpoolFaultError, OSError) as exc:
            log.warning("notifykit transport %r: could not append %d unwritten dead letter(s) to %r again (%s);"
                        " the next Notifier re-sends from the first of them", self.name, len(kept), spool, exc)
            return
        self._letters.close_floor = None

    async def _dead_letter_unsaved(self, spool: Spool) -> None:
        """At close, the spool's directory deleted and not recreated: what waits in it is not
        on disk (only readable through the descriptors this process holds), so it is read
        and dead-lettered rather than reported as kept for the next Notifier."""
        fault = spool.fault.describe() if spool.fault is not None else "deleted"
        while self._spooled > 0:
            read = await spool.read(self.name, self._after, 1000)
            if not read.rows and read.through <= self._after:
                break
            self._spooled -= len(read.rows) + read.quarantined
            self._after = read.through
            self._cache.clear()
            self._cache_complete = False
            await self._dead_letter([row.notification for row in read.rows],
                                    f"not kept: the spool directory is gone ({fault})")
            self._ack_delivered()

    def _kept_in_spool(self, count: int) -> None:
        """Dead letters that could not be written stay in the spool: counted spooled again."""
        self._spooled += count

    async def _flush_deletes(self, spool: Spool) -> None:
        """Write this transport's confirmations and delete the segments they free."""
        self._unreleased = 0
        await spool.release()
        self._room.set()
        self._room = anyio.Event()

    async def _deliver(self, batch: list[Notification]) -> None:
        if self.tracing is None:
            await self._deliver_batch(batch)
            return
        with self.tracing.send(self.messaging_system, ",".join(self.config.topics), self.name, batch) as span:
            self._span = span
            try:
                await self._deliver_batch(batch)
            finally:
                self._span = NO_SPAN

    async def _deliver_batch(self, batch: list[Notification]) -> None:
        pending: Sequence[Notification] = batch
        attempts = 0
        first_failure: float | None = None
        retry = self.config.retry
        while pending:
            error: TransientError
            try:
                if not self._opened:
                    await self.transport.open()
                    self._opened = True
                await self.transport.send(pending)
            except BatchError as exc:
                pending, error, progressed = await self._split(pending, exc)
                self._in_flight = list(pending)  # the rest is counted sent or dead-lettered
                if not pending:
                    self._succeeded()
                    return
                if progressed:
                    self._circuit.record_success()
            except PermanentError as exc:
                self._circuit.record_success()  # the peer answered: it is alive
                self.stats.last_error = str(exc)  # e.g. a refused login: the operator sees why
                self._set_state(TransportState.CONNECTED)
                await self._isolate(pending, f"permanent error: {exc}")
                return
            except TransientError as exc:
                error = exc
            except Exception as exc:  # a bug in a transport must not kill the worker
                log.exception("notifykit transport %r raised an unexpected error", self.name)
                error = TransientError(f"unexpected {type(exc).__name__}: {exc}")
            else:
                self.stats.sent += len(pending)
                self._in_flight = []  # counted sent: a crash from here on must not send it again
                self._succeeded()
                return
            now = self._clock.now()
            first_failure = now if first_failure is None else first_failure
            attempts += 1
            self.stats.last_error = str(error)
            self._circuit.record_failure(now)
            if retry.gives_up(attempts, now - first_failure):
                await self._isolate(
                    pending, f"gave up after {attempts} attempt(s) over {now - first_failure:.1f}s: {error}"
                )
                return
            delay = retry.delay(attempts - 1, self._rng)
            if error.retry_after is not None:
                delay = max(delay, min(error.retry_after, retry.max_delay))
            circuit_wait = self._circuit.wait_time(now)
            if circuit_wait > 0:
                self._set_state(TransportState.CIRCUIT_OPEN)
                delay = max(delay, circuit_wait)
            else:
                self._set_state(TransportState.RETRYING)
            self.stats.retried += len(pending)
            self._span.retry(attempts, delay, error)
            log.debug("notifykit transport %r retrying %d in %.3fs: %s", self.name, len(pending), delay, error)
            await self._clock.sleep(delay)

    async def _split(
        self, pending: Sequence[Notification], exc: BatchError
    ) -> tuple[list[Notification], TransientError, bool]:
        """Count the sent part of a batch, dead-letter its permanent failures, keep the rest."""
        failed = {i for i in exc.failures if 0 <= i < len(pending)}
        permanent = [(pending[i], e) for i, e in exc.failures.items() if i in failed and isinstance(e, PermanentError)]
        transient = [(pending[i], e) for i, e in sorted(exc.failures.items()) if i in failed and isinstance(e, TransientError)]
        # In flight from here: the transient ones, and the permanent ones until each is being
        # dead-lettered (a worker stopped in between leaves the rest to the close).
        self._in_flight = [n for n, _ in transient] + [n for n, _ in permanent]
        self.stats.sent += len(pending) - len(failed)
        for notification, err in permanent:
            self._in_flight.pop(len(transient))
            await self._dead_letter([notification], f"permanent error: {err}")
        first = transient[0][1] if transient else TransientError("batch failed")
        return [n for n, _ in transient], first, len(failed) < len(pending)

    async def _isolate(self, batch: Sequence[Notification], reason: str) -> None:
        """The transport failed a whole batch for good (a permanent error, or its retry
        budget spent): bisect it, one attempt per part, so that only the message(s) at
        fault are dead-lettered and the rest is delivered. A transport that fails part
        after part is down rather than picky: after more failures in a row than a
        bisection needs to reach one message, the rest is dead-lettered with ``reason``.
        ``_in_flight`` holds exactly what is unresolved at every await (accounting)."""
        if len(batch) <= 1 or not self._opened:
            self._in_flight = []  # counted as being dead-lettered instead
            await self._dead_letter(list(batch), reason)
            return
        log.warning("notifykit transport %r failed a batch of %d (%s): isolating the message(s) at fault",
                    self.name, len(batch), reason)
        middle = len(batch) // 2
        parts = [list(batch[middle:]), list(batch[:middle])]  # a stack: the first half is tried first
        suspects: list[tuple[Notification, str]] = []  # failed alone; at fault once another part passes
        strikes, limit, progressed = 0, len(batch).bit_length() + 2, False
        while parts and strikes < limit:
            part = parts.pop()
            self._in_flight = [*(n for n, _ in suspects), *part, *(n for p in reversed(parts) for n in p)]
            failed, error = await self._attempt(part)
            if len(failed) < len(part):
                strikes, progressed = 0, True
            else:
                strikes += 1
            if len(failed) == 1:
                suspects.append((failed[0], error))
            elif failed:
                middle = len(failed) // 2
                parts += [failed[middle:], failed[:middle]]
        rest = [n for p in reversed(parts) for n in p]
        self._in_flight = []  # counted as being dead-lettered instead
        if progressed:
            letters = [([n], f"{e} (isolated from a batch of {len(batch)})") for n, e in suspects] + [(rest, reason)]
        else:
            letters = [([*(n for n, _ in suspects), *rest], reason)]
        pending = [n for group, _ in letters for n in group]
        for group, why in letters:
            self._in_flight = pending = pending[len(group):]
            await self._dead_letter(group, why)

    async def _attempt(self, part: list[Notification]) -> tuple[list[Notification], str]:
        """One send of ``part``, no retry: (the messages that failed, why). The sent ones
        are counted; the caller updates ``_in_flight`` before its next await."""
        try:
            await self.transport.send(part)
        except BatchError as exc:
            failures = {i: e for i, e in exc.failures.items() if 0 <= i < len(part)}
            self.stats.sent += len(part) - len(failures)
            first = failures[min(failures)] if failures else exc
            kind = "permanent" if isinstance(first, PermanentError) else "transient"
            return [part[i] for i in sorted(failures)], f"{kind} error: {first}"
        except PermanentError as exc:
            return part, f"permanent error: {exc}"
        except TransportError as exc:
            return part, f"transient error: {exc}"
        except Exception as exc:  # a transport's bug, as in _deliver
            return part, f"unexpected {type(exc).__name__}: {exc}"
        self.stats.sent += len(part)
        return [], ""

    def _succeeded(self) -> None:
        self._circuit.record_success()
        self._set_state(TransportState.CONNECTED)

    def _set_state(self, state: TransportState) -> None:
        if state is not self.stats.state:
            self._span.circuit(state.value)
            if state is TransportState.CIRCUIT_OPEN:
                log.warning("notifykit transport %r circuit open: %s", self.name, self.stats.last_error)
            elif state is TransportState.CONNECTED and self.stats.state in (TransportState.RETRYING, TransportState.CIRCUIT_OPEN):
                log.info("notifykit transport %r recovered", self.name)
            self.stats.state = state

    async def _dead_letter(self, notifications: list[Notification], reason: str) -> None:
        """Dead-letter ``notifications``: counted dead_lettered once on disk; until then in
        flight (being written, or kept by ``self._letters`` while the sink refuses). After
        the close, one attempt: what fails is dead_letter_failed (or stays in the spool)."""
        if notifications:
            self._span.dead_letter(len(notifications), reason)
            seqs = {id(n): seq for seq, n in self._flying_rows}  # id(notification) -> its spool seq
            await self._letters.write(notifications, reason, seqs, final=self._closed)

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
