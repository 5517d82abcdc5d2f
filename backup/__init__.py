"""notifykit backup: a chunked backup service that emits OpenStack Cinder's backup notifications.

``BackupService(catalog, driver, notifier, host=...)`` creates, restores and deletes
backups of files and block devices as compressed, checksummed chunks in an object store
picked by URL (``store_from_url``: a directory, ``swift://`` OpenStack Swift, ``s3://`` S3 /
Ceph RGW, or any store registered in the ``notifykit.backup.stores`` entry point group).
Notifications go through any ``notifykit.SupportsNotify``.
"""

from ._catalog import GIB, TRANSITIONS, BackupCatalog, BackupRecord, BackupStatus, size_in_gib
from ._chunked import BLOCK_SIZE, DEFAULT_CHUNK_SIZE, ChunkedBackupDriver
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
    ObjectStoreFullError,
    PermanentObjectStoreError,
    RestoreTargetError,
    TransientObjectStoreError,
    UnknownStoreError,
    VolumeError,
    WrongStoreError,
)
from ._objectstore import ObjectStore
from ._payload import PAYLOAD_FIELDS, PAYLOAD_VERSION, usage_from_backup
from ._posix import PosixObjectStore
from ._postgres import PostgresCatalog
from ._progress import ProgressPolicy, ProgressTracker, ProgressUpdate
from ._retry import RetryPolicy
from ._s3 import S3ObjectStore, S3Options
from ._service import BackupService, ProgressObserver
from ._setup import PosixBackupDriver, build_catalog, build_driver, build_store, open_backup_service
from ._sqlite import SCHEMA_VERSION, SQLiteCatalog
from ._stores import StoreFactory, StoreSettings, installed_stores, store_from_url
from ._swift import SwiftObjectStore, SwiftOptions

__all__ = [
    "BLOCK_SIZE",
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
    "ObjectStoreFullError",
    "PermanentObjectStoreError",
    "PosixBackupDriver",
    "PosixObjectStore",
    "PostgresCatalog",
    "ProgressObserver",
    "ProgressPolicy",
    "ProgressTracker",
    "ProgressUpdate",
    "RestoreTargetError",
    "SQLiteCatalog",
    "RetryPolicy",
    "S3ObjectStore",
    "S3Options",
    "StoreFactory",
    "StoreSettings",
    "SwiftObjectStore",
    "SwiftOptions",
    "TransientObjectStoreError",
    "UnknownStoreError",
    "VolumeError",
    "WrongStoreError",
    "build_catalog",
    "build_driver",
    "build_store",
    "get_compressor",
    "installed_stores",
    "open_backup_service",
    "size_in_gib",
    "store_from_url",
    "usage_from_backup",
]
