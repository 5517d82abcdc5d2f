"""The catalog on both backends (SQLite, PostgreSQL): persistence, listing, validated status
transitions, migrations, and compare-and-set between processes and hosts."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from notifykit.backup import (
    BackupConfig,
    BackupConfigError,
    BackupError,
    BackupNotFoundError,
    BackupRecord,
    BackupStatus,
    InvalidStatusTransitionError,
)
from notifykit.backup._catalog import GIB, TRANSITIONS, size_in_gib
from notifykit.backup._postgres import PG_SCHEMA_VERSION, PostgresCatalog
from notifykit.backup._setup import build_catalog
from notifykit.backup._sqlite import SCHEMA_VERSION, SQLiteCatalog
from notifykit.backup.plugin import BackupCatalog

from .catalogs import CatalogBackend

pytestmark = pytest.mark.asyncio


def record(backup_id: str, project: str = "p1") -> BackupRecord:
    return BackupRecord(id=backup_id, project_id=project, user_id="u1", availability_zone="nova", host="h",
                        display_name=f"name-{backup_id}", volume_id="v1", volume_path="/dev/null",
                        service="backup.drivers.posix")


async def test_records_persist_across_reopen(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
        added = await catalog.add(record("a"))
        await catalog.transition("a", BackupStatus.AVAILABLE, size_bytes=5, object_count=1, container="c")
    async with backend.open() as catalog:
        again = await catalog.get("a")
    assert again.status is BackupStatus.AVAILABLE and again.size_bytes == 5 and again.container == "c"
    assert again.display_name == "name-a" and again.created_at == added.created_at
    assert again.created_at.tzinfo is not None and again.updated_at >= again.created_at


async def test_sqlite_runs_in_wal_mode_in_a_directory_it_makes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "catalog.sqlite3"
    async with SQLiteCatalog(path) as catalog:
        await catalog.add(record("a"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_list_filters_project_and_deleted(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
        for backup_id, project in [("a", "p1"), ("b", "p2"), ("c", "p1")]:
            await catalog.add(record(backup_id, project))
        for status in (BackupStatus.AVAILABLE, BackupStatus.DELETING, BackupStatus.DELETED):
            await catalog.transition("c", status)
        assert [r.id for r in await catalog.list()] == ["a", "b"]
        assert [r.id for r in await catalog.list(project_id="p1")] == ["a"]
        assert [r.id for r in await catalog.list(include_deleted=True)] == ["a", "b", "c"]
        with pytest.raises(BackupNotFoundError, match="'zzz' not found"):
            await catalog.get("zzz")


async def test_every_illegal_transition_is_refused_and_every_legal_one_allowed(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
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


async def test_unknown_fields_and_closed_catalog_are_clear_errors(backend: CatalogBackend) -> None:
    catalog = backend.open()
    with pytest.raises(BackupError, match="is not open"):
        await catalog.get("a")
    async with catalog:
        await catalog.add(record("a"))
        with pytest.raises(BackupError, match="cannot be updated"):
            await catalog.update("a", status="available")


async def test_unopenable_catalog_is_a_clear_error(tmp_path: Path) -> None:
    from notifykit.backup import BackupError

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


async def test_a_newer_catalog_is_refused_not_damaged(backend: CatalogBackend) -> None:
    if backend.kind == "postgresql":
        backend.execute("CREATE TABLE notifykit_schema (version INTEGER NOT NULL)")
        backend.execute("INSERT INTO notifykit_schema VALUES (?)", [PG_SCHEMA_VERSION + 1])
        future = PG_SCHEMA_VERSION + 1
    else:
        backend.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        future = SCHEMA_VERSION + 1
    with pytest.raises(BackupError, match=f"schema version {future}.*upgrade notifykit"):
        async with backend.open():
            pass
    if backend.kind == "postgresql":  # nothing was created next to the newer schema
        assert backend.execute("SELECT to_regclass('backups')") == [(None,)]


async def test_migrations_run_once_and_are_recorded(backend: CatalogBackend) -> None:
    for _ in range(2):  # a second open (another host starting) finds the schema current
        async with backend.open() as catalog:
            await catalog.add(record(f"r{_}"))
    if backend.kind == "postgresql":
        assert backend.execute("SELECT version FROM notifykit_schema ORDER BY version") == [(PG_SCHEMA_VERSION,)]
    else:
        assert backend.execute("PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_record_with_an_invalid_status_does_not_break_listing(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
        await catalog.add(record("good"))
        await catalog.add(record("bad"))
    if backend.kind == "postgresql":  # a TIMESTAMPTZ column holds no 'yesterday': only the status is damaged
        backend.execute("UPDATE backups SET status = 'exploded' WHERE id = 'bad'")
    else:
        backend.execute("UPDATE backups SET status = 'exploded', created_at = 'yesterday' WHERE id = 'bad'")
    async with backend.open() as catalog:
        listed = {r.id: r for r in await catalog.list()}
        assert listed["good"].status is BackupStatus.CREATING
        bad = listed["bad"]
        assert bad.status is BackupStatus.ERROR
        assert bad.fail_reason is not None and "invalid status 'exploded'" in bad.fail_reason
        assert backend.kind == "postgresql" or "invalid created_at 'yesterday'" in bad.fail_reason
        # It can be cleaned up like any failed backup.
        await catalog.transition("bad", BackupStatus.DELETING)
        assert (await catalog.transition("bad", BackupStatus.DELETED)).deleted_at is not None


async def test_text_that_is_not_utf8_is_kept_byte_for_byte(backend: CatalogBackend) -> None:
    name = os.fsdecode(b"vol\xff\xfe")
    async with backend.open() as catalog:
        await catalog.add(replace(record("a"), display_name=name, volume_path="/srv/" + name))
    async with backend.open() as catalog:
        again = await catalog.get("a")
    assert os.fsencode(again.volume_path) == b"/srv/vol\xff\xfe" and again.display_name == name


async def test_dependents_counted_and_delete_refused_until_they_are_gone(backend: CatalogBackend) -> None:
    from notifykit.backup import DependentBackupsError

    async with backend.open() as catalog:
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


async def test_existed_between_is_the_audit_window(backend: CatalogBackend) -> None:
    t = [datetime(2026, 11, 1, h, tzinfo=UTC) for h in range(6)]
    async with backend.open() as catalog:
        # (id, created_at, deleted_at)
        for backup_id, created, deleted in [("before-gone", t[0], t[1]), ("gone-during", t[1], t[3]),
                                            ("alive", t[1], None), ("made-during", t[2], None),
                                            ("after", t[4], None), ("gone-at-start", t[0], t[2])]:
            await catalog.add(replace(record(backup_id), created_at=created))
            if deleted is not None:
                await catalog.transition(backup_id, BackupStatus.ERROR)
                await catalog.transition(backup_id, BackupStatus.DELETING)
                await catalog.transition(backup_id, BackupStatus.DELETED)
                backend.execute("UPDATE backups SET deleted_at = ? WHERE id = ?", [deleted, backup_id])
        found = [r.id for r in await catalog.existed_between(t[2], t[4])]
    assert sorted(found) == ["alive", "gone-during", "made-during"]



async def test_two_hosts_racing_for_one_backup_exactly_one_wins(backend: CatalogBackend) -> None:
    """Compare-and-set: of two catalogs (two hosts) moving the same backup at once, one wins;
    the other gets the refusal a local race gets."""
    async with backend.open() as host_a, backend.open() as host_b:
        for i in range(15):
            await host_a.add(record(f"r{i}"))
            await host_a.transition(f"r{i}", BackupStatus.AVAILABLE)
        for i in range(15):
            goal = BackupStatus.DELETING if i % 2 else BackupStatus.RESTORING
            results: list[BaseException | BackupRecord] = []

            async def move(catalog: BackupCatalog, backup_id: str, to: BackupStatus, host: str,
                           results: list[BaseException | BackupRecord]) -> None:
                try:
                    results.append(await catalog.transition(backup_id, to, worker_host=host, worker_pid=1))
                except InvalidStatusTransitionError as exc:
                    results.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(move, host_a, f"r{i}", goal, "a", results)
                tg.start_soon(move, host_b, f"r{i}", goal, "b", results)
            won = [r for r in results if isinstance(r, BackupRecord)]
            lost = [r for r in results if isinstance(r, InvalidStatusTransitionError)]
            assert len(won) == 1 and len(lost) == 1, results
            assert f"is {goal.value}" in str(lost[0]) and f"cannot become {goal.value}" in str(lost[0])
            stored = await host_b.get(f"r{i}")
            assert (stored.status, stored.worker_host) == (goal, won[0].worker_host)


async def test_a_stale_expectation_is_refused(backend: CatalogBackend) -> None:
    """recover's write is conditional on the worker it saw: if another host took the backup
    over meanwhile (same status, other worker), the write is refused and nothing changes."""
    async with backend.open() as host_a, backend.open() as host_b:
        await host_a.add(record("r"))
        await host_a.transition("r", BackupStatus.AVAILABLE)
        seen = await host_a.transition("r", BackupStatus.RESTORING, worker_host="a", worker_pid=11, worker_token="t")
        await host_b.transition("r", BackupStatus.AVAILABLE, worker_host=None, worker_pid=None, worker_token=None)
        await host_b.transition("r", BackupStatus.RESTORING, worker_host="b", worker_pid=22, worker_token="u")
        with pytest.raises(InvalidStatusTransitionError, match=r"now run by host 'b'.*another operation changed it"):
            await host_a.transition("r", BackupStatus.ERROR_RESTORING, expect=seen, fail_reason="interrupted")
        now = await host_a.get("r")
        assert (now.status, now.worker_host, now.worker_pid, now.fail_reason) == (BackupStatus.RESTORING, "b", 22, None)
        current = await host_a.transition("r", BackupStatus.ERROR_RESTORING, expect=now)  # as read: allowed
        assert current.status is BackupStatus.ERROR_RESTORING


async def test_unreachable_postgresql_is_one_clear_error_without_the_password() -> None:
    from ..amqp.support import free_port

    catalog = PostgresCatalog(f"postgresql://backup:s3cr3t-pw@127.0.0.1:{free_port()}/backups")
    with pytest.raises(BackupError) as info:
        await catalog.open()
    message = str(info.value)
    assert message.startswith("cannot open backup catalog postgresql://backup:***@127.0.0.1:")
    assert "s3cr3t-pw" not in message and "s3cr3t-pw" not in repr(catalog) and "\n" not in message


async def test_catalog_setting_is_a_path_or_a_postgresql_url(tmp_path: Path) -> None:
    url = "postgresql://backup:pw@db.example:5432/backups"
    config = BackupConfig.load(env={}, catalog_path=url)
    assert config.catalog_url == url and "pw" not in repr(config)
    assert isinstance(build_catalog(config), PostgresCatalog)
    toml = tmp_path / "b.toml"
    toml.write_text(f'[backup]\ncatalog_path = "{url}"\n')
    assert BackupConfig.load(toml, env={}).catalog_url == url
    assert BackupConfig.load(toml, env={}, catalog_path=str(tmp_path / "c.db")).catalog_url is None  # --catalog wins
    config = BackupConfig.load(env={"NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db")})
    assert isinstance(build_catalog(config), SQLiteCatalog) and config.catalog_url is None
    for other in ("mysql://u:pw@h/db", "sqlite:///tmp/x.db", "file:///tmp/x"):
        with pytest.raises(BackupConfigError, match=r"catalog \w+://…: unsupported kind of catalog; give a file path"
                                                    r" \(SQLite\) or a postgresql:// URL") as info:
            BackupConfig.load(env={}, catalog_path=other)
        assert "pw" not in str(info.value)
    assert not any(tmp_path.glob("*:*"))
