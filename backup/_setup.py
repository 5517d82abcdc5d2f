"""Wiring: a ready BackupService (open catalog, posix driver) from a BackupConfig."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from notifykit import Clock, SupportsNotify

from ._catalog import BackupCatalog
from ._config import BackupConfig
from ._posix import PosixBackupDriver
from ._service import BackupService

__all__ = ["build_driver", "open_backup_service"]


def build_driver(config: BackupConfig) -> PosixBackupDriver:
    return PosixBackupDriver(config.store_path, fsync=config.fsync, chunk_size=config.chunk_size,
                             compression=config.compression, compression_level=config.compression_level,
                             workers=config.workers)


@asynccontextmanager
async def open_backup_service(config: BackupConfig, notifier: SupportsNotify,
                              clock: Clock | None = None) -> AsyncIterator[BackupService]:
    """The service with its catalog open for the duration of the ``async with``."""
    driver = build_driver(config)
    async with BackupCatalog(config.catalog_path) as catalog:
        yield BackupService(catalog, driver, notifier, host=config.host,
                            availability_zone=config.availability_zone, project_id=config.project_id,
                            user_id=config.user_id, progress=config.progress_policy(), clock=clock)
