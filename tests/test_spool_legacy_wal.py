"""Upgrading from a SQLite spool the previous version left when it was killed: its rows, and
even its ``outbox`` table, may still be only in the ``-wal`` file (WAL mode, no checkpoint
yet). The check "is this an old spool?" must read the WAL too, or the old spool is refused
(spool_path named the file) or silently never migrated (the old default name beside the new
directory), and the notifications it holds are never replayed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notifykit import Notification, WireFormat
from notifykit._spool import Spool

from .test_notifier import memory
from .test_spool import LEGACY_SCHEMA, replay

pytestmark = pytest.mark.asyncio

#: The old version's spool writer, killed after committing (os._exit: no close, no checkpoint).
OLD_PUBLISHER_KILLED = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.executescript(sys.argv[2])
for body in sys.argv[3:]:
    db.execute("INSERT INTO outbox (transport, message_id, body, created) VALUES ('events', 'm', ?, 0)", (body,))
os._exit(0)
"""


def killed_old_spool(path: Path, count: int) -> list[str]:
    notes = [Notification.create("e.v", {"i": i}, publisher_id="old") for i in range(count)]
    subprocess.run([sys.executable, "-c", OLD_PUBLISHER_KILLED, str(path), LEGACY_SCHEMA,
                    *(n.encode(WireFormat.JSON).decode() for n in notes)], check=True, timeout=60)
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > path.stat().st_size  # the table and the rows are in the WAL only
    return [n.message_id for n in notes]


async def test_spool_path_naming_a_killed_old_spool_is_migrated(tmp_path: Path, dead_letter_path: Path) -> None:
    old = tmp_path / "spool.sqlite"
    ids = killed_old_spool(old, 3)
    assert Spool.inspect(old).counts == {"events": 3}
    n = await replay(old, dead_letter_path)  # today: ConfigError "is a file that is not a notifykit spool"
    assert [m.message_id for m in memory(n, "events").messages] == ids
    assert old.is_dir() and (tmp_path / "spool.sqlite.pre-log.migrated").is_file()


async def test_killed_old_spool_beside_the_new_default_directory_is_migrated(tmp_path: Path,
                                                                            dead_letter_path: Path) -> None:
    old = tmp_path / "spool.sqlite"  # the previous default name; the new default is the directory "spool"
    ids = killed_old_spool(old, 4)
    n = await replay(tmp_path / "spool", dead_letter_path)  # today: started, the old rows never replayed
    assert [m.message_id for m in memory(n, "events").messages] == ids
    assert not old.exists() and (tmp_path / "spool.sqlite.migrated").is_file()
