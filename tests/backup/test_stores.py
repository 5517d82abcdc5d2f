"""Object stores picked by URL through the ``notifykit.backup.stores`` entry points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from notifykit.backup import (
    BackupConfig,
    BackupConfigError,
    PosixObjectStore,
    UnknownStoreError,
    build_driver,
    installed_stores,
    store_from_url,
)
from notifykit.backup.cli import main

from .helpers import write_volume


def test_project_stores_are_registered() -> None:
    assert {"file", "swift", "swift+http", "swift+https"} <= set(installed_stores())


def test_plain_path_and_file_url_are_the_posix_store(tmp_path: Path) -> None:
    plain = store_from_url(str(tmp_path / "a"))
    url = store_from_url(f"file://{tmp_path / 'b'}?fsync=false")
    assert isinstance(plain, PosixObjectStore) and plain.fsync and plain.root == tmp_path / "a"
    assert isinstance(url, PosixObjectStore) and not url.fsync and url.root == tmp_path / "b"
    assert url.location == str(tmp_path / "b") and build_driver(BackupConfig(store=str(tmp_path))).uploads == 2
    with pytest.raises(BackupConfigError, match="not host 'elsewhere'"):
        store_from_url("file://elsewhere/srv/backups")


def test_unknown_scheme_is_one_error_naming_the_installed_stores(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction: a store URL of a scheme nobody registered used to become a relative
    posix directory, named after the URL and its secret key."""
    monkeypatch.chdir(tmp_path)
    volume = write_volume(tmp_path / "vol.img", 10_000)
    url = "nosuchstore+http://ACCESS:SECRETKEY@127.0.0.1:9/bucket"
    code = main(["create", str(volume), "--store", url, "--catalog", str(tmp_path / "c.sqlite3"),
                 "--notifier", f"log://{tmp_path / 'n.jsonl'}"])
    err = capsys.readouterr().err
    assert code == 1
    assert "unknown object store scheme 'nosuchstore+http'" in err
    assert "installed stores are file, " in err and "swift" in err
    assert "SECRETKEY" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.img"]  # nothing written, no catalog either
    with pytest.raises(UnknownStoreError):
        BackupConfig(store=url)


def write_store_plugin(root: Path) -> None:
    """A third-party store 'installed' the way pip lays one out: a module plus its dist-info."""
    (root / "dict_store.py").write_text(textwrap.dedent("""
        from notifykit.backup import ObjectNotFoundError, StoreSettings

        class DictStore:
            name = "dict"
            default_uploads = 3

            def __init__(self, bucket, greeting):
                self.bucket, self.greeting = bucket, greeting
                self.objects, self.events = {}, []

            @classmethod
            def from_settings(cls, settings: StoreSettings) -> "DictStore":
                greeting = settings.take_str("greeting", "hello")
                settings.finish()
                return cls(settings.host, greeting)

            @property
            def location(self):
                return f"dict://{self.bucket}"

            async def open(self):
                self.events.append("open")

            async def aclose(self):
                self.events.append("aclose")

            async def create_container(self, container):
                self.objects.setdefault(container, {})

            async def delete_container(self, container):
                if self.objects.pop(container, None) is None:
                    raise ObjectNotFoundError(container)

            async def put_object(self, container, name, data):
                self.objects[container][name] = bytes(data)

            async def get_object(self, container, name):
                try:
                    return self.objects[container][name]
                except KeyError:
                    raise ObjectNotFoundError(f"{container}/{name}") from None

            async def delete_object(self, container, name):
                self.objects[container].pop(name, None)

            async def list_objects(self, container):
                if container not in self.objects:
                    raise ObjectNotFoundError(container)
                return sorted(self.objects[container])

            async def sync_container(self, container):
                pass
    """))
    info = root / "dict_store-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dict-store\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[notifykit.backup.stores]\ndict = dict_store:DictStore\n")


def test_third_party_store_installed_by_entry_point_takes_a_round_trip(tmp_path: Path) -> None:
    write_store_plugin(tmp_path)
    write_volume(tmp_path / "vol.img", 50_000)
    code = f"""
        import anyio, sys
        from pathlib import Path
        from notifykit.backup import BackupConfig, BackupConfigError, installed_stores, open_backup_service
        from notifykit import Notifier

        root = Path({str(tmp_path)!r})
        assert "dict" in installed_stores()
        try:
            BackupConfig(store="dict://b1?colour=red")
        except BackupConfigError as exc:
            print("error:", exc)

        async def main():
            config = BackupConfig(store="dict://b1?greeting=hi", catalog_path=root / "c.sqlite3", chunk_size=16384,
                                  dead_letter_path=root / "dl.jsonl")
            async with Notifier.from_url("memory://", publisher_id="backup.t") as notifier:
                async with open_backup_service(config, notifier) as service:
                    store = service.driver.store
                    record = await service.create_backup(root / "vol.img")
                    objects = sum(len(v) for v in store.objects.values())
                    await service.restore_backup(record.id, root / "out.img")
                    await service.delete_backup(record.id)
                    print(type(store).__name__, store.greeting, record.service, objects, service.driver.uploads,
                          store.objects)
            print(store.events, (root / "out.img").read_bytes() == (root / "vol.img").read_bytes())

        anyio.run(main)
    """
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "error: dict store: unknown option(s) 'colour' (allowed: greeting)"
    assert lines[1] == "DictStore hi backup.drivers.dict 6 3 {}"  # 4 chunks + block list + metadata, then all deleted
    assert lines[2] == "['open', 'aclose'] True"
