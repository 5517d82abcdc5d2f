"""The object-store interface chunked drivers write to (Cinder's Swift/posix/S3 shape).

A container holds one backup's objects; an object is an immutable blob of bytes. Every
method is async: implementations do their I/O in worker threads or over the network.
Failures raise the ObjectStoreError family — TransientObjectStoreError (still failing after
the store's own retries), PermanentObjectStoreError, ObjectStoreFullError,
ObjectNotFoundError — with a message fit for a backup's ``fail_reason``. Stores are picked
by URL (``backup/_stores.py``); each is used between ``open()`` and ``aclose()``.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from ._errors import ObjectStoreError

__all__ = ["ObjectStore", "validate_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


def validate_name(kind: str, name: str) -> str:
    """Container and object names are single path-safe words (no '/', no '..')."""
    if not _NAME.match(name) or ".." in name:
        raise ObjectStoreError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@runtime_checkable
class ObjectStore(Protocol):
    """Where chunked backups keep their objects."""

    @property
    def name(self) -> str:
        """Short store kind, e.g. ``posix``; the driver's ``service`` is ``backup.drivers.<name>``."""
        ...

    @property
    def default_uploads(self) -> int:
        """Chunk uploads in flight when the configuration does not say (``uploads``)."""
        ...

    async def open(self) -> None:
        """Connect (and check or create what must exist); called once before any other call."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...

    @property
    def location(self) -> str:
        """Which store of its kind this is, without credentials (a directory, a URL
        without userinfo): recorded in the catalog with each backup."""
        ...

    async def create_container(self, container: str) -> None:
        """Create the container if it does not exist."""
        ...

    async def delete_container(self, container: str) -> None:
        """Remove an empty container; a missing one raises ObjectNotFoundError."""
        ...

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        """Store ``data`` atomically: readers see the whole object or none of it."""
        ...

    async def get_object(self, container: str, name: str) -> bytes:
        ...

    async def delete_object(self, container: str, name: str) -> None:
        ...

    async def list_objects(self, container: str) -> list[str]:
        """Names of the complete objects in the container, sorted."""
        ...

    async def sync_container(self, container: str) -> None:
        """Make every object put so far durable (called once a backup is complete)."""
        ...
