"""``notifykit-backup``: the commands end to end on real files, settings precedence, errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from notifykit.backup import BackupConfig, BackupConfigError
from notifykit.backup.cli import ProgressDisplay, main

from .helpers import write_volume


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every CLI path into tmp_path through the environment."""
    for key in ("CONFIG", "CATALOG_PATH", "STORE", "NOTIFIER_URL"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CATALOG_PATH", str(tmp_path / "catalog.sqlite3"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_STORE", f"file://{tmp_path / 'objects'}?fsync=false")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_DEAD_LETTER_PATH", str(tmp_path / "dl.jsonl"))
    return tmp_path


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_create_list_show_restore_delete(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    volume = write_volume(settings / "vol.img", 70_000)
    log = settings / "notifications.jsonl"
    common = ["--chunk-size", "16KiB", "--compression", "zlib", "--notifier", f"log://{log}", "--host", "cli-host"]
    assert main(["create", str(volume), "--name", "first", *common]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert main(["list", "--json", *common]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == backup_id and listed["status"] == "available" and listed["object_count"] == 5
    assert main(["show", backup_id, *common]) == 0
    assert "available" in capsys.readouterr().out
    assert main(["restore", backup_id, str(settings / "out.img"), *common]) == 0
    assert (settings / "out.img").read_bytes() == volume.read_bytes()
    assert main(["delete", backup_id, *common]) == 0
    capsys.readouterr()
    assert main(["list", *common]) == 0
    assert backup_id not in capsys.readouterr().out
    events = lines(log)
    assert [e["event_type"] for e in events] == [
        "backup.create.start", "backup.createprogress", "backup.create.end",
        "backup.restore.start", "backup.restoreprogress", "backup.restore.end",
        "backup.delete.start", "backup.delete.end",
    ]
    assert {e["publisher_id"] for e in events} == {"backup.cli-host"}


def test_errors_are_one_line_with_an_exit_code(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = settings / "n.jsonl"
    assert main(["create", str(settings / "missing.img"), "--notifier", f"log://{log}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("notifykit-backup: error: volume") and "does not exist" in err
    assert "Traceback" not in err
    assert [e["event_type"] for e in lines(log)] == ["backup.create.start", "backup.create.error"]
    assert main(["show", "nope", "--notifier", f"log://{log}"]) == 1
    assert "backup 'nope' not found" in capsys.readouterr().err
    assert main(["list", "--chunk-size", "lots", "--notifier", f"log://{log}"]) == 1
    assert "chunk_size must be a size" in capsys.readouterr().err
    assert main(["list", "--notifier", "nosuch://x"]) == 1
    assert "unknown transport scheme 'nosuch'" in capsys.readouterr().err


def test_demo_backs_up_restores_verifies_and_deletes(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = settings / "demo.jsonl"
    assert main(["demo", "--size", "3MiB", "--chunk-size", "256KiB", "--notifier", f"log://{log}"]) == 0
    out = capsys.readouterr().out
    assert "restored bytes   identical" in out and "result           OK" in out
    assert "objects all removed" in out
    kinds = [e["event_type"] for e in lines(log)]
    assert kinds[0] == "backup.create.start" and kinds[-1] == "backup.delete.end"
    assert kinds.count("backup.createprogress") == 2  # 12 objects: at 10, then the final 100
    for kind in set(kinds):
        assert kind in out
    assert not (settings / "objects").exists()  # the demo works in its own temporary directory


def test_settings_precedence_defaults_toml_env_options(tmp_path: Path) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\nchunk_size = "1MiB"\ncompression = "zlib"\nbackup_timer_interval = 30\n'
                    'availability_zone = "az-toml"\n')
    env = {"NOTIFYKIT_BACKUP_COMPRESSION": "none", "NOTIFYKIT_BACKUP_BACKUP_OBJECT_NUMBER_PER_NOTIFICATION": "3"}
    config = BackupConfig.load(toml, env=env, availability_zone="az-option")
    assert config.chunk_size == 1024 * 1024 and config.compression == "none"
    assert config.backup_timer_interval == 30.0 and config.backup_object_number_per_notification == 3
    assert config.availability_zone == "az-option"
    default = BackupConfig.load(env={})
    assert default.notifier_url == "log://stderr" and default.chunk_size == 4 * 1024 * 1024
    assert default.compression == "zstd" and default.backup_enable_progress_timer is True
    assert default.publisher_id == f"backup.{default.host}"


@pytest.mark.parametrize(("env", "message"), [
    ({"NOTIFYKIT_BACKUP_STORE": "file:///tmp/x?fsync=maybe"}, "file store: fsync must be true or false"),
    ({"NOTIFYKIT_BACKUP_STORE": "file:///tmp/x?fsinc=no"}, r"file store: unknown option\(s\) 'fsinc' \(allowed: fsync\)"),
    ({"NOTIFYKIT_BACKUP_COMPRESSION": "lzma"}, "compression must be one of none, zlib, bz2, zstd"),
    ({"NOTIFYKIT_BACKUP_CHUNK_SIZE": "12"}, "chunk_size must be 4096 bytes"),
    ({"NOTIFYKIT_BACKUP_BACKUP_TIMER_INTERVAL": "-1"}, "backup_timer_interval must be > 0"),
    ({"NOTIFYKIT_BACKUP_CONFIG": "/nonexistent/backup.toml"}, "does not exist"),
])
def test_bad_settings_are_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(BackupConfigError, match=message):
        BackupConfig.load(env=env)


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "b.toml"
    toml.write_text("[backup]\nchunksize = 5\n")
    with pytest.raises(BackupConfigError, match=r"unknown backup setting.*chunksize"):
        BackupConfig.load(toml, env={})


def test_progress_display_redraws_one_bar_on_a_terminal(tmp_path: Path) -> None:
    out = (tmp_path / "out.txt").open("w+", newline="")
    display = ProgressDisplay("restore", out, tty=True)
    display(0, 1000)
    display(1000, 1000)
    display.finish()
    out.seek(0)
    text = out.read()
    assert text.count("\n") == 1 and text.endswith("\r\n")
    assert "[" + "#" * 30 + "] 100.0%" in text and "[" + "." * 30 + "]   0.0%" in text


def test_progress_display_plain_lines_once_per_ten_percent(tmp_path: Path) -> None:
    out = (tmp_path / "out.txt").open("w+")
    display = ProgressDisplay("create", out, tty=False)
    for done in range(0, 1001, 25):
        display(done, 1000)
    display.finish()
    out.seek(0)
    text = out.read().splitlines()
    assert [line.split()[1] for line in text] == [f"{p}%" for p in range(0, 101, 10)]


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                      (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_signal_ends_in_error_event_and_status(tmp_path: Path, signum: int, code: int, said: str) -> None:
    """Ctrl-C or SIGTERM during ``create``: error exit, ``backup.create.error`` emitted, status error."""
    volume = tmp_path / "big.img"
    with volume.open("wb") as fh:
        fh.truncate(4 * 1024**3)  # sparse: many 64 KiB chunks, so the backup is still running at the signal
    log = tmp_path / "n.jsonl"
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
           "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl")}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "notifykit.backup.cli", "create", str(volume), "--chunk-size", "64KiB",
                             "--notifier", f"log://{log}"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("create: "), first
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert said in err and "Traceback" not in err
    assert err.endswith("is recorded as error (cancelled before completion)\n"), err  # what really happened
    events = lines(log)
    assert [e["event_type"] for e in events if "progress" not in str(e["event_type"])] == [
        "backup.create.start", "backup.create.error"]
    assert events[-1]["priority"] == "error"
    assert events[-1]["payload"]["fail_reason"] == "cancelled before completion"
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("SELECT status, fail_reason FROM backups").fetchall() == [
            ("error", "cancelled before completion")]


def test_list_survives_a_bad_record_and_a_name_with_a_newline(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    volume = write_volume(settings / "vol.img", 10_000)
    log = settings / "n.jsonl"
    assert main(["create", str(volume), "--name", "two\nlines\x1b[2J", "--notifier", f"log://{log}"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["create", str(volume), "--name", "second", "--notifier", f"log://{log}"]) == 0
    second = capsys.readouterr().out.strip()
    with sqlite3.connect(settings / "catalog.sqlite3") as conn:
        conn.execute("UPDATE backups SET status = 'bogus' WHERE id = ?", (second,))
    assert main(["list", "--notifier", f"log://{log}"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3  # the header and one line per backup
    assert table[1].startswith(first) and table[1].endswith("two\\nlines\\x1b[2J")
    assert table[2].startswith(second) and " error " in table[2]
    assert main(["show", second, "--notifier", f"log://{log}"]) == 0
    assert "invalid status 'bogus'" in capsys.readouterr().out
    assert main(["list", "--json", "--notifier", f"log://{log}"]) == 0
    names = [r["display_name"] for r in json.loads(capsys.readouterr().out)]
    assert names == ["two\nlines\x1b[2J", "second"]  # JSON keeps the name exactly
