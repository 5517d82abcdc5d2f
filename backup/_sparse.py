"""Sparse volumes: reading only the data regions, recognising zero blocks, and making a
restore target's zero ranges zero without writing them where the system allows.

A regular file is walked with ``lseek(SEEK_DATA/SEEK_HOLE)``: a chunk wholly in a hole is
never read, and the holes inside a partly written chunk read as zeros without a system
call. A block device (or a filesystem without hole reporting) is read whole. Either way a
block is a *zero block* when its digest is that of zeros of its length (``_block_hash``), so a zero
region that was written out (not a hole) is recognised too, from the digest the block list
needs anyway. Everything here blocks; callers run it in worker threads.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from typing import Any

from ._errors import BackupError, VolumeError

__all__ = ["ZeroRuns", "data_chunk", "pwrite_all", "zero_range"]

ZeroRuns = list[tuple[int, int]]  # (first block, count), in block order
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZEROS = bytes(1024 * 1024)
# fallocate failing so means "not here": write the zeros instead.
_NO_PUNCH = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.ENODEV, errno.EPERM,
                       errno.ENOTTY})


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _shrunk(fd: int, where: str, size: int) -> VolumeError | None:
    """A VolumeError if the volume is now shorter than the ``size`` being backed up."""
    now = os.fstat(fd).st_size
    if now >= size:
        return None
    return VolumeError(f"volume {where!r} ended at byte {now} while {size} were expected (did it shrink during the"
                       " backup?)")


def _extents(fd: int, start: int, stop: int) -> list[tuple[int, int]] | None:
    """The data regions of ``start:stop``, or None where the filesystem cannot say."""
    found: list[tuple[int, int]] = []
    pos = start
    while pos < stop:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            return None
        if data >= stop:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), stop)
        found.append((data, hole))
        pos = hole
    return found


def pread_into(fd: int, view: memoryview, offset: int, where: str, size: int) -> None:
    """Fill ``view`` from volume ``offset``; a VolumeError if the volume ends early."""
    done = 0
    try:
        while done < len(view):
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise VolumeError(f"volume {where!r} ended at byte {offset + done} while {size} were expected"
                                  " (did it shrink during the backup?)")
            done += got
    except OSError as exc:
        raise VolumeError(f"volume {where!r}: read error at byte {offset + done}: {_reason(exc)}") from None


def _pread(fd: int, length: int, offset: int, where: str, size: int) -> bytes:
    """``length`` bytes as one bytes object (no copy beyond the kernel's), or VolumeError."""
    try:
        data = os.pread(fd, length, offset)
    except OSError as exc:
        raise VolumeError(f"volume {where!r}: read error at byte {offset}: {_reason(exc)}") from None
    if len(data) == length:
        return data
    if not data:
        raise VolumeError(f"volume {where!r} ended at byte {offset} while {size} were expected"
                          " (did it shrink during the backup?)")
    buf = bytearray(length)
    buf[:len(data)] = data
    pread_into(fd, memoryview(buf)[len(data):], offset + len(data), where, size)
    return bytes(buf)


def is_sparse_capable(fd: int) -> bool:
    """Whether to walk data regions: regular files only (a block device is read whole)."""
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _zero_fill(view: memoryview) -> None:
    """Zeros over a reused buffer's stale bytes (where a hole was not read)."""
    for at in range(0, len(view), len(_ZEROS)):
        n = min(len(_ZEROS), len(view) - at)
        view[at:at + n] = memoryview(_ZEROS)[:n]


def data_chunk(fd: int, offset: int, chunk_size: int, size: int, where: str, sparse: bool,
               into: memoryview | None = None) -> tuple[int, bytes | bytearray | memoryview | None]:
    """The first chunk at or after ``offset`` holding data: ``(its offset, its bytes)``.

    Chunks before it lie wholly in holes and were not read. ``(size, None)`` when no data
    is left; holes inside the chunk returned are zeros that were not read. With ``into``
    (a reused buffer of at least ``chunk_size`` bytes) the bytes are read into it and a
    view of it is returned; else a new object.
    """
    if not sparse:
        length = min(chunk_size, size - offset)
        if into is None:
            return offset, _pread(fd, length, offset, where, size)
        pread_into(fd, into[:length], offset, where, size)
        return offset, into[:length]
    try:
        first = os.lseek(fd, offset, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # the filesystem cannot report holes: read it all
            return data_chunk(fd, offset, chunk_size, size, where, False, into)
        first = size
    if first >= size:
        shrunk = _shrunk(fd, where, size)
        if shrunk is not None:
            raise shrunk
        return size, None
    offset += (first - offset) // chunk_size * chunk_size
    length = min(chunk_size, size - offset)
    extents = _extents(fd, offset, offset + length)
    if extents is None or extents == [(offset, offset + length)]:
        if into is None:
            return offset, _pread(fd, length, offset, where, size)
        pread_into(fd, into[:length], offset, where, size)
        return offset, into[:length]
    buf: bytearray | memoryview
    if into is None:
        buf = bytearray(length)  # zeros where the holes are
        view = memoryview(buf)
    else:
        buf = view = into[:length]
    pos = 0
    for start, stop in extents:
        if into is not None:
            _zero_fill(view[pos:start - offset])
        pread_into(fd, view[start - offset:stop - offset], start, where, size)
        pos = stop - offset
    if into is not None:
        _zero_fill(view[pos:length])
    if offset + length == size:  # the last chunk: a hole at its end may be a shrunk file's end
        shrunk = _shrunk(fd, where, size)
        if shrunk is not None:
            raise shrunk
    return offset, buf


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int, path: str) -> None:
    view = memoryview(data)
    try:
        while view:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done
    except OSError as exc:
        raise BackupError(f"cannot write restore target {path!r}: {exc.strerror or exc}") from None


def _fallocate() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate64
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _fallocate()


def zero_range(fd: int, offset: int, length: int, path: str) -> bool:
    """Make ``length`` bytes at ``offset`` of an existing target zero: punch a hole
    (``fallocate(PUNCH_HOLE|KEEP_SIZE)``; on a block device Linux turns it into a zeroing
    discard that must read back as zeros) where supported, else write zeros. Returns whether
    a hole was punched."""
    if _FALLOCATE is not None and length > 0:
        if _FALLOCATE(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
            return True
        code = ctypes.get_errno()
        if code not in _NO_PUNCH:
            raise BackupError(f"cannot write restore target {path!r}: {os.strerror(code)}")
    while length > 0:
        n = min(length, len(_ZEROS))
        pwrite_all(fd, memoryview(_ZEROS)[:n], offset, path)
        offset, length = offset + n, length - n
    return False
