"""Test doubles for the backup tests: a manual clock, gated and failing object stores, and
an environment (memory notifier + catalog + chunked driver) torn down before assertions."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from notifykit import Notification, Notifier
from notifykit.backup import BackupService, ProgressPolicy
from notifykit.backup._block_hash import DEFAULT_BLOCK_HASH
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._sqlite import SQLiteCatalog
from notifykit.backup.plugin import BackupCatalog, ObjectStore
from notifykit.testing import MemoryTransport

CHUNK = 4096
PUBLISHER = "backup.testhost"
CTX = {"request_id": "req-test", "project_id": "proj-1", "user_id": "user-1"}


class ManualClock:
    """Time moves only when the test calls advance(); sleep() waits for that."""

    def __init__(self) -> None:
        self.t = 0.0
        self._changed = anyio.Event()
        self.sleepers = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        deadline = self.t + seconds
        self.sleepers += 1
        try:
            while self.t < deadline:
                await self._changed.wait()
        finally:
            self.sleepers -= 1

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self._changed.set()
        self._changed = anyio.Event()


class FullStore(PosixObjectStore):
    """A real posix store whose disk fails after ``room`` objects with ``code`` (ENOSPC: full,
    EROFS: remounted read-only), as the OS would report it."""

    def __init__(self, root: Path, room: int, code: int = errno.ENOSPC) -> None:
        super().__init__(root, fsync=False)
        self.room = room
        self.code = code

    def _put(self, container: str, name: str, data: bytes) -> None:
        if self.room <= 0:
            raise self._error("write object", f"{container}/{name}", OSError(self.code, os.strerror(self.code)))
        self.room -= 1
        super()._put(container, name, data)


class GatedStore(PosixObjectStore):
    """Data objects after the first ``free`` wait for ``gate``: a slow object store."""

    def __init__(self, root: Path, free: int) -> None:
        super().__init__(root, fsync=False)
        self.free = free
        self.gate = anyio.Event()
        self.stored = 0
        self.first_stored = anyio.Event()

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        if not name.endswith("_metadata"):
            if self.free <= 0:
                await self.gate.wait()
            self.free -= 1
        await super().put_object(container, name, data)
        self.stored += 1
        self.first_stored.set()


@dataclass
class Env:
    service: BackupService
    notifier: Notifier
    catalog: BackupCatalog
    store: ObjectStore
    root: Path
    memory: MemoryTransport
    messages: list[Notification] = field(default_factory=list)

    def volume(self, size: int, name: str = "volume.img", seed: int = 7) -> Path:
        return write_volume(self.root / name, size, seed)

    @property
    def event_types(self) -> list[str]:
        return [n.event_type for n in self.memory.messages]


def volume_bytes(size: int, seed: int = 7) -> bytes:
    """Half random (incompressible), half repetitive (compressible)."""
    rng = random.Random(seed)
    half = size // 2
    return rng.randbytes(half) + (b"backup!" * (size // 7 + 1))[: size - half]


def write_volume(path: Path, size: int, seed: int = 7) -> Path:
    path.write_bytes(volume_bytes(size, seed))
    return path


@asynccontextmanager
async def backup_env(root: Path, *, compression: str = "none", policy: ProgressPolicy | None = None,
                     store: ObjectStore | None = None, clock: Any = None, url: str = "memory://",
                     notify_timeout: float = 10.0, chunk_size: int = CHUNK, uploads: int = 2,
                     block_hash: str = DEFAULT_BLOCK_HASH) -> AsyncIterator[Env]:
    """Everything a backup test needs; the notifier is closed (queues drained) on exit, so
    ``env.memory.messages`` is complete once the ``async with`` is over."""
    notifier = Notifier.from_url(url, publisher_id=PUBLISHER, dead_letters=root / "deadletters.jsonl",
                                 close_timeout=2.0)
    memory = notifier.transports["memory"]
    assert isinstance(memory, MemoryTransport)
    store = store or PosixObjectStore(root / "store", fsync=False)
    driver = ChunkedBackupDriver(store, chunk_size=chunk_size, compression=compression, workers=2,
                                 uploads=uploads, block_hash=block_hash)
    async with notifier, SQLiteCatalog(root / "catalog.sqlite3") as catalog:
        service = BackupService(catalog, driver, notifier, host="testhost", availability_zone="az-1",
                                progress=policy or ProgressPolicy(backup_enable_progress_timer=False),
                                clock=clock, notify_timeout=notify_timeout)
        yield Env(service, notifier, catalog, store, root, memory)
