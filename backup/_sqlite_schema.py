"""What a SQLite catalog file holds: its versioned schema, migrated on open, and the check
that a path is a catalog at all before anything is written to it.

Apart from backup/_sqlite.py (the connection, its lock waits, the queries), so that a new
column is a migration step here and no change there. Both functions block: SQLiteCatalog
calls them in a worker thread.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from ._errors import BackupError

__all__ = ["SCHEMA_VERSION", "migrate", "refuse_a_foreign_file"]

SCHEMA_VERSION = 4
# Each step takes the schema from the version before it to its own; a fresh catalog runs
# them all. Version 1 is the schema before versioning (user_version 0, same table).
_MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE IF NOT EXISTS backups (
            id TEXT PRIMARY KEY,
            project_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            availability_zone TEXT NOT NULL,
            host TEXT NOT NULL,
            display_name TEXT,
            volume_id TEXT NOT NULL,
            volume_path TEXT NOT NULL,
            service TEXT NOT NULL,
            status TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            object_count INTEGER NOT NULL,
            service_metadata TEXT,
            container TEXT,
            fail_reason TEXT,
            parent_id TEXT,
            snapshot_id TEXT,
            num_dependent_backups INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS backups_project ON backups (project_id, created_at)",
    ]),
    (2, [
        "ALTER TABLE backups ADD COLUMN store_kind TEXT",
        "ALTER TABLE backups ADD COLUMN store_location TEXT",
        "ALTER TABLE backups ADD COLUMN deleted_at TEXT",
        "ALTER TABLE backups ADD COLUMN worker_pid INTEGER",
        "ALTER TABLE backups ADD COLUMN worker_token TEXT",
        "ALTER TABLE backups ADD COLUMN restore_target TEXT",
        # Deleted before deleted_at existed: the last update is when it was deleted.
        "UPDATE backups SET deleted_at = updated_at WHERE status = 'deleted'",
        "CREATE INDEX IF NOT EXISTS backups_parent ON backups (parent_id)",
        "CREATE INDEX IF NOT EXISTS backups_volume ON backups (volume_id, created_at)",
    ]),
    (3, [
        "ALTER TABLE backups ADD COLUMN worker_host TEXT",
        # Before worker_host, only the creating host ran (and recovered) a backup's operations.
        "UPDATE backups SET worker_host = host WHERE worker_pid IS NOT NULL",
    ]),
    (4, [  # reset_status: the status it replaced, who (user, host) and when
        "ALTER TABLE backups ADD COLUMN reset_from TEXT",
        "ALTER TABLE backups ADD COLUMN reset_user TEXT",
        "ALTER TABLE backups ADD COLUMN reset_host TEXT",
        "ALTER TABLE backups ADD COLUMN reset_at TEXT",
    ]),
]
assert _MIGRATIONS[-1][0] == SCHEMA_VERSION


_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Columns every catalog has had since version 1 (before versioning, user_version 0).
_FIRST_COLUMNS = {"id", "project_id", "volume_id", "status", "created_at"}


def refuse_a_foreign_file(path: Path) -> None:
    """Refuse, before a byte is written (``journal_mode=WAL`` alone rewrites the header),
    a path that is not a catalog: a directory, a non-SQLite file, or another program's
    SQLite database (tables other than ``backups``, or a ``backups`` table of its own).
    Read with ``immutable=1`` so not even a -shm file appears next to it."""
    try:
        if path.is_dir():
            raise BackupError(f"backup catalog {str(path)!r} is a directory; name a file (e.g. catalog.sqlite3)")
        if not path.exists() or path.stat().st_size == 0:
            return  # a new catalog
        with open(path, "rb") as fh:
            if fh.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                raise BackupError(f"backup catalog {str(path)!r} is not a SQLite file; it was left untouched")
    except OSError as exc:
        raise BackupError(f"cannot open backup catalog {str(path)!r}: {exc.strerror or exc}") from None
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.is_file() and wal.stat().st_size > 0 else "immutable=1"  # committed rows may be in the WAL
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(backups)")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open backup catalog {str(path)!r}: {exc}") from None
    others = sorted(t for t in tables if t != "backups" and not t.startswith("sqlite_"))
    if others or ("backups" in tables and not _FIRST_COLUMNS <= columns):
        what = f"tables {', '.join(others[:3])}" if others else "a backups table of another shape"
        raise BackupError(f"backup catalog {str(path)!r} is a SQLite database of another program ({what});"
                          " it was left untouched: name a catalog file of its own")


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction (two processes opening an
    old catalog at once migrate it once)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackupError(
                f"backup catalog {str(path)!r} has schema version {version}; this notifykit-backup"
                f" knows versions up to {SCHEMA_VERSION} (upgrade notifykit)")
        for step, statements in _MIGRATIONS:
            if step > version:
                for statement in statements:
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
