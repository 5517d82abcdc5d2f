"""The interface between BackupService and a backup driver (Cinder's BackupDriver, async).

A driver moves bytes; the service owns the catalog, the statuses and the notifications.
Drivers report each finished object through ``on_object`` so the service can emit
throttled progress without knowing how the driver splits a volume.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ._catalog import BackupRecord

__all__ = ["BackupDriver", "BackupResult", "ObjectCallback"]

# Called after each object is stored (backup) or written back (restore), with its raw size.
ObjectCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a finished backup looks like in the object store."""

    container: str
    service_metadata: str
    size_bytes: int
    object_count: int
    stored_bytes: int


class BackupDriver(ABC):
    """An asyncio backup driver: never blocks the event loop, raises BackupError subclasses."""

    @property
    @abstractmethod
    def service(self) -> str:
        """The driver's name, recorded as the backup's ``service``."""

    @property
    @abstractmethod
    def store_identity(self) -> tuple[str, str]:
        """(kind, location) of the store this driver writes to, the location redacted (no
        credentials): recorded with every backup, compared before a restore or delete."""

    @property
    def auth_identity(self) -> dict[str, str]:
        """The user and project ids the store authenticated as, when it knows them (Keystone):
        the service puts them in the notifications' context. Empty by default."""
        identity = getattr(getattr(self, "store", None), "identity", None)
        return dict(identity) if isinstance(identity, dict) else {}

    @abstractmethod
    async def volume_size(self, volume_path: str | os.PathLike[str]) -> int:
        """The volume's size in bytes; VolumeError if it cannot be read."""

    @abstractmethod
    async def backup(self, record: BackupRecord, on_object: ObjectCallback,
                     parent: BackupRecord | None = None) -> BackupResult:
        """Copy the volume at ``record.volume_path`` into the store; with ``parent``, only
        what changed since that backup (an incremental backup)."""

    @abstractmethod
    async def restore(self, record: BackupRecord, target: str | os.PathLike[str], on_object: ObjectCallback,
                      *, overwrite: bool = False, parents: Sequence[BackupRecord] = (), create: bool = False) -> int:
        """Write the backup to ``target``, verifying every block; returns the bytes written.
        An incremental backup needs ``parents``: its chain, the full backup first. ``create``
        lets a target that must exist beforehand (an RBD image) be created."""

    @abstractmethod
    async def delete(self, record: BackupRecord) -> None:
        """Remove every object of the backup and its container (a missing container is fine)."""
