"""notifykit backup: a chunked backup service that emits OpenStack Cinder's backup notifications.

``BackupService(catalog, driver, notifier, host=...)`` creates, restores and deletes
backups of files and block devices; ``PosixBackupDriver`` stores them as compressed,
checksummed chunks in a directory tree, ``SwiftObjectStore`` in OpenStack Swift. Notifications go through any
``notifykit.SupportsNotify``.
"""

from ._catalog import GIB, SCHEMA_VERSION, TRANSITIONS, BackupCatalog, BackupRecord, BackupStatus, SQLiteCatalog, size_in_gib
from ._chunked import DEFAULT_CHUNK_SIZE, ChunkedBackupDriver
from ._compression import COMPRESSIONS, Compressor, get_compressor
from ._config import BackupConfig
from ._driver import BackupDriver, BackupResult, ObjectCallback
from ._errors import (
    BackupConfigError,
    BackupError,
    BackupNotFoundError,
    CorruptBackupError,
    DependentBackupsError,
    InvalidStatusTransitionError,
    ObjectNotFoundError,
    ObjectStoreError,
    RestoreTargetError,
    VolumeError,
    WrongStoreError,
)
from ._objectstore import ObjectStore
from ._payload import PAYLOAD_FIELDS, PAYLOAD_VERSION, usage_from_backup
from ._posix import PosixBackupDriver, PosixObjectStore
from ._progress import ProgressPolicy, ProgressTracker, ProgressUpdate
from ._service import BackupService, ProgressObserver
from ._setup import build_driver, build_store, open_backup_service
from ._swift import SwiftObjectStore, SwiftOptions, SwiftRetryPolicy

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_CHUNK_SIZE",
    "GIB",
    "PAYLOAD_FIELDS",
    "PAYLOAD_VERSION",
    "SCHEMA_VERSION",
    "TRANSITIONS",
    "BackupCatalog",
    "BackupConfig",
    "BackupConfigError",
    "BackupDriver",
    "BackupError",
    "BackupNotFoundError",
    "BackupRecord",
    "BackupResult",
    "BackupService",
    "BackupStatus",
    "ChunkedBackupDriver",
    "Compressor",
    "CorruptBackupError",
    "DependentBackupsError",
    "InvalidStatusTransitionError",
    "ObjectCallback",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "PosixBackupDriver",
    "PosixObjectStore",
    "ProgressObserver",
    "ProgressPolicy",
    "ProgressTracker",
    "ProgressUpdate",
    "RestoreTargetError",
    "SQLiteCatalog",
    "SwiftObjectStore",
    "SwiftOptions",
    "SwiftRetryPolicy",
    "VolumeError",
    "WrongStoreError",
    "build_driver",
    "build_store",
    "get_compressor",
    "open_backup_service",
    "size_in_gib",
    "usage_from_backup",
]
