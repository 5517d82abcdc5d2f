"""A backup's record and its status: what a catalog stores about one backup.

Most of backup/ (drivers, payloads, the service, the CLI) reads records and never a
catalog, so the record lives apart from it. backup/_catalog.py adds where a status may go
next, the catalog interface and the rules its backends share, and re-exports these names
(``from ._catalog import BackupRecord`` still works).
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "GIB",
    "UPDATABLE_FIELDS",
    "WORKER_FIELDS",
    "BackupRecord",
    "BackupStatus",
    "new_backup_id",
    "size_in_gib",
]

GIB = 1024**3


def size_in_gib(size_bytes: int) -> int:
    """Whole GiB rounded up, as Cinder reports volume and backup sizes."""
    return math.ceil(size_bytes / GIB)


class BackupStatus(enum.StrEnum):
    CREATING = "creating"
    AVAILABLE = "available"
    DELETING = "deleting"
    DELETED = "deleted"
    RESTORING = "restoring"
    ERROR = "error"
    ERROR_DELETING = "error_deleting"
    ERROR_RESTORING = "error_restoring"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One backup as the catalog stores it; immutable, replaced on every update.

    Text fields may hold lone surrogates (the ``surrogateescape`` form of a non-UTF-8 path
    or name); a backend must store and return them unchanged.
    """

    id: str
    project_id: str
    user_id: str
    availability_zone: str
    host: str
    display_name: str | None
    volume_id: str
    volume_path: str
    service: str
    status: BackupStatus = BackupStatus.CREATING
    size_bytes: int = 0
    object_count: int = 0
    service_metadata: str | None = None
    container: str | None = None
    fail_reason: str | None = None
    parent_id: str | None = None
    snapshot_id: str | None = None
    num_dependent_backups: int = 0
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    # Where the objects are: the store's kind (posix, swift, …) and its location, redacted.
    store_kind: str | None = None
    store_location: str | None = None
    deleted_at: datetime | None = None
    # The process running the current operation (see _liveness); None when none runs.
    worker_pid: int | None = None
    worker_token: str | None = None
    # A restore's target, so recover can remove what a killed restore left next to it.
    restore_target: str | None = None
    # The host running the current operation (any host may restore or delete any backup).
    worker_host: str | None = None
    # The last forced status change (reset_status): the status it replaced, who asked (the
    # user, on which host) and when. None until a reset.
    reset_from: str | None = None
    reset_user: str | None = None
    reset_host: str | None = None
    reset_at: datetime | None = None

    @property
    def size(self) -> int:
        """Size in GiB, rounded up (Cinder's ``size``)."""
        return size_in_gib(self.size_bytes)

    @property
    def is_incremental(self) -> bool:
        return self.parent_id is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view (for ``show`` and ``list --json``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, BackupStatus):
                value = value.value
            out[f.name] = value
        out["size"] = self.size
        out["is_incremental"] = self.is_incremental
        return out


# Fields ``update``/``transition`` may change; the rest are fixed at ``add`` or kept by the
# backend itself (status, num_dependent_backups, deleted_at, updated_at).
UPDATABLE_FIELDS = frozenset({"size_bytes", "object_count", "service_metadata", "container", "fail_reason",
                              "volume_id", "worker_pid", "worker_token", "restore_target", "worker_host"})
# The fields that name the process running a backup's current operation.
WORKER_FIELDS = ("worker_host", "worker_pid", "worker_token")


def new_backup_id() -> str:
    return str(uuid.uuid4())
