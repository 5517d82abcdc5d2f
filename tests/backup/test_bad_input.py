"""Bad input gets one clear line, never a traceback (issue 15, reproductions 3 and 4):
paths and names that are not UTF-8 work end to end; every setting is checked at load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from notifykit.backup import BackupConfig, BackupConfigError
from notifykit.backup._compression import get_compressor
from notifykit.backup.cli import main

from .test_cli import lines, settings  # noqa: F401  (fixture)
from .test_payload_schema import SCHEMA

MIB = 1024 * 1024


def _cli(tmp_path: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    """The CLI in a subprocess whose stdout is strict UTF-8, as on a UTF-8 terminal."""
    env = {**os.environ, "NOTIFYKIT_BACKUP_CATALOG_PATH": str(tmp_path / "c.db"),
           "NOTIFYKIT_BACKUP_STORE": f"file://{tmp_path / 'objects'}?fsync=false",
           "NOTIFYKIT_BACKUP_DEAD_LETTER_PATH": str(tmp_path / "dl.jsonl"), "PYTHONIOENCODING": "utf-8",
           "NOTIFYKIT_BACKUP_NOTIFIER_URL": f"log://{tmp_path / 'n.jsonl'}", "LC_ALL": "C.UTF-8"}
    env.pop("NOTIFYKIT_BACKUP_CONFIG", None)
    return subprocess.run([sys.executable.encode(), b"-m", b"notifykit.backup.cli", *(os.fsencode(a) for a in args)],
                          env=env, capture_output=True, timeout=120, check=False)


def test_a_volume_path_and_name_that_are_not_utf8_back_up_and_restore(tmp_path: Path) -> None:
    raw = os.urandom(50_000)
    volume = os.path.join(os.fsencode(tmp_path), b"v\xff.img")
    with open(volume, "wb") as fh:
        fh.write(raw)
    made = _cli(tmp_path, "create", volume, "--name", b"nightly \xfe\xff", "--chunk-size", "16KiB")
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    assert b"Traceback" not in made.stderr
    backup_id = made.stdout.decode().strip()

    listed = _cli(tmp_path, "list")
    assert listed.returncode == 0 and b"Traceback" not in listed.stderr
    assert listed.stdout.decode("utf-8").splitlines()[1].endswith("nightly \\xfe\\xff")
    shown = _cli(tmp_path, "show", backup_id)
    assert shown.returncode == 0
    assert "volume_path              " + os.fsdecode(os.fsencode(tmp_path)) + "/v\\xff.img" in shown.stdout.decode()
    as_json = _cli(tmp_path, "list", "--json")
    [record] = json.loads(as_json.stdout)
    # JSON keeps the exact bytes, as surrogateescape escapes a consumer can reverse.
    assert os.fsencode(record["volume_path"]) == volume and os.fsencode(record["display_name"]) == b"nightly \xfe\xff"

    target = os.path.join(os.fsencode(tmp_path), b"restored\xfd.img")
    restored = _cli(tmp_path, "restore", backup_id, target)
    assert restored.returncode == 0, restored.stderr.decode(errors="replace")
    with open(target, "rb") as fh:
        assert fh.read() == raw

    # Payloads are valid UTF-8 JSON, undecodable bytes shown as U+FFFD, and match the schema.
    text = (tmp_path / "n.jsonl").read_bytes().decode("utf-8")  # strict: raises on invalid UTF-8
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["event_type"] for e in events if "progress" not in e["event_type"]] == [
        "backup.create.start", "backup.create.end", "backup.restore.start", "backup.restore.end"]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for event in events:
        assert event["payload"]["display_name"] == "nightly \ufffd\ufffd"
        assert not list(validator.iter_errors(event["payload"]))


def test_a_volume_id_that_is_not_a_path_safe_word_still_names_objects(settings: Path,  # noqa: F811
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    volume = settings / "v.img"
    volume.write_bytes(b"z" * 9000)
    assert main(["create", str(volume), "--volume-id", "../../etc/" + "x" * 300, "--notifier", "log://stderr"]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert [p.name for p in (settings / "objects").iterdir()] == [f"backup_{backup_id}"]


@pytest.mark.parametrize(("toml", "message"), [
    ("compression_level = 99", "compression_level for zstd must be 1 to 22, got 99"),
    ('compression = "zlib"\ncompression_level = 10', "compression_level for zlib must be 0 to 9, got 10"),
    ('compression = "zlib"\ncompression_level = -5', "compression_level for zlib must be 0 to 9, got -5"),
    ('compression = "none"\ncompression_level = 3', "does not apply to compression 'none'"),
    ('chunk_size = "1GiB"', "chunk_size must be 4096 bytes (4KiB) to 67108864 bytes (64MiB), got 1073741824"),
    ("chunk_size = 100", "chunk_size must be 4096 bytes"),
    ("workers = 0", "workers must be 1 to 64, got 0"),
    ("uploads = 1000", "uploads must be 1 to 64, got 1000"),
    ("backup_timer_interval = nan", "backup_timer_interval must be > 0"),
    ("backup_timer_interval = inf", "backup_timer_interval must be > 0 and at most 86400"),
    ("backup_object_number_per_notification = 0", "backup_object_number_per_notification must be >= 1"),
    ('host = ""', "host must be a non-empty printable name"),
    ('availability_zone = "az\\n1"', "availability_zone must be a non-empty printable name"),
])
def test_every_setting_is_checked_at_load(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str,
                                          message: str) -> None:
    config = tmp_path / "backup.toml"
    config.write_text(f"[backup]\n{toml}\n")
    with pytest.raises(BackupConfigError) as caught:
        BackupConfig.load(config, env={})
    assert message in str(caught.value)
    # The CLI refuses before doing anything: one line, exit 1, no event emitted.
    volume = tmp_path / "v.img"
    volume.write_bytes(b"x" * 5000)
    log = tmp_path / "n.jsonl"
    assert main(["create", str(volume), "--config", str(config), "--catalog", str(tmp_path / "c.db"),
                 "--store", str(tmp_path / "o"), "--notifier", f"log://{log}"]) == 1
    err = capsys.readouterr().err
    assert err == f"notifykit-backup: error: {caught.value}\n"
    assert not log.exists() and not (tmp_path / "o").exists()


def test_the_library_checks_levels_too() -> None:
    with pytest.raises(BackupConfigError, match="zstd must be 1 to 22"):
        get_compressor("zstd", 99)
    assert get_compressor("zstd", 22).compress(b"a" * 1000)
    assert get_compressor("zlib", 0).compress(b"a") != b"a"
