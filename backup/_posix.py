"""``posix`` object store: a directory tree (one directory per container), like Cinder's
posix backup driver. Objects are written to a temporary file and renamed into place, so
a crash never leaves a half-written object under its real name. All disk I/O runs in
worker threads. URL: a plain directory path, or ``file:///DIR[?fsync=false]``.

Durability: an object is durable once ``sync_container`` returned, not at ``put_object``.
Puts write and rename without syncing and remember the name; ``sync_container`` (called
once per backup, after the metadata object and before the catalog says ``available``)
fsyncs every object remembered for that container and then the directory. One sync per
backup instead of one per object lets the kernel write back in the background while the
backup runs. A crash before the final sync may leave objects empty or missing, but the
backup is still ``creating`` in the catalog then, so ``recover`` marks it failed and
nothing ever restores from it.

Direct I/O: with ``fsync``, an object handed over in a page-aligned buffer (the chunked
driver's reused buffers, ``accepts_buffers``) is written with ``O_DIRECT``, all but its last
partial page: the bytes go from the buffer to the disk without a copy into the page cache,
during the backup rather than in the final sync, which is left with the last pages and the
metadata. A backup's objects are not read again soon, so the page cache keeps what the
machine was using. A filesystem that refuses ``O_DIRECT`` (``EINVAL``) is written through
the page cache, as an unaligned object (the metadata, a ``bytes`` object) always is.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio.to_thread

from ._buffers import ALIGN, is_aligned
from ._errors import (
    BackupConfigError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreFullError,
    PermanentObjectStoreError,
)
from ._objectstore import validate_name
from ._stores import StoreSettings

__all__ = ["PosixObjectStore"]

_TMP_PREFIX = ".tmp-"
# Threads syncing one container's objects at once (see _sync_container).
_SYNC_THREADS = 8


class PosixObjectStore:
    """Objects as files under ``root/<container>/``; with ``fsync``, ``sync_container`` makes
    every put of that container durable (see the module)."""

    name = "posix"
    # Objects written at once: enough to overlap one fsync with the next write.
    default_uploads = 2
    # put_object may be handed a memoryview of a buffer the driver reuses once it returns:
    # the store writes it and keeps no reference (subclasses that keep data copy it).
    accepts_buffers = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._unsynced: dict[str, set[str]] = {}  # container -> objects put since its last sync
        self._lock = threading.Lock()
        self._use_direct = fsync  # O_DIRECT for aligned buffers, until the filesystem refuses it

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> PosixObjectStore:
        """A plain path, or ``file:///DIR`` (``file://localhost/DIR``) with ``?fsync=false``."""
        if settings.host not in (None, "", "localhost"):
            raise BackupConfigError(f"file store URLs name a local directory (file:///DIR), not host {settings.host!r}")
        fsync = settings.take_bool("fsync", True)
        if not settings.path:
            raise BackupConfigError("file store: the URL names no directory (file:///DIR)")
        return cls(os.path.expanduser(settings.path), fsync=fsync)

    def __repr__(self) -> str:
        return f"PosixObjectStore({str(self.root)!r})"

    @property
    def location(self) -> str:
        """The absolute directory (symlinks resolved), so two spellings of one are one store."""
        return os.path.realpath(self.root)

    async def open(self) -> None:
        """Nothing to connect; the root is created with the first container."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def _container(self, container: str) -> Path:
        return self.root / validate_name("container", container)

    def _object(self, container: str, name: str) -> Path:
        return self._container(container) / validate_name("object", name)

    def _error(self, action: str, what: str, exc: OSError) -> ObjectStoreError:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ENOSPC:
            reason = "no space left on device (object store full)"
        elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            reason = f"{reason} (object store read-only?)"
        cls: type[ObjectStoreError] = PermanentObjectStoreError
        if isinstance(exc, FileNotFoundError):
            cls = ObjectNotFoundError
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            cls = ObjectStoreFullError
        return cls(f"posix object store {str(self.root)!r}: cannot {action} {what}: {reason}")

    # -- blocking helpers (run in threads) -----------------------------------------

    def _create_container(self, container: str) -> None:
        path = self._container(container)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create container", repr(container), exc) from None

    def _delete_container(self, container: str) -> None:
        path = self._container(container)
        try:
            for leftover in path.glob(_TMP_PREFIX + "*"):
                leftover.unlink(missing_ok=True)
            path.rmdir()
        except OSError as exc:
            raise self._error("delete container", repr(container), exc) from None

    def _direct(self, fd: int, io: Callable[[], None]) -> bool:
        """Run ``io`` (whole pages of an aligned buffer, at offset 0) with O_DIRECT set on
        ``fd``; False when the filesystem refuses O_DIRECT: then it is not tried again."""
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
            try:
                io()
            finally:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self._use_direct = False
            return False
        return True

    def _put(self, container: str, name: str, data: bytes | memoryview) -> None:
        final = self._object(container, name)
        tmp = final.with_name(f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
        view = memoryview(data)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                done = 0
                if self._use_direct and len(view) >= ALIGN and is_aligned(view):
                    bulk = len(view) - len(view) % ALIGN  # the last partial page: through the page cache
                    done = bulk if self._direct(fd, lambda: _pwrite_all(fd, view[:bulk], 0)) else 0
                _pwrite_all(fd, view[done:], done)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            if self.fsync:
                with self._lock:
                    self._unsynced.setdefault(container, set()).add(name)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise self._error("write object", f"{container}/{name}", exc) from None

    def _get(self, container: str, name: str) -> bytes:
        try:
            return self._object(container, name).read_bytes()
        except OSError as exc:
            raise self._error("read object", f"{container}/{name}", exc) from None

    def _get_into(self, container: str, name: str, out: memoryview) -> int:
        try:
            fd = os.open(self._object(container, name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                size = os.fstat(fd).st_size
                if size > len(out):
                    return size
                bulk, done = size - size % ALIGN, 0
                if self._use_direct and bulk and is_aligned(out):
                    done = bulk if self._direct(fd, lambda: _pread_all(fd, out[:bulk], 0)) else 0
                _pread_all(fd, out[done:size], done)
                return size
            finally:
                os.close(fd)
        except OSError as exc:
            raise self._error("read object", f"{container}/{name}", exc) from None

    def _delete(self, container: str, name: str) -> None:
        try:
            self._object(container, name).unlink()
        except OSError as exc:
            raise self._error("delete object", f"{container}/{name}", exc) from None

    def _list(self, container: str) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self._container(container))
                          if not e.name.startswith(_TMP_PREFIX) and e.is_file())
        except OSError as exc:
            raise self._error("list container", repr(container), exc) from None

    def _sync_container(self, container: str) -> None:
        """Make every object put since the last sync durable, then the directory entries.

        The objects are synced by several threads at once: each fsync waits for its journal
        commit and the disk's cache flush, and waits that overlap share them."""
        if not self.fsync:
            return
        with self._lock:
            names = sorted(self._unsynced.pop(container, ()))
        try:
            if len(names) > 1:
                with ThreadPoolExecutor(min(_SYNC_THREADS, len(names)), thread_name_prefix="posix-sync") as pool:
                    list(pool.map(lambda name: _fsync_path(self._object(container, name)), names))
            else:
                for name in names:
                    _fsync_path(self._object(container, name))
            for directory in (self._container(container), self.root):  # the entries, the container's own
                _fsync_path(directory)
        except OSError as exc:
            raise self._error("sync container", repr(container), exc) from None

    # -- ObjectStore -------------------------------------------------------------------

    async def create_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._create_container, container)

    async def delete_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._delete_container, container)

    async def put_object(self, container: str, name: str, data: bytes | memoryview) -> None:
        await anyio.to_thread.run_sync(self._put, container, name, data)

    async def get_object(self, container: str, name: str) -> bytes:
        return await anyio.to_thread.run_sync(self._get, container, name)

    async def get_object_into(self, container: str, name: str, out: memoryview) -> int:
        """Read an object into ``out`` (with O_DIRECT when it is page-aligned and the store
        syncs: objects were written so, and are not in the page cache); returns the object's
        size, and reads nothing when that is more than ``len(out)``."""
        return await anyio.to_thread.run_sync(self._get_into, container, name, out)

    async def delete_object(self, container: str, name: str) -> None:
        await anyio.to_thread.run_sync(self._delete, container, name)

    async def list_objects(self, container: str) -> list[str]:
        return await anyio.to_thread.run_sync(self._list, container)

    async def sync_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._sync_container, container)



def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # deleted since: nothing to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pread_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.preadv(fd, [view], offset)
        if not done:
            raise OSError(errno.EIO, "the object ended early (it changed while read)")
        view, offset = view[done:], offset + done


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
