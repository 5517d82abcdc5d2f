"""``export-record`` / ``import-record``: move a backup's catalog record to another catalog.

Cinder's ``backup-export`` prints ``backup_service`` (the driver) and ``backup_url``: the
base64 of the record's JSON. Here the JSON holds everything another host needs to find and
restore the backup (its id, volume, sizes, container, object prefix, parent, the store's
kind and credential-free location) and the sha256 of its metadata object, so the importing
side knows it reads the very objects that were exported; it holds no secret (store
credentials are given again at import, with ``--store`` or the configuration).

Import checks before it writes anything: the service matches the configured store, the id
is not in this catalog yet, an incremental's parent is (and is available), the metadata
object is the exported one, and ``verify`` passes on the whole chain. Only then is the record
inserted, ``available``, owned by the importing host (as Cinder does), in one transaction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from notifykit import ContextLike, redact_text

from ._catalog import PARENT_STATUSES, BackupRecord, BackupStatus, _now
from ._chunked import ChunkedBackupDriver
from ._errors import (
    BackupConfigError,
    BackupError,
    BackupNotFoundError,
    CorruptBackupError,
    InvalidStatusTransitionError,
    ObjectStoreError,
    WrongStoreError,
)
from ._service import BackupService, ProgressObserver
from ._verify import verify_record

__all__ = ["RECORD_FORMAT", "RECORD_VERSION", "ExportedRecord", "decode_record", "export_record", "import_record"]

RECORD_FORMAT = "notifykit-backup-record"
RECORD_VERSION = 1
# Field -> (types, may be null). What the record carries; nothing else is read from it.
_FIELDS: dict[str, tuple[type, bool]] = {
    "id": (str, False),
    "project_id": (str, False),
    "user_id": (str, False),
    "availability_zone": (str, False),
    "host": (str, False),
    "display_name": (str, True),
    "volume_id": (str, False),
    "volume_path": (str, False),
    "service": (str, False),
    "size_bytes": (int, False),
    "object_count": (int, False),
    "service_metadata": (str, False),
    "container": (str, False),
    "parent_id": (str, True),
    "snapshot_id": (str, True),
    "created_at": (str, False),
    "store_kind": (str, True),
    "store_location": (str, True),
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,254}$")


@dataclass(frozen=True, slots=True)
class ExportedRecord:
    """Cinder's export shape: the driver, and the record as base64 JSON."""

    backup_service: str
    backup_url: str

    def as_dict(self) -> dict[str, str]:
        return {"backup_service": self.backup_service, "backup_url": self.backup_url}


def _driver(service: BackupService) -> ChunkedBackupDriver:
    if not isinstance(service.driver, ChunkedBackupDriver):
        raise BackupError(f"the {service.driver.service} driver cannot export or import backup records")
    return service.driver


async def _metadata_sha256(service: BackupService, record: BackupRecord) -> str:
    """The sha256 of the backup's metadata object (CorruptBackupError if it is missing)."""
    driver = _driver(service)
    name = driver.metadata_name(str(record.service_metadata))
    return hashlib.sha256(await driver._get(record, name, "metadata")).hexdigest()


async def export_record(service: BackupService, backup_id: str) -> ExportedRecord:
    """The record of an ``available`` backup in the configured store, for import elsewhere."""
    record = await service.catalog.get(backup_id)
    if record.status is not BackupStatus.AVAILABLE:
        raise InvalidStatusTransitionError(f"backup {record.id!r} is {record.status.value}: only an available backup"
                                           " can be exported")
    service.check_store(record)
    data: dict[str, Any] = {"format": RECORD_FORMAT, "version": RECORD_VERSION}
    for name in _FIELDS:
        value = getattr(record, name)
        data[name] = value.isoformat() if isinstance(value, datetime) else value
    if data["store_location"] is not None:  # credential-free already; never let one through
        data["store_location"] = redact_text(data["store_location"])
    data["driver_info"] = {"metadata_sha256": await _metadata_sha256(service, record)}
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return ExportedRecord(record.service, base64.b64encode(encoded.encode("ascii")).decode("ascii"))


def decode_record(backup_url: str) -> dict[str, Any]:
    """The record in ``backup_url``, every field checked; BackupConfigError naming the problem."""
    try:
        raw = base64.b64decode(backup_url.strip(), validate=True)
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:
        raise BackupConfigError(f"backup_url is not a record from notifykit-backup export-record (not base64 of"
                                f" JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise BackupConfigError("backup_url is not a record from notifykit-backup export-record (no"
                                f" \"format\": \"{RECORD_FORMAT}\")")
    if data.get("version") != RECORD_VERSION:
        raise BackupConfigError(f"backup_url: record version {data.get('version')!r}; this notifykit reads version"
                                f" {RECORD_VERSION}")
    for name, (kind, nullable) in _FIELDS.items():
        value = data.get(name)
        if value is None and nullable:
            continue
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
            what = "a whole number >= 0" if kind is int else "text"
            raise BackupConfigError(f"backup_url: field {name!r} must be {what}{' or null' if nullable else ''},"
                                    f" got {value!r}")
    for name in ("id", "parent_id"):
        if data[name] is not None and not _ID.match(data[name]):
            raise BackupConfigError(f"backup_url: field {name!r} is not a backup id: {data[name]!r}")
    try:
        created = datetime.fromisoformat(data["created_at"])
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise BackupConfigError(f"backup_url: field 'created_at' must be an ISO 8601 time with an offset, got"
                                f" {data['created_at']!r}")
    info = data.get("driver_info")
    if not isinstance(info, dict) or not re.fullmatch(r"[0-9a-f]{64}", str(info.get("metadata_sha256"))):
        raise BackupConfigError("backup_url: field 'driver_info.metadata_sha256' must be a sha256 in hex")
    return data


async def import_record(service: BackupService, backup_service: str, backup_url: str, *, ctx: ContextLike = None,
                        on_progress: ProgressObserver | None = None) -> BackupRecord:
    """Register an exported backup in this service's catalog, ``available``, after checking
    it whole in the configured store; nothing is written unless every check passes."""
    data = decode_record(backup_url)
    backup_id = data["id"]
    if backup_service != data["service"]:
        raise BackupConfigError(f"backup_service {backup_service!r} is not the record's ({data['service']!r}): give"
                                " the two values export-record printed together")
    driver = _driver(service)
    kind, location = driver.store_identity
    if backup_service != driver.service:
        raise WrongStoreError(f"backup {backup_id!r} was made by {backup_service}; the configured store is the"
                              f" {kind} store {location!r} ({driver.service}): use --store to name a store of its kind")
    await _refuse_a_known_id(service, backup_id)
    if data["parent_id"] is not None:
        await _check_parent(service, backup_id, data["parent_id"])
    context = service._context(ctx)
    now = _now()
    record = BackupRecord(
        id=backup_id, project_id=context.project_id or service.project_id, user_id=context.user_id or service.user_id,
        availability_zone=service.availability_zone, host=service.host, display_name=data["display_name"],
        volume_id=data["volume_id"], volume_path=data["volume_path"], service=driver.service,
        status=BackupStatus.AVAILABLE, size_bytes=data["size_bytes"], object_count=data["object_count"],
        service_metadata=data["service_metadata"], container=data["container"], parent_id=data["parent_id"],
        snapshot_id=data["snapshot_id"], created_at=datetime.fromisoformat(data["created_at"]), updated_at=now,
        store_kind=kind, store_location=location)
    try:
        if await _metadata_sha256(service, record) != data["driver_info"]["metadata_sha256"]:
            raise CorruptBackupError(f"the metadata object of backup {backup_id} in the {kind} store {location!r} is"
                                     " not the one that was exported")
        await verify_record(service, record, on_progress=on_progress)
    except (CorruptBackupError, ObjectStoreError) as exc:
        raise BackupError(f"backup {backup_id} not imported (nothing was recorded): {exc}") from None
    try:
        return await service.catalog.add(record)
    except BackupError:
        await _refuse_a_known_id(service, backup_id)  # imported by someone else meanwhile
        raise


async def _refuse_a_known_id(service: BackupService, backup_id: str) -> None:
    try:
        known = await service.catalog.get(backup_id)
    except BackupNotFoundError:
        return
    raise InvalidStatusTransitionError(
        f"backup {backup_id!r} is already in this catalog ({known.status.value}, host {known.host}): a record is"
        " imported once; nothing was changed")


async def _check_parent(service: BackupService, backup_id: str, parent_id: str) -> None:
    try:
        parent = await service.catalog.get(parent_id)
    except BackupNotFoundError:
        raise BackupError(f"backup {backup_id!r} is incremental and its parent backup {parent_id!r} is not in this"
                          f" catalog: import {parent_id} first (notifykit-backup export-record {parent_id} where it"
                          " is); nothing was recorded") from None
    if parent.status not in PARENT_STATUSES:
        raise InvalidStatusTransitionError(
            f"backup {backup_id!r} is incremental and its parent backup {parent_id!r} is {parent.status.value} in this"
            " catalog: an incremental backup needs an available parent; nothing was recorded")
