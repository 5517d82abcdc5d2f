"""The durable outbox: an append-only log of notifications not yet confirmed.

A durable notification is written to the log before ``notify()`` returns: one framed,
checksummed record copied, on the event loop, into a shared mapping (``mmap``,
``MAP_SHARED``) of the active segment. The mapping's pages are the kernel's page cache of
the file, so once the copy is done the record is in the kernel exactly as after a
``write(2)``, without the system call: a crash of the process (SIGKILL, OOM kill,
segfault) loses nothing that ``notify()`` accepted. A segment is preallocated
(``posix_fallocate``) when it starts, so a full disk is an error there, never a fault in
the mapping; its unwritten tail is given back when it is closed. With ``sync = fsync``
callers also wait for a group fdatasync (in a worker thread) and a power loss loses
nothing either. Confirmations are acknowledgement watermarks per transport, written
to the same log; a segment whose records are all confirmed is deleted (in a worker
thread). The next Notifier on the same spool replays what is left, in order, per
transport. A torn or garbage region is skipped, copied to ``quarantine.jsonl`` and
counted; it never stops the replay. See :mod:`notifykit._log` for the format.

The Spool is built in layers, each a module of one concept: :mod:`~notifykit._spool_state`
(the accounting, the degraded state), :mod:`~notifykit._spool_writer` (appending, segments),
:mod:`~notifykit._spool_log` (reading back, confirming, deleting),
:mod:`~notifykit._spool_faults` (maintenance, disk faults), with the segment files'
blocking I/O in :mod:`~notifykit._spool_segments` and recovery, inspection and quarantine in
:mod:`~notifykit._spool_recovery`. This module opens and closes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

import anyio
import anyio.to_thread

from ._errors import ConfigError
from ._spool_faults import SpoolMaintenance
from ._spool_recovery import LOCK, SpoolInfo, inspect_spool, is_ours, recover
from ._spool_segments import DiskFault, SpooledRow, SpoolRead, close_files, identity
from ._spool_state import (
    DEFAULT_SPOOL_MAX_BYTES,
    SPOOL_TASK,
    Backlog,
    SpoolFaultError,
    SpoolFullError,
    SpoolSync,
    default_spool_path,
)

__all__ = [
    "DEFAULT_SPOOL_MAX_BYTES", "SPOOL_TASK", "DiskFault", "Spool", "SpoolFaultError", "SpoolFullError", "SpoolInfo",
    "SpoolRead", "SpoolSync", "SpooledRow", "default_spool_path",
]

log = logging.getLogger("notifykit")


class Spool(SpoolMaintenance):
    """The log shared by the durable / spill transports of one Notifier.

    One process at a time: the spool directory is locked (``flock``) while open. The event
    loop owns every attribute; worker threads get snapshots and return results that the
    loop applies.

    The cap is an invariant: our files never hold more than ``max_bytes`` on disk.
    :attr:`size` counts the segments (the active one with its whole preallocation), a spare
    segment ready or being made, and segments being deleted until their unlink returned;
    a segment starts only within what is left.

    A disk fault (the directory deleted, the disk full, read-only, an I/O error) is a state,
    :attr:`fault`, entered with one log line and left with one; the maintenance task
    (:meth:`keep_spare_segment`) tries the disk again every PROBE_INTERVAL meanwhile.
    """

    async def open(self) -> None:
        """Lock the spool, recover what a previous process left (quarantining bad bytes),
        and start a new segment. A disk that cannot take a
        new segment (full, read-only) is no error: the spool opens degraded (:attr:`fault`),
        what is there is replayed, and the disk is tried again in the background."""
        if not self._opened:
            self._spare_wanted = anyio.Event()
            await anyio.to_thread.run_sync(self._open_blocking)
            self._opened = True
            self._sync_health()

    def _open_blocking(self) -> None:
        path = self.path
        if path.is_dir():
            strangers = [p.name for p in path.iterdir() if not is_ours(p)]
            if strangers:
                raise ConfigError(f"spool path {str(path)!r} is a directory that is not a notifykit spool"
                                  f" (it holds {', '.join(sorted(strangers)[:3])}); name a directory of its own")
        elif path.exists():
            raise ConfigError(f"spool path {str(path)!r} is a file that is not a notifykit spool;"
                              " spool_path names a directory")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open spool {str(path)!r}: {exc.strerror}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise ConfigError(f"spool {str(path)!r} is in use by another Notifier; give each process"
                              " its own spool_path") from None
        self._lock_fd = lock_fd
        # Nothing else uses the spool until open() returns: this thread may change its state.
        try:
            self._dir_id = identity(path)
            recovered = recover(path)
            for segment, region, data in recovered.bad:
                self._count_quarantined(self._quarantine(
                    {"segment": segment.path.name, "offset": region.start, "length": region.end - region.start,
                     "reason": "not a valid record"}, data))
            for segment in list(recovered.segments):
                if segment.allocated:  # a crashed writer's preallocated, unwritten tail
                    try:
                        os.truncate(segment.path, segment.size)
                        segment.allocated = 0
                    except OSError:  # kept (and counted) until the segment is deleted
                        pass
                try:
                    segment.fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    recovered.segments.remove(segment)
            self._segments = recovered.segments
            self._acked = dict(recovered.acked)
            self._acked_on_disk = dict(recovered.acked)
            self._dropped = {t: list(r) for t, r in recovered.dropped.items()}
            self._next_seq = recovered.next_seq
            self._pending = dict(recovered.pending)
            self._backlogs = {t: Backlog(seqs, sizes) for t, (seqs, sizes) in recovered.waiting.items()}
            self._bytes = sum(max(s.size, s.allocated) for s in self._segments)
            doomed = self._take_deletable()  # first: what they free is room for the new segment
            error = self._deleted(doomed, self._delete_blocking([s.path for s in doomed]))
            if error is not None:  # kept, retried by the maintenance task
                self._fail(error, "deleting confirmed segments")
            # Degraded from the start (reported, tried again), or full (the next append starts
            # a segment once deletions made room): the spool opens all the same and is replayed.
            with contextlib.suppress(SpoolFaultError, SpoolFullError):
                self._start_segment()
        except BaseException:
            self._close()
            raise

    async def aclose(self) -> None:
        """Check the directory, write the last confirmations, delete what they free, fsync
        and close."""
        if self._opened:
            await self.check()
            await self.release()
            if self.sync is SpoolSync.FSYNC and self._active is not None:
                await self.synced(self._written)
            self._retire_active()  # on the loop: nothing may write to a mapping being unmapped
            spare = self._take_spare()  # discarded in the worker thread (unlinking its pages takes a while)
            empty = all(self._done(t, lo, hi) for _, spans in self._spans() for t, (lo, hi) in spans.items())
            paths = [s.path for s in self._segments] if empty else []  # nothing waits: a fresh log next time
            fds = [s.fd for s in self._segments if s.fd is not None] + self._fds_to_close
            for segment in self._segments:
                segment.fd = None
            if empty:
                self._segments = []
            lock_fd, self._lock_fd, self._fds_to_close, self._retired_fds = self._lock_fd, None, [], []
            await self._in_thread(close_files, spare, paths, fds, lock_fd)
            self._opened = False

    def _close(self) -> None:
        """Close the files without writing anything more (after a failed start, in tests)."""
        self._drop_spare()
        if self._map is not None:
            self._map.close()
        fds = {s.fd for s in self._segments if s.fd is not None} | {self._fd, self._lock_fd} | set(self._fds_to_close)
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        for segment in self._segments:
            segment.fd = None
        self._retired_fds, self._fds_to_close, self._fd, self._lock_fd, self._active, self._map = [], [], None, None, None, None
        self._heads.clear()
        self._opened = False

    @staticmethod
    def inspect(path: str | os.PathLike[str]) -> SpoolInfo:
        """What a spool holds, read-only (see :func:`~notifykit._spool_recovery.inspect_spool`)."""
        return inspect_spool(path)

    def counts_blocking(self) -> dict[str, int]:
        """Notifications waiting per transport (read-only; for ``notifykit status`` and tests)."""
        return Spool.inspect(self.path).counts
