"""``notifykit-backup verify ID`` (issue 24, reproduction 5): every object of a backup and
of its chain read and every block checked, nothing written; exit 0, or one line naming the
first bad object."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from notifykit.backup.cli import main

from .helpers import write_volume


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("CONFIG", "CATALOG_PATH", "STORE", "NOTIFIER_URL"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CATALOG_PATH", str(tmp_path / "catalog.sqlite3"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_STORE", f"file://{tmp_path / 'objects'}?fsync=false")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_NOTIFIER_URL", f"log://{tmp_path / 'n.jsonl'}")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_DEAD_LETTER_PATH", str(tmp_path / "dl.jsonl"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CHUNK_SIZE", "16KiB")
    return tmp_path


def backup(volume: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["create", str(volume), *extra]) == 0
    return capsys.readouterr().out.strip()


def chunk_objects(root: Path, backup_id: str) -> list[Path]:
    """The chunk objects of a backup in the file store, in volume order."""
    [container] = [p for p in (root / "objects").iterdir() if backup_id in p.name]
    return sorted((p for p in container.rglob("*") if p.is_file() and p.name[-5:].isdigit()), key=lambda p: p.name)


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """stderr without the progress lines (one per 10 % when not a terminal)."""
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("verify: ")]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in (root / "objects").rglob("*") if p.is_file()}


@pytest.fixture
def chain(settings: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A full backup and an incremental one whose first chunk changed."""
    volume = write_volume(settings / "vol.img", 100_000)
    full = backup(volume, capsys)
    with volume.open("r+b") as fh:
        fh.write(b"changed" * 100)
    incremental = backup(volume, capsys, "--incremental")
    return full, incremental


def test_a_sound_chain_verifies_and_nothing_is_written(settings: Path, chain: tuple[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    full, incremental = chain
    before = snapshot(settings)
    assert main(["verify", incremental]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"verified {incremental}: ") and "of 2 backup(s) for 100000 volume bytes" in out
    assert main(["verify", full]) == 0
    assert snapshot(settings) == before
    assert set(os.listdir(settings)) <= {"catalog.sqlite3", "catalog.sqlite3-shm", "catalog.sqlite3-wal", "n.jsonl",
                                         "objects", "vol.img"}


def test_a_flipped_bit_in_a_block_no_restore_would_read_is_found(settings: Path, chain: tuple[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The full backup's first chunk is superseded by the incremental's: a restore of the
    incremental never reads it, verify does, and names it."""
    full, incremental = chain
    first = chunk_objects(settings, full)[0]
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x01
    first.write_bytes(bytes(data))
    assert main(["restore", incremental, str(settings / "out.img")]) == 0  # restore does not read it
    capsys.readouterr()
    assert main(["verify", incremental]) == 1
    [err] = error_lines(capsys)
    assert err.startswith("notifykit-backup: error: object ") and first.name in err, err
    assert "corrupt" in err


def test_a_missing_object_is_named(settings: Path, chain: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    full, incremental = chain
    gone = chunk_objects(settings, full)[-1]
    gone.unlink()
    assert main(["verify", incremental]) == 1
    [err] = error_lines(capsys)
    assert gone.name in err and "missing" in err, err


def test_an_unfinished_backup_cannot_be_verified(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", str(settings / "nothere.img")]) == 1
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["status"] == "error"
    assert main(["verify", record["id"]]) == 1
    [err] = error_lines(capsys)
    assert "never completed" in err, err
