"""The SQLite catalog: persistence, WAL, listing, and validated status transitions."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup import (
    GIB,
    SCHEMA_VERSION,
    TRANSITIONS,
    BackupCatalog,
    BackupNotFoundError,
    BackupRecord,
    BackupStatus,
    InvalidStatusTransitionError,
    SQLiteCatalog,
    size_in_gib,
)

pytestmark = pytest.mark.asyncio


def record(backup_id: str, project: str = "p1") -> BackupRecord:
    return BackupRecord(id=backup_id, project_id=project, user_id="u1", availability_zone="nova", host="h",
                        display_name=f"name-{backup_id}", volume_id="v1", volume_path="/dev/null",
                        service="backup.drivers.posix")


async def test_records_persist_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "catalog.sqlite3"
    async with SQLiteCatalog(path) as catalog:
        await catalog.add(record("a"))
        await catalog.transition("a", BackupStatus.AVAILABLE, size_bytes=5, object_count=1, container="c")
    async with SQLiteCatalog(path) as catalog:
        again = await catalog.get("a")
    assert again.status is BackupStatus.AVAILABLE and again.size_bytes == 5 and again.container == "c"
    assert again.display_name == "name-a" and again.created_at.tzinfo is not None
    assert again.updated_at >= again.created_at
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_list_filters_project_and_deleted(tmp_path: Path) -> None:
    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        for backup_id, project in [("a", "p1"), ("b", "p2"), ("c", "p1")]:
            await catalog.add(record(backup_id, project))
        for status in (BackupStatus.AVAILABLE, BackupStatus.DELETING, BackupStatus.DELETED):
            await catalog.transition("c", status)
        assert [r.id for r in await catalog.list()] == ["a", "b"]
        assert [r.id for r in await catalog.list(project_id="p1")] == ["a"]
        assert [r.id for r in await catalog.list(include_deleted=True)] == ["a", "b", "c"]
        with pytest.raises(BackupNotFoundError, match="'zzz' not found"):
            await catalog.get("zzz")


async def test_every_illegal_transition_is_refused_and_every_legal_one_allowed(tmp_path: Path) -> None:
    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        n = 0
        for start in BackupStatus:
            for to in BackupStatus:
                n += 1
                backup_id = f"b{n}"
                await catalog.add(record(backup_id))
                await _force(catalog, backup_id, start)
                if to in TRANSITIONS[start]:
                    assert (await catalog.transition(backup_id, to)).status is to
                else:
                    with pytest.raises(InvalidStatusTransitionError, match=f"is {start.value}: cannot become {to.value}"):
                        await catalog.transition(backup_id, to)
                    assert (await catalog.get(backup_id)).status is start


async def _force(catalog: BackupCatalog, backup_id: str, status: BackupStatus) -> None:
    """Walk the legal path from creating to ``status``."""
    paths = {
        BackupStatus.CREATING: [],
        BackupStatus.AVAILABLE: [BackupStatus.AVAILABLE],
        BackupStatus.ERROR: [BackupStatus.ERROR],
        BackupStatus.RESTORING: [BackupStatus.AVAILABLE, BackupStatus.RESTORING],
        BackupStatus.ERROR_RESTORING: [BackupStatus.AVAILABLE, BackupStatus.RESTORING, BackupStatus.ERROR_RESTORING],
        BackupStatus.DELETING: [BackupStatus.AVAILABLE, BackupStatus.DELETING],
        BackupStatus.DELETED: [BackupStatus.AVAILABLE, BackupStatus.DELETING, BackupStatus.DELETED],
        BackupStatus.ERROR_DELETING: [BackupStatus.AVAILABLE, BackupStatus.DELETING, BackupStatus.ERROR_DELETING],
    }
    for step in paths[status]:
        await catalog.transition(backup_id, step)


async def test_unknown_fields_and_closed_catalog_are_clear_errors(tmp_path: Path) -> None:
    catalog = SQLiteCatalog(tmp_path / "c.db")
    from backup import BackupError

    with pytest.raises(BackupError, match="is not open"):
        await catalog.get("a")
    async with catalog:
        await catalog.add(record("a"))
        with pytest.raises(BackupError, match="cannot be updated"):
            await catalog.update("a", status="available")


async def test_unopenable_catalog_is_a_clear_error(tmp_path: Path) -> None:
    from backup import BackupError

    (tmp_path / "file").write_text("x")
    with pytest.raises(BackupError, match="cannot open backup catalog"):
        async with SQLiteCatalog(tmp_path / "file" / "catalog.db"):
            pass


@pytest.mark.parametrize(("size_bytes", "gib"), [(0, 0), (1, 1), (GIB, 1), (GIB + 1, 2), (10 * GIB, 10)])
async def test_size_is_ceil_gib_like_cinder(size_bytes: int, gib: int) -> None:
    assert size_in_gib(size_bytes) == gib


# The schema as every catalog before schema versioning was written (user_version 0).
_V1_SCHEMA = """
CREATE TABLE backups (
    id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT NOT NULL, availability_zone TEXT NOT NULL,
    host TEXT NOT NULL, display_name TEXT, volume_id TEXT NOT NULL, volume_path TEXT NOT NULL,
    service TEXT NOT NULL, status TEXT NOT NULL, size_bytes INTEGER NOT NULL, object_count INTEGER NOT NULL,
    service_metadata TEXT, container TEXT, fail_reason TEXT, parent_id TEXT, snapshot_id TEXT,
    num_dependent_backups INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX backups_project ON backups (project_id, created_at);
"""


def _v1_row(backup_id: str, status: str, updated: str = "2026-11-01T10:00:00+00:00") -> tuple[object, ...]:
    return (backup_id, "p1", "u1", "nova", "h", None, "v1", "/dev/null", "backup.drivers.posix", status, 10, 1,
            "prefix", f"backup_{backup_id}", None, None, None, 0, "2026-11-01T09:00:00+00:00", updated)


async def test_an_old_catalog_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(_V1_SCHEMA)
        conn.execute(f"INSERT INTO backups VALUES ({', '.join('?' * 20)})", _v1_row("kept", "available"))
        conn.execute(f"INSERT INTO backups VALUES ({', '.join('?' * 20)})",
                     _v1_row("gone", "deleted", "2026-11-02T08:00:00+00:00"))
    for _ in range(2):  # a second open finds the schema current and changes nothing
        async with SQLiteCatalog(path) as catalog:
            kept, gone = await catalog.get("kept"), await catalog.get("gone")
            assert kept.status is BackupStatus.AVAILABLE and kept.store_kind is None and kept.deleted_at is None
            assert gone.deleted_at is not None and gone.deleted_at.isoformat() == "2026-11-02T08:00:00+00:00"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in conn.execute("PRAGMA table_info(backups)")}
    assert {"store_kind", "store_location", "deleted_at", "worker_pid", "worker_token", "restore_target"} <= columns
    async with SQLiteCatalog(path) as catalog:  # and the migrated catalog takes new records whole
        await catalog.add(replace(record("new"), store_kind="posix", store_location="/srv/objects", worker_pid=7))
        again = await catalog.get("new")
    assert (again.store_kind, again.store_location, again.worker_pid) == ("posix", "/srv/objects", 7)


async def test_a_newer_catalog_is_refused_not_damaged(tmp_path: Path) -> None:
    from backup import BackupError

    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(BackupError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade notifykit"):
        async with SQLiteCatalog(path):
            pass


async def test_a_record_with_an_invalid_status_does_not_break_listing(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteCatalog(path) as catalog:
        await catalog.add(record("good"))
        await catalog.add(record("bad"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE backups SET status = 'exploded', created_at = 'yesterday' WHERE id = 'bad'")
    async with SQLiteCatalog(path) as catalog:
        listed = {r.id: r for r in await catalog.list()}
        assert listed["good"].status is BackupStatus.CREATING
        bad = listed["bad"]
        assert bad.status is BackupStatus.ERROR
        assert bad.fail_reason is not None and "invalid status 'exploded'" in bad.fail_reason
        assert "invalid created_at 'yesterday'" in bad.fail_reason
        # It can be cleaned up like any failed backup.
        await catalog.transition("bad", BackupStatus.DELETING)
        assert (await catalog.transition("bad", BackupStatus.DELETED)).deleted_at is not None


async def test_text_that_is_not_utf8_is_kept_byte_for_byte(tmp_path: Path) -> None:
    name = os.fsdecode(b"vol\xff\xfe")
    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        await catalog.add(replace(record("a"), display_name=name, volume_path="/srv/" + name))
    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        again = await catalog.get("a")
    assert os.fsencode(again.volume_path) == b"/srv/vol\xff\xfe" and again.display_name == name


async def test_dependents_counted_and_delete_refused_until_they_are_gone(tmp_path: Path) -> None:
    from backup import DependentBackupsError

    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        await catalog.add(record("full"))
        with pytest.raises(InvalidStatusTransitionError, match="needs an available parent"):
            await catalog.add(replace(record("early"), parent_id="full"))
        await catalog.transition("full", BackupStatus.AVAILABLE)
        await catalog.add(replace(record("inc1"), parent_id="full"))
        await catalog.add(replace(record("inc2"), parent_id="full"))
        assert (await catalog.get("full")).num_dependent_backups == 2
        assert [r.id for r in await catalog.dependents("full")] == ["inc1", "inc2"]
        with pytest.raises(DependentBackupsError, match="delete them first \\(inc1, inc2\\)"):
            await catalog.transition("full", BackupStatus.DELETING)
        assert (await catalog.get("full")).status is BackupStatus.AVAILABLE
        for child in ("inc1", "inc2"):
            await catalog.transition(child, BackupStatus.ERROR)
            await catalog.transition(child, BackupStatus.DELETING)
            await catalog.transition(child, BackupStatus.DELETED)
        assert (await catalog.get("full")).num_dependent_backups == 0
        await catalog.transition("full", BackupStatus.DELETING)


async def test_existed_between_is_the_audit_window(tmp_path: Path) -> None:
    t = [datetime(2026, 11, 1, h, tzinfo=UTC) for h in range(6)]
    async with SQLiteCatalog(tmp_path / "c.db") as catalog:
        # (id, created_at, deleted_at)
        for backup_id, created, deleted in [("before-gone", t[0], t[1]), ("gone-during", t[1], t[3]),
                                            ("alive", t[1], None), ("made-during", t[2], None),
                                            ("after", t[4], None), ("gone-at-start", t[0], t[2])]:
            await catalog.add(replace(record(backup_id), created_at=created))
            if deleted is not None:
                await catalog.transition(backup_id, BackupStatus.ERROR)
                await catalog.transition(backup_id, BackupStatus.DELETING)
                await catalog.transition(backup_id, BackupStatus.DELETED)
                await _set_deleted_at(tmp_path / "c.db", backup_id, deleted)
        found = [r.id for r in await catalog.existed_between(t[2], t[4])]
    assert sorted(found) == ["alive", "gone-during", "made-during"]


async def _set_deleted_at(path: Path, backup_id: str, when: datetime) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE backups SET deleted_at = ? WHERE id = ?", (when.isoformat(), backup_id))
