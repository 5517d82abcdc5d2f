"""Every error the backup service raises, so callers (and the CLI) can catch by family."""

from __future__ import annotations

import anyio

__all__ = [
    "BackupError",
    "BackupNotFoundError",
    "BackupConfigError",
    "CatalogLockedError",
    "CorruptBackupError",
    "DependentBackupsError",
    "InvalidStatusTransitionError",
    "ObjectNotFoundError",
    "ObjectStoreError",
    "ObjectStoreFullError",
    "PermanentObjectStoreError",
    "RestoreTargetError",
    "TransientObjectStoreError",
    "UnknownStoreError",
    "VolumeError",
    "WrongStoreError",
    "describe_failure",
]


class BackupError(Exception):
    """Base class; its message is what ends up in a record's ``fail_reason``."""


class BackupConfigError(BackupError, ValueError):
    """A configuration value (option, environment variable, TOML key) is invalid."""


class BackupNotFoundError(BackupError, LookupError):
    """No backup with that id in the catalog."""


class CatalogLockedError(BackupError):
    """Another process held the catalog's lock for longer than this call would wait."""


class InvalidStatusTransitionError(BackupError):
    """The requested operation is not allowed in the backup's current status."""


class DependentBackupsError(InvalidStatusTransitionError):
    """The backup has incremental backups that depend on it: they must be deleted first."""


class WrongStoreError(BackupError):
    """The backup lives in another object store than the one configured for this command."""


class VolumeError(BackupError):
    """The volume to back up is missing, unreadable, of the wrong kind, or changed while read."""


class UnknownStoreError(BackupConfigError):
    """A store URL whose scheme no installed object store registered."""

    def __init__(self, scheme: str, installed: list[str]) -> None:
        self.scheme = scheme
        self.installed = installed
        super().__init__(f"unknown object store scheme {scheme!r}: installed stores are "
                         f"{', '.join(installed) or 'none'} (or give a plain directory path)")


class ObjectStoreError(BackupError):
    """The object store refused an operation; every store maps its failures to the subclasses."""


class TransientObjectStoreError(ObjectStoreError):
    """The store failed in a way that may pass (5xx, throttling, timeout, lost connection) and
    kept failing through the store's retries."""


class PermanentObjectStoreError(ObjectStoreError):
    """The store refused in a way retrying cannot fix (bad credentials, access denied, missing
    bucket, read-only, object too large)."""


class ObjectStoreFullError(PermanentObjectStoreError):
    """The store has no room left (ENOSPC, 507, quota exceeded)."""


class ObjectNotFoundError(ObjectStoreError, LookupError):
    """An object or container that should exist does not."""


class CorruptBackupError(BackupError):
    """A stored object does not match its metadata (checksum, size, compression)."""


class RestoreTargetError(BackupError):
    """The restore target cannot be written (exists, wrong kind, read-only)."""


def describe_failure(exc: BaseException) -> str:
    """A one-line ``fail_reason`` for any exception, cancellation included."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (SIGINT)"
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        return "cancelled before completion"
    if isinstance(exc, BackupError):
        return str(exc)
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or type(exc).__name__}{where}"
    return f"{type(exc).__name__}: {exc}"
