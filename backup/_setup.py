"""Wiring: a ready BackupService (open catalog, the configured object store) from a BackupConfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from notifykit import Clock, SupportsNotify

from ._catalog import SQLiteCatalog
from ._chunked import DEFAULT_UPLOADS, ChunkedBackupDriver
from ._config import BackupConfig
from ._objectstore import ObjectStore
from ._posix import PosixObjectStore
from ._service import BackupService
from ._swift import SwiftObjectStore

__all__ = ["SWIFT_DEFAULT_UPLOADS", "build_driver", "build_store", "open_backup_service"]

# Chunk uploads in flight to Swift by default: each is a network round-trip, so more overlap pays.
SWIFT_DEFAULT_UPLOADS = 4


def build_store(config: BackupConfig) -> ObjectStore:
    """The object store ``config.object_store`` names (a SwiftObjectStore must be ``aclose``d)."""
    if config.object_store == "swift":
        uploads = config.uploads or SWIFT_DEFAULT_UPLOADS
        return SwiftObjectStore(config.swift_options(), max_connections=max(uploads, config.workers or 2) + 4)
    return PosixObjectStore(config.store_path, fsync=config.fsync)


def build_driver(config: BackupConfig, store: ObjectStore | None = None) -> ChunkedBackupDriver:
    store = store or build_store(config)
    default_uploads = SWIFT_DEFAULT_UPLOADS if isinstance(store, SwiftObjectStore) else DEFAULT_UPLOADS
    return ChunkedBackupDriver(store, chunk_size=config.chunk_size, compression=config.compression,
                               compression_level=config.compression_level, workers=config.workers,
                               uploads=config.uploads or default_uploads)


@asynccontextmanager
async def open_backup_service(config: BackupConfig, notifier: SupportsNotify,
                              clock: Clock | None = None) -> AsyncIterator[BackupService]:
    """The service with its catalog (and store connections) open for the ``async with``."""
    async with AsyncExitStack() as stack:
        store = build_store(config)
        if isinstance(store, SwiftObjectStore):
            stack.push_async_callback(store.aclose)
        driver = build_driver(config, store)
        catalog = await stack.enter_async_context(SQLiteCatalog(config.catalog_path))
        yield BackupService(catalog, driver, notifier, host=config.host,
                            availability_zone=config.availability_zone, project_id=config.project_id,
                            user_id=config.user_id, progress=config.progress_policy(), clock=clock)
