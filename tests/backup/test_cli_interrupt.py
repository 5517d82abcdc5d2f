"""Ctrl-C and SIGTERM act at once in every wait, and say what really happened (issue 24,
reproduction 6): waiting for a SQLite catalog another process has locked, the old CLI took
27 s to stop and then claimed "the operation was recorded as failed" with nothing recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .helpers import write_volume

# Holds a write lock on the catalog (its own connection, as another notifykit-backup or an
# operator's sqlite3 shell would) until its stdin closes. With "exclusive", the file is first
# put back in rollback-journal mode, so even opening (and reading) it has to wait.
_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("BEGIN EXCLUSIVE")
else:
    conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def catalog_locked(catalog: Path, how: str = "immediate") -> Iterator[None]:
    locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(catalog), how], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
        yield
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        try:
            locker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            locker.kill()
            locker.wait()


def environment(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
           "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl"),
           "NOTIFYKIT_BACKUP_NOTIFIER_URL": f"log://{tmp_path / 'n.jsonl'}"}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    return env


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "notifykit.backup.cli", *args], env=environment(tmp_path),
                          capture_output=True, text=True, timeout=60, check=False)


def start(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "notifykit.backup.cli", *args], env=environment(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str], signum: int, *, timeout: float = 10) -> str:
    """Send ``signum`` and return stderr's rest. ``timeout`` bounds a hang (the old code
    needed 27 s here), it measures nothing."""
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err


def rows(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(tmp_path / "c.db") as conn:
        return conn.execute("SELECT id, status, fail_reason FROM backups ORDER BY created_at").fetchall()


def events(tmp_path: Path) -> list[str]:
    path = tmp_path / "n.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["event_type"] for line in path.read_text().splitlines()]


def waits_for_the_lock(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.startswith("notifykit-backup: waiting for the catalog lock"), line


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                                      (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_create_waiting_for_a_locked_catalog_stops_at_once_and_records_nothing(
        tmp_path: Path, signum: int, code: int, said: str) -> None:
    volume = write_volume(tmp_path / "vol.img", 100_000)
    assert cli(tmp_path, "list").returncode == 0  # the catalog exists
    with catalog_locked(tmp_path / "c.db"):
        proc = start(tmp_path, "create", str(volume))
        waits_for_the_lock(proc)
        err = stop(proc, signum)
    assert proc.returncode == code, err
    assert err == (f"notifykit-backup: {said} while waiting for the catalog lock ({str(tmp_path / 'c.db')!r} is"
                   " locked by another process); nothing was recorded\n")
    assert rows(tmp_path) == [] and events(tmp_path) == []


def test_restore_waiting_for_a_locked_catalog_leaves_the_backup_as_it_was(tmp_path: Path) -> None:
    volume = write_volume(tmp_path / "vol.img", 100_000)
    made = cli(tmp_path, "create", str(volume))
    assert made.returncode == 0, made.stderr
    backup_id = made.stdout.strip()
    with catalog_locked(tmp_path / "c.db"):
        proc = start(tmp_path, "restore", backup_id, str(tmp_path / "out.img"))
        waits_for_the_lock(proc)
        err = stop(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "while waiting for the catalog lock" in err and err.endswith("nothing was recorded\n")
    assert rows(tmp_path) == [(backup_id, "available", None)]
    assert not (tmp_path / "out.img").exists()
    assert [e for e in events(tmp_path) if "restore" in e] == []


def test_opening_a_catalog_locked_exclusively_stops_at_once(tmp_path: Path) -> None:
    assert cli(tmp_path, "list").returncode == 0
    with catalog_locked(tmp_path / "c.db", "exclusive"):
        proc = start(tmp_path, "list")
        waits_for_the_lock(proc)
        err = stop(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT) while waiting for the catalog lock" in err and "nothing was recorded" in err


def test_a_failure_the_locked_catalog_cannot_take_is_said_and_recover_records_it_later(tmp_path: Path) -> None:
    """Locked while a backup runs: the interrupted create cannot record ``error``; it gives up
    at once and says so, and ``recover`` records it once the lock is gone."""
    volume = tmp_path / "big.img"
    with volume.open("wb") as fh:
        fh.truncate(4 * 1024**3)  # sparse: many 64 KiB chunks, still running at the signal
    proc = start(tmp_path, "create", str(volume), "--chunk-size", "64KiB")
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("create: "), first  # the record exists, the backup runs
    with catalog_locked(tmp_path / "c.db"):
        err = stop(proc, signal.SIGINT)
        assert proc.returncode == 130, err
        [(backup_id, status, _)] = rows(tmp_path)
        assert status == "creating"
    last = err.splitlines()[-1]
    assert last.startswith(f"notifykit-backup: interrupted (SIGINT); backup {backup_id} is still creating in the"
                           " catalog (it could not become error: backup catalog"), last
    assert "run notifykit-backup recover" in last
    recovered = cli(tmp_path, "recover")
    assert recovered.returncode == 0, recovered.stderr
    assert rows(tmp_path)[0][1] == "error"
