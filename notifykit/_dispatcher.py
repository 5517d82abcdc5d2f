"""One dispatcher per transport: bounded queue, batching, retry, circuit breaker, dead letters.

It sits between the Notifier and a transport, so that the caller's only exposure to a
slow or dead peer is its transport's overflow policy, and transports never see each
other's trouble.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import replace

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetter, DeadLetterSink, now_utc
from ._errors import BatchError, PermanentError, TransientError
from ._message import Notification
from ._policies import OverflowPolicy
from ._stats import TransportState, TransportStats
from ._transport import Transport

__all__ = ["Dispatcher"]

log = logging.getLogger("notifykit")


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
    ) -> None:
        self.name = name
        self.transport = transport
        self.config = config
        self.filter = config.filter
        self.overflow = config.overflow
        self.batch_size = config.batch_size or transport.max_batch_size
        self.stats = TransportStats(name=name)
        self._sink = sink
        self._clock = clock
        self._rng = rng or random.Random()
        self._circuit = _Circuit(config.circuit.failure_threshold, config.circuit.reset_timeout)
        send, receive = anyio.create_memory_object_stream[Notification](config.queue_size)
        self._send: MemoryObjectSendStream[Notification] = send
        self._receive: MemoryObjectReceiveStream[Notification] = receive
        self._in_flight: list[Notification] = []
        self._opened = False
        self.finished = anyio.Event()

    # -- caller side -------------------------------------------------------------------

    def offer(self, notification: Notification) -> bool:
        """Enqueue without waiting. False means: full under ``block``, call :meth:`put`."""
        try:
            self._send.send_nowait(notification)
        except anyio.WouldBlock:
            if self.overflow is OverflowPolicy.BLOCK:
                return False
            if self.overflow is OverflowPolicy.DROP_OLDEST:
                try:
                    self._receive.receive_nowait()
                except anyio.WouldBlock:  # pragma: no cover - a full queue always has one
                    pass
                self._send.send_nowait(notification)
                self.stats.enqueued += 1
            self._count_drop()
            return True
        self.stats.enqueued += 1
        return True

    async def put(self, notification: Notification) -> None:
        """Wait for room (``block`` policy); past ``block_timeout`` dead-letter it instead."""
        timeout = self.config.block_timeout
        with anyio.move_on_after(timeout) as scope:
            await self._send.send(notification)
            self.stats.enqueued += 1
        if scope.cancelled_caught:
            await self._dead_letter(
                [notification], f"queue full: no room within block_timeout={timeout}s"
            )

    def _count_drop(self) -> None:
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.warning(
                "notifykit transport %r queue full (%d): %s policy dropped %d notification(s) so far",
                self.name, self.config.queue_size, self.overflow.value, self.stats.dropped,
            )

    def close_input(self) -> None:
        """No more notifications: the worker drains what is queued, then stops."""
        self._send.close()

    @property
    def queue_depth(self) -> int:
        return self._send.statistics().current_buffer_used

    def snapshot(self) -> TransportStats:
        return replace(self.stats, queue_depth=self.queue_depth, in_flight=len(self._in_flight))

    # -- worker side -------------------------------------------------------------------

    async def run(self) -> None:
        """Worker: take up to batch_size queued notifications at a time and deliver them."""
        try:
            # The receive side stays open if we are cancelled: dead_letter_leftovers reads it.
            async for first in self._receive:
                batch = [first]
                while len(batch) < self.batch_size:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                self._in_flight = batch
                await self._deliver(batch)
                self._in_flight = []
        finally:
            self.finished.set()

    async def _deliver(self, batch: list[Notification]) -> None:
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
                if not pending:
                    self._succeeded()
                    return
                if progressed:
                    self._circuit.record_success()
            except PermanentError as exc:
                self._circuit.record_success()  # the peer answered: it is alive
                await self._dead_letter(list(pending), f"permanent error: {exc}")
                self._set_state(TransportState.CONNECTED)
                return
            except TransientError as exc:
                error = exc
            except Exception as exc:  # a bug in a transport must not kill the worker
                log.exception("notifykit transport %r raised an unexpected error", self.name)
                error = TransientError(f"unexpected {type(exc).__name__}: {exc}")
            else:
                self.stats.sent += len(pending)
                self._succeeded()
                return
            now = self._clock.now()
            first_failure = now if first_failure is None else first_failure
            attempts += 1
            self.stats.last_error = str(error)
            self._circuit.record_failure(now)
            if retry.gives_up(attempts, now - first_failure):
                await self._dead_letter(
                    list(pending),
                    f"gave up after {attempts} attempt(s) over {now - first_failure:.1f}s: {error}",
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
            log.debug("notifykit transport %r retrying %d in %.3fs: %s", self.name, len(pending), delay, error)
            await self._clock.sleep(delay)

    async def _split(
        self, pending: Sequence[Notification], exc: BatchError
    ) -> tuple[list[Notification], TransientError, bool]:
        """Count the sent part of a batch, dead-letter its permanent failures, keep the rest."""
        failed = {i for i in exc.failures if 0 <= i < len(pending)}
        self.stats.sent += len(pending) - len(failed)
        permanent = [(pending[i], e) for i, e in exc.failures.items() if i in failed and isinstance(e, PermanentError)]
        for notification, err in permanent:
            await self._dead_letter([notification], f"permanent error: {err}")
        transient = [(pending[i], e) for i, e in sorted(exc.failures.items()) if i in failed and isinstance(e, TransientError)]
        first = transient[0][1] if transient else TransientError("batch failed")
        return [n for n, _ in transient], first, len(failed) < len(pending)

    def _succeeded(self) -> None:
        self._circuit.record_success()
        self._set_state(TransportState.CONNECTED)

    def _set_state(self, state: TransportState) -> None:
        if state is not self.stats.state:
            if state is TransportState.CIRCUIT_OPEN:
                log.warning("notifykit transport %r circuit open: %s", self.name, self.stats.last_error)
            elif state is TransportState.CONNECTED and self.stats.state in (TransportState.RETRYING, TransportState.CIRCUIT_OPEN):
                log.info("notifykit transport %r recovered", self.name)
            self.stats.state = state

    async def _dead_letter(self, notifications: list[Notification], reason: str) -> None:
        if not notifications:
            return
        self.stats.dead_lettered += len(notifications)
        when = now_utc()
        letters = [DeadLetter(self.name, reason, n, when) for n in notifications]
        try:
            await self._sink.write(letters)
        except Exception:
            ids = ", ".join(n.message_id for n in notifications[:20])
            log.critical("notifykit could not write %d dead letter(s) for %r (%s): %s",
                         len(notifications), self.name, ids, reason, exc_info=True)

    async def dead_letter_leftovers(self, reason: str) -> int:
        """After the worker stopped: dead-letter the in-flight batch and what is still queued."""
        leftovers = list(self._in_flight)
        self._in_flight = []
        while True:
            try:
                leftovers.append(self._receive.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        self._receive.close()
        await self._dead_letter(leftovers, reason)
        return len(leftovers)
