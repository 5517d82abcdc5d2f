"""The memory queue: one transport's bounded queue in memory, and its overflow policies.

It owns the anyio memory object stream between the callers and the transport's worker:
taking a notification on without waiting, the callers waiting under ``block`` (admitted
oldest first as the worker makes room, refused after ``block_timeout``), the counts and
log lines of refusals and drops, what a degraded spool leaves to memory, and the worker's
taking of a batch. The spool behind it, for durable and ``spill`` transports, is the room
above (``notifykit/_spooled_queue.py``); what a batch then meets is
:class:`~notifykit._delivery.Delivery`, below.

Accounting: a notification in the stream is ``queue_depth``; it is counted ``enqueued``
when it enters the stream (a waiting caller's: when it is admitted).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetterSink
from ._delivery import Delivery
from ._message import Notification
from ._policies import OverflowPolicy
from ._transport import Transport

__all__ = ["MemoryQueue"]

log = logging.getLogger("notifykit")


class MemoryQueue(Delivery):
    """One transport's bounded in-memory queue, drained in batches by its worker."""

    def __init__(self, name: str, transport: Transport, config: TransportConfig, sink: DeadLetterSink,
                 clock: Clock, rng: random.Random | None, on_kept: Callable[[int], None]) -> None:
        super().__init__(name, transport, config, sink, clock, rng, on_kept)
        self.overflow = config.overflow
        send, receive = anyio.create_memory_object_stream[Notification](config.queue_size)
        self._send: MemoryObjectSendStream[Notification] = send
        self._receive: MemoryObjectReceiveStream[Notification] = receive
        #: Notifications enqueued since the worker last took a batch or the caller last
        #: gave it a turn (the Notifier yields once this passes batch_size).
        self.unturned = 0
        self._wakeup = anyio.Event()  # set when there is something for the worker
        # Callers waiting under ``block``, in arrival order; the worker admits them into the
        # queue as it makes room (setting each one's event), the close takes over the rest.
        self._blocked: dict[anyio.Event, Notification] = {}
        self._refusals = 0

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def _try_enqueue(self, notification: Notification) -> bool:
        try:
            self._send.send_nowait(notification)
        except anyio.WouldBlock:
            return False
        self.stats.enqueued += 1
        self._wakeup.set()
        return True

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

    def _count_drop(self) -> None:
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.warning(
                "notifykit transport %r queue full (%d): %s policy dropped %d notification(s) so far",
                self.name, self.config.queue_size, self.overflow.value, self.stats.dropped,
            )

    async def _keep_in_memory(self, fault: str, notification: Notification, *, new: bool, closing: bool,
                              started: float | None) -> bool:
        """The spool's disk is failing (see ``Spool.fault``; logged once, by the spool): the
        notification is kept in memory, in the queue (counted ``unspooled``, shown in
        queue_depth, never as spooled), and once the queue is full the overflow policy
        applies as to any in-memory transport: ``block`` waits for room (then refuses),
        ``drop_*`` drop, ``spill`` dead-letters it (there is no disk to spill to). At close
        it is dead-lettered: nothing in memory outlives the process."""
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

