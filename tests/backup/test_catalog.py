"""The SQLite catalog: persistence, WAL, listing, and validated status transitions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from backup import (
    GIB,
    TRANSITIONS,
    BackupCatalog,
    BackupNotFoundError,
    BackupRecord,
    BackupStatus,
    InvalidStatusTransitionError,
    size_in_gib,
)

pytestmark = pytest.mark.asyncio


def record(backup_id: str, project: str = "p1") -> BackupRecord:
    return BackupRecord(id=backup_id, project_id=project, user_id="u1", availability_zone="nova", host="h",
                        display_name=f"name-{backup_id}", volume_id="v1", volume_path="/dev/null",
                        service="backup.drivers.posix")


async def test_records_persist_across_reopen_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "catalog.sqlite3"
    async with BackupCatalog(path) as catalog:
        await catalog.add(record("a"))
        await catalog.transition("a", BackupStatus.AVAILABLE, size_bytes=5, object_count=1, container="c")
    async with BackupCatalog(path) as catalog:
        again = await catalog.get("a")
    assert again.status is BackupStatus.AVAILABLE and again.size_bytes == 5 and again.container == "c"
    assert again.display_name == "name-a" and again.created_at.tzinfo is not None
    assert again.updated_at >= again.created_at
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_list_filters_project_and_deleted(tmp_path: Path) -> None:
    async with BackupCatalog(tmp_path / "c.db") as catalog:
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
    async with BackupCatalog(tmp_path / "c.db") as catalog:
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
    catalog = BackupCatalog(tmp_path / "c.db")
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
        async with BackupCatalog(tmp_path / "file" / "catalog.db"):
            pass


@pytest.mark.parametrize(("size_bytes", "gib"), [(0, 0), (1, 1), (GIB, 1), (GIB + 1, 2), (10 * GIB, 10)])
async def test_size_is_ceil_gib_like_cinder(size_bytes: int, gib: int) -> None:
    assert size_in_gib(size_bytes) == gib
