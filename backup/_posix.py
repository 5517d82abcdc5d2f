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
"""

from __future__ import annotations

import errno
import os
import threading
import uuid
from pathlib import Path

import anyio.to_thread

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


class PosixObjectStore:
    """Objects as files under ``root/<container>/``; with ``fsync``, ``sync_container`` makes
    every put of that container durable (see the module)."""

    name = "posix"
    # Objects written at once: enough to overlap one fsync with the next write.
    default_uploads = 2

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self._unsynced: dict[str, set[str]] = {}  # container -> objects put since its last sync
        self._lock = threading.Lock()

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

    def _put(self, container: str, name: str, data: bytes) -> None:
        final = self._object(container, name)
        tmp = final.with_name(f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
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
        """Make every object put since the last sync durable, then the directory entries."""
        if not self.fsync:
            return
        with self._lock:
            names = sorted(self._unsynced.pop(container, ()))
        try:
            for name in names:
                try:
                    fd = os.open(self._object(container, name), os.O_RDONLY)
                except FileNotFoundError:
                    continue  # deleted since: nothing to make durable
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            for directory in (self._container(container), self.root):  # the entries, the container's own
                fd = os.open(directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise self._error("sync container", repr(container), exc) from None

    # -- ObjectStore -------------------------------------------------------------------

    async def create_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._create_container, container)

    async def delete_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._delete_container, container)

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, container, name, data)

    async def get_object(self, container: str, name: str) -> bytes:
        return await anyio.to_thread.run_sync(self._get, container, name)

    async def delete_object(self, container: str, name: str) -> None:
        await anyio.to_thread.run_sync(self._delete, container, name)

    async def list_objects(self, container: str) -> list[str]:
        return await anyio.to_thread.run_sync(self._list, container)

    async def sync_container(self, container: str) -> None:
        await anyio.to_thread.run_sync(self._sync_container, container)

