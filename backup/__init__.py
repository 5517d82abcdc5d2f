"""notifykit backup: a chunked backup service that emits OpenStack Cinder's backup notifications.

What an application needs is here: open a service from a configuration
(``open_backup_service(BackupConfig(...), notifier)``), then create, restore, delete, list
and show backups (``BackupService`` methods), their records and statuses, and the errors to
catch. The object store is picked by URL (a directory, ``swift://``, ``s3://``, or any store
registered in the ``notifykit.backup.stores`` entry-point group). Store and catalog authors
import from ``notifykit.backup.plugin``; everything else lives in private ``_modules``.
"""

from ._catalog import BackupRecord, BackupStatus
from ._config import BackupConfig
from ._errors import (
    BackupConfigError,
    BackupError,
    BackupNotFoundError,
    CorruptBackupError,
    DependentBackupsError,
    InvalidStatusTransitionError,
    ObjectStoreError,
    RestoreTargetError,
    UnknownStoreError,
    VolumeError,
    WrongStoreError,
)
from ._progress import ProgressPolicy
from ._service import BackupService
from ._setup import open_backup_service
from ._stores import installed_stores

__all__ = [
    "BackupConfig",
    "BackupConfigError",
    "BackupError",
    "BackupNotFoundError",
    "BackupRecord",
    "BackupService",
    "BackupStatus",
    "CorruptBackupError",
    "DependentBackupsError",
    "InvalidStatusTransitionError",
    "ObjectStoreError",
    "ProgressPolicy",
    "RestoreTargetError",
    "UnknownStoreError",
    "VolumeError",
    "WrongStoreError",
    "installed_stores",
    "open_backup_service",
]
