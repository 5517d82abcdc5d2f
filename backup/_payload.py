"""Notification payloads in the shape of Cinder's ``_usage_from_backup``.

Field names match Cinder so existing consumers (Ceilometer's ``backup.size`` meter reads
``size``, ``user_id``, ``tenant_id``, ``backup_id``, ``display_name``) work unchanged;
``payload_version`` and the exact ``size_bytes`` are additions.
"""

from __future__ import annotations

from typing import Any

from ._catalog import BackupRecord
from ._text import utf8_text

__all__ = ["PAYLOAD_VERSION", "PAYLOAD_FIELDS", "progress_payload", "usage_from_backup", "utf8_payload"]

PAYLOAD_VERSION = "1.0"

# Field → type, the contract tests and docs/backup.md check against.
PAYLOAD_FIELDS: dict[str, tuple[type, ...]] = {
    "tenant_id": (str,),
    "user_id": (str,),
    "availability_zone": (str,),
    "backup_id": (str,),
    "host": (str,),
    "display_name": (str, type(None)),
    "created_at": (str,),
    "status": (str,),
    "volume_id": (str,),
    "size": (int,),
    "service_metadata": (str, type(None)),
    "service": (str,),
    "fail_reason": (str, type(None)),
    "parent_id": (str, type(None)),
    "num_dependent_backups": (int,),
    "snapshot_id": (str, type(None)),
    "payload_version": (str,),
    "size_bytes": (int,),
}


def usage_from_backup(record: BackupRecord, **extra: Any) -> dict[str, Any]:
    """The lifecycle payload for ``record`` (plus ``extra`` keys, e.g. progress)."""
    payload: dict[str, Any] = {
        "tenant_id": record.project_id,
        "user_id": record.user_id,
        "availability_zone": record.availability_zone,
        "backup_id": record.id,
        "host": record.host,
        "display_name": record.display_name,
        "created_at": record.created_at.isoformat(),
        "status": record.status.value,
        "volume_id": record.volume_id,
        "size": record.size,
        "service_metadata": record.service_metadata,
        "service": record.service,
        "fail_reason": record.fail_reason,
        "parent_id": record.parent_id,
        "num_dependent_backups": record.num_dependent_backups,
        "snapshot_id": record.snapshot_id,
        "payload_version": PAYLOAD_VERSION,
        "size_bytes": record.size_bytes,
    }
    payload.update(extra)
    return utf8_payload(payload)


def utf8_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Names and reasons may hold bytes that are not UTF-8 (a path or ``--name`` given as
    bytes); a payload is JSON for other programs, so it carries valid UTF-8 (U+FFFD for them)."""
    return {key: utf8_text(value) if isinstance(value, str) else value for key, value in payload.items()}


def progress_payload(record: BackupRecord, *, bytes_done: int, objects_done: int, percentage: float,
                     backup_percent: int) -> dict[str, Any]:
    """Lifecycle payload plus how far the operation is; constant size, whatever the progress.
    ``backup_percent`` is the field Cinder's chunked driver sends (an int, 100 at the end)."""
    return usage_from_backup(record, bytes_done=bytes_done, objects_done=objects_done, percentage=percentage,
                             backup_percent=backup_percent)
