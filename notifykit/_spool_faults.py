"""The spool's maintenance task and its disk faults: the spare segment made ahead, the
directory checked (a deleted one recreated and every live segment written back through the
descriptors kept open), and a degraded spool tried again until it works.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os

import anyio
import anyio.to_thread

from ._log import segment_name
from ._spool_log import SpoolLog
from ._spool_recovery import LOCK
from ._spool_segments import directory_gone, identity, pread_all, touch, truncate_fd, write_all
from ._spool_state import CHECK_INTERVAL, PROBE_INTERVAL, SpoolFaultError, SpoolFullError

__all__ = ["SpoolMaintenance"]


class SpoolMaintenance(SpoolLog):
    """The background task of the spool, and the recovery from disk faults."""

    async def keep_spare_segment(self) -> None:
        """Background task (supervised by the Notifier), the spool's maintenance: whenever
        the active segment is half full, make the next one ready in a worker thread (when
        ``max_bytes`` has room for it); every CHECK_INTERVAL, check that the directory is
        still ours (a deleted one is recreated, :meth:`check`); while degraded, try the
        disk again every PROBE_INTERVAL and leave the degraded state once it works."""
        while True:
            wanted = self._spare_wanted
            assert wanted is not None, "keep_spare_segment() needs an open spool"
            with anyio.move_on_after(PROBE_INTERVAL if self.fault is not None else CHECK_INTERVAL):
                await wanted.wait()
            if wanted.is_set():
                self._spare_wanted = anyio.Event()
            await self.check()
            if self.fault is not None:
                await self._probe()
            elif wanted.is_set():
                await self._make_spare_now()

    async def check(self) -> None:
        """Is the directory still ours? One deleted (``rm -rf``) or replaced under us is
        recreated and every live segment written back into it, read through the descriptors
        we keep (nothing is lost); if that fails the spool stays degraded (``deleted``) and
        :attr:`on_disk` is False."""
        if not self._opened or self._lock_fd is None or self._rescuing:
            return
        gone = await anyio.to_thread.run_sync(directory_gone, self.path, self._lock_fd, self._dir_id)
        if gone is not None:
            self._fail(gone, "checking the spool directory", kind="deleted")
            await self._rescue()

    async def _rescue(self) -> None:
        active = self._active
        closed = [(s.number, s.fd, s.size) for s in self._segments if s is not active and s.fd is not None]
        head = bytes(self._map[:active.size]) if active is not None and self._map is not None else None
        self._rescuing = True
        try:
            result = await self._in_thread(self._rescue_blocking, closed,
                                           None if active is None or head is None else (active.number, head, self._capacity))
        except OSError as exc:
            self._fail(exc, f"recreating {str(self.path)!r}")
            self._retire_active()  # a file that is not on disk takes no more records
            return
        finally:
            self._rescuing = False
        lock_fd, dir_id, fds, made = result
        if self._lock_fd is not None:
            self._fds_to_close.append(self._lock_fd)
        self._lock_fd, self._dir_id = lock_fd, dir_id
        for segment in self._segments:
            if segment.number in fds and segment is not active:
                self._release_fd(segment)
                segment.fd = fds[segment.number]
        if made is not None and active is not None:
            fd, mapping, copied = made
            if self._active is active and self._map is not None:  # records appended meanwhile: copied too
                mapping[copied:active.size] = self._map[copied:active.size]
                self._map.close()
                self._release_fd(active)
                self._map, self._fd, active.fd = mapping, fd, fd
            else:  # retired meanwhile (cannot happen while rescuing; kept simple): the copy serves reads
                mapping.close()
                self._release_fd(active)
                active.fd = fd
        self._close_unused_fds()
        self._dir_dirty = True
        if self._active is None:  # retired by the fault: appends need a segment again
            try:
                self._start_segment()
            except (SpoolFullError, SpoolFaultError):
                return  # still degraded: the maintenance task tries again
        self._recovered(f"{str(self.path)!r} recreated, {len(self._segments)} segment(s) written back")

    def _rescue_blocking(self, closed: list[tuple[int, int, int]], active: tuple[int, bytes, int] | None
                         ) -> tuple[int, tuple[int, int], dict[int, int], tuple[int, mmap.mmap, int] | None]:
        path = self.path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fds: dict[int, int] = {}
        made: tuple[int, mmap.mmap, int] | None = None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for number, old, size in closed:
                data = pread_all(old, size)
                fd = fds[number] = os.open(path / segment_name(number), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                                           0o600)
                write_all(fd, data)
            if active is not None:
                number, head, capacity = active
                fd = os.open(path / segment_name(number), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                fds[number] = fd
                os.posix_fallocate(fd, 0, capacity)
                mapping = mmap.mmap(fd, capacity)
                mapping[:len(head)] = head
                made = (fd, mapping, len(head))
                del fds[number]
            return lock_fd, identity(path), fds, made
        except BaseException:
            for fd in [lock_fd, *fds.values(), *([made[0]] if made else [])]:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if made is not None:
                made[1].close()
            raise

    async def _probe(self) -> None:
        """Degraded: try every operation the fault may have stopped; leave the state once
        all of them work (a new segment, trimming, deleting, recording confirmations, a
        real write, an fsync)."""
        if not self.on_disk:
            await self._rescue()
            return
        if not await self.release():  # first: what confirmed segments free is room for the next
            return
        if self._active is None:
            try:
                self._start_segment()
            except (SpoolFullError, SpoolFaultError):
                return
        trims = [(s, s.fd) for s in self._segments if s is not self._active and s.allocated and s.fd is not None]
        for segment, fd in trims:
            try:
                await self._in_thread(truncate_fd, fd, segment.size)
            except OSError as exc:
                self._fail(exc, f"trimming {segment.path.name}")
                return
            self._bytes -= segment.allocated - segment.size
            segment.allocated = 0
        try:
            await anyio.to_thread.run_sync(touch, self._lock_fd)
            if self.fsync and self._fd is not None:
                await self._in_thread(os.fdatasync, self._fd)
        except OSError as exc:
            self._fail(exc, "writing to the spool")
            return
        if not await self._make_spare_now():
            return
        self._recovered("segments are started, written and deleted again")
