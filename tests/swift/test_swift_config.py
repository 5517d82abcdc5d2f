"""Selecting and configuring the Swift store by configuration alone (no Swift server needed),
and ``notifykit-backup --store swift://…`` end to end against the session's Swift."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupConfig, BackupConfigError
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._setup import build_driver
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions
from notifykit.backup.cli import main

from ..backup.helpers import write_volume

URL = "swift://test%3Atester:s3cret-key@127.0.0.1:8080/auth/v1.0"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("NOTIFYKIT_BACKUP_"):
            monkeypatch.delenv(name)


def test_store_url_selects_swift_and_keeps_the_key_out_of_reprs() -> None:
    config = BackupConfig.load(store=URL + "?container=backups&retry_attempts=5")
    driver = build_driver(config)
    assert isinstance(driver, ChunkedBackupDriver) and isinstance(driver.store, SwiftObjectStore)
    options = driver.store.options
    assert (options.auth_url, options.user, options.key) == ("http://127.0.0.1:8080/auth/v1.0", "test:tester",
                                                              "s3cret-key")
    assert options.container == "backups" and options.retry.attempts == 5 and options.auth_version == "1"
    assert driver.service == "backup.drivers.swift" and driver.uploads == 4
    assert driver.store.location == "http://127.0.0.1:8080/auth/v1.0?user=test%3Atester&container=backups"
    for text in (repr(config), repr(options), repr(driver), repr(driver.store), config.store_location):
        assert "s3cret-key" not in text


def test_toml_store_options_and_environment_select_swift(tmp_path: Path) -> None:
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\nstore = "swift+https://proxy.example:8080/auth/v1.0"\nuploads = 8\n'
                    '[backup.store_options]\nuser = "acct:backup"\nkey = "from-toml"\ncontainer = "cinder-backups"\n'
                    'retry_attempts = 4\n')
    config = BackupConfig.load(toml, env={})
    driver = build_driver(config)
    assert isinstance(driver.store, SwiftObjectStore)
    options = driver.store.options
    assert (options.auth_url, options.user, options.key) == ("https://proxy.example:8080/auth/v1.0", "acct:backup",
                                                              "from-toml")
    assert options.container == "cinder-backups" and options.retry.attempts == 4
    assert driver.uploads == 8
    assert "from-toml" not in repr(config)
    # the environment, then an explicit directory on the command line, go back to posix
    with pytest.raises(BackupConfigError, match=r"file store: unknown option\(s\) 'container', 'key'") as raised:
        # the TOML's swift options do not fit the file store: said, not ignored
        BackupConfig.load(toml, env={"NOTIFYKIT_BACKUP_STORE": str(tmp_path / "env-objects")})
    assert "from-toml" not in str(raised.value)
    posix = BackupConfig.load(env={}, store=str(tmp_path / "objects"))
    assert isinstance(build_driver(posix).store, PosixObjectStore)


def test_keystone_v3_options() -> None:
    options = SwiftOptions.from_url("swift+https://alice:pw@keystone.example:5000/v3",
                                    {"project": "backups", "region": "RegionTwo"})
    assert options.auth_version == "3" and options.auth_url == "https://keystone.example:5000/v3"
    keystone = options.keystone
    assert keystone is not None and keystone.method == "password"
    assert (keystone.username, keystone.project_name, keystone.project_domain_name, keystone.user_domain_name,
            keystone.region_name) == ("alice", "backups", "Default", "Default", "RegionTwo")
    assert "pw" not in repr(options)


@pytest.mark.parametrize(("settings", "message"), [
    ({"store": "swift://127.0.0.1:8080/auth/v1.0"}, "needs a user and a key"),
    ({"store": URL + "?colour=blue"}, r"swift store: unknown option\(s\) 'colour' \(allowed: application_credential_id, "),
    ({"store": URL + "?auth_version=2"}, "auth_version must be 1"),
    ({"store": "swift://u:k@keystone:5000/v3"}, "password auth needs a project"),
    ({"store": URL, "store_options": {"container": "no/slash"}}, "invalid container name"),
    ({"store": URL, "store_options": {"retry_attempts": "0"}}, "retry_attempts must be >= 1"),
    ({"store": URL, "store_options": {"timeout": "soon"}}, "timeout must be a number"),
    ({"store": URL, "uploads": "0"}, "uploads must be 1 to 64"),
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
