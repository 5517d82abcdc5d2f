"""``notifykit-backup reset-status ID --state available|error`` (issue 24, reproduction 5),
with Cinder's rules: ``error`` always, ``available`` only after a verify passes or from
``restoring``; any other state refused with one line; ``backup.reset_status.start``/``.end``
with the usage payload; the reset recorded in the catalog (who: user and host; when; from
which status) on both catalog backends, whose schemas gain the columns by migration."""

from __future__ import annotations

import getpass
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio
import jsonschema
import pytest

from notifykit.backup import InvalidStatusTransitionError
from notifykit.backup._catalog import BackupRecord, BackupStatus
from notifykit.backup._liveness import current_process
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._postgres import _MIGRATIONS as PG_MIGRATIONS
from notifykit.backup._postgres import PG_SCHEMA_VERSION
from notifykit.backup._reset import reset_status
from notifykit.backup._sqlite import SCHEMA_VERSION, SQLiteCatalog
from notifykit.backup.cli import main

from .catalogs import CatalogBackend
from .helpers import CTX, backup_env, write_volume

DOCS = Path(__file__).resolve().parents[2] / "docs"
VALIDATOR = jsonschema.Draft202012Validator(
    json.loads((DOCS / "schemas" / "backup-payload.schema.json").read_text(encoding="utf-8")))
HOST = "reset-host"


def record(backup_id: str, status: BackupStatus = BackupStatus.CREATING, **extra: object) -> BackupRecord:
    return BackupRecord(id=backup_id, project_id="p1", user_id="u1", availability_zone="nova", host="h1",
                        display_name=None, volume_id="v1", volume_path="/dev/null", service="backup.drivers.posix",
                        status=status, **extra)  # type: ignore[arg-type]


# -- the catalog: a forced, recorded, compare-and-set change on both backends ---------------

@pytest.mark.asyncio
async def test_a_reset_is_recorded_with_who_from_what_and_when(backend: CatalogBackend) -> None:
    before = datetime.now(UTC)
    async with backend.open() as catalog:
        added = await catalog.add(record("b1", worker_host="h1", worker_pid=12345, worker_token="t"))
        reset = await catalog.reset_status("b1", BackupStatus.ERROR, expect=added, user="alice", host="hostb",
                                           fail_reason="status reset from creating to error by alice on hostb")
    async with backend.open() as catalog:  # another process sees it
        again = await catalog.get("b1")
    assert again == reset
    assert (again.status, again.reset_from, again.reset_user, again.reset_host) == (
        BackupStatus.ERROR, "creating", "alice", "hostb")
    assert again.reset_at is not None and again.reset_at >= before
    assert (again.worker_host, again.worker_pid, again.worker_token) == (None, None, None)
    assert again.fail_reason == "status reset from creating to error by alice on hostb"


@pytest.mark.asyncio
async def test_a_reset_may_leave_any_status_but_deleted_for_available_or_error_only(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
        deleting = await catalog.add(record("d1", BackupStatus.DELETING))
        back = await catalog.reset_status("d1", BackupStatus.AVAILABLE, expect=deleting, user="u", host="h",
                                          fail_reason=None)
        assert back.status is BackupStatus.AVAILABLE and back.reset_from == "deleting"
        with pytest.raises(InvalidStatusTransitionError, match="available or error, not deleting"):
            await catalog.reset_status("d1", BackupStatus.DELETING, expect=back, user="u", host="h", fail_reason=None)
        gone = await catalog.add(record("g1", BackupStatus.DELETED))
        with pytest.raises(InvalidStatusTransitionError, match="is deleted"):
            await catalog.reset_status("g1", BackupStatus.ERROR, expect=gone, user="u", host="h", fail_reason=None)
        assert (await catalog.get("g1")).status is BackupStatus.DELETED


@pytest.mark.asyncio
async def test_a_reset_is_refused_when_the_record_changed_since_it_was_read(backend: CatalogBackend) -> None:
    async with backend.open() as catalog:
        read = await catalog.add(record("r1", BackupStatus.AVAILABLE))
        await catalog.transition("r1", BackupStatus.RESTORING, worker_host="other", worker_pid=1, worker_token="x")
        with pytest.raises(InvalidStatusTransitionError, match="another operation changed it"):
            await catalog.reset_status("r1", BackupStatus.ERROR, expect=read, user="u", host="h", fail_reason=None)
        assert (await catalog.get("r1")).status is BackupStatus.RESTORING


@pytest.mark.asyncio
async def test_an_older_sqlite_catalog_gains_the_reset_columns(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite3"
    async with SQLiteCatalog(path) as catalog:
        await catalog.add(record("old", BackupStatus.AVAILABLE))
    with sqlite3.connect(path) as conn:  # back to version 3: the reset columns did not exist
        for column in ("reset_from", "reset_user", "reset_host", "reset_at"):
            conn.execute(f"ALTER TABLE backups DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 3")
    async with SQLiteCatalog(path) as catalog:
        old = await catalog.get("old")
        assert (old.reset_from, old.reset_at) == (None, None)
        reset = await catalog.reset_status("old", BackupStatus.ERROR, expect=old, user="u", host="h", fail_reason=None)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert reset.reset_from == "available"


@pytest.mark.asyncio
@pytest.mark.broker
async def test_an_older_postgresql_catalog_gains_the_reset_columns(postgres_url: str) -> None:
    backend = CatalogBackend("postgresql", postgres_url)
    for statement in PG_MIGRATIONS[0][1]:  # the schema as version 1 created it
        backend.execute(statement)
    backend.execute("CREATE TABLE notifykit_schema (version INTEGER NOT NULL)")
    backend.execute("INSERT INTO notifykit_schema VALUES (1)")
    backend.execute("INSERT INTO backups (id, project_id, user_id, availability_zone, host, volume_id, volume_path,"
                    " service, status, size_bytes, object_count, num_dependent_backups, created_at, updated_at)"
                    " VALUES ('old', 'p', 'u', 'nova', 'h', 'v', '/dev/null', 'backup.drivers.posix', 'available',"
                    " 1, 1, 0, now(), now())")
    for _ in range(2):  # the second open finds it current
        async with backend.open() as catalog:
            old = await catalog.get("old")
    assert backend.execute("SELECT version FROM notifykit_schema ORDER BY version") == [(1,), (PG_SCHEMA_VERSION,)]
    async with backend.open() as catalog:
        reset = await catalog.reset_status("old", BackupStatus.ERROR, expect=old, user="u", host="h", fail_reason=None)
        assert await catalog.get("old") == reset and reset.reset_from == "available"


# -- the service and the command --------------------------------------------------------------

@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("CONFIG", "CATALOG_PATH", "STORE", "NOTIFIER_URL", "NOTIFIER_CONFIG"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CATALOG_PATH", str(tmp_path / "catalog.sqlite3"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_STORE", f"file://{tmp_path / 'objects'}?fsync=false")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_NOTIFIER_URL", f"log://{tmp_path / 'n.jsonl'}")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_DEAD_LETTER_PATH", str(tmp_path / "dl.jsonl"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CHUNK_SIZE", "16KiB")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_HOST", HOST)
    return tmp_path


def created(settings: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["create", str(write_volume(settings / "vol.img", 100_000))]) == 0
    return capsys.readouterr().out.strip()


def shown(backup_id: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["show", backup_id, "--json"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def events(settings: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (settings / "n.jsonl").read_text().splitlines()]


def resets(settings: Path) -> list[dict[str, object]]:
    return [e for e in events(settings) if str(e["event_type"]).startswith("backup.reset_status")]


def errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("verify: ")]


def first_chunk(settings: Path, backup_id: str) -> Path:
    [container] = [p for p in (settings / "objects").iterdir() if backup_id in p.name]
    return min((p for p in container.rglob("*") if p.is_file() and p.name[-5:].isdigit()), key=lambda p: p.name)


async def working(settings: Path, backup_id: str, status: BackupStatus, pid: int, token: str) -> None:
    """Put the backup in a working status run by (pid, token) on HOST, as a command would."""
    async with SQLiteCatalog(settings / "catalog.sqlite3") as catalog:
        await catalog.transition(backup_id, status, worker_host=HOST, worker_pid=pid, worker_token=token,
                                 restore_target=str(settings / "target.img") if status is BackupStatus.RESTORING
                                 else None)


def test_error_is_always_allowed_and_recorded_with_who_and_when(settings: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = created(settings, capsys)
    assert main(["reset-status", backup_id, "--state", "error"]) == 0
    assert capsys.readouterr().out == f"{backup_id}: status reset from available to error\n"
    record = shown(backup_id, capsys)
    assert (record["status"], record["reset_from"], record["reset_user"], record["reset_host"]) == (
        "error", "available", getpass.getuser(), HOST)
    assert record["reset_at"] and record["fail_reason"] == \
        f"status reset from available to error by {getpass.getuser()} on {HOST}"
    start, end = resets(settings)
    assert (start["event_type"], end["event_type"]) == ("backup.reset_status.start", "backup.reset_status.end")
    assert (start["priority"], end["priority"]) == ("info", "info")
    assert start["publisher_id"] == f"backup.{HOST}"
    start_payload, end_payload = dict(start["payload"]), dict(end["payload"])  # type: ignore[call-overload]
    assert (start_payload["status"], end_payload["status"]) == ("available", "error")
    assert end_payload["backup_id"] == backup_id and end_payload["size_bytes"] == 100_000
    for payload in (start_payload, end_payload):
        assert not list(VALIDATOR.iter_errors(payload))


def test_available_only_after_a_verify_passes(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = created(settings, capsys)
    assert main(["reset-status", backup_id, "--state", "error"]) == 0
    chunk = first_chunk(settings, backup_id)
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    capsys.readouterr()
    assert main(["reset-status", backup_id, "--state", "available"]) == 1
    [line] = errors(capsys)
    assert line.startswith("notifykit-backup: error: object ") and chunk.name in line and "corrupt" in line, line
    assert shown(backup_id, capsys)["status"] == "error"  # unchanged
    kinds = [e["event_type"] for e in resets(settings)]
    assert kinds[-2:] == ["backup.reset_status.start", "backup.reset_status.error"]
    failed = resets(settings)[-1]
    assert failed["priority"] == "error" and "not reset to available" in str(dict(failed["payload"])["fail_reason"])  # type: ignore[call-overload]
    chunk.write_bytes(good)  # repaired: now the verify passes
    assert main(["reset-status", backup_id, "--state", "available"]) == 0
    assert capsys.readouterr().out == f"{backup_id}: status reset from error to available\n"
    record = shown(backup_id, capsys)
    assert (record["status"], record["reset_from"], record["fail_reason"]) == ("available", "error", None)
    assert main(["restore", backup_id, str(settings / "out.img")]) == 0
    assert (settings / "out.img").read_bytes() == (settings / "vol.img").read_bytes()


def test_available_from_restoring_needs_no_verify(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A restore only reads: a backup left restoring by a dead process is available again
    (Cinder's rule), even with its objects unreadable from here."""
    backup_id = created(settings, capsys)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=30)
    anyio.run(working, settings, backup_id, BackupStatus.RESTORING, int(dead.stdout), "gone")
    first_chunk(settings, backup_id).unlink()  # a verify would fail
    assert main(["reset-status", backup_id, "--state", "available"]) == 0
    assert capsys.readouterr().out == f"{backup_id}: status reset from restoring to available\n"
    record = shown(backup_id, capsys)
    assert (record["status"], record["reset_from"], record["worker_pid"], record["restore_target"]) == (
        "available", "restoring", None, None)


def test_an_operation_still_running_on_this_host_is_not_reset(settings: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = created(settings, capsys)
    pid, token = current_process()  # this test's process: alive
    anyio.run(working, settings, backup_id, BackupStatus.RESTORING, pid, token)
    capsys.readouterr()
    assert main(["reset-status", backup_id, "--state", "error"]) == 1
    [line] = errors(capsys)
    assert f"process {pid} on this host ({HOST}) is still running" in line, line
    assert shown(backup_id, capsys)["status"] == "restoring"
    assert [e["event_type"] for e in resets(settings)] == ["backup.reset_status.error"]


def test_other_states_are_refused_with_one_line(settings: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup_id = created(settings, capsys)
    for state in ("deleting", "restoring", "deleted"):
        assert main(["reset-status", backup_id, "--state", state]) == 2
        [line] = errors(capsys)
        assert line.startswith("notifykit-backup: error: reset-status: argument --state: invalid choice:"), line
    assert main(["reset-status", "no-such-backup", "--state", "error"]) == 1
    [line] = errors(capsys)
    assert line == "notifykit-backup: error: backup 'no-such-backup' not found"
    assert main(["delete", backup_id]) == 0
    capsys.readouterr()
    assert main(["reset-status", backup_id, "--state", "error"]) == 1
    [line] = errors(capsys)
    assert "is deleted: its objects are gone" in line, line
    assert shown(backup_id, capsys)["status"] == "deleted"
    assert [e["event_type"] for e in resets(settings)] == ["backup.reset_status.error"] * 2


@pytest.mark.asyncio
async def test_the_api_refuses_other_states_and_emits_nothing_else(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        made = await env.service.create_backup(env.volume(10_000), ctx=CTX)
        with pytest.raises(InvalidStatusTransitionError, match="a reset sets available or error, not 'deleting'"):
            await reset_status(env.service, made.id, "deleting", ctx=CTX)
        reset = await reset_status(env.service, made.id, "error", ctx=CTX)
        assert (reset.reset_user, reset.reset_host) == ("user-1", env.service.host)  # the context's user by default
        assert await env.catalog.get(made.id) == reset
    kinds = [n.event_type for n in env.memory.messages if "reset_status" in n.event_type]
    assert kinds == ["backup.reset_status.error", "backup.reset_status.start", "backup.reset_status.end"]


class SlowReads(PosixObjectStore):
    """A posix store whose data-object reads wait for ``gate`` once ``block`` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.block = False
        self.reading = anyio.Event()
        self.gate = anyio.Event()

    async def get_object(self, container: str, name: str) -> bytes:
        if self.block and name[-5:].isdigit():
            self.reading.set()
            await self.gate.wait()
        return await super().get_object(container, name)


@pytest.mark.asyncio
async def test_a_verify_cancelled_midway_changes_nothing_and_reports_the_error(tmp_path: Path) -> None:
    store = SlowReads(tmp_path / "store")
    async with backup_env(tmp_path, store=store) as env:
        made = await env.service.create_backup(env.volume(20_000), ctx=CTX)
        before = await reset_status(env.service, made.id, "error", ctx=CTX)
        store.block = True
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: reset_status(env.service, made.id, "available", ctx=CTX))
                await store.reading.wait()
                tg.cancel_scope.cancel()
        assert await env.catalog.get(made.id) == before  # still error, the first reset's record
    last = env.memory.messages[-2:]
    assert [n.event_type for n in last] == ["backup.reset_status.start", "backup.reset_status.error"]
    assert last[1].payload["fail_reason"] == "not reset to available: cancelled before completion"
    assert last[1].payload["status"] == "error"


def test_the_reset_events_are_in_the_catalogue_of_docs_backup_md() -> None:
    section = (DOCS / "backup.md").read_text(encoding="utf-8").split("## Notification catalogue", 1)[1]
    table = section.split("\n### ", 1)[0]
    for kind, priority in (("start", "INFO"), ("end", "INFO"), ("error", "ERROR")):
        assert f"| `backup.reset_status.{kind}` | {priority} |" in table

