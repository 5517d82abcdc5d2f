"""The object-store interface chunked drivers write to (Cinder's Swift/posix/S3 shape).

A container holds one backup's objects; an object is an immutable blob of bytes. Every
method is async: implementations do their I/O in worker threads or over the network.
Failures raise the ObjectStoreError family — TransientObjectStoreError (still failing after
the store's own retries), PermanentObjectStoreError, ObjectStoreFullError,
ObjectNotFoundError — with a message fit for a backup's ``fail_reason``. Stores are picked
by URL (``backup/_stores.py``); each is used between ``open()`` and ``aclose()``.

Precomputed digests (optional): a store that checks what it stores against a digest (Swift's
``ETag`` is the MD5, S3's too) names the digests it needs in ``object_digests`` (e.g.
``("md5",)``) and takes them as ``put_object(container, name, data, digests=ObjectDigests)``.
The chunked driver then computes them in the worker thread that already hashes and
compresses the chunk, so no byte is hashed twice for one purpose. A store without
``object_digests`` is called as ``put_object(container, name, data)``, as before.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._errors import ObjectStoreError

__all__ = ["DIGESTS", "ObjectDigests", "ObjectStore", "compute_digests", "put_object", "validate_name",
           "wanted_digests"]

# The digests a store may ask for, by hashlib name.
DIGESTS = ("md5", "sha256")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


def validate_name(kind: str, name: str) -> str:
    """Container and object names are single path-safe words (no '/', no '..')."""
    if not _NAME.match(name) or ".." in name:
        raise ObjectStoreError(f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


@dataclass(frozen=True, slots=True)
class ObjectDigests:
    """Lower-case hex digests of an object's bytes (exactly the bytes passed to
    ``put_object``); None for one the store did not ask for."""

    md5: str | None = None
    sha256: str | None = None


def wanted_digests(store: object) -> tuple[str, ...]:
    """The digests ``store`` takes precomputed: its optional ``object_digests``, in DIGESTS'
    order (unknown names are ignored; none means the plain ``put_object``)."""
    wanted = getattr(store, "object_digests", None) or ()
    return tuple(name for name in DIGESTS if name in wanted)


def compute_digests(data: bytes | bytearray | memoryview, wanted: Collection[str]) -> ObjectDigests | None:
    """The ``wanted`` digests of ``data`` (blocking: call it from a worker thread), or None
    when nothing is wanted."""
    if not wanted:
        return None
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest() if "md5" in wanted else None
    sha256 = hashlib.sha256(data).hexdigest() if "sha256" in wanted else None
    return ObjectDigests(md5=md5, sha256=sha256)


async def put_object(store: ObjectStore, container: str, name: str, data: bytes,
                     digests: ObjectDigests | None) -> None:
    """``store.put_object``, handing over ``digests`` when the store asks for precomputed ones."""
    if digests is not None and wanted_digests(store):
        await store.put_object(container, name, data, digests=digests)  # type: ignore[call-arg]
    else:
        await store.put_object(container, name, data)


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
        """Store ``data`` atomically: readers see the whole object or none of it.

        A store with ``object_digests`` also takes ``digests: ObjectDigests | None = None``
        (keyword): the named digests of ``data``, computed by the caller; with None it
        computes them itself.
        """
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
