"""The catalog backends the catalog tests run on: an SQLite file, and a PostgreSQL database
made for the test on the machine's server (127.0.0.1:5432, user postgres, trust) and dropped
after it. PostgreSQL tests skip with one line when it is not reachable (fail under
NOTIFYKIT_REQUIRE_BROKERS=1)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from notifykit.backup._postgres import PostgresCatalog
from notifykit.backup._sqlite import SQLiteCatalog
from notifykit.backup.plugin import BackupCatalog

from ..helpers import require_tcp

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


class CatalogBackend:
    """Opens catalogs on one storage (each open() is another process or host), and runs raw
    SQL on it (``?`` placeholders) to damage or inspect rows as an outside writer would."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location  # a file path, or a postgresql:// URL

    def open(self) -> BackupCatalog:
        return PostgresCatalog(self.location) if self.kind == "postgresql" else SQLiteCatalog(self.location)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(self.location, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s"), list(params))
                return list(cursor.fetchall()) if cursor.description else []
        values = [p.isoformat() if isinstance(p, datetime) else p for p in params]
        with sqlite3.connect(self.location) as conn:
            return list(conn.execute(sql, values).fetchall())

    def __repr__(self) -> str:
        return f"CatalogBackend({self.kind})"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards; its URL."""
    require_tcp(PG_HOST, PG_PORT, "PostgreSQL")
    import psycopg

    name = f"nk_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def catalog_backend(kind: str, tmp_path: Path) -> Iterator[CatalogBackend]:
    if kind == "postgresql":
        with postgres_database() as url:
            yield CatalogBackend(kind, url)
    else:
        yield CatalogBackend(kind, str(tmp_path / "catalog.sqlite3"))
