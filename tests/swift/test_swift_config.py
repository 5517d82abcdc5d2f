"""Selecting and configuring the Swift store by configuration alone (no Swift server needed),
and ``notifykit-backup --store swift://…`` end to end against the session's Swift."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from backup import BackupConfig, BackupConfigError, ChunkedBackupDriver, PosixObjectStore, SwiftObjectStore, build_driver
from backup.cli import main

from ..backup.helpers import write_volume

URL = "swift://test%3Atester:s3cret-key@127.0.0.1:8080/auth/v1.0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTIFYKIT_BACKUP_"):
            monkeypatch.delenv(name)


def test_store_url_selects_swift_and_keeps_the_key_out_of_reprs() -> None:
    config = BackupConfig.load(store_path=URL + "?container=backups&retry_attempts=5")
    options = config.swift_options()
    assert config.object_store == "swift"
    assert (options.auth_url, options.user, options.key) == ("http://127.0.0.1:8080/auth/v1.0", "test:tester",
                                                              "s3cret-key")
    assert options.container == "backups" and options.retry.attempts == 5 and options.auth_version == "1"
    driver = build_driver(config)
    assert isinstance(driver, ChunkedBackupDriver) and isinstance(driver.store, SwiftObjectStore)
    assert driver.service == "backup.drivers.swift" and driver.uploads == 4
    for text in (repr(config), repr(options), repr(driver), repr(driver.store)):
        assert "s3cret-key" not in text


def test_toml_and_environment_select_swift(tmp_path: Path) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\nobject_store = "swift"\nswift_url = "swift+https://proxy.example:8080/auth/v1.0"\n'
                    'swift_user = "acct:backup"\nswift_container = "cinder-backups"\nuploads = 8\n')
    config = BackupConfig.load(toml, env={"NOTIFYKIT_BACKUP_SWIFT_KEY": "from-env"})
    options = config.swift_options()
    assert (options.auth_url, options.user, options.key) == ("https://proxy.example:8080/auth/v1.0", "acct:backup",
                                                              "from-env")
    assert build_driver(config).uploads == 8
    # an explicit directory on the command line goes back to posix
    posix = BackupConfig.load(toml, env={"NOTIFYKIT_BACKUP_SWIFT_KEY": "k"}, store_path=str(tmp_path / "objects"))
    assert posix.object_store == "posix" and isinstance(build_driver(posix).store, PosixObjectStore)


def test_keystone_v3_options() -> None:
    config = BackupConfig.load(object_store="swift", swift_url="swift+https://alice:pw@keystone.example:5000/v3",
                               swift_project="backups", swift_region="RegionTwo")
    options = config.swift_options()
    assert options.auth_version == "3" and options.auth_url == "https://keystone.example:5000/v3"
    assert (options.project, options.project_domain, options.user_domain, options.region) == (
        "backups", "Default", "Default", "RegionTwo")


@pytest.mark.parametrize(("settings", "message"), [
    ({"object_store": "swift"}, "needs swift_url"),
    ({"object_store": "s3"}, "object_store must be one of posix, swift"),
    ({"store_path": "swift://127.0.0.1:8080/auth/v1.0"}, "needs a user and a key"),
    ({"store_path": URL + "?colour=blue"}, "unknown option 'colour'"),
    ({"store_path": URL + "?auth_version=2"}, "swift_auth_version must be 1"),
    ({"store_path": "swift://u:k@keystone:5000/v3"}, "needs swift_project"),
    ({"store_path": URL, "swift_container": "no/slash"}, "invalid container name"),
    ({"store_path": URL, "swift_retry_attempts": "0"}, "swift_retry_attempts must be >= 1"),
    ({"store_path": URL, "uploads": "0"}, "uploads must be 1 to 64"),
])
def test_bad_swift_settings_are_one_clear_error_without_the_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(BackupConfigError, match=message) as raised:
        BackupConfig.load(**settings)
    assert "s3cret-key" not in str(raised.value)


def test_cli_create_restore_delete_with_store_swift_url(tmp_path: Path, swift_aio: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    volume = write_volume(tmp_path / "vol.img", 70_000)
    log = tmp_path / "notifications.jsonl"
    common = ["--store", swift_aio.info()["store_url"], "--catalog", str(tmp_path / "catalog.sqlite3"),
              "--chunk-size", "16KiB", "--notifier", f"log://{log}", "--host", "cli-host"]
    assert main(["create", str(volume), *common]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert main(["show", backup_id, "--json", *common]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert main(["restore", backup_id, str(tmp_path / "out.img"), *common]) == 0
    assert main(["delete", backup_id, *common]) == 0
    assert shown["status"] == "available" and shown["service"] == "backup.drivers.swift"
    assert shown["object_count"] == 5
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    events = [json.loads(line)["event_type"] for line in log.read_text().splitlines()]
    assert events[-2:] == ["backup.delete.start", "backup.delete.end"] and "backup.restore.end" in events
    assert swift_aio.info()["key"] not in log.read_text()
