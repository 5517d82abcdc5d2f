"""Writing the spool's log: records copied into the active segment's mapping on the event
loop (the hot path), segments started within the cap (a spare made ahead in a worker
thread), retired and trimmed, and the group fsync of ``spool_sync = fsync``.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import zlib
from collections.abc import Callable

import anyio
import anyio.to_thread

from ._errors import NotifyKitError
from ._formats import json_context
from ._log import HEADER, MAGIC, frame_checkpoint, frame_notification, notification_head, segment_name
from ._message import Notification
from ._spool_segments import Segment, Spare, fault_in
from ._spool_state import Backlog, SpoolFaultError, SpoolFullError, SpoolState, SpoolSync

__all__ = ["SpoolWriter"]

log = logging.getLogger("notifykit")
_PACK_HEADER = HEADER.pack
_crc32 = zlib.crc32


class SpoolWriter(SpoolState):
    """Appends records and starts, retires and makes ready the segments that hold them."""

    def _start_segment(self, need: int = 0) -> None:
        """Close the active segment (cut to what it holds) and begin the next: the spare when
        it is ready and fits, else one made here, preallocated (so that a full disk fails
        here, with an error, not later in the mapping) and mapped. It fits within
        ``max_bytes`` with everything else on disk (see :attr:`size`): SpoolFullError when
        not even ``need`` more bytes would; SpoolFaultError when the disk refused it (the
        spool is then degraded, without an active segment)."""
        if self._rescuing:
            raise SpoolFaultError(f"spool {str(self.path)!r} is being recreated")
        checkpoint = frame_checkpoint(self._next_seq, self._acked, self._dropped)
        want = len(checkpoint) + need
        number = self._segments[-1].number + 1 if self._segments else 1
        active = self._active
        tail = self._capacity - active.size if active is not None else 0
        spare = self._take_spare()  # no longer counted as a spare: it serves below, or is discarded
        room = self.max_bytes - (self._bytes - tail) - self._spare_bytes - self._deleting_bytes
        if spare is not None and spare.number == number and want <= spare.capacity <= room:
            self._retire_active()
            fd, mapping, capacity = spare.fd, spare.mapping, spare.capacity
        else:
            if spare is not None:  # made for another size: its number is free again
                spare.discard()
            elif self._spare_number == number:  # a worker thread is making that one: leave it (it is discarded)
                number += 1
            capacity = min(max(self.segment_bytes, want), room)
            if capacity < want:
                raise SpoolFullError(f"spool {str(self.path)!r} is full ({self.max_bytes} bytes, spool_max_bytes)")
            self._retire_active()  # first: its unwritten tail goes back before the next is allocated
            capacity = min(capacity, self.max_bytes - self.size)  # less if the tail could not be given back
            if capacity < want:
                raise SpoolFaultError(f"spool {str(self.path)!r}: {self.fault.describe() if self.fault else 'no room'}")
            try:
                fd, mapping = self._make_segment(number, capacity)
            except OSError as exc:
                self._fail(exc, f"starting {segment_name(number)}")
                raise SpoolFaultError(f"spool {str(self.path)!r} is degraded: {exc.strerror or exc}") from None
        segment = Segment(number, self.path / segment_name(number), len(checkpoint), fd=fd)
        mapping[:len(checkpoint)] = checkpoint
        self._fd, self._map, self._capacity, self._active = fd, mapping, capacity, segment
        self._check_at = capacity // 2  # half full: time to make the next one ready
        self._bytes += capacity
        self._acked_on_disk = dict(self._acked)
        self._segments.append(segment)
        self._dir_dirty = True

    def _ask_for_spare(self) -> None:
        """The active segment is half full: have keep_spare_segment() make the next one
        (a Notifier that never fills half a segment never makes one)."""
        self._check_at = self._capacity
        if self._spare_wanted is not None:
            self._spare_wanted.set()

    def _make_segment(self, number: int, capacity: int) -> tuple[int, mmap.mmap]:
        path = self.path / segment_name(number)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, capacity)
            mapping = mmap.mmap(fd, capacity)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return fd, mapping

    async def _make_spare_now(self) -> bool:
        """Make the next segment ready in a worker thread; False when the disk refused it."""
        if (self._spare is not None or self._spare_number is not None or self._active is None
                or self.size + self.segment_bytes > self.max_bytes):
            return True
        number, capacity = self._segments[-1].number + 1, self.segment_bytes
        self._spare_bytes, self._spare_number = capacity, number  # reserved from here: the file is being made
        done = self._spare_done = anyio.Event()
        try:
            with anyio.CancelScope(shield=True):  # a few ms; what it makes must not leak
                spare = await anyio.to_thread.run_sync(self._make_spare, number, capacity)
        except OSError as exc:
            self._spare_bytes, self._spare_number = 0, None
            self._fail(exc, f"preparing {segment_name(number)}")
            return False
        finally:
            self._spare_done = None
            done.set()
        if self._active is None or self._segments[-1].number + 1 != number:  # closed, or moved on meanwhile
            spare.discard()
            self._spare_bytes, self._spare_number = 0, None
            return True
        self._spare = spare
        return True

    def _make_spare(self, number: int, capacity: int) -> Spare:
        fd, mapping = self._make_segment(number, capacity)
        fault_in(mapping)
        return Spare(number, self.path / segment_name(number), fd, mapping, capacity)

    def _take_spare(self) -> Spare | None:
        """The ready spare, no longer counted as one (None when there is none; one a worker
        thread is still making keeps its number and bytes reserved)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            self._spare_bytes, self._spare_number = 0, None
        return spare

    def _drop_spare(self) -> None:
        spare = self._take_spare()
        if spare is not None:
            spare.discard()

    def _retire_active(self) -> None:
        """Unmap the active segment and give its unwritten tail back to the disk. Its file
        descriptor stays the segment's (records are read through it); under ``sync =
        fsync`` the next fsync covers it."""
        active, fd, mapping = self._active, self._fd, self._map
        self._active, self._fd, self._map = None, None, None
        self._heads.clear()  # append() finds no segment: _head() says why
        if mapping is not None:
            mapping.close()  # the written pages stay in the page cache, dirty: nothing is lost
        if active is None or fd is None:
            return
        capacity, self._capacity = self._capacity, 0
        try:
            os.ftruncate(fd, active.size)
            self._bytes -= capacity - active.size
        except OSError as exc:  # the tail stays allocated (and counted) until the segment goes
            active.allocated = capacity
            self._fail(exc, f"trimming {active.path.name}")
        if self.sync is SpoolSync.FSYNC:
            self._retired_fds.append(fd)

    def append(self, transport: str, notification: Notification) -> int:
        """Write one notification to the log and return its sequence number. On return the
        record is in the kernel (the page cache: it survives a crash of the process); under
        ``sync = fsync`` await :meth:`synced` as well. Raises SpoolFullError past
        ``max_bytes`` and OSError when a new segment cannot be allocated."""
        # The hot path of durable mode: one frame, one copy into the mapping, no system call.
        # The body is frame_notification()'s, written out (a Python call costs as much as a
        # field here; tests/test_spool.py checks that the bytes are the same).
        head = self._heads.get(transport) or self._head(transport)
        seq = self._next_seq
        n = notification
        context, t = n.context, n.timestamp
        body = head[0].pack(b"N", seq, head[1], head[2], t.year, t.month, t.day, t.hour, t.minute, t.second,
                            t.microsecond) + "\x00".join((
            n.event_type, n.priority, n.publisher_id, context._wire.get("json") or context.encoded("json", json_context),
            n.payload_json, n.message_id)).encode("utf-8", "surrogatepass")
        data = _PACK_HEADER(MAGIC, len(body), _crc32(body)) + body
        active = self._active
        start = active.size  # type: ignore[union-attr]  # _head() checked that the spool is open
        end = start + len(data)
        if end > self._check_at:
            if end > self._capacity:
                self._start_segment(len(data))
                active = self._active
                start = active.size  # type: ignore[union-attr]
                end = start + len(data)
            else:
                self._ask_for_spare()
        self._map[start:end] = data  # type: ignore[index]
        active.size = end  # type: ignore[union-attr]
        active.last[transport] = self._written = seq  # type: ignore[union-attr]
        self._next_seq = seq + 1
        size = end - start  # the transport's Backlog: this record waits until confirmed (spooled_bytes)
        head[3](seq)
        head[4](size)
        head[5].pending += size
        return seq

    def _head(self, transport: str) -> tuple[struct.Struct, int, bytes, Callable[[int], None], Callable[[int], None],
                                             Backlog]:
        if self._active is None:
            self._no_segment()
            self._start_segment()
        name = self._names.get(transport) or transport.encode()
        self._names[transport] = name
        backlog = self._backlog(transport)
        head = self._heads[transport] = (notification_head(name), len(name), name, backlog.seqs.append,
                                         backlog.sizes.append, backlog)
        return head

    def append_many(self, transport: str, notifications: list[Notification]) -> int:
        """Write several notifications at once (a queue spilled at once); returns the first
        one's sequence number (the others follow it)."""
        if not self._opened:
            raise NotifyKitError("the spool is not open")
        return self._write(transport, *notifications)

    def _write(self, transport: str, *notifications: Notification) -> int:
        name = self._names.get(transport) or transport.encode()
        self._names[transport] = name
        first = self._next_seq
        frames = [frame_notification(first + i, name, n) for i, n in enumerate(notifications)]
        data = b"".join(frames)
        self._put(data)
        last = first + len(notifications) - 1
        self._next_seq = last + 1
        assert self._active is not None
        self._active.last[transport] = self._written = last
        backlog = self._backlog(transport)
        backlog.seqs.extend(range(first, last + 1))
        backlog.sizes.extend(map(len, frames))
        backlog.pending += len(data)
        return first

    def _put(self, data: bytes) -> None:
        """Copy frames into the active segment, starting the next one if they do not fit."""
        if self._active is None or self._map is None:
            self._no_segment()
            self._start_segment(len(data))
        elif self._active.size + len(data) > self._capacity:
            self._start_segment(len(data))
        elif self._active.size + len(data) > self._check_at:
            self._ask_for_spare()
        active, mapping = self._active, self._map
        assert active is not None and mapping is not None
        mapping[active.size:active.size + len(data)] = data
        active.size += len(data)

    async def synced(self, seq: int) -> None:
        """Wait until ``seq`` is on the disk (``sync = fsync``): callers that arrive while an
        fsync runs share the next one (group commit). A failed fsync is logged, not raised:
        the record is still in the kernel."""
        while self._synced < seq:
            running = self._syncing
            if running is not None:
                await running.wait()
                continue
            done = self._syncing = anyio.Event()
            target, fds, retired = self._written, [self._fd], self._retired_fds
            self._retired_fds = []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            try:
                await self._in_thread(self._fsync_blocking, fds, retired, dir_dirty)
            except OSError as exc:  # the records are in the kernel: safe from a crash, not from a power loss
                self._fail(exc, "fsync")
            finally:
                self._synced = max(self._synced, target)
                self._syncing = None
                done.set()

    def _fsync_blocking(self, fds: list[int | None], retired: list[int], dir_dirty: bool) -> None:
        for fd in [*retired, *fds]:
            if fd is not None:
                os.fdatasync(fd)
        if dir_dirty:
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
