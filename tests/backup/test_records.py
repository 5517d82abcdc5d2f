"""``notifykit-backup export-record ID`` / ``import-record SERVICE URL`` (issue 24,
reproduction 5): Cinder's ``backup_service`` + ``backup_url`` (base64 of the record's JSON, no
secrets), registered in another catalog (another host; SQLite or PostgreSQL), verified and
``available``; an incremental without its parent, a second import of the same record, and a
store without the objects are refused, each without creating anything."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from notifykit.backup.cli import main

from .catalogs import postgres_database
from .helpers import write_volume


@dataclass
class Host:
    """One backup host: its catalog, its --host, the store it names (the same objects)."""

    name: str
    catalog: str
    store: str

    def args(self, *extra: str) -> list[str]:
        return [*extra, "--catalog", self.catalog, "--store", self.store, "--host", self.name]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in ("CONFIG", "CATALOG_PATH", "STORE", "NOTIFIER_URL", "NOTIFIER_CONFIG", "HOST"):
        monkeypatch.delenv(f"NOTIFYKIT_BACKUP_{key}", raising=False)
    monkeypatch.setenv("NOTIFYKIT_BACKUP_NOTIFIER_URL", f"log://{tmp_path / 'n.jsonl'}")
    monkeypatch.setenv("NOTIFYKIT_BACKUP_DEAD_LETTER_PATH", str(tmp_path / "dl.jsonl"))
    monkeypatch.setenv("NOTIFYKIT_BACKUP_CHUNK_SIZE", "16KiB")
    return tmp_path


def hosts(root: Path, catalog_b: str | None = None) -> tuple[Host, Host]:
    store = f"file://{root / 'objects'}?fsync=false"
    return (Host("host-a", str(root / "a.sqlite3"), store),
            Host("host-b", catalog_b or str(root / "b.sqlite3"), store))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines()
                                if not line.startswith(("verify: ", "create: ", "restore: "))]


def exported(capsys: pytest.CaptureFixture[str], host: Host, backup_id: str) -> tuple[str, str]:
    code, out, err = run(capsys, *host.args("export-record", backup_id, "--json"))
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"backup_service", "backup_url"}
    return data["backup_service"], data["backup_url"]


def listed(capsys: pytest.CaptureFixture[str], host: Host) -> dict[str, dict[str, object]]:
    code, out, err = run(capsys, *host.args("list", "--json"))
    assert code == 0, err
    return {r["id"]: r for r in json.loads(out)}


@pytest.fixture
def chain(env: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """On host A: a full backup and an incremental one whose first chunk changed."""
    a, _ = hosts(env)
    volume = write_volume(env / "vol.img", 100_000)
    code, full, err = run(capsys, *a.args("create", str(volume)))
    assert code == 0, err
    with volume.open("r+b") as fh:
        fh.write(b"changed" * 100)
    code, incremental, err = run(capsys, *a.args("create", str(volume), "--incremental"))
    assert code == 0, err
    return full.strip(), incremental.strip()


def move_chain(env: Path, capsys: pytest.CaptureFixture[str], chain: tuple[str, str], b: Host) -> None:
    """Export the chain from host A, import it on host B: the incremental alone is refused
    naming its parent; full first, then the incremental; B restores the newest volume."""
    a, _ = hosts(env)
    full, incremental = chain
    (service, full_url), (_, incremental_url) = exported(capsys, a, full), exported(capsys, a, incremental)
    assert service == "backup.drivers.posix"
    code, _, err = run(capsys, *b.args("import-record", service, incremental_url))
    assert code == 1 and len(err) == 1, err
    assert f"its parent backup {full!r} is not in this catalog: import {full} first" in err[0], err
    assert listed(capsys, b) == {}  # nothing was recorded
    code, out, err = run(capsys, *b.args("import-record", service, full_url))
    assert (code, out) == (0, f"imported {full}: available\n"), err
    code, out, err = run(capsys, *b.args("import-record", service, incremental_url))
    assert (code, out) == (0, f"imported {incremental}: available\n"), err
    records = listed(capsys, b)
    assert set(records) == {full, incremental}
    assert {r["status"] for r in records.values()} == {"available"}
    assert {r["host"] for r in records.values()} == {"host-b"}  # the importing host owns them, as in Cinder
    assert records[full]["num_dependent_backups"] == 1 and records[incremental]["parent_id"] == full
    originals = listed(capsys, a)
    for key in ("volume_id", "size_bytes", "object_count", "container", "service_metadata", "created_at"):
        assert records[incremental][key] == originals[incremental][key], key
    code, _, err = run(capsys, *b.args("restore", incremental, str(env / "out.img")))
    assert code == 0, err
    assert (env / "out.img").read_bytes() == (env / "vol.img").read_bytes()
    code, _, err = run(capsys, *b.args("import-record", service, full_url))  # the same record again
    assert code == 1 and len(err) == 1 and f"backup {full!r} is already in this catalog (available, host host-b)" \
        in err[0], err


def test_a_chain_moves_to_another_hosts_sqlite_catalog(env: Path, chain: tuple[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, b = hosts(env)
    move_chain(env, capsys, chain, b)


@pytest.mark.broker
def test_a_chain_moves_to_another_hosts_postgresql_catalog(env: Path, chain: tuple[str, str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with postgres_database() as url:
        _, b = hosts(env, catalog_b=url)
        move_chain(env, capsys, chain, b)


def test_the_record_is_cinders_shape_and_holds_what_a_restore_needs(env: Path, chain: tuple[str, str],
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = hosts(env)
    full, incremental = chain
    code, out, err = run(capsys, *a.args("export-record", incremental))
    assert code == 0, err
    service_line, url_line = out.splitlines()
    assert service_line == "backup_service backup.drivers.posix"
    url = url_line.split()[1]
    record = json.loads(base64.b64decode(url, validate=True))
    assert record["format"] == "notifykit-backup-record" and record["version"] == 1
    assert (record["id"], record["parent_id"], record["service"], record["store_kind"]) == (
        incremental, full, "backup.drivers.posix", "posix")
    assert record["store_location"] == str((env / "objects").resolve())  # no ?fsync=false: options stay out
    assert record["container"] and record["service_metadata"] and record["size_bytes"] == 100_000
    assert len(record["driver_info"]["metadata_sha256"]) == 64
    assert not {"worker_pid", "worker_token", "restore_target", "status", "fail_reason"} & set(record)


def test_a_store_without_the_objects_is_refused_and_nothing_is_created(env: Path, chain: tuple[str, str],
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = hosts(env)
    full, _ = chain
    service, url = exported(capsys, a, full)
    empty = Host("host-c", str(env / "c.sqlite3"), f"file://{env / 'elsewhere'}?fsync=false")
    code, _, err = run(capsys, *empty.args("import-record", service, url))
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"notifykit-backup: error: backup {full} not imported (nothing was recorded): metadata"
                             " object backup_"), err
    assert listed(capsys, empty) == {}
    assert not any((env / "elsewhere").rglob("*"))  # and nothing in the store either


def test_changed_objects_are_refused(env: Path, chain: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = hosts(env)
    full, _ = chain
    service, url = exported(capsys, a, full)
    [container] = [p for p in (env / "objects").iterdir() if full in p.name]
    [metadata] = [p for p in container.rglob("*_metadata")]
    metadata.write_bytes(metadata.read_bytes() + b" ")  # still valid JSON, not the exported object
    code, _, err = run(capsys, *b.args("import-record", service, url))
    assert code == 1 and "is not the one that was exported" in err[0], err
    metadata.write_bytes(metadata.read_bytes()[:-1])
    chunk = min((p for p in container.rglob("*") if p.name[-5:].isdigit()), key=lambda p: p.name)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 1
    chunk.write_bytes(bytes(data))
    code, _, err = run(capsys, *b.args("import-record", service, url))
    assert code == 1 and chunk.name in err[0] and "nothing was recorded" in err[0], err
    assert listed(capsys, b) == {}


@pytest.mark.parametrize(("service", "url", "says"), [
    ("backup.drivers.posix", "not base64!", "backup_url is not a record from notifykit-backup export-record"),
    ("backup.drivers.posix", base64.b64encode(b'{"format": "x"}').decode(), 'no "format": "notifykit-backup-record"'),
    ("backup.drivers.posix", base64.b64encode(b'{"format": "notifykit-backup-record", "version": 9}').decode(),
     "record version 9; this notifykit reads version 1"),
])
def test_a_bad_url_is_one_line(env: Path, service: str, url: str, says: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    _, b = hosts(env)
    code, _, err = run(capsys, *b.args("import-record", service, url))
    assert code == 1 and len(err) == 1 and says in err[0], err


def test_a_wrong_service_or_a_changed_field_is_refused(env: Path, chain: tuple[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = hosts(env)
    full, _ = chain
    service, url = exported(capsys, a, full)
    code, _, err = run(capsys, *b.args("import-record", "backup.drivers.swift", url))
    assert code == 1 and "is not the record's ('backup.drivers.posix')" in err[0], err
    record = json.loads(base64.b64decode(url))
    record["size_bytes"] = -1
    bad = base64.b64encode(json.dumps(record).encode()).decode()
    code, _, err = run(capsys, *b.args("import-record", service, bad))
    assert code == 1 and "field 'size_bytes' must be a whole number >= 0, got -1" in err[0], err
    record["size_bytes"], record["id"] = 100_000, "../../etc"
    bad = base64.b64encode(json.dumps(record).encode()).decode()
    code, _, err = run(capsys, *b.args("import-record", service, bad))
    assert code == 1 and "field 'id' is not a backup id" in err[0], err
    assert listed(capsys, b) == {}


def test_only_an_available_backup_is_exported(env: Path, chain: tuple[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = hosts(env)
    full, _ = chain
    assert run(capsys, *a.args("reset-status", full, "--state", "error"))[0] == 0
    code, out, err = run(capsys, *a.args("export-record", full))
    assert (code, out) == (1, "") and err == [f"notifykit-backup: error: backup {full!r} is error: only an available"
                                              " backup can be exported"], err
