"""The spool's segment files: the active one's mapping, preallocation and the spare made
ahead in a worker thread, the descriptors records are read through, and the blocking I/O
a worker thread does on them (reads, the directory check, the rescue's writes). Nothing
here changes the Spool's state: functions take snapshots and return results.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ._errors import InvalidNotificationError
from ._log import BadRegion, Record, decode_body, scan
from ._message import Notification

__all__ = [
    "DiskFault", "Reader", "Segment", "Spare", "SpoolRead", "SpooledRow", "close_files", "directory_gone", "fault_in",
    "fault_kind", "identity", "pread_all", "read_records", "touch", "truncate_fd", "write_all",
]

#: madvise(2) advice that write-faults a range in (Linux 5.14 and later).
_MADV_POPULATE_WRITE = 23


def _libc_madvise() -> Callable[[int, int, int], int] | None:
    """libc's madvise through ctypes (which releases the GIL around the call); None where the
    C library offers none, and spare segments are then made without faulting their pages in."""
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_madvise = _libc_madvise()


class SpooledRow(NamedTuple):
    """A record read back: a tuple, as cheap as the ``(seq, notification)`` pairs of the
    dispatcher's in-memory copy."""

    row_id: int  # the record's sequence number in the log
    notification: Notification


@dataclass(frozen=True, slots=True)
class SpoolRead:
    """What one read of the log returned: rows in order, and how far it got (``through``,
    a sequence number the caller may acknowledge even when every row was quarantined)."""

    rows: list[SpooledRow]
    through: int
    quarantined: int


@dataclass(slots=True)
class Segment:
    number: int
    path: Path
    size: int  # bytes written (the file may be longer: a preallocated tail of zeros)
    last: dict[str, int] = field(default_factory=dict)  # highest record seq per transport
    allocated: int = 0  # on disk, when more than size (an active segment's tail not given back)
    #: Kept open while the segment lives: records are read through it, so a segment whose
    #: file was deleted from under us (``rm -rf``) is still readable and can be written back.
    fd: int | None = None


@dataclass(slots=True)
class Spare:
    """The next segment, made ready in a worker thread while the active one fills: created,
    preallocated, mapped and its pages faulted in, so that neither starting it nor copying
    records into it makes a system call or takes a page fault on the event loop."""

    number: int
    path: Path
    fd: int
    mapping: mmap.mmap
    capacity: int

    def discard(self) -> None:
        self.mapping.close()
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def fault_in(mapping: mmap.mmap) -> None:
    """Write-fault every page of ``mapping`` now (MADV_POPULATE_WRITE), through ctypes so that
    the GIL is released meanwhile. Best effort: an older kernel refuses it, and the event
    loop's copies then take the page faults."""
    if _madvise is None:
        return
    view = (ctypes.c_char * len(mapping)).from_buffer(mapping)
    try:
        _madvise(ctypes.addressof(view), len(mapping), _MADV_POPULATE_WRITE)
    finally:
        del view  # the buffer export ends here: the mapping can be closed


@dataclass(slots=True)
class Reader:
    """Where a transport's read of the log is: one segment buffered at a time."""

    after: int = 0
    segment: int = -1
    offset: int = 0
    rows: deque[Record] = field(default_factory=deque)


@dataclass(slots=True)
class DiskFault:
    """Why the spool runs degraded: ``kind`` is ``deleted``, ``disk_full``, ``read_only`` or
    ``io_error``; ``error`` says what failed, in one line; ``since`` is a ``time.time()``."""

    kind: str
    error: str
    since: float

    def describe(self) -> str:
        return f"{self.kind}: {self.error}"


def fault_kind(exc: OSError) -> str:
    """The degraded state an OSError puts the spool in."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "read_only"
    if exc.errno == errno.ENOENT:
        return "deleted"
    return "io_error"


def identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def directory_gone(path: Path, lock_fd: int, locked: tuple[int, int] | None) -> str | None:
    """Why the spool directory is no longer the one we locked, or None (worker thread)."""
    try:
        if identity(path) != locked:
            return f"the spool directory {str(path)!r} was deleted and replaced"
    except FileNotFoundError:
        return f"the spool directory {str(path)!r} was deleted"
    except OSError:  # unreadable now: the operations that fail say why
        return None
    if os.fstat(lock_fd).st_nlink == 0:
        return f"the files of the spool directory {str(path)!r} were deleted"
    return None


def pread_all(fd: int, size: int, offset: int = 0) -> bytes:
    """``size`` bytes from ``offset`` (fewer only at the end of the file)."""
    parts: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def truncate_fd(fd: int, size: int) -> None:
    os.ftruncate(fd, size)


def touch(fd: int | None) -> None:
    """A write to the spool's file system that needs no room (refused when it is read-only)."""
    if fd is not None:
        os.utime(fd)


def read_records(quarantine: Callable[[dict[str, object], bytes], bool], transport: str, reader: Reader,
                   limit: int, snapshot: list[tuple[int, int, int]], dropped: list[tuple[int, int]]
                   ) -> tuple[SpoolRead, Reader, list[bool]]:
    """Worker thread: up to ``limit`` rows after ``reader``; uses only its arguments (the
    reader is handed over and back). Returns whether each quarantined record was copied."""
    rows: list[SpooledRow] = []
    through = reader.after
    copied: list[bool] = []
    while len(rows) < limit:
        if not reader.rows and not _fill(reader, transport, snapshot, dropped):
            break
        record = reader.rows.popleft()
        seq = through = reader.after = record.seq
        if any(a < seq <= b for a, b in dropped):
            continue
        try:
            rows.append(SpooledRow(seq, record.notification()))
        except (ValueError, TypeError, InvalidNotificationError) as exc:
            copied.append(quarantine({"transport": transport, "seq": seq, "reason": f"not a notification: {exc}"},
                                     record.body))
    return SpoolRead(rows, through, len(copied)), reader, copied


def _fill(reader: Reader, transport: str, snapshot: list[tuple[int, int, int]], dropped: list[tuple[int, int]]) -> bool:
    """Buffer the transport's next records (the rest of one segment); False at the end."""
    for number, fd, size in snapshot:
        if number < reader.segment or (number == reader.segment and reader.offset >= size):
            continue
        if number != reader.segment:
            reader.segment, reader.offset = number, 0
        buf = pread_all(fd, size - reader.offset, reader.offset)
        reader.offset = size
        for item in scan(buf):
            if isinstance(item, BadRegion):
                continue
            record = decode_body(item[1])
            if (isinstance(record, Record) and record.transport == transport and record.seq > reader.after
                    and not any(a < record.seq <= b for a, b in dropped)):
                reader.rows.append(record)
        if reader.rows:
            return True
    return False


def close_files(spare: Spare | None, paths: list[Path], fds: list[int], lock_fd: int | None) -> None:
    """Worker thread, at close: discard the spare, delete ``paths`` (nothing waits in them),
    close the descriptors and the lock."""
    if spare is not None:
        spare.discard()
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    for fd in [*fds, *([lock_fd] if lock_fd is not None else [])]:
        with contextlib.suppress(OSError):
            os.close(fd)
