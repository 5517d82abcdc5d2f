"""Where notifications go when they cannot be delivered: never silently dropped.

The JSONL file is written so that it can always be read back: every record is pure ASCII
(a lone surrogate that slipped into a custom Notification is kept as a ``\\udXXX`` escape,
which ``json.loads`` turns back into the same string), a write that fails half-way is cut
back to the last complete line, and the file never grows past ``max_bytes``. A write that
could not (entirely) be done raises :class:`DeadLetterWriteError` saying how many letters
did reach the file, so the caller counts only those as dead-lettered.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import reprlib
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

import anyio.to_thread

from ._errors import ConfigError, NotifyKitError
from ._message import Notification
from ._paths import state_file
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

#: Largest dead-letter file a JsonlDeadLetterSink grows (``dead_letter_max_bytes``): 1 GiB.
DEFAULT_DEAD_LETTER_MAX_BYTES = 1 << 30

#: Bytes looked at to tell a binary file from a dead-letter file (a NUL byte in them).
_SNIFF = 64 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A notification one transport gave up on, and why."""

    transport: str
    reason: str
    notification: Notification
    failed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The record as stored; ``message`` is the notification in the ``json`` format's fields."""
        n = self.notification
        message: dict[str, Any] = {
            "message_id": n.message_id,
            "event_type": n.event_type,
            "priority": str(n.priority),
            "publisher_id": n.publisher_id,
            "timestamp": n.iso_timestamp,
            "context": n.context.as_dict(),
            "payload": _payload(n),
        }
        return {"transport": self.transport, "reason": self.reason,
                "failed_at": self.failed_at.isoformat(timespec="microseconds"), "message": message}

    def encode(self) -> bytes:
        """One ASCII JSON line. Never raises for a notification that got this far: what JSON
        cannot carry (a type, a cycle) is kept as its ``repr`` under ``unencodable``."""
        record = self.as_dict()
        try:
            text = json.dumps(record, ensure_ascii=True)
        except (TypeError, ValueError, RecursionError):
            message = record["message"]
            record["unencodable"] = {key: reprlib.repr(message[key]) for key in ("payload", "context")}
            message["payload"], message["context"] = {}, {}
            text = json.dumps(record, ensure_ascii=True, default=reprlib.repr)
        return text.encode("ascii") + b"\n"


def _payload(n: Notification) -> Any:
    """The payload as sent (``payload_json``), or the mapping if that text is not JSON."""
    try:
        return json.loads(n.payload_json)
    except (TypeError, ValueError, RecursionError):
        return n.payload


class DeadLetterWriteError(NotifyKitError):
    """Not every letter of a write reached the sink: the first ``written`` did (they are
    complete lines on disk), the rest did not (disk full, I/O error, file at its size cap)."""

    def __init__(self, message: str, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


@runtime_checkable
class DeadLetterSink(Protocol):
    """Stores dead letters; ``write`` must not block the event loop. It raises when some
    letters were not stored (:class:`DeadLetterWriteError` says how many were)."""

    async def write(self, letters: Sequence[DeadLetter]) -> None: ...


def default_dead_letter_path() -> Path:
    """``$NOTIFYKIT_DEAD_LETTERS``, else ``$XDG_STATE_HOME/notifykit/deadletters.jsonl``."""
    return state_file("NOTIFYKIT_DEAD_LETTERS", "deadletters.jsonl")


class JsonlDeadLetterSink:
    """Appends one ASCII JSON line per dead letter to a file, fsynced, in a worker thread
    (encoding included). The file stops growing at ``max_bytes``: letters that do not fit
    are refused (DeadLetterWriteError) and left to the caller, whole lines only."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        if letters:
            await anyio.to_thread.run_sync(self._append, list(letters))

    def _open_locked(self) -> int:
        """The file, opened for appending and locked; reopened if rewrite_dead_letters
        replaced it while we waited for the lock (else we would append to the old inode)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            # 0600 when it is created: letters hold whole payloads (an existing file keeps its mode)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # serialises with rewrite_dead_letters and other sinks
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass  # replaced and not yet there: open again
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _append(self, letters: list[DeadLetter]) -> None:
        lines = [letter.encode() for letter in letters]
        fd = self._open_locked()
        try:
            info = os.fstat(fd)
            regular = stat.S_ISREG(info.st_mode)  # else a device or pipe: nothing to cut back
            start = info.st_size if regular else 0
            # A torn line left by someone else (a crash, an old version) stays its own line.
            prefix = b"\n" if start and os.pread(fd, 1, start - 1) != b"\n" else b""
            room = self.max_bytes - start - len(prefix)
            fit, size = 0, 0
            while fit < len(lines) and size + len(lines[fit]) <= room:
                size += len(lines[fit])
                fit += 1
            if fit:
                data = prefix + b"".join(lines[:fit])
                done = 0
                try:
                    while done < len(data):
                        wrote = os.write(fd, data[done:])
                        if wrote <= 0:
                            raise OSError(errno.EIO, "write returned 0")
                        done += wrote
                except OSError as exc:
                    whole = _complete(lines[:fit], done - len(prefix))
                    if regular:
                        _cut_back(fd, start, len(prefix) + sum(len(line) for line in lines[:whole]))
                    raise DeadLetterWriteError(f"cannot write to {str(self.path)!r}: {exc}", written=whole) from exc
                try:
                    os.fsync(fd)
                except OSError as exc:  # what reached the disk is unknown: take it all back
                    if regular:
                        _cut_back(fd, start, 0)
                    raise DeadLetterWriteError(f"cannot fsync {str(self.path)!r}: {exc}") from exc
            if fit < len(lines):
                raise DeadLetterWriteError(
                    f"dead-letter file {str(self.path)!r} is full: {len(lines) - fit} letter(s) would take it"
                    f" past dead_letter_max_bytes={self.max_bytes}", written=fit)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"JsonlDeadLetterSink({str(self.path)!r})"


def _complete(lines: list[bytes], written: int) -> int:
    """How many of ``lines`` are whole within the first ``written`` bytes."""
    count = 0
    for line in lines:
        written -= len(line)
        if written < 0:
            break
        count += 1
    return count


def _cut_back(fd: int, start: int, keep: int) -> None:
    """Truncate a failed append to ``start + keep`` (the last complete line), so the file
    holds no torn record of ours (if even that fails, the next append starts a new line)."""
    try:
        os.ftruncate(fd, start + keep)
        os.fsync(fd)
    except OSError as exc:
        log.error("notifykit could not cut a failed dead-letter write back: %s", exc)


class MemoryDeadLetterSink:
    """Keeps dead letters in a list (re-drive collects the ones that fail again)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def __repr__(self) -> str:
        return f"MemoryDeadLetterSink({len(self.letters)} letters)"


# -- reading and rewriting (blocking: CLIs, tests, worker threads) ---------------------------


def _open_for_reading(path: Path, mode: int = os.O_RDONLY) -> int:
    """Open a dead-letter file; every reason it cannot be one is one ConfigError."""
    try:
        fd = os.open(path, mode | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"no dead-letter file at {str(path)!r}") from None
    except IsADirectoryError:
        raise ConfigError(f"{str(path)!r} is a directory, not a dead-letter file") from None
    except OSError as exc:
        raise ConfigError(f"cannot open dead-letter file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{str(path)!r} is a directory, not a dead-letter file")
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{str(path)!r} is not a regular file, not a dead-letter file")
        if b"\0" in os.pread(fd, _SNIFF, 0):
            raise ConfigError(f"{str(path)!r} is a binary file, not a dead-letter file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parse(line: bytes) -> dict[str, Any] | None:
    """A dead-letter record, or None for a line that is not one (torn, garbage)."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("message"), dict):
        return None
    return record


def _warn_skipped(path: Path, bad: list[int]) -> None:
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", …" if len(bad) > 10 else "")
        log.warning("notifykit: skipped %d line(s) of %s that are not dead letters (torn or not JSON):"
                    " line %s", len(bad), path, shown)


def _lines(fh: BinaryIO, bad: list[int]) -> Iterator[tuple[bytes, dict[str, Any] | None]]:
    """Each non-blank line with its record, or None for a line that is not one (its line
    number goes to ``bad``): the one reading rule of read_dead_letters and rewrite_dead_letters."""
    for number, line in enumerate(fh, 1):
        if not line.strip():
            continue
        record = _parse(line)
        if record is None:
            bad.append(number)
        yield line, record


def read_dead_letters(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL dead-letter file (blocking; for CLIs and tests). Lines
    that are not records (a torn last line, garbage) are skipped with one warning naming
    their line numbers; a file that cannot be one (missing, a directory, binary,
    unreadable) is a ConfigError."""
    path = Path(path)
    fd = _open_for_reading(path)
    bad: list[int] = []
    try:
        with os.fdopen(fd, "rb") as fh:
            for _line, record in _lines(fh, bad):
                if record is not None:
                    yield record
    except OSError as exc:
        raise ConfigError(f"cannot read dead-letter file {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        _warn_skipped(path, bad)


def rewrite_dead_letters(
    path: str | os.PathLike[str],
    remove: Callable[[dict[str, Any]], bool],
    add: Sequence[DeadLetter] = (),
) -> int:
    """Atomically drop the records ``remove`` selects and append ``add``, under the same
    lock the sink appends with, so a running process's new dead letters are kept. Lines
    that are not records are kept as they are. Never creates the file (ConfigError if
    missing). Returns how many records were removed. Blocking: call from a thread or a CLI."""
    target = Path(path)
    fd = _open_for_reading(target, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        kept: list[bytes] = []
        removed = 0
        bad: list[int] = []
        with os.fdopen(os.dup(fd), "rb") as fh:
            for line, record in _lines(fh, bad):
                if record is not None and remove(record):
                    removed += 1
                    continue
                kept.append(line if line.endswith(b"\n") else line + b"\n")
        kept.extend(letter.encode() for letter in add)
        tmp = target.with_name(target.name + ".tmp")
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, os.fstat(fd).st_mode & 0o777)
        try:
            with os.fdopen(out, "wb") as fh:
                fh.writelines(kept)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _warn_skipped(target, bad)
    except OSError as exc:
        raise ConfigError(f"cannot rewrite dead-letter file {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return removed


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
