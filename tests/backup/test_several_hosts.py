"""Several backup hosts on one catalog (issue 17): the catalog URL, per-host recover, and
two hosts never both deleting, restoring or recovering the same backup. On both backends,
PostgreSQL being the one several machines share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.backup import BackupRecord, BackupService, BackupStatus, InvalidStatusTransitionError, ProgressPolicy
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._postgres import PostgresCatalog
from notifykit.backup.cli import main
from notifykit.backup.plugin import BackupCatalog
from notifykit.transports.memory import MemoryTransport

from .catalogs import CatalogBackend
from .helpers import write_volume
from .test_cli import lines


@asynccontextmanager
async def host(backend: CatalogBackend, root: Path, name: str) -> AsyncIterator[tuple[BackupService, MemoryTransport]]:
    """One backup host: its own catalog connection and notifier, the shared object store."""
    notifier = Notifier.from_url("memory://", publisher_id=f"backup.{name}", dead_letters=root / f"dl-{name}.jsonl")
    memory = notifier.transports["memory"]
    assert isinstance(memory, MemoryTransport)
    driver = ChunkedBackupDriver(PosixObjectStore(root / "store", fsync=False), chunk_size=4096, compression="none",
                                 workers=2, uploads=2)
    catalog: BackupCatalog = backend.open()
    async with notifier, catalog:
        yield BackupService(catalog, driver, notifier, host=name, availability_zone="az",
                            progress=ProgressPolicy(backup_enable_progress_timer=False)), memory


def dead_pid() -> int:
    """The pid of a process that has exited (so no process runs it)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


@pytest.mark.asyncio
async def test_two_hosts_deleting_the_same_backup_one_deletes_the_other_is_refused(
        backend: CatalogBackend, tmp_path: Path) -> None:
    volume = write_volume(tmp_path / "vol.img", 20_000)
    async with host(backend, tmp_path, "bk1") as (one, one_events), host(backend, tmp_path, "bk2") as (two, two_events):
        made = await one.create_backup(volume, name="shared")
        outcomes: dict[str, BaseException | BackupRecord] = {}

        async def delete(service: BackupService) -> None:
            try:
                outcomes[service.host] = await service.delete_backup(made.id)
            except InvalidStatusTransitionError as exc:
                outcomes[service.host] = exc

        async with anyio.create_task_group() as tg:
            tg.start_soon(delete, one)
            tg.start_soon(delete, two)
        assert (await two.show(made.id)).status is BackupStatus.DELETED
    refused = [h for h, o in outcomes.items() if isinstance(o, InvalidStatusTransitionError)]
    deleted = [h for h, o in outcomes.items() if isinstance(o, BackupRecord)]
    assert len(refused) == 1 and len(deleted) == 1, outcomes
    ends = [n for n in [*one_events.messages, *two_events.messages] if n.event_type == "backup.delete.end"]
    assert len(ends) == 1 and ends[0].publisher_id == f"backup.{deleted[0]}"


@pytest.mark.asyncio
async def test_recover_touches_only_its_own_hosts_dead_operations(backend: CatalogBackend, tmp_path: Path) -> None:
    """bk2 restores a backup bk1 made, and dies; bk1's recover leaves it alone (bk1 cannot tell
    whether a process on bk2 runs), bk2's recover fails it. A live operation is never touched."""
    volume = write_volume(tmp_path / "vol.img", 20_000)
    async with host(backend, tmp_path, "bk1") as (one, one_events), host(backend, tmp_path, "bk2") as (two, _):
        dead = await one.create_backup(volume, name="restored by bk2, which died")
        live = await one.create_backup(volume, name="being deleted by bk1, alive")
        await two.catalog.transition(dead.id, BackupStatus.RESTORING, worker_host="bk2", worker_pid=dead_pid(),
                                     worker_token="gone/1")
        me = os.getpid()
        token = (await one.catalog.transition(live.id, BackupStatus.DELETING, worker_host="bk1", worker_pid=me,
                                              worker_token=None)).worker_token
        assert token is None  # no token: a live pid counts as alive
        assert await one.recover_interrupted() == []
        assert (await one.show(dead.id)).status is BackupStatus.RESTORING
        [recovered] = await two.recover_interrupted()
        assert (recovered.id, recovered.status) == (dead.id, BackupStatus.ERROR_RESTORING)
        assert recovered.worker_host is None and "interrupted" in (recovered.fail_reason or "")
        assert await two.recover_interrupted() == []
        assert (await one.show(live.id)).status is BackupStatus.DELETING
    assert "backup.restore.error" not in [n.event_type for n in one_events.messages]


def test_catalog_postgresql_url_is_the_database_not_a_directory(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction 1: ``--catalog postgresql://…`` was taken as a relative SQLite path and made
    the directories ``postgresql:/postgres@127.0.0.1:5432/`` in the current directory."""
    for key in ("CONFIG", "CATALOG_PATH", "CATALOG_URL", "NOTIFIER_URL"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_STORE", f"file://{tmp_path / 'objects'}?fsync=false")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    volume = write_volume(tmp_path / "vol.img", 30_000)
    log = tmp_path / "n.jsonl"
    common = ["--catalog", postgres_url, "--chunk-size", "16KiB", "--notifier", f"log://{log}"]
    assert main(["create", str(volume), "--name", "on postgres", "--host", "bk1", *common]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert list(work.iterdir()) == []  # nothing made here: the catalog is the database

    async def listed() -> list[BackupRecord]:
        async with PostgresCatalog(postgres_url) as catalog:
            return await catalog.list()

    [stored] = anyio.run(listed)
    assert (stored.id, stored.host, stored.status) == (backup_id, "bk1", BackupStatus.AVAILABLE)
    # another host sees it, and shows who made it
    assert main(["list", "--host", "bk2", *common]) == 0
    table = capsys.readouterr().out
    assert "host" in table.splitlines()[0] and backup_id in table and " bk1 " in table
    assert main(["show", backup_id, "--host", "bk2", "--json", *common]) == 0
    assert json.loads(capsys.readouterr().out)["host"] == "bk1"
    assert main(["restore", backup_id, str(tmp_path / "out.img"), "--host", "bk2", *common]) == 0
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    publishers = {e["event_type"]: e["publisher_id"] for e in lines(log)}
    assert (publishers["backup.create.end"], publishers["backup.restore.end"]) == ("backup.bk1", "backup.bk2")
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("catalog", ["mysql://backup:pw-123@db/backups", "sqlite:///srv/c.db", "redis://h:6379/0"])
def test_another_catalog_scheme_is_one_clear_error(catalog: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--catalog", catalog, "--notifier", "log://stderr"]) == 1
    err = capsys.readouterr().err
    scheme = catalog.split("://")[0]
    assert err == (f"notifykit-backup: error: catalog {scheme}://…: unsupported kind of catalog; give a file path"
                   " (SQLite) or a postgresql:// URL\n")
    assert list(tmp_path.iterdir()) == []
