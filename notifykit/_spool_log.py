"""Reading the spool's log back, confirming and dropping records, and deleting the segments
they free: reads and deletions run in worker threads on snapshots, and their results are
applied on the event loop.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path

import anyio
import anyio.to_thread

from ._log import BadRegion, Record, decode_body, frame_ack, frame_drop, scan
from ._spool_segments import Reader, Segment, SpoolRead, pread_all, read_records
from ._spool_state import SpoolFaultError, SpoolFullError
from ._spool_writer import SpoolWriter

__all__ = ["SpoolLog"]


class SpoolLog(SpoolWriter):
    """Reads records back (replay, backlogs), confirms and drops them, deletes freed segments."""

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

    def ack(self, transport: str, seq: int) -> None:
        """Every record of ``transport`` up to ``seq`` is done (sent, dead-lettered, dropped).
        Kept in memory; :meth:`release` writes it and deletes what it frees."""
        if seq > self._acked.get(transport, 0):
            self._acked[transport] = seq
            if transport in self._dropped:
                self._absorb(transport)
            self._backlog(transport).confirm(self._acked[transport])

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
        backlog = self._backlog(transport)
        backlog.drop(after, through)
        self._absorb(transport)
        backlog.confirm(self._acked.get(transport, 0))
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
