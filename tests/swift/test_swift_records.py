"""export-record / import-record (issue 24, reproduction 5) against the real Swift
all-in-one: two hosts with catalogs of their own move a chain through Swift; the record
carries no key; a store (shared container) without the objects is refused, nothing created."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup.cli import main

from ..backup.helpers import write_volume

pytestmark = pytest.mark.broker


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_chain_moves_between_two_hosts_catalogs_through_swift(tmp_path: Path, swift_aio: Any,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    store, key = swift_aio.info()["store_url"], swift_aio.info()["key"]
    common = ["--chunk-size", "16KiB", "--notifier", f"log://{tmp_path / 'n.jsonl'}"]
    a = ["--store", store, "--catalog", str(tmp_path / "a.sqlite3"), "--host", "host-a", *common]
    b = ["--store", store, "--catalog", str(tmp_path / "b.sqlite3"), "--host", "host-b", *common]
    volume = write_volume(tmp_path / "vol.img", 100_000)
    code, full, err = run(capsys, "create", str(volume), *a)
    assert code == 0, err
    with volume.open("r+b") as fh:
        fh.write(b"changed" * 100)
    code, incremental, err = run(capsys, "create", str(volume), "--incremental", *a)
    assert code == 0, err
    urls = {}
    for backup_id in (full.strip(), incremental.strip()):
        code, out, err = run(capsys, "export-record", backup_id, "--json", *a)
        assert code == 0, err
        assert key not in out and key not in base64.b64decode(json.loads(out)["backup_url"]).decode()
        exported = json.loads(out)
        assert exported["backup_service"] == "backup.drivers.swift"
        urls[backup_id] = exported["backup_url"]
    full, incremental = full.strip(), incremental.strip()
    code, _, err = run(capsys, "import-record", "backup.drivers.swift", urls[incremental], *b)
    assert code == 1 and f"its parent backup {full!r} is not in this catalog" in err, err
    elsewhere = f"{store}?container=nk-elsewhere-{uuid.uuid4().hex[:8]}"  # the same Swift, another container
    code, _, err = run(capsys, "import-record", "backup.drivers.swift", urls[full], "--store", elsewhere,
                       "--catalog", str(tmp_path / "b.sqlite3"), "--host", "host-b", *common)
    assert code == 1 and "not imported (nothing was recorded)" in err and "missing" in err, err
    code, out, _ = run(capsys, "list", "--json", *b)
    assert json.loads(out) == []
    for backup_id in (full, incremental):
        code, out, err = run(capsys, "import-record", "backup.drivers.swift", urls[backup_id], *b)
        assert (code, out) == (0, f"imported {backup_id}: available\n"), err
    code, _, err = run(capsys, "import-record", "backup.drivers.swift", urls[full], *b)
    assert code == 1 and "is already in this catalog" in err, err
    code, _, err = run(capsys, "restore", incremental, str(tmp_path / "out.img"), *b)
    assert code == 0, err
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    code, _, err = run(capsys, "reset-status", incremental, "--state", "available", *b)  # a verify through Swift
    assert code == 0, err
