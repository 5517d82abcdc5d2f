"""The spooled queue: the spool behind a durable or ``spill`` transport's memory queue.

It owns this transport's side of the spool (``notifykit/_spool.py``): the append on the
caller's path (the fast copy, and the slow path when the spool is full, waiting for an
fsync, or its disk is failing), the in-memory copy of what this process appended (so that
the worker delivers those very objects instead of reading them back), spilling,
``drop_oldest`` on a full spool, a degraded disk (kept in the memory queue instead), the
backlog read back, the confirmation of what was delivered and the deletion of what that
frees, the replay of what a previous process left, and what the close could not
dead-letter appended again. It builds on :class:`~notifykit._memory_queue.MemoryQueue`;
dead letters go down to :class:`~notifykit._delivery.Delivery`.

Accounting: a record of this transport in the log is ``spooled`` (``_spooled``, less the
rows of the batch in flight) until it is delivered, dead-lettered or dropped; a
notification is counted ``enqueued`` once, where it is taken on.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Sequence
from operator import itemgetter

import anyio

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetterSink
from ._memory_queue import MemoryQueue
from ._message import Notification
from ._policies import OverflowPolicy
from ._spool import Spool, SpoolFaultError, SpoolFullError, SpoolSync
from ._stats import TransportState
from ._transport import Transport

__all__ = ["RELEASE_IDLE", "SpooledQueue"]

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


class SpooledQueue(MemoryQueue):
    """One transport's queue: the memory queue, and the spool behind it when it has one."""

    def __init__(self, name: str, transport: Transport, config: TransportConfig, sink: DeadLetterSink,
                 clock: Clock, rng: random.Random | None, spool: Spool | None) -> None:
        super().__init__(name, transport, config, sink, clock, rng, self._kept_in_spool)
        # Durable outbox (durable = true, or overflow = spill once the queue is full).
        self.durable = config.durable
        self._spool = spool if (config.durable or config.overflow is OverflowPolicy.SPILL) else None
        self._spilling = False
        self._in_flight_spooled = 0  # rows of the batch in flight that are still counted in _spooled
        self._flying_through = 0  # the last seq of a batch in flight that has records in the log
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

    # -- into the spool ----------------------------------------------------------------

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

    def _appended(self, seq: int, notification: Notification, *, new: bool = True) -> None:
        if new:
            self.stats.enqueued += 1
        self._spooled += 1
        self._committed_max = seq  # sequence numbers only grow
        if self._cache_complete and len(self._cache) < self._cache_size:
            self._cache.append((seq, notification))
        else:
            self._cache_complete = False
            self._cache.clear()
        self._wakeup.set()

    def _cache_full(self) -> bool:
        return self._cache_complete and len(self._cache) >= self._cache_size

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
                    fault = spool.fault.describe() if spool.fault is not None else "not writable"
                    return await self._keep_in_memory(fault, notification, new=new, closing=closing, started=started)
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

    # -- out of the spool: read back, confirmed, freed ----------------------------------

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

    def _ack_delivered(self) -> None:
        """Confirm the spooled records taken so far, short of the first one whose dead letter
        is not on disk yet (it stays in the spool until it is)."""
        if self._spool is not None and self._after:
            floor = self._letters.ack_floor
            self._spool.ack(self.name, self._after if floor is None else min(self._after, floor - 1))

    async def _flush_deletes(self, spool: Spool) -> None:
        """Write this transport's confirmations and delete the segments they free."""
        self._unreleased = 0
        await spool.release()
        self._room.set()
        self._room = anyio.Event()

    def _kept_in_spool(self, count: int) -> None:
        """Dead letters that could not be written stay in the spool: counted spooled again."""
        self._spooled += count

    # -- at close --------------------------------------------------------------------

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
