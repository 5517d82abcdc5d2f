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
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import mmap
import os
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from ._choices import parse_choice
from ._errors import ConfigError, InvalidNotificationError, NotifyKitError
from ._formats import json_context
from ._log import (
    HEADER,
    MAGIC,
    BadRegion,
    Record,
    decode_body,
    frame_ack,
    frame_checkpoint,
    frame_drop,
    frame_notification,
    notification_head,
    scan,
    segment_name,
)
from ._message import Notification
from ._paths import state_file
from ._spool_recovery import (
    LEGACY_SUFFIXES,
    LOCK,
    SpoolInfo,
    inspect_spool,
    is_legacy_spool,
    is_ours,
    move_sqlite,
    recover,
    write_quarantine,
)
from ._spool_segments import (
    DiskFault,
    Reader,
    Segment,
    Spare,
    SpooledRow,
    SpoolRead,
    close_files,
    directory_gone,
    fault_in,
    fault_kind,
    identity,
    pread_all,
    read_records,
    touch,
    truncate_fd,
    write_all,
)
from ._supervisor import TaskHealth, TaskState

__all__ = [
    "DEFAULT_SPOOL_MAX_BYTES", "SPOOL_TASK", "DiskFault", "Spool", "SpoolFaultError", "SpoolFullError", "SpoolInfo",
    "SpoolRead", "SpoolSync", "SpooledRow", "default_spool_path",
]

log = logging.getLogger("notifykit")

DEFAULT_SPOOL_MAX_BYTES = 1024**3
#: The spool's background task in ``Notifier.background_tasks()`` (keep_spare_segment).
SPOOL_TASK = "spool"
#: A segment is closed past this size; the cap on the whole spool may make it smaller.
SEGMENT_BYTES = 8 * 1024 * 1024
_PACK_HEADER = HEADER.pack
_crc32 = zlib.crc32
#: While the spool's disk is failing it is tried again this often (seconds); while it works,
#: the directory is checked this often (an ``rm -rf`` of it is noticed and repaired).
PROBE_INTERVAL = 1.0
CHECK_INTERVAL = 1.0
_T = TypeVar("_T")


class SpoolSync(enum.StrEnum):
    """How far a record goes before ``notify()`` returns."""

    WRITE = "write"  # into the kernel (the page cache, through the mapping): survives a crash of the process
    FSYNC = "fsync"  # onto the disk (group fsync): survives a power loss too

    @classmethod
    def parse(cls, value: SpoolSync | str) -> SpoolSync:
        return parse_choice(cls, value, "spool_sync")


class SpoolFullError(NotifyKitError):
    """The spool reached ``spool_max_bytes``; the transport's overflow policy decides."""


class SpoolFaultError(NotifyKitError):
    """The spool's disk cannot take a record now (see :attr:`Spool.fault`): the directory was
    deleted and could not be recreated, the disk is full, read-only or failing."""


def default_spool_path() -> Path:
    """``$NOTIFYKIT_SPOOL``, else ``$XDG_STATE_HOME/notifykit/spool`` (a directory)."""
    return state_file("NOTIFYKIT_SPOOL", "spool")





class Spool:
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

    def __init__(self, path: str | os.PathLike[str], *, sync: SpoolSync | str = SpoolSync.WRITE,
                 max_bytes: int = DEFAULT_SPOOL_MAX_BYTES, segment_bytes: int = SEGMENT_BYTES) -> None:
        if max_bytes < 4096:
            raise ConfigError(f"spool_max_bytes must be >= 4096, got {max_bytes}")
        self.path = Path(path)
        self.sync = SpoolSync.parse(sync)
        self.fsync = self.sync is SpoolSync.FSYNC  # callers wait for a group fsync (a bool: the hot path reads it)
        self.max_bytes = max_bytes
        self.segment_bytes = max(1024, min(segment_bytes, max_bytes // 8))
        self.quarantined = 0  # records or regions skipped for good (copied to quarantine.jsonl if it has room)
        self.quarantine_not_copied = 0  # of those, the ones quarantine.jsonl had no room (or no disk) for
        #: The disk fault the spool is degraded by, None while it works (see DiskFault).
        self.fault: DiskFault | None = None
        self.faults = 0  # degraded episodes so far
        self._health: TaskHealth | None = None
        self._opened = False
        self._lock_fd: int | None = None
        self._dir_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the directory we locked
        # The active segment: preallocated to _capacity bytes and mapped (MAP_SHARED) at _map;
        # a record is copied into the mapping, i.e. into the kernel's page cache of the file.
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._capacity = 0
        self._check_at = 0  # append() looks further past this offset: the capacity, or half of it (ask for the spare)
        self._segments: list[Segment] = []
        self._active: Segment | None = None
        self._bytes = 0  # on disk: the closed segments, and the active one's whole capacity
        self._spare: Spare | None = None  # the next segment, ready (see keep_spare_segment)
        self._spare_bytes = 0  # on disk for the spare, or reserved while it is made
        self._spare_number: int | None = None  # the spare's segment number, ready or being made
        self._spare_done: anyio.Event | None = None  # set once the spare being made is there (or failed)
        self._spare_wanted: anyio.Event | None = None
        self._deleting_bytes = 0  # segments being deleted: still on disk until the unlink returned
        self._deletions: set[anyio.Event] = set()  # one per deletion running in a worker thread
        self._rescuing = False  # the directory is being recreated: no segment starts, none is deleted
        self._fd_users = 0  # worker threads using segment file descriptors (they are closed only at 0)
        self._fds_to_close: list[int] = []
        self._next_seq = 1
        self._acked: dict[str, int] = {}
        self._acked_on_disk: dict[str, int] = {}
        # Holes above the watermark, per transport: (after, through] ranges dropped by
        # overflow = drop_oldest while older records were still in flight; merged, in order.
        self._dropped: dict[str, list[tuple[int, int]]] = {}
        self._pending: dict[str, int] = {}
        self._names: dict[str, bytes] = {}
        self._heads: dict[str, tuple[struct.Struct, int, bytes]] = {}  # per transport: notification_head()
        self._readers: dict[str, Reader] = {}
        self._quarantine_lock = threading.Lock()
        # fsync group commit
        self._written = 0
        self._synced = 0
        self._syncing: anyio.Event | None = None
        self._retired_fds: list[int] = []  # closed segments' descriptors the next fsync covers
        self._dir_dirty = False

    # -- opening, recovery, migration (worker thread) -----------------------------------

    async def open(self) -> None:
        """Lock the spool, recover what a previous process left (quarantining bad bytes),
        migrate a pre-log SQLite spool, and start a new segment. A disk that cannot take a
        new segment (full, read-only) is no error: the spool opens degraded (:attr:`fault`),
        what is there is replayed, and the disk is tried again in the background."""
        if not self._opened:
            self._spare_wanted = anyio.Event()
            await anyio.to_thread.run_sync(self._open_blocking)
            self._opened = True
            self._sync_health()

    def pending_counts(self) -> dict[str, int]:
        """Notifications per transport a previous process left (after :meth:`open`)."""
        return dict(self._pending)

    def _open_blocking(self) -> None:
        path = self.path
        if path.is_dir():
            strangers = [p.name for p in path.iterdir() if not is_ours(p)]
            if strangers:
                raise ConfigError(f"spool path {str(path)!r} is a directory that is not a notifykit spool"
                                  f" (it holds {', '.join(sorted(strangers)[:3])}); name a directory of its own")
        elif path.exists():
            if not is_legacy_spool(path):
                raise ConfigError(f"spool path {str(path)!r} is a file that is not a notifykit spool;"
                                  " spool_path names a directory")
            move_sqlite(path, path.with_name(path.name + ".pre-log"))
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
            self._bytes = sum(max(s.size, s.allocated) for s in self._segments)
            doomed = self._take_deletable()  # first: what they free is room for the new segment
            error = self._deleted(doomed, self._delete_blocking([s.path for s in doomed]))
            if error is not None:  # kept, retried by the maintenance task
                self._fail(error, "deleting confirmed segments")
            # Degraded from the start (reported, tried again), or full (the next append starts
            # a segment once deletions made room): the spool opens all the same and is replayed.
            with contextlib.suppress(SpoolFaultError, SpoolFullError):
                self._start_segment()
            for suffix in LEGACY_SUFFIXES:
                legacy = path.with_name(path.name + suffix)
                if legacy.is_file() and is_legacy_spool(legacy):
                    self._migrate(legacy)
        except BaseException:
            self._close()
            raise

    # -- segments (event loop) ----------------------------------------------------------

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

    def _release_fd(self, segment: Segment) -> None:
        """Close a deleted segment's descriptor once no worker thread may be using it."""
        fd, segment.fd = segment.fd, None
        if fd is not None:
            if fd in self._retired_fds:
                self._retired_fds.remove(fd)
            self._fds_to_close.append(fd)
            self._close_unused_fds()

    def _close_unused_fds(self) -> None:
        if not self._fd_users:
            fds, self._fds_to_close = self._fds_to_close, []
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _in_thread(self, function: Callable[..., _T], *args: object) -> _T:
        """Run ``function`` in a worker thread that may use segment descriptors (none is
        closed meanwhile); shielded, so that what it does is always applied."""
        self._fd_users += 1
        try:
            with anyio.CancelScope(shield=True):
                result = await anyio.to_thread.run_sync(function, *args)
            return result
        finally:
            self._fd_users -= 1
            self._close_unused_fds()

    # -- disk faults: states, not per-record errors ---------------------------------------

    @property
    def writable(self) -> bool:
        """A record can be written now (there is an active segment)."""
        return self._active is not None

    @property
    def on_disk(self) -> bool:
        """What the spool holds is on disk: False only while its directory is deleted and
        could not be recreated (the records are then readable through our descriptors only)."""
        return self.fault is None or self.fault.kind != "deleted"

    def attach_health(self, health: TaskHealth) -> None:
        """Show the degraded state in this TaskHealth too (the ``spool`` background task's)."""
        self._health = health
        self._sync_health()

    def _sync_health(self) -> None:
        health, fault = self._health, self.fault
        if health is None:
            return
        if fault is not None:
            health.state = TaskState.RETRYING
            health.last_error = f"degraded ({fault.kind}): {fault.error}"
        elif health.state is TaskState.RETRYING and (health.last_error or "").startswith("degraded ("):
            health.state = TaskState.RUNNING

    def _fail(self, exc: OSError | str, doing: str, kind: str | None = None) -> None:
        """Enter the degraded state (one log line), or note the latest error while in it."""
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        error = f"{doing}: {reason}"
        if self.fault is not None:
            self.fault.error = error
            return
        kind = kind or (fault_kind(exc) if isinstance(exc, OSError) else "io_error")
        self.fault = DiskFault(kind, error, time.time())
        self.faults += 1
        if self._health is not None:
            self._health.failures += 1
        self._sync_health()
        if kind == "deleted" and self._spare_wanted is not None:
            self._spare_wanted.set()  # the maintenance task checks the directory now
        if kind == "deleted":
            then = "recreating it and writing back the segments it held (read through our open descriptors)"
        else:
            then = (f"records go to the spool while its active segment has room; then durable notifications are kept"
                    f" in memory (up to queue_size, under the overflow policy); tried again every {PROBE_INTERVAL}s")
        log.error("notifykit spool %r degraded (%s): %s; %s", str(self.path), kind, error, then)

    def _recovered(self, how: str) -> None:
        fault, self.fault = self.fault, None
        if fault is None:
            return
        self._sync_health()
        log.warning("notifykit spool %r works again, %.1fs after the %s fault: %s", str(self.path),
                    time.time() - fault.since, fault.kind, how)

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


    def _migrate(self, legacy: Path) -> None:
        """Append the rows of a pre-log SQLite spool to the log, then keep the file as ``.migrated``."""
        db = sqlite3.connect(legacy, isolation_level=None)
        try:
            rows = db.execute("SELECT id, transport, body FROM outbox ORDER BY id").fetchall()
        finally:
            db.close()
        moved = 0
        for row_id, transport, body in rows:
            try:
                notification = Notification.from_json(body)
            except (ValueError, TypeError, InvalidNotificationError) as exc:
                self._count_quarantined(self._quarantine(
                    {"source": legacy.name, "row_id": row_id, "transport": str(transport),
                     "reason": f"not a notification: {exc}"}, str(body).encode(errors="replace")))
                continue
            self._write(str(transport), notification)
            self._pending[str(transport)] = self._pending.get(str(transport), 0) + 1
            moved += 1
        if self._fd is None:  # degraded: no segment to write them to; the file is kept and read again
            raise SpoolFaultError(f"cannot migrate {str(legacy)!r}: spool {str(self.path)!r} is degraded")
        os.fsync(self._fd)
        move_sqlite(legacy, legacy.with_name(legacy.name + ".migrated"))
        log.warning("notifykit spool: migrated %d notification(s) from the SQLite spool %r into %r;"
                    " the old file is kept as %r (delete it once replayed)", moved, str(legacy),
                    str(self.path), legacy.name + ".migrated")

    def _quarantine(self, what: dict[str, object], data: bytes) -> bool:
        """Copy bad bytes to quarantine.jsonl (any thread); returns whether it was copied."""
        return write_quarantine(self.path, self._quarantine_lock, what, data)

    def _count_quarantined(self, copied: bool) -> None:
        self.quarantined += 1
        self.quarantine_not_copied += not copied


    # -- appending (event loop) ---------------------------------------------------------

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
        return seq

    def _head(self, transport: str) -> tuple[struct.Struct, int, bytes]:
        if self._active is None:
            self._no_segment()
            self._start_segment()
        name = self._names.get(transport) or transport.encode()
        self._names[transport] = name
        head = self._heads[transport] = (notification_head(name), len(name), name)
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
        data = b"".join(frame_notification(first + i, name, n) for i, n in enumerate(notifications))
        self._put(data)
        last = first + len(notifications) - 1
        self._next_seq = last + 1
        assert self._active is not None
        self._active.last[transport] = self._written = last
        return first

    def _no_segment(self) -> None:
        """No active segment: say why (degraded, or not open); returns when one may be
        started now (the spool was full at open: SpoolFullError until deletions made room)."""
        if self.fault is not None:
            raise SpoolFaultError(f"spool {str(self.path)!r} is degraded ({self.fault.describe()})")
        if self._lock_fd is None:
            raise NotifyKitError("the spool is not open")

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

    # -- reading back (worker thread) ---------------------------------------------------

    async def read(self, transport: str, after: int, limit: int) -> SpoolRead:
        """The next records of ``transport`` after sequence ``after``, in order (replay, or a
        backlog larger than the in-memory queue), read through the segments' descriptors
        (so a deleted file is still read). Undecodable records are quarantined."""
        after = max(after, self._acked.get(transport, 0))  # confirmed ones are done, whatever is on disk
        kept = self._readers.pop(transport, None)
        reader = kept if kept is not None and kept.after == after else Reader(after=after)
        snapshot = [(s.number, s.fd, s.size) for s in self._segments if s.fd is not None]
        dropped = list(self._dropped.get(transport, ()))
        read, reader, copied = await self._in_thread(read_records, self._quarantine, transport, reader, limit,
                                                     snapshot, dropped)
        self._readers[transport] = reader
        for was_copied in copied:
            self._count_quarantined(was_copied)
        if transport in self._dropped:  # dropped while the thread read: skipped here
            read = SpoolRead([row for row in read.rows if not self._is_dropped(transport, row.row_id)],
                             read.through, read.quarantined)
        return read

    # -- confirming and deleting ----------------------------------------------------------

    def ack(self, transport: str, seq: int) -> None:
        """Every record of ``transport`` up to ``seq`` is done (sent, dead-lettered, dropped).
        Kept in memory; :meth:`release` writes it and deletes what it frees."""
        if seq > self._acked.get(transport, 0):
            self._acked[transport] = seq
            if transport in self._dropped:
                self._absorb(transport)

    def _absorb(self, transport: str) -> None:
        """A watermark that reached a hole covers it (and holes are pruned once covered)."""
        mark = self._acked.get(transport, 0)
        ranges = self._dropped.get(transport, [])
        while ranges and ranges[0][0] <= mark:
            mark = max(mark, ranges.pop(0)[1])
        if not ranges:
            self._dropped.pop(transport, None)
        if mark:
            self._acked[transport] = mark

    # -- dropping the oldest (overflow = drop_oldest on a full spool) -------------------

    def freeable_through(self, transport: str, after: int) -> int | None:
        """How far ``transport``'s waiting records (those after ``after``: older ones are
        in flight) must be dropped for the oldest segment that this alone can free to be
        deleted; None when dropping them frees nothing (other transports or the batch in
        flight hold every closed segment)."""
        mark = self._acked.get(transport, 0)
        for segment, spans in self._spans():
            if segment is self._active:
                return None
            below, last = spans.get(transport, (0, 0))
            if last <= after or max(below, mark) < after:
                continue  # nothing of it waiting here, or records in flight pin it
            if all(self._done(t, lo, hi) for t, (lo, hi) in spans.items() if t != transport):
                return last
        return None

    def _spans(self) -> Iterator[tuple[Segment, dict[str, tuple[int, int]]]]:
        """Each segment, oldest first, with the seq interval ``(lo, hi]`` that holds each
        transport's records in it."""
        before: dict[str, int] = {}
        for segment in self._segments:
            yield segment, {t: (before.get(t, 0), last) for t, last in segment.last.items()}
            before.update(segment.last)

    def _done(self, transport: str, lo: int, hi: int) -> bool:
        """Every record of ``transport`` in ``(lo, hi]`` is confirmed or dropped."""
        lo = max(lo, self._acked.get(transport, 0))
        return lo >= hi or any(a <= lo and hi <= b for a, b in self._dropped.get(transport, ()))

    def _is_dropped(self, transport: str, seq: int) -> bool:
        return any(a < seq <= b for a, b in self._dropped.get(transport, ()))

    def drop(self, transport: str, after: int, through: int) -> None:
        """Mark ``transport``'s records in ``(after, through]`` dropped: a ``D`` record in the
        log (best effort on a full spool: the next checkpoint records it too), and in memory,
        so that reads skip them and :meth:`release` deletes the segments they alone held."""
        if through <= max(after, self._acked.get(transport, 0)):
            return
        ranges = [*self._dropped.get(transport, []), (after, through)]
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._dropped[transport] = merged
        self._absorb(transport)
        with contextlib.suppress(SpoolFullError, SpoolFaultError):  # the next checkpoint records it
            self._put(frame_drop(after, through, self._names.get(transport) or transport.encode()))

    async def count(self, transport: str, after: int, through: int) -> int:
        """How many records of ``transport`` in ``(after, through]`` are waiting (neither
        confirmed nor dropped): read from the log, in a worker thread."""
        return len(await self._waiting(transport, after, through, None))

    async def next_waiting(self, transport: str, after: int) -> int | None:
        """The sequence number of ``transport``'s first waiting record after ``after``."""
        found = await self._waiting(transport, after, self._next_seq, 1)
        return found[0] if found else None

    async def _waiting(self, transport: str, after: int, through: int, limit: int | None) -> list[int]:
        snapshot = [(s.fd, s.size) for s, spans in self._spans() if s.fd is not None
                    and transport in spans and spans[transport][1] > after and spans[transport][0] < through]
        mark = max(after, self._acked.get(transport, 0))
        dropped = list(self._dropped.get(transport, ()))

        def reading() -> list[int]:
            found: list[int] = []
            for fd, size in snapshot:
                for item in scan(pread_all(fd, size)):
                    if isinstance(item, BadRegion):
                        continue
                    record = decode_body(item[1])
                    if (isinstance(record, Record) and record.transport == transport and mark < record.seq <= through
                            and not any(a < record.seq <= b for a, b in dropped)):
                        found.append(record.seq)
                        if limit is not None and len(found) >= limit:
                            return found
            return found

        return await self._in_thread(reading)

    async def release(self) -> bool:
        """Write the acknowledgements not yet in the log, then delete the segments whose
        records are all confirmed (in a worker thread). A failure makes the spool degraded
        (retried by the maintenance task) and returns False; appending is not affected."""
        for transport, seq in list(self._acked.items()):
            if seq > self._acked_on_disk.get(transport, 0) and self._active is not None:
                try:
                    self._put(frame_ack(seq, self._names.get(transport) or transport.encode()))
                except (SpoolFullError, SpoolFaultError):
                    break  # recorded by the next segment's checkpoint, once deletions made room
                self._acked_on_disk[transport] = max(seq, self._acked_on_disk.get(transport, 0))
        if self._rescuing:
            return True
        doomed = self._take_deletable()
        if not doomed:
            return True
        done = anyio.Event()
        self._deletions.add(done)
        try:
            with anyio.CancelScope(shield=True):
                failed = await anyio.to_thread.run_sync(self._delete_blocking, [s.path for s in doomed])
        except BaseException:  # pragma: no cover - _delete_blocking returns its errors
            failed = dict.fromkeys(range(len(doomed)), OSError(errno.EIO, "deletion failed"))
            raise
        finally:
            self._deletions.discard(done)
            done.set()
            error = self._deleted(doomed, failed)
        if error is not None:
            self._fail(error, "deleting confirmed segments")
            return False
        return True

    async def make_room(self) -> None:
        """Delete what is confirmed and wait for the deletions and the spare segment being
        made meanwhile: after this, what is free on disk is free for a new segment."""
        await self.release()
        for done in list(self._deletions):
            await done.wait()
        if self._spare_done is not None:
            await self._spare_done.wait()

    def _take_deletable(self) -> list[Segment]:
        """The closed segments whose records are all done, out of the log: their bytes count
        as being deleted (still on disk) until :meth:`_deleted` applies the unlinks."""
        doomed = [s for s, spans in self._spans() if s is not self._active
                  and all(self._done(t, lo, hi) for t, (lo, hi) in spans.items())]
        for segment in doomed:
            self._segments.remove(segment)
            freed = max(segment.size, segment.allocated)
            self._bytes -= freed
            self._deleting_bytes += freed
        return doomed

    def _deleted(self, doomed: list[Segment], failed: dict[int, OSError]) -> OSError | None:
        """Apply a deletion's results: the deleted segments' bytes are free and their
        descriptors closed; the ones that failed are kept (retried later). The last error."""
        error: OSError | None = None
        for index, segment in enumerate(doomed):
            freed = max(segment.size, segment.allocated)
            self._deleting_bytes -= freed
            if index in failed:
                error = failed[index]
                self._segments.append(segment)
                self._bytes += freed
            else:
                self._release_fd(segment)
        if error is not None:
            self._segments.sort(key=lambda s: s.number)
        return error

    @staticmethod
    def _delete_blocking(paths: list[Path]) -> dict[int, OSError]:
        """Unlink ``paths`` (worker thread); returns the errors by index, changing nothing else."""
        failed: dict[int, OSError] = {}
        for index, path in enumerate(paths):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                failed[index] = exc
        return failed

    @property
    def size(self) -> int:
        """Bytes our files may hold on disk now: never more than ``max_bytes`` (the segments,
        a spare ready or being made, segments being deleted)."""
        return self._bytes + self._spare_bytes + self._deleting_bytes

    # -- closing and inspecting -----------------------------------------------------------

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

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"


