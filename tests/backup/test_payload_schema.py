"""The payloads the backup service really emits match docs/schemas/backup-payload.schema.json,
and the notification catalogue in docs/backup.md (event type → priority, payload status)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from notifykit import Notification
from notifykit.backup import BackupNotFoundError, InvalidStatusTransitionError, ObjectStoreError, ProgressPolicy, RestoreTargetError
from notifykit.backup._posix import PosixObjectStore

from .helpers import CHUNK, CTX, FullStore, backup_env

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "schemas" / "backup-payload.schema.json").read_text(encoding="utf-8"))
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EVERY_2 = ProgressPolicy(backup_object_number_per_notification=2, backup_enable_progress_timer=False)


def catalogue() -> dict[str, tuple[str, str]]:
    """docs/backup.md's catalogue table: event_type -> (priority, payload status)."""
    section = (DOCS / "backup.md").read_text(encoding="utf-8").split("## Notification catalogue", 1)[1]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.split("\n### ", 1)[0].splitlines():
        match = re.match(r"\| `(backup\.[a-z.]+)` \| (\w+) \|.*\| `(\w+)` \|$", line.strip())
        if match:
            rows[match.group(1)] = (match.group(2).lower(), match.group(3))
    return rows


class UndeletableStore(PosixObjectStore):
    """A posix store whose object deletes fail, as a store that went read-only would."""

    async def delete_object(self, container: str, name: str) -> None:
        raise ObjectStoreError(f"cannot delete {container}/{name}: read-only file system")


def assert_valid(notifications: list[Notification]) -> None:
    for n in notifications:
        errors = sorted(VALIDATOR.iter_errors(json.loads(n.payload_json)), key=str)
        assert not errors, f"{n.event_type}: {[e.message for e in errors]}"


def assert_catalogued(notifications: list[Notification]) -> None:
    rows = catalogue()
    for n in notifications:
        assert n.event_type in rows, f"{n.event_type} is not in the catalogue of docs/backup.md"
        priority, status = rows[n.event_type]
        assert (n.priority.value, n.payload["status"]) == (priority, status), n.event_type


@pytest.mark.asyncio
async def test_every_lifecycle_and_progress_payload_matches_the_schema_and_catalogue(tmp_path: Path) -> None:
    async with backup_env(tmp_path, policy=EVERY_2, compression="zstd") as env:
        record = await env.service.create_backup(env.volume(7 * CHUNK + 100), name="nightly", ctx=CTX)
        await env.service.restore_backup(record.id, tmp_path / "restored.img", ctx=CTX)
        await env.service.delete_backup(record.id, ctx=CTX)
    messages = env.memory.messages
    kinds = {n.event_type for n in messages}
    assert kinds == {"backup.create.start", "backup.createprogress", "backup.create.end", "backup.restore.start",
                     "backup.restoreprogress", "backup.restore.end", "backup.delete.start", "backup.delete.end"}
    assert_valid(messages)
    assert_catalogued(messages)
    progress = [n.payload for n in messages if n.event_type.endswith("progress")]
    assert progress and all({"bytes_done", "objects_done", "percentage"} <= set(p) for p in progress)


@pytest.mark.asyncio
async def test_error_payloads_match_the_schema_and_catalogue(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with backup_env(tmp_path / "a", store=FullStore(tmp_path / "a-store", room=2)) as env:
        with pytest.raises(ObjectStoreError):
            await env.service.create_backup(env.volume(6 * CHUNK), ctx=CTX)
    create_error = env.memory.messages
    async with backup_env(tmp_path / "b", store=UndeletableStore(tmp_path / "b-store", fsync=False)) as env:
        record = await env.service.create_backup(env.volume(3 * CHUNK), ctx=CTX)
        target = tmp_path / "exists.img"
        target.write_bytes(b"keep")
        with pytest.raises(RestoreTargetError):
            await env.service.restore_backup(record.id, target, ctx=CTX)
        with pytest.raises(ObjectStoreError):
            await env.service.delete_backup(record.id, ctx=CTX)
    other_errors = env.memory.messages
    errors = [n for n in create_error + other_errors if n.event_type.endswith(".error")]
    assert [n.event_type for n in errors] == ["backup.create.error", "backup.restore.error", "backup.delete.error"]
    assert all(n.payload["fail_reason"] for n in errors)
    assert_valid(create_error + other_errors)
    assert_catalogued(create_error + other_errors)


@pytest.mark.asyncio
async def test_refused_requests_match_the_schema(tmp_path: Path) -> None:
    """Unknown backup id (most fields null) and a refused transition (the record unchanged)."""
    async with backup_env(tmp_path) as env:
        with pytest.raises(BackupNotFoundError):
            await env.service.delete_backup("no-such-id", ctx=CTX)
        record = await env.service.create_backup(env.volume(CHUNK), ctx=CTX)
        await env.service.delete_backup(record.id, ctx=CTX)
        with pytest.raises(InvalidStatusTransitionError):
            await env.service.delete_backup(record.id, ctx=CTX)
    refused = [env.memory.messages[0], env.memory.messages[-1]]
    assert [n.event_type for n in refused] == ["backup.delete.error", "backup.delete.error"]
    assert refused[0].payload["status"] is None and refused[1].payload["status"] == "deleted"
    assert_valid(env.memory.messages)


def test_the_examples_in_docs_backup_md_match_the_schema() -> None:
    blocks = re.findall(r"```json\n(.*?)```", (DOCS / "backup.md").read_text(encoding="utf-8"), re.S)
    examples = [b for b in blocks if not b.startswith("--8<--")]  # not the included schema itself
    payloads = [json.loads(b)["payload"] if '"event_type"' in b else json.loads(b) for b in examples]
    assert len(payloads) >= 2
    for payload in payloads:
        assert not list(VALIDATOR.iter_errors(payload))


@pytest.mark.parametrize("damage", ["missing field", "extra field", "unknown status", "half progress",
                                    "null status of a known backup"])
def test_the_schema_rejects_drift(damage: str) -> None:
    payload: dict[str, Any] = {
        "tenant_id": "p", "user_id": "u", "availability_zone": "nova", "backup_id": "b", "host": "h",
        "display_name": None, "created_at": "2026-11-25T13:03:02.466415+00:00", "status": "available",
        "volume_id": "v", "size": 1, "service_metadata": None, "service": "backup.drivers.posix",
        "fail_reason": None, "parent_id": None, "num_dependent_backups": 0, "snapshot_id": None,
        "payload_version": "1.0", "size_bytes": 5,
    }
    assert VALIDATOR.is_valid(payload)
    if damage == "missing field":
        del payload["size"]
    elif damage == "extra field":
        payload["volume_size"] = 1
    elif damage == "unknown status":
        payload["status"] = "frozen"
    elif damage == "half progress":
        payload["bytes_done"] = 1
    else:
        payload["status"] = None
    assert not VALIDATOR.is_valid(payload)
