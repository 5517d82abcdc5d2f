"""The Notifier: validates at the call site, then hands off to one dispatcher per transport."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._clock import Clock, EventLoopClock
from ._closing import put_away, warn_unclosed
from ._config import NotifierConfig, TransportConfig
from ._construction import build_dispatchers, dead_letter_sink, notifier_config, spool_for
from ._deadletter import DeadLetterSink
from ._dispatcher import Dispatcher
from ._errors import NotifierClosedError
from ._message import ContextLike, Notification, Priority, QueueFullError, RequestContext
from ._notify_api import PreparedNotifier, PriorityMethods
from ._numbers import check_number
from ._runner import Runner
from ._spool import SPOOL_TASK
from ._stats import TransportStats
from ._status import STATUS_TASK, report_status_periodically, status_document, write_status
from ._supervisor import Supervisor, TaskHealth
from ._tracing import Tracing, find_tracing
from ._transport import Transport

__all__ = ["Notifier"]

log = logging.getLogger("notifykit")


class _State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Notifier(PriorityMethods):
    """Transport-agnostic async notifier.

    ``async with Notifier.from_url("amqp://…", publisher_id="backup.host1") as n:
    await n.info({}, "backup.create.start", payload)``. ``notify()`` validates and
    raises at the call site; delivery then happens in the background, one worker
    per transport, each behind its own bounded queue.
    """

    def __init__(
        self,
        config: NotifierConfig | TransportConfig | Sequence[TransportConfig],
        *,
        publisher_id: str | None = None,
        dead_letters: DeadLetterSink | str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        close_timeout: float | None = None,
        max_payload_bytes: int | None = None,
        spool: str | os.PathLike[str] | None = None,
        status_path: str | os.PathLike[str] | None = None,
        status_interval: float | None = None,
        dead_letter_max_bytes: int | None = None,
    ) -> None:
        config = notifier_config(config, publisher_id=publisher_id, close_timeout=close_timeout,
                                 max_payload_bytes=max_payload_bytes, spool=spool, status_path=status_path,
                                 status_interval=status_interval, dead_letter_max_bytes=dead_letter_max_bytes)
        self.config = config
        self.publisher_id = config.publisher_id
        self._sink = dead_letter_sink(dead_letters, config.dead_letter_path, config.dead_letter_max_bytes)
        clock = clock or EventLoopClock()
        self._supervisor = Supervisor(clock)
        self.spool = spool_for(config)
        self._dispatchers = build_dispatchers(config, self._sink, clock, self.spool)
        self._state = _State.NEW
        self._runner = Runner("notifier", self._abandoned)
        self._tracing: Tracing | None = None  # found at start(): OpenTelemetry with a tracer provider
        self._settled: anyio.Event | None = None  # set when start() or aclose() has finished

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, publisher_id: str, dead_letters: DeadLetterSink | str | os.PathLike[str] | None = None,
                 clock: Clock | None = None, close_timeout: float | None = None,
                 max_payload_bytes: int | None = None, spool: str | os.PathLike[str] | None = None,
                 status_path: str | os.PathLike[str] | None = None, status_interval: float | None = None,
                 dead_letter_max_bytes: int | None = None, **overrides: Any) -> Notifier:
        """One transport; its options and policies are URL query parameters
        (``overrides`` replace TransportConfig fields)."""
        return cls(TransportConfig.from_url(url, **overrides), publisher_id=publisher_id,
                   dead_letters=dead_letters, clock=clock, close_timeout=close_timeout,
                   max_payload_bytes=max_payload_bytes, spool=spool, status_path=status_path,
                   status_interval=status_interval, dead_letter_max_bytes=dead_letter_max_bytes)

    @classmethod
    def from_config(cls, source: str | os.PathLike[str] | Mapping[str, Any], *, publisher_id: str | None = None,
                    dead_letters: DeadLetterSink | str | os.PathLike[str] | None = None,
                    clock: Clock | None = None, close_timeout: float | None = None,
                    spool: str | os.PathLike[str] | None = None,
                    status_path: str | os.PathLike[str] | None = None,
                    status_interval: float | None = None, dead_letter_max_bytes: int | None = None) -> Notifier:
        """Several transports from a TOML file path or an already-parsed mapping."""
        if isinstance(source, Mapping):
            config = NotifierConfig.from_mapping(source)
        else:
            config = NotifierConfig.from_toml(source)
        return cls(config, publisher_id=publisher_id, dead_letters=dead_letters, clock=clock,
                   close_timeout=close_timeout, spool=spool, status_path=status_path,
                   status_interval=status_interval, dead_letter_max_bytes=dead_letter_max_bytes)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start one worker per transport. Prefer ``async with``.

        start() and aclose() may be called from any task and under any cancel scope: the
        background tasks run supervised in a task group that the Notifier's own task owns
        (see :meth:`background_tasks`), so none can fail into, or be cancelled by, the
        caller's code. start() is shielded: a deadline around it lets it finish."""
        if self._state is _State.CLOSED:
            raise NotifierClosedError("this Notifier is closed; a closed Notifier cannot start again: make a new one")
        if self._state is not _State.NEW:
            raise NotifierClosedError("a Notifier can be started only once")
        self._state = _State.STARTING
        self._settled = anyio.Event()
        with anyio.CancelScope(shield=True):
            try:
                await self._start()
            except BaseException:
                self._state = _State.CLOSED
                await self._runner.stop()
                raise
            finally:
                self._settled.set()
        self._state = _State.OPEN

    async def _start(self) -> None:
        self._tracing = find_tracing()
        for dispatcher in self._dispatchers:
            dispatcher.tracing = self._tracing
        if self.spool is not None:
            await self.spool.open()  # recovers (and quarantines) what a previous process left
            for dispatcher in self._dispatchers:
                dispatcher.recover_from_spool()
            names = {d.name for d in self._dispatchers if d.spooling}
            for name, count in self.spool.pending_counts().items():
                if name not in names:
                    log.warning("notifykit spool %r holds %d notification(s) for transport %r, which this"
                                " Notifier has no durable/spill transport for; they are kept", self.spool, count, name)
        await self._runner.start()
        group = self._runner.task_group
        for dispatcher in self._dispatchers:
            self._supervisor.register(dispatcher.task_name)
            group.start_soon(dispatcher.run_shielded, self._supervisor, name=f"notifykit:{dispatcher.name}")
        if self.spool is not None:
            self.spawn(SPOOL_TASK, self.spool.keep_spare_segment)
        if self.config.status_path is not None:
            status_path, interval = self.config.status_path, self.config.status_interval
            self.spawn(STATUS_TASK, lambda: report_status_periodically(status_path, interval, self._status_document,
                                                                       self._supervisor))

    def spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` as a supervised background task of this Notifier (restarted after a
        backoff if it raises; cancelled at close)."""
        if self._state not in (_State.STARTING, _State.OPEN):
            raise NotifierClosedError("spawn() needs a started Notifier")
        self._supervisor.register(name)
        self._runner.task_group.start_soon(self._supervisor.run, name, work, name=f"notifykit:{name}")

    async def aclose(self, timeout: float | None = None) -> dict[str, TransportStats]:  # noqa: ASYNC109
        """Drain every queue within ``timeout`` (default ``close_timeout``), then dead-letter
        what is left, close the transports and log the counters. Returns the final counters.

        From any task, under any cancel scope (it is shielded), as often as you like: a
        second call waits for the first and returns the same counters."""
        deadline = self.config.close_timeout if timeout is None else check_number("aclose timeout", timeout)
        with anyio.CancelScope(shield=True):
            if self._state is _State.STARTING and self._settled is not None:
                await self._settled.wait()
            if self._state is _State.CLOSING and self._settled is not None:
                await self._settled.wait()
            if self._state is not _State.OPEN:
                self._state = _State.CLOSED
                return self.stats()
            self._state = _State.CLOSING
            self._settled = anyio.Event()
            try:
                await self._close(deadline)
            finally:
                self._state = _State.CLOSED
                self._settled.set()
        final = self.stats()
        for name, stats in final.items():
            log.info("notifykit transport %r closed: enqueued=%d sent=%d retried=%d dropped=%d"
                     " dead_lettered=%d filtered=%d refused=%d dead_letter_failed=%d", name, stats.enqueued,
                     stats.sent, stats.retried, stats.dropped, stats.dead_lettered, stats.filtered, stats.refused,
                     stats.dead_letter_failed)
        return final

    async def _close(self, deadline: float) -> None:
        for dispatcher in self._dispatchers:
            dispatcher.close_input()
        with anyio.move_on_after(deadline):
            for dispatcher in self._dispatchers:
                await dispatcher.finished.wait()
        for dispatcher in self._dispatchers:
            dispatcher.stop()  # the workers are shielded from outer cancellation: stop them here
        await self._runner.stop()
        await self._finish_dispatchers(deadline)

    def _abandoned(self) -> None:
        """The event loop ended while this Notifier was open (no aclose()): say what is lost."""
        self._state = _State.CLOSED
        warn_unclosed(self.publisher_id, self._dispatchers)

    async def _finish_dispatchers(self, deadline: float) -> None:
        await put_away(self._dispatchers, deadline, self._sink, self.spool, self._supervisor)
        if self.config.status_path is not None:
            await write_status(self.config.status_path, lambda: self._status_document(closed=True), self._supervisor)

    # -- emitting ----------------------------------------------------------------------

    async def notify(
        self,
        ctx: ContextLike,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
        publisher_id: str | None = None,
    ) -> Notification:
        """Validate (raising InvalidNotificationError here, at the call site) and enqueue
        on every transport whose filter accepts it. Waits only under a ``block`` policy
        with a full queue, and raises QueueFullError if no room came within
        ``block_timeout``; background failures never reach here. While more than a batch
        is queued it also gives the event loop one turn per batch (so that delivery
        overlaps a caller that never yields)."""
        if self._state is not _State.OPEN:
            raise NotifierClosedError(
                "Notifier is not open: use 'async with notifier:' (or await start()) before notify()"
                if self._state is _State.NEW else "Notifier is closed"
            )
        if self._tracing is not None:
            return await self._notify_traced(self._tracing, ctx, event_type, payload, priority, publisher_id)
        notification = Notification.create(
            event_type,
            payload,
            priority=priority,
            publisher_id=publisher_id or self.publisher_id,
            context=ctx,
            max_payload_bytes=self.config.max_payload_bytes,
        )
        waiting = self._offer(notification)
        if waiting is not None:  # no coroutine of its own in the common case: nothing to wait for
            await self._wait_for(notification, waiting)
        return notification

    async def _notify_traced(self, tracing: Tracing, ctx: ContextLike, event_type: str, payload: Mapping[str, Any],
                             priority: Priority | str, publisher_id: str | None) -> Notification:
        """notify() inside a ``create`` span, whose context is the notification's traceparent
        unless the caller gave one."""
        systems = {d.messaging_system for d in self._dispatchers}
        system = systems.pop() if len(systems) == 1 else "notifykit"
        with tracing.create(system, event_type, event_type) as span:
            context = RequestContext.coerce(ctx)
            if context.traceparent is None:
                traceparent, tracestate = tracing.traceparent_of(span)
                extra = {**context.extra, "tracestate": tracestate} if tracestate else context.extra
                context = replace(context, traceparent=traceparent, extra=extra)
            notification = Notification.create(event_type, payload, priority=priority,
                                               publisher_id=publisher_id or self.publisher_id, context=context,
                                               max_payload_bytes=self.config.max_payload_bytes)
            span.set_attribute("messaging.message.id", notification.message_id)
            waiting = self._offer(notification)
            if waiting is not None:
                await self._wait_for(notification, waiting)
        return notification

    async def emit(self, notification: Notification) -> None:
        """Enqueue an already-built notification, keeping its message_id (re-drive, replay)."""
        if self._state is not _State.OPEN:
            raise NotifierClosedError("Notifier is not open")
        waiting = self._offer(notification)
        if waiting is not None:
            await self._wait_for(notification, waiting)

    def _offer(self, notification: Notification) -> list[Dispatcher] | None:
        """Enqueue on every transport that accepts it, without waiting. Returns the
        dispatchers that need an awaited put(), [] when one of them asks for a turn, or
        None when there is nothing to wait for."""
        waiting: list[Dispatcher] | None = None
        for dispatcher in self._dispatchers:
            if not dispatcher.filter.accepts(notification.event_type, notification.priority):
                dispatcher.stats.filtered += 1
            elif not dispatcher.offer(notification):
                waiting = [dispatcher] if waiting is None else [*waiting, dispatcher]
            elif dispatcher.unturned > dispatcher.batch_size and waiting is None:
                waiting = []
        return waiting

    async def _wait_for(self, notification: Notification, waiting: list[Dispatcher]) -> None:
        if waiting:
            await self._put_waiting(notification, waiting)
            return
        # More than a batch is queued and the caller has not let go since: give the workers
        # (and the transports' I/O) one turn, so delivery overlaps a caller that never
        # yields instead of starting only when it does. Once per batch; not a cancellation
        # point, since the notification is already enqueued.
        for dispatcher in self._dispatchers:
            dispatcher.unturned = 0
        await anyio.lowlevel.cancel_shielded_checkpoint()

    @staticmethod
    async def _put_waiting(notification: Notification, waiting: list[Dispatcher]) -> None:
        """The slow path: spool commits first (they never wait for room), then the ``block``
        waits, all against one start time. Raises QueueFullError naming the transports
        that had no room within their block_timeout."""
        waiting.sort(key=lambda d: d.waits)
        started = anyio.current_time()
        refused: list[str] = []
        done = 0
        try:
            for dispatcher in waiting:
                if not await dispatcher.put(notification, started):
                    refused.append(dispatcher.name)
                done += 1
        finally:
            for dispatcher in waiting[done + 1:]:  # put() cleans up after itself, not the later ones
                dispatcher.release()
        if refused:
            raise QueueFullError(notification, refused)

    def prepare(self, *, publisher_id: str) -> PreparedNotifier:
        """A view that emits with another publisher_id through the same transports."""
        return PreparedNotifier(self, publisher_id)

    # -- introspection -----------------------------------------------------------------

    @property
    def transports(self) -> Mapping[str, Transport]:
        """The transport instances by name (``memory`` transports keep what they got)."""
        return {d.name: d.transport for d in self._dispatchers}

    def _status_document(self, closed: bool = False) -> dict[str, Any]:
        return status_document(self.publisher_id, self.stats(), closed=closed, tasks=self.background_tasks())

    def background_tasks(self) -> dict[str, TaskHealth]:
        """A snapshot of every supervised background task (``worker:NAME`` per transport,
        ``status``, …): state, failures, last error."""
        return {name: replace(health) for name, health in self._supervisor.health.items()}

    def stats(self) -> dict[str, TransportStats]:
        """A snapshot of every transport's counters and state."""
        return {d.name: d.snapshot() for d in self._dispatchers}

    def __del__(self) -> None:
        if getattr(self, "_state", None) in (_State.OPEN, _State.STARTING):
            self._state = _State.CLOSED
            warn_unclosed(self.publisher_id, self._dispatchers)

    def __repr__(self) -> str:
        names = ", ".join(repr(d.transport) for d in self._dispatchers)
        return f"<Notifier publisher_id={self.publisher_id!r} {self._state.value} [{names}]>"

