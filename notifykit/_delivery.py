"""Delivery: one transport's batches handed to its ``send()`` until each notification is
sent or dead-lettered.

It owns what happens to a batch once the worker took it: retry with full-jitter backoff,
the circuit breaker, bisection of a batch the transport fails for good (so that only the
message at fault is dead-lettered), the dead letters (through a ``DeadLetterWriter``), the
transport's state, and the OpenTelemetry events of the send span (retries, circuit state,
dead letters). It knows nothing of queues or the spool: the queue above it
(``notifykit/_spooled_queue.py``) tells it, in ``_flying_rows``, the spool sequence numbers
of a spooled batch, and is told through ``on_kept`` what the dead-letter sink refused.

Accounting: ``_in_flight`` holds exactly the notifications of the batch still unresolved at
every await (sent ones leave it counted ``sent``, and timed in ``delivery_latency``, see
``_sent``; dead letters leave it counted in flight by the writer until they are on disk).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

from ._clock import Clock
from ._config import TransportConfig
from ._deadletter import DeadLetterSink, DeadLetterWriter
from ._errors import BatchError, PermanentError, TransientError, TransportError
from ._message import Notification
from ._stats import TransportState, TransportStats
from ._tracing import NO_SPAN, DeliverySpan, Tracing, messaging_system
from ._transport import Transport

__all__ = ["Delivery"]

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


class Delivery:
    """One transport's batches to ``send()``: retry, circuit, bisection, dead letters."""

    def __init__(
        self,
        name: str,
        transport: Transport,
        config: TransportConfig,
        sink: DeadLetterSink,
        clock: Clock,
        rng: random.Random | None,
        on_kept: Callable[[int], None],
    ) -> None:
        self.name = name
        self.transport = transport
        self.config = config
        self.batch_size = config.batch_size or transport.max_batch_size
        self.stats = TransportStats(name=name)
        #: OpenTelemetry, when the Notifier found a tracer provider at start (None: no spans)
        self.tracing: Tracing | None = None
        self.messaging_system = messaging_system(transport)
        self._span: DeliverySpan = NO_SPAN
        # Dead letters the sink refused are kept here and written again (in flight until then);
        # a spooled one the writer cannot keep stays in the spool (``on_kept``).
        self._letters = DeadLetterWriter(name, sink, self.stats, held_max=max(config.queue_size, 1000),
                                         on_kept=on_kept)
        # The spooled batch in flight, (seq, notification) in order; its dead letters need the seqs.
        self._flying_rows: Sequence[tuple[int, Notification]] = ()
        self._in_flight: list[Notification] = []
        self._clock = clock
        self._rng = rng or random.Random()
        self._circuit = _Circuit(config.circuit.failure_threshold, config.circuit.reset_timeout)
        self._opened = False
        self._closed = False  # the close took the leftovers: a dead letter gets one last attempt

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
                self._sent(pending)
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
        self._sent([n for i, n in enumerate(pending) if i not in failed])
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
            self._sent([n for i, n in enumerate(part) if i not in failures])
            first = failures[min(failures)] if failures else exc
            kind = "permanent" if isinstance(first, PermanentError) else "transient"
            return [part[i] for i in sorted(failures)], f"{kind} error: {first}"
        except PermanentError as exc:
            return part, f"permanent error: {exc}"
        except TransportError as exc:
            return part, f"transient error: {exc}"
        except Exception as exc:  # a transport's bug, as in _deliver
            return part, f"unexpected {type(exc).__name__}: {exc}"
        self._sent(part)
        return [], ""

    def _sent(self, notifications: Sequence[Notification]) -> None:
        """The transport confirmed these: counted ``sent`` and timed (``delivery_latency``)."""
        self.stats.sent += len(notifications)
        self.stats.delivery_latency.record(notifications)

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
