"""``recover`` fails only operations whose process is gone, and cleans up after a killed
restore (issue 15, reproductions 2 and 5)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from notifykit.backup.cli import main

from .helpers import write_volume
from .test_cli import lines


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
           "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl")}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    return env


def _status(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "c.db") as conn:
        return conn.execute("SELECT id, status FROM backups ORDER BY created_at").fetchall()


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_recover_leaves_a_running_create_alone_and_fails_a_dead_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(tmp_path)
    for key, value in env.items():
        if key.startswith("NOTIFYKIT_BACKUP_"):
            monkeypatch.setenv(key, value)
    volume = tmp_path / "big.img"
    with volume.open("wb") as fh:
        fh.truncate(4 * 1024**3)  # sparse: the create is far from done when it is stopped
    log = tmp_path / "n.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "notifykit.backup.cli", "create", str(volume), "--chunk-size", "64KiB",
                             "--notifier", f"log://{log}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("create: ")  # running, its record is in the catalog
        proc.send_signal(signal.SIGSTOP)  # alive but not moving: it cannot finish meanwhile
        [(backup_id, status)] = _status(tmp_path)
        assert status == "creating"
        assert main(["recover", "--notifier", f"log://{log}"]) == 0
        assert capsys.readouterr().out == ""
        assert _status(tmp_path) == [(backup_id, "creating")]
        assert "backup.create.error" not in [e["event_type"] for e in lines(log)]

        proc.send_signal(signal.SIGKILL)
        _kill(proc)
        assert main(["recover", "--notifier", f"log://{log}"]) == 0
        assert capsys.readouterr().out.startswith(f"{backup_id} error: interrupted")
    finally:
        _kill(proc)
    assert _status(tmp_path) == [(backup_id, "error")]
    errors = [e for e in lines(log) if e["event_type"] == "backup.create.error"]
    assert len(errors) == 1 and errors[0]["payload"]["backup_id"] == backup_id
    assert main(["recover", "--notifier", f"log://{log}"]) == 0  # nothing left to recover
    assert capsys.readouterr().out == ""


def test_recover_removes_what_a_killed_restore_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(tmp_path)
    for key, value in env.items():
        if key.startswith("NOTIFYKIT_BACKUP_"):
            monkeypatch.setenv(key, value)
    log = tmp_path / "n.jsonl"
    volume = write_volume(tmp_path / "vol.img", 64 * 1024)
    assert main(["create", str(volume), "--chunk-size", "16KiB", "--notifier", f"log://{log}"]) == 0
    backup_id = capsys.readouterr().out.strip()
    # The last chunk becomes a FIFO nobody writes: the restore blocks reading it, its
    # partial file already open, until it is killed.
    [last] = sorted((tmp_path / "objects" / f"backup_{backup_id}").glob("*-00003"))
    last.unlink()
    os.mkfifo(last)
    target = tmp_path / "restored.img"
    proc = subprocess.Popen([sys.executable, "-m", "notifykit.backup.cli", "restore", backup_id, str(target),
                             "--chunk-size", "16KiB", "--notifier", f"log://{log}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("restore: ")  # the partial file exists by now
        # Named for this operation (backup id + random part), beside the target's lock file.
        [partial] = tmp_path.glob(f".restored.img.{backup_id}.*.partial")
        assert (tmp_path / ".restored.img.restore.lock").exists() and not target.exists()
        proc.send_signal(signal.SIGKILL)
        _kill(proc)
    finally:
        _kill(proc)
    assert partial.exists()
    assert main(["recover", "--notifier", f"log://{log}"]) == 0
    assert capsys.readouterr().out.startswith(f"{backup_id} error_restoring: interrupted")
    assert not partial.exists() and not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
