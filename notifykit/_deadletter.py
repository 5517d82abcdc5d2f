"""Where notifications go when they cannot be delivered: never silently dropped.

Each dispatcher hands what it gives up on to a :class:`DeadLetterWriter`, which counts a
letter ``dead_lettered`` only once its sink took it and keeps (then writes again) what the
sink refused. The letters and sinks are ``_deadletter_record``; the JSONL file, its reader
and rewriter ``_deadletter_jsonl``; every dead-letter name is imported from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import anyio

from ._deadletter_jsonl import (
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    JsonlDeadLetterSink,
    default_dead_letter_path,
    read_dead_letters,
    rewrite_dead_letters,
)
from ._deadletter_record import DeadLetter, DeadLetterSink, DeadLetterWriteError, MemoryDeadLetterSink
from ._message import Notification
from ._stats import TransportStats

__all__ = [
    "DEFAULT_DEAD_LETTER_MAX_BYTES",
    "DeadLetter",
    "DeadLetterSink",
    "DeadLetterWriteError",
    "JsonlDeadLetterSink",
    "MemoryDeadLetterSink",
    "default_dead_letter_path",
    "read_dead_letters",
    "rewrite_dead_letters",
]

log = logging.getLogger("notifykit")


def now_utc() -> datetime:
    return datetime.now(UTC)


#: Backoff between attempts to write dead letters the sink refused (seconds, doubling).
RETRY_FIRST, RETRY_MAX = 0.5, 30.0


class DeadLetterWriter:
    """One transport's way to its sink. A letter counts as ``dead_lettered`` only once the
    sink took it. What the sink refuses (disk full, I/O error, file at its cap) is kept, in
    order and bounded (``held_max``), counted in flight, and written again with backoff
    (:meth:`retry_due`); a letter from the spool that cannot be kept stays in the spool
    instead (``on_kept``: its confirmation is held back, :attr:`ack_floor`). At close
    (:meth:`write` with ``final``) what still cannot be written is counted
    ``dead_letter_failed`` (or left in the spool). One log line per burst of failures."""

    def __init__(self, transport: str, sink: DeadLetterSink, stats: TransportStats, *, held_max: int,
                 on_kept: Callable[[int], None]) -> None:
        self.transport = transport
        self.sink = sink
        self.stats = stats  # dead_lettered and dead_letter_failed are counted here
        self.held_max = held_max
        self.on_kept = on_kept
        self.held: list[tuple[DeadLetter, int | None]] = []  # (letter, spool sequence number)
        self.writing = 0
        self.kept_floor: int | None = None  # lowest sequence number left in the spool (over held_max)
        #: Spooled ones still unwritten at close, and the lowest of their sequence numbers: the
        #: dispatcher appends them to the spool again, so the records after them can be confirmed.
        self.kept: list[Notification] = []
        self.close_floor: int | None = None
        self.retry_at = 0.0
        self._delay = RETRY_FIRST
        self._burst = False  # failing since the last successful write
        #: Why the sink refuses letters, while it does (a degraded state, shown in the stats).
        self.failing: str | None = None
        self._overflow_logged = False

    @property
    def pending(self) -> int:
        """Letters handed over and not yet on disk (counted in flight)."""
        return len(self.held) + self.writing

    @property
    def ack_floor(self) -> int | None:
        """The spool must not confirm this sequence number or any later one: a letter of it
        is not on disk yet."""
        seqs = [seq for _, seq in self.held if seq is not None]
        seqs += [floor for floor in (self.kept_floor, self.close_floor) if floor is not None]
        return min(seqs) if seqs else None

    def retry_due(self) -> bool:
        return bool(self.held) and anyio.current_time() >= self.retry_at

    async def write(self, notifications: Sequence[Notification], reason: str,
                    seqs: dict[int, int] | None = None, *, final: bool = False) -> None:
        """Dead-letter ``notifications`` (``seqs``: id(notification) → spool sequence number).
        While the sink is refusing, new letters join the held ones (order kept) until the
        retry is due; ``final``: one last attempt for everything held, then give up."""
        when = now_utc()
        entries = [(DeadLetter(self.transport, reason, n, when), (seqs or {}).get(id(n))) for n in notifications]
        if final or self.retry_due():
            entries, self.held = self.held + entries, []
        elif self.held:
            self._hold(entries, None)
            return
        await self._write(entries, final=final)

    async def retry(self, *, final: bool = False) -> None:
        """Write the held letters again (the worker calls this once :meth:`retry_due`)."""
        if self.held:
            entries, self.held = self.held, []
            await self._write(entries, final=final)

    async def _write(self, entries: list[tuple[DeadLetter, int | None]], *, final: bool) -> None:
        if not entries:
            return
        self.writing += len(entries)
        error: BaseException | None = None
        written = len(entries)
        try:
            with anyio.CancelScope(shield=True):  # a worker stopped at the close deadline finishes it
                await self.sink.write([letter for letter, _ in entries])
        except Exception as exc:
            error = exc
            written = min(max(exc.written, 0), len(entries)) if isinstance(exc, DeadLetterWriteError) else 0
        finally:
            self.writing -= len(entries)
        self.stats.dead_lettered += written
        if error is None:
            if self._burst and not self.held:
                log.warning("notifykit transport %r: dead letters are written to %r again", self.transport, self.sink)
                self._burst, self._overflow_logged, self._delay = False, False, RETRY_FIRST
                self.failing = None
            return
        rest = entries[written:]
        if final:
            self._give_up(rest, error, at_close=True)
        else:
            self._hold(rest, error)

    def _hold(self, entries: list[tuple[DeadLetter, int | None]], error: BaseException | None) -> None:
        room = max(self.held_max - len(self.held), 0)
        self.held.extend(entries[:room])
        if error is not None:
            if not self._burst:
                log.warning("notifykit transport %r could not write %d dead letter(s) to %r: %s; they are kept"
                            " (up to %d) and written again with backoff", self.transport, len(entries), self.sink,
                            _describe(error), self.held_max)
            self._burst = True
            self.failing = _describe(error)
            self.retry_at = anyio.current_time() + self._delay
            self._delay = min(self._delay * 2, RETRY_MAX)
        if entries[room:]:
            self._give_up(entries[room:], error, at_close=False)

    def _give_up(self, entries: list[tuple[DeadLetter, int | None]], error: BaseException | None,
                 *, at_close: bool) -> None:
        """Letters that cannot be kept any longer: left in the spool if they came from it,
        else counted ``dead_letter_failed``; logged once per burst (and once at close)."""
        spooled = [seq for _, seq in entries if seq is not None]
        if spooled:
            floor = min(spooled)
            if at_close:
                self.kept += [letter.notification for letter, seq in entries if seq is not None]
                self.close_floor = floor if self.close_floor is None else min(self.close_floor, floor)
            else:
                self.kept_floor = floor if self.kept_floor is None else min(self.kept_floor, floor)
            self.on_kept(len(spooled))
        lost = [letter for letter, seq in entries if seq is None]
        self.stats.dead_letter_failed += len(lost)
        if at_close or not self._overflow_logged:
            self._overflow_logged = not at_close
            ids = ", ".join(letter.notification.message_id for letter in lost[:5]) + (", …" if len(lost) > 5 else "")
            log.error("notifykit transport %r: %s %d dead letter(s) could not be written to %r (%s):"
                      " %d counted dead_letter_failed%s, %d left in the spool (the next Notifier replays them)",
                      self.transport, "at close," if at_close else f"over the {self.held_max} kept,", len(entries),
                      self.sink, _describe(error) if error else "the sink is refusing writes", len(lost),
                      f" ({ids})" if lost else "", len(spooled))


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
