"""Wiring: a ready BackupService (open catalog, the configured object store) from a BackupConfig."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from notifykit import Clock, SupportsNotify

from ._block_hash import DEFAULT_BLOCK_HASH
from ._catalog import BackupCatalog
from ._chunked import DEFAULT_CHUNK_SIZE, ChunkedBackupDriver
from ._config import BackupConfig
from ._objectstore import ObjectStore
from ._postgres import PostgresCatalog
from ._service import BackupService
from ._sqlite import SQLiteCatalog
from ._stores import store_from_url

__all__ = ["PosixBackupDriver", "build_catalog", "build_driver", "build_store", "open_backup_service"]


def build_catalog(config: BackupConfig) -> BackupCatalog:
    """The catalog ``config`` names: PostgreSQL for a ``postgresql://`` URL, else the SQLite file."""
    if config.catalog_url is not None:
        return PostgresCatalog(config.catalog_url)
    return SQLiteCatalog(config.catalog_path)


def build_store(config: BackupConfig) -> ObjectStore:
    """The object store ``config.store`` names, not opened yet (``open_backup_service`` opens
    and closes it)."""
    return store_from_url(config.store, config.store_options)


def build_driver(config: BackupConfig, store: ObjectStore | None = None) -> ChunkedBackupDriver:
    store = store or build_store(config)
    return ChunkedBackupDriver(store, chunk_size=config.chunk_size, compression=config.compression,
                               compression_level=config.compression_level, workers=config.workers,
                               uploads=config.uploads or store.default_uploads, block_hash=config.block_hash)


class PosixBackupDriver(ChunkedBackupDriver):
    """Cinder's posix backup driver: chunked backups in a directory tree."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 compression: str = "zstd", compression_level: int | None = None, workers: int | None = None,
                 block_hash: str = DEFAULT_BLOCK_HASH) -> None:
        store = store_from_url(os.fspath(root), {"fsync": "true" if fsync else "false"})
        super().__init__(store, chunk_size=chunk_size, compression=compression, compression_level=compression_level,
                         workers=workers, uploads=store.default_uploads, block_hash=block_hash)


@asynccontextmanager
async def open_backup_service(config: BackupConfig, notifier: SupportsNotify, clock: Clock | None = None, *,
                              catalog: BackupCatalog | None = None) -> AsyncIterator[BackupService]:
    """The service with its catalog and object store open for the ``async with``; ``catalog``
    (not opened yet) instead of the one ``config`` names, e.g. a WatchedCatalog around it."""
    async with AsyncExitStack() as stack:
        store = build_store(config)
        await store.open()
        stack.push_async_callback(store.aclose)
        driver = build_driver(config, store)
        opened = await stack.enter_async_context(catalog if catalog is not None else build_catalog(config))
        yield BackupService(opened, driver, notifier, host=config.host,
                            availability_zone=config.availability_zone, project_id=config.project_id,
                            user_id=config.user_id, progress=config.progress_policy(), clock=clock)
