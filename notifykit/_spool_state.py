"""The spool's state, owned by the event loop, and the helpers every part of it uses: the
byte accounting behind the cap (:attr:`SpoolState.size`), the degraded state a disk fault
puts it in (entered and left with one log line each), descriptors shared with worker
threads (closed only when none uses them), and the watermarks and holes that say which
records are done. See :mod:`notifykit._spool` for the whole.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from ._choices import parse_choice
from ._errors import ConfigError, NotifyKitError
from ._log import HEADER
from ._paths import state_file
from ._spool_recovery import write_quarantine
from ._spool_segments import DiskFault, Reader, Segment, Spare, fault_kind
from ._supervisor import TaskHealth, TaskState

__all__ = ["CHECK_INTERVAL", "DEFAULT_SPOOL_MAX_BYTES", "PROBE_INTERVAL", "SEGMENT_BYTES", "SPOOL_TASK", "Backlog",
           "SpoolFaultError", "SpoolFullError", "SpoolState", "SpoolSync", "default_spool_path"]

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


class Backlog:
    """One transport's records in the log not yet confirmed or dropped, for its
    ``spooled_bytes``: their sequence numbers and frame sizes in order (12 bytes of memory
    a record, no object each), and :attr:`pending`, the bytes of those still waiting. The
    loop changes it; another thread (a metrics scrape) reads only ``pending``."""

    __slots__ = ("pending", "seqs", "sizes", "start")

    def __init__(self, seqs: array[int] | None = None, sizes: array[int] | None = None) -> None:
        self.seqs = seqs if seqs is not None else array("Q")
        self.sizes = sizes if sizes is not None else array("I")
        self.start = 0  # records before this index are confirmed (trimmed once they are half the arrays)
        self.pending = sum(self.sizes)

    def confirm(self, through: int) -> None:
        """The records up to sequence number ``through`` are done (the watermark moved)."""
        start = self.start
        end = bisect_right(self.seqs, through, start)
        if end > start:
            self.pending -= sum(self.sizes[start:end])
            self.start = end
            if end > 4096 and 2 * end > len(self.seqs):
                del self.seqs[:end], self.sizes[:end]
                self.start = 0

    def drop(self, after: int, through: int) -> None:
        """The records in ``(after, through]`` were dropped: out of ``pending``, and their sizes
        zeroed so that a watermark passing them later does not take them out again."""
        low = bisect_right(self.seqs, after, self.start)
        high = bisect_right(self.seqs, through, low)
        if high > low:
            self.pending -= sum(self.sizes[low:high])
            self.sizes[low:high] = array("I", bytes(4 * (high - low)))


class SpoolState:
    """What every part of the Spool reads: set in ``__init__``, changed only on the event loop."""

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
        # Per transport: notification_head(), the name, and its Backlog (and the appends of its arrays).
        self._heads: dict[str, tuple[struct.Struct, int, bytes, Callable[[int], None], Callable[[int], None],
                                     Backlog]] = {}
        self._backlogs: dict[str, Backlog] = {}
        self._readers: dict[str, Reader] = {}
        self._quarantine_lock = threading.Lock()
        # fsync group commit
        self._written = 0
        self._synced = 0
        self._syncing: anyio.Event | None = None
        self._retired_fds: list[int] = []  # closed segments' descriptors the next fsync covers
        self._dir_dirty = False

    def pending_counts(self) -> dict[str, int]:
        """Notifications per transport a previous process left (after :meth:`open`)."""
        return dict(self._pending)

    def pending_bytes(self, transport: str) -> int:
        """Bytes of ``transport``'s records in the log not yet confirmed or dropped (the batch
        being sent included); exact at any moment, cheap from any thread."""
        backlog = self._backlogs.get(transport)
        return 0 if backlog is None else backlog.pending

    def _backlog(self, transport: str) -> Backlog:
        backlog = self._backlogs.get(transport)
        if backlog is None:
            backlog = self._backlogs[transport] = Backlog()
        return backlog

    @property
    def writable(self) -> bool:
        """A record can be written now (there is an active segment)."""
        return self._active is not None

    @property
    def on_disk(self) -> bool:
        """What the spool holds is on disk: False only while its directory is deleted and
        could not be recreated (the records are then readable through our descriptors only)."""
        return self.fault is None or self.fault.kind != "deleted"

    @property
    def size(self) -> int:
        """Bytes our files may hold on disk now: never more than ``max_bytes`` (the segments,
        a spare ready or being made, segments being deleted)."""
        return self._bytes + self._spare_bytes + self._deleting_bytes

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

    def _quarantine(self, what: dict[str, object], data: bytes) -> bool:
        """Copy bad bytes to quarantine.jsonl (any thread); returns whether it was copied."""
        return write_quarantine(self.path, self._quarantine_lock, what, data)

    def _count_quarantined(self, copied: bool) -> None:
        self.quarantined += 1
        self.quarantine_not_copied += not copied

    def _no_segment(self) -> None:
        """No active segment: say why (degraded, or not open); returns when one may be
        started now (the spool was full at open: SpoolFullError until deletions made room)."""
        if self.fault is not None:
            raise SpoolFaultError(f"spool {str(self.path)!r} is degraded ({self.fault.describe()})")
        if self._lock_fd is None:
            raise NotifyKitError("the spool is not open")

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

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"
