"""The durable outbox: a local SQLite (WAL) spool of notifications not yet confirmed.

A notification is committed here before ``notify()`` returns (callers arriving together
share one commit) and deleted only after its transport confirmed it, so a broker outage
or a crash of the process loses nothing: the next Notifier on the same spool replays it,
in order, per transport. All SQLite work runs in worker threads.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from ._errors import ConfigError
from ._formats import WireFormat
from ._message import Notification
from ._paths import state_file

__all__ = ["Spool", "SpooledRow", "default_spool_path"]

SYNCHRONOUS_MODES = ("off", "normal", "full")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    transport TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_transport_id ON outbox (transport, id);
"""


def default_spool_path() -> Path:
    """``$NOTIFYKIT_SPOOL``, else ``$XDG_STATE_HOME/notifykit/spool.sqlite``."""
    return state_file("NOTIFYKIT_SPOOL", "spool.sqlite")


@dataclass(frozen=True, slots=True)
class SpooledRow:
    row_id: int
    notification: Notification


class _Pending:
    """Rows waiting for the next group commit, and the event their writers wait on."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, float]] = []
        self.notifications: list[Notification] = []
        self.done = anyio.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None


class Spool:
    """SQLite outbox shared by the durable transports of one Notifier.

    ``synchronous`` is SQLite's: ``full`` fsyncs every commit (survives power loss),
    ``normal`` (default, WAL) survives a process crash, ``off`` trusts the OS.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "normal") -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(f"spool synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._pending: _Pending | None = None
        self._writer_busy = False
        self._listeners: dict[str, Callable[[int, Notification], None]] = {}

    def subscribe(self, transport: str, on_committed: Callable[[int, Notification], None]) -> None:
        """Call ``on_committed(row_id, notification)`` for each row of ``transport``, in
        row order, as soon as its commit is done (lets the worker skip re-reading it)."""
        self._listeners[transport] = on_committed

    # -- blocking part, always called in a worker thread -------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def _insert(self, rows: Sequence[tuple[str, str, str, float]]) -> list[int]:
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = [db.execute("INSERT INTO outbox (transport, message_id, body, created) VALUES (?, ?, ?, ?)",
                                  row).lastrowid or 0 for row in rows]
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return ids

    def _fetch(self, transport: str, after_id: int, limit: int) -> list[tuple[int, str]]:
        with self._lock:
            cursor = self._connect().execute(
                "SELECT id, body FROM outbox WHERE transport = ? AND id > ? ORDER BY id LIMIT ?",
                (transport, after_id, limit),
            )
            return [(int(row_id), str(body)) for row_id, body in cursor.fetchall()]

    def _delete(self, row_ids: Sequence[int]) -> None:
        with self._lock:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in row_ids])
            db.execute("COMMIT")

    def _count(self, transport: str | None) -> int:
        with self._lock:
            db = self._connect()
            if transport is None:
                return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM outbox WHERE transport = ?", (transport,)).fetchone()[0])

    def counts_blocking(self) -> dict[str, int]:
        """Rows per transport (blocking: for ``notifykit status`` and tests)."""
        with self._lock:
            rows = self._connect().execute("SELECT transport, COUNT(*) FROM outbox GROUP BY transport").fetchall()
            return {str(name): int(count) for name, count in rows}

    def _close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- async API ---------------------------------------------------------------------

    async def append(self, transport: str, notification: Notification) -> int:
        """Commit one notification; callers that arrive while a commit runs share the next one."""
        if self._pending is None:
            self._pending = _Pending()
        batch = self._pending
        index = len(batch.rows)
        batch.rows.append((transport, notification.message_id,
                           notification.encode(WireFormat.JSON).decode(), time.time()))
        batch.notifications.append(notification)
        if not self._writer_busy:
            await self._write_pending()
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.ids[index]

    async def _write_pending(self) -> None:
        """Group commit: keep committing whatever accumulated until nothing is pending."""
        self._writer_busy = True
        try:
            while self._pending is not None and self._pending.rows:
                batch, self._pending = self._pending, None
                try:
                    with anyio.CancelScope(shield=True):  # a commit, once started, is finished
                        batch.ids = await anyio.to_thread.run_sync(self._insert, batch.rows)
                except Exception as exc:
                    batch.error = exc
                else:
                    for row, row_id, notification in zip(batch.rows, batch.ids, batch.notifications, strict=True):
                        listener = self._listeners.get(row[0])
                        if listener is not None:
                            listener(row_id, notification)
                batch.done.set()
        finally:
            self._writer_busy = False

    async def fetch(self, transport: str, after_id: int, limit: int) -> list[SpooledRow]:
        """The oldest rows of ``transport`` after ``after_id``, in insertion order."""
        rows = await anyio.to_thread.run_sync(self._fetch, transport, after_id, limit)
        return [SpooledRow(row_id, Notification.from_json(body)) for row_id, body in rows]

    async def delete(self, row_ids: Sequence[int]) -> None:
        if row_ids:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._delete, list(row_ids))

    async def count(self, transport: str | None = None) -> int:
        return await anyio.to_thread.run_sync(self._count, transport)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"
