"""The backup service's notifications as an AsyncAPI 3.0 document (``notifykit-backup asyncapi``).

The catalogue here is docs/backup.md's table, event by event; the payload schema is the
packaged ``backup-payload.schema.json`` (the same file as docs/schemas/, which a test
keeps identical), so an installed wheel describes exactly what it emits.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from notifykit import EventCatalogue, NotifierConfig, Priority, TransportConfig, __version__

from ._config import BackupConfig

__all__ = ["EVENTS", "backup_asyncapi", "backup_catalogue", "payload_schema"]

SCHEMA_FILE = "backup-payload.schema.json"

INFO, ERROR = Priority.INFO, Priority.ERROR
#: docs/backup.md's catalogue: event type, priority, the payload's status (None: any), when.
EVENTS: tuple[tuple[str, Priority, str | None, str], ...] = (
    ("backup.create.start", INFO, "creating", "the record exists (status creating), before any byte is read"),
    ("backup.createprogress", INFO, "creating", "every backup_object_number_per_notification stored objects, every"
     " backup_timer_interval s while objects are slow, and once at 100 % before .end"),
    ("backup.create.end", INFO, "available", "all chunks and the metadata are stored; status available"),
    ("backup.create.error", ERROR, None, "the backup failed or was cancelled (status error), or the request was"
     " refused; fail_reason set"),
    ("backup.restore.start", INFO, "restoring", "status moved to restoring"),
    ("backup.restoreprogress", INFO, "restoring", "as createprogress, per object written back"),
    ("backup.restore.end", INFO, "available", "every chunk verified and written, target in place; status back to"
     " available"),
    ("backup.restore.error", ERROR, None, "restore failed or was cancelled (status error_restoring), or the request"
     " was refused; fail_reason set"),
    ("backup.delete.start", INFO, "deleting", "status moved to deleting"),
    ("backup.delete.end", INFO, "deleted", "objects and container removed; status deleted"),
    ("backup.delete.error", ERROR, None, "delete failed or was cancelled (status error_deleting), or the request was"
     " refused; fail_reason set"),
    ("backup.reset_status.start", INFO, None, "reset-status accepted the request (before its verify); the status"
     " before the reset"),
    ("backup.reset_status.end", INFO, None, "the status was forced to available or error; reset_* fields recorded"),
    ("backup.reset_status.error", ERROR, None, "the verify failed or the request was refused; status unchanged,"
     " fail_reason set"),
    ("backup.exists", INFO, None, "notifykit-backup audit: once per backup that existed during the audit period"),
)
_PROGRESS = {"required": ["bytes_done"]}  # the payload schema's dependentRequired brings the other fields
_AUDIT = {"required": ["audit_period_beginning"]}


def payload_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of every backup payload, as packaged."""
    data = json.loads(resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _event_schema(base: dict[str, Any], name: str, status: str | None) -> dict[str, Any]:
    """The payload schema, narrowed to what this event carries (its status, progress or audit fields)."""
    narrowed: dict[str, Any] = {}
    if status is not None:
        narrowed["properties"] = {"status": {"const": status}}
    if name.endswith("progress"):
        narrowed.update(_PROGRESS)
        narrowed["not"] = _AUDIT
    elif name == "backup.exists":
        narrowed.update(_AUDIT)
        narrowed["not"] = _PROGRESS
    else:
        narrowed["not"] = {"anyOf": [_PROGRESS, _AUDIT]}
    if name.endswith(".error"):
        narrowed.setdefault("properties", {})["fail_reason"] = {"type": "string", "minLength": 1}
    return {"allOf": [base, narrowed]}


def backup_catalogue() -> EventCatalogue:
    """Every event type the backup service emits, with its payload schema."""
    catalogue = EventCatalogue(
        "notifykit backup notifications", __version__,
        description="The notifications of notifykit's backup service: Cinder's backup.* event types and"
                    " _usage_from_backup payload (payload_version 1.0), published as backup.<host>."
                    " Every operation that starts emits .start, then exactly one of .end or .error.")
    base = catalogue.schema("backup.payload", payload_schema())
    for name, priority, status, when in EVENTS:
        catalogue.event(name, _event_schema(base, name, status), priority=priority, summary=when)
    return catalogue


def transports_of(config: BackupConfig) -> tuple[TransportConfig, ...]:
    """The transports the backup service would notify through (``--notifier-config`` or ``--notifier``)."""
    if config.notifier_config is not None:
        return NotifierConfig.from_toml(config.notifier_config).transports
    return (TransportConfig.from_url(config.notifier_url),)


def backup_asyncapi(config: BackupConfig) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the notifications ``config``'s service sends, and where."""
    return backup_catalogue().document(transports_of(config), publisher_id=config.publisher_id)
