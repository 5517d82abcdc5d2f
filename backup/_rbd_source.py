"""An RBD image as a backup source: every backup reads its own snapshot, and an increment
reads only what ``diff_iterate`` reports changed since its parent's snapshot.

Cinder's Ceph driver backs volumes up the same way (``rbd export-diff --from-snap``). Each
backup takes the snapshot ``notifykit-<backup id>`` and reads from it, so the backup is one
point in time whatever writes the image meanwhile. ``diff_iterate`` over that snapshot gives
the extents that may differ from the parent backup's snapshot (from nothing, for a full
backup: the allocated extents); every 32 KiB block an extent touches is read and hashed,
every block a hole extent (``exists=False``) covers is a zero block, and every other block is
the parent's: its block list entry is copied, nothing read (``_blockplan``). The block list
of an increment is therefore complete, and restore and verify treat it like any other.

Where the parent's snapshot cannot be the base — gone (``rbd snap rm``), of another image
with the same name, the image resized, or the parent not an RBD backup — the increment
reads every allocated extent instead (one warning saying why) and still stores only the
blocks that differ from the parent's list. A backup that fails removes its snapshot; one
that completes keeps it until the backup is deleted (``_chunked``'s delete).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream

from ._blockplan import PARENT, READ, ZERO
from ._catalog import BackupRecord
from ._driver import BackupResult
from ._errors import VolumeError
from ._rbd import Connection, RbdLocation, binding, connect, failure, open_image, snapshot_name

__all__ = ["RbdSource", "rbd_backup"]

log = logging.getLogger("backup")


class RbdSource:
    """One backup's read of an image at its snapshot: the plan of every block, and reads."""

    def __init__(self, loc: RbdLocation, conn: Connection, image: Any, info: dict[str, Any], size: int) -> None:
        self.loc = loc
        self.size = size
        self.bytes_read = 0
        self._conn = conn
        self._image = image
        self._info = info
        self._block_size = 1

    def describe(self) -> dict[str, Any]:
        """What the metadata records of the source (the next increment checks its snapshot)."""
        return {**self._info, "bytes_read": self.bytes_read}

    def _read(self, offset: int, length: int) -> bytes:
        _, rbd = binding()
        try:
            data = self._image.read(offset, length)
        except rbd.Error as exc:
            raise failure(exc, self.loc, "volume", f"read error at byte {offset}") from None
        if len(data) != length:
            raise VolumeError(f"volume {self.loc.display}: read {len(data)} of {length} bytes at byte {offset}")
        self.bytes_read += length
        return bytes(data)

    def read_chunk(self, offset: int, length: int, plan: bytes) -> bytes | bytearray:
        """The chunk's READ blocks (worker thread); the other blocks stay zeros, unread."""
        bs = self._block_size
        if plan.count(READ) == len(plan):
            return self._read(offset, length)
        buf = bytearray(length)
        i = plan.find(READ)
        while i >= 0:
            j = plan.find(ZERO, i), plan.find(PARENT, i)
            end = min([k for k in j if k >= 0], default=len(plan))
            start, stop = i * bs, min(end * bs, length)
            buf[start:stop] = self._read(offset + start, stop - start)
            i = plan.find(READ, end)
        return buf

    def reader(self, chunk_size: int, block_size: int,
               raw: Callable[..., Any]) -> Callable[[MemoryObjectSendStream[Any]], Awaitable[None]]:
        """The pipeline's read step: every chunk in order, with its plan; only chunks with
        blocks to read cost a worker thread and a librbd call."""
        bs = self._block_size = block_size

        async def read(out: MemoryObjectSendStream[Any]) -> None:
            async with out:
                plan = await anyio.to_thread.run_sync(
                    _plan, self._image, self.loc, self.size, bs, self._info["diff_from"])
                for index in range(math.ceil(self.size / chunk_size)):
                    offset = index * chunk_size
                    length = min(chunk_size, self.size - offset)
                    blocks = bytes(plan[offset // bs:offset // bs + math.ceil(length / bs)])
                    data = None
                    if READ in blocks:
                        data = await anyio.to_thread.run_sync(self.read_chunk, offset, length, blocks)
                    await out.send(raw(index, offset, length, data, blocks))

        return read

    def close(self, *, keep: bool) -> None:
        """Close the image; unless ``keep``, remove the snapshot (the backup failed)."""
        try:
            self._image.close()
            if not keep:
                _remove(self._conn, self.loc, str(self._info["snapshot"]))
        finally:
            self._conn.close()


def _remove(conn: Connection, loc: RbdLocation, snapshot: str) -> None:
    _, rbd = binding()
    try:
        image = rbd.Image(conn.ioctx, loc.image)
        try:
            image.remove_snap(snapshot)
        finally:
            image.close()
    except rbd.ImageNotFound:
        pass
    except rbd.Error as exc:
        log.warning("volume %s: snapshot %s of a failed backup was not removed: %s", loc.display, snapshot, exc)


def _plan(image: Any, loc: RbdLocation, size: int, block_size: int, base: str | None) -> bytearray:
    """One byte per block: READ where an extent of the diff touches it, ZERO where a hole
    extent covers it, else the parent's (an increment) or ZERO (unallocated, a full read)."""
    _, rbd = binding()
    nblocks = math.ceil(size / block_size)
    plan = bytearray([PARENT if base is not None else ZERO]) * nblocks
    extents: list[tuple[int, int, bool]] = []
    try:
        image.diff_iterate(0, size, base, lambda o, n, e: extents.append((int(o), int(n), bool(e))))
    except rbd.Error as exc:
        raise failure(exc, loc, "volume", "cannot list the changed extents (diff_iterate)") from None
    for offset, length, exists in sorted(extents, key=lambda e: e[2]):  # holes first: data overrides them
        first, last = offset // block_size, min(nblocks, math.ceil((offset + length) / block_size))
        if exists:
            plan[first:last] = bytes(last - first)  # READ
            continue
        whole_from = math.ceil(offset / block_size)  # blocks the hole covers whole are zero blocks;
        whole_to = nblocks if offset + length >= size else (offset + length) // block_size
        for k in range(first, last):  # one it covers in part is read (the rest may have changed)
            plan[k] = ZERO if whole_from <= k < whole_to else READ
    return plan


def _base(image: Any, loc: RbdLocation, parent: BackupRecord | None, meta: dict[str, Any] | None,
          image_id: str, size: int) -> str | None:
    """The parent's snapshot to diff from, or None (a full read: logged once, saying why)."""
    if parent is None:
        return None
    source = (meta or {}).get("source") or {}
    why = None
    snaps = {str(s["name"]): int(s["id"]) for s in image.list_snaps()}
    if source.get("kind") != "rbd":
        why = f"its parent {parent.id} was not read from an rbd snapshot"
    elif source.get("image_id") != image_id:
        why = f"the image is not the one its parent {parent.id} read (image id {source.get('image_id')}, now {image_id})"
    elif snaps.get(str(source.get("snapshot"))) != source.get("snapshot_id"):
        why = f"the snapshot {source.get('snapshot')} of its parent {parent.id} is gone"
    elif int((meta or {}).get("volume_size", -1)) != size:
        why = f"the image was resized since its parent {parent.id}"
    if why is None:
        return str(source["snapshot"])
    log.warning("volume %s: %s; this incremental backup reads the whole image (it still stores only the blocks that"
                " changed)", loc.display, why)
    return None


def open_rbd_source(url: str, backup_id: str, parent: BackupRecord | None,
                    parent_meta: dict[str, Any] | None) -> RbdSource:
    """Snapshot the image, open the snapshot, choose what to diff from (blocking)."""
    _, rbd = binding()
    loc = RbdLocation.parse(url)
    snapshot = snapshot_name(backup_id)
    conn = connect(loc, "volume")
    try:
        writable = open_image(conn, loc, "volume")
        try:
            image_id = str(writable.id())
            try:
                writable.create_snap(snapshot)
            except rbd.ImageExists:
                raise VolumeError(f"volume {loc.display}: a snapshot {snapshot!r} already exists (rbd snap ls"
                                  f" {loc.pool}/{loc.image}); remove it (rbd snap rm) and back up again") from None
            except rbd.Error as exc:
                raise failure(exc, loc, "volume", f"cannot create snapshot {snapshot!r}") from None
        finally:
            writable.close()
        try:
            image = open_image(conn, loc, "volume", snapshot=snapshot, read_only=True)
            try:
                size = int(image.size())
                snap_id = {str(s["name"]): int(s["id"]) for s in image.list_snaps()}.get(snapshot)
                base = _base(image, loc, parent, parent_meta, image_id, size)
            except BaseException:
                image.close()
                raise
        except BaseException:
            _remove(conn, loc, snapshot)
            raise
        info = {"kind": "rbd", "pool": loc.pool, "image": loc.image, "image_id": image_id, "snapshot": snapshot,
                "snapshot_id": snap_id, "diff_from": base, "read": "changed extents" if base else "allocated extents"}
        return RbdSource(loc, conn, image, info, size)
    except BaseException:
        conn.close()
        raise


async def rbd_backup(record: BackupRecord, parent: BackupRecord | None, parent_meta: dict[str, Any] | None,
                     run: Callable[[RbdSource], Awaitable[BackupResult]]) -> BackupResult:
    """Snapshot, read and store (``run``); the snapshot is removed if the backup fails.
    ``parent_meta`` is the parent's metadata (its ``source`` names the snapshot to diff from)."""
    source = await anyio.to_thread.run_sync(open_rbd_source, record.volume_path, record.id, parent, parent_meta)
    keep = False
    try:
        result = await run(source)
        keep = True
        log.info("volume %s: backup %s read %d of %d bytes from snapshot %s", source.loc.display, record.id,
                 source.bytes_read, source.size, source.describe()["snapshot"])
        return result
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: source.close(keep=keep))
