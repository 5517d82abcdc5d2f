"""The JSONL dead-letter file: appended to by :class:`JsonlDeadLetterSink`, read back by
:func:`read_dead_letters`, rewritten by :func:`rewrite_dead_letters`, all under one ``flock``.

The file is written so that it can always be read back: a write that fails half-way is cut
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
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread

from ._deadletter_record import DeadLetter, DeadLetterWriteError
from ._errors import ConfigError
from ._paths import state_file

__all__ = [
    "DEFAULT_DEAD_LETTER_MAX_BYTES",
    "JsonlDeadLetterSink",
    "default_dead_letter_path",
    "read_dead_letters",
    "rewrite_dead_letters",
]

log = logging.getLogger("notifykit")

#: Largest dead-letter file a JsonlDeadLetterSink grows (``dead_letter_max_bytes``): 1 GiB.
DEFAULT_DEAD_LETTER_MAX_BYTES = 1 << 30

#: Bytes looked at to tell a binary file from a dead-letter file (a NUL byte in them).
_SNIFF = 64 * 1024


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
