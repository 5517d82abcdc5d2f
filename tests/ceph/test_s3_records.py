"""export-record / import-record (issue 24, reproduction 5) against a real Ceph RGW (S3):
two hosts with catalogs of their own move a chain through one bucket; the record carries no
secret key; a bucket without the objects is refused and nothing is created."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup.cli import main

from ..backup.helpers import write_volume
from .helpers import bucket_name, keys, s3_client

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_chain_moves_between_two_hosts_catalogs_through_rgw(tmp_path: Path, ceph_aio: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    bucket, empty = bucket_name("export"), bucket_name("empty")
    for name in (bucket, empty):
        s3_client(ceph_aio).create_bucket(Bucket=name)
    s3_url, secret = ceph_aio.info()["s3_url"], ceph_aio.info()["secret_key"]
    common = ["--chunk-size", "16KiB", "--notifier", f"log://{tmp_path / 'n.jsonl'}"]
    a = ["--store", f"{s3_url}/{bucket}", "--catalog", str(tmp_path / "a.sqlite3"), "--host", "host-a", *common]
    b = ["--store", f"{s3_url}/{bucket}", "--catalog", str(tmp_path / "b.sqlite3"), "--host", "host-b", *common]
    volume = write_volume(tmp_path / "vol.img", 100_000)
    code, full, err = run(capsys, "create", str(volume), *a)
    assert code == 0, err
    with volume.open("r+b") as fh:
        fh.write(b"changed" * 100)
    code, incremental, err = run(capsys, "create", str(volume), "--incremental", *a)
    assert code == 0, err
    full, incremental = full.strip(), incremental.strip()
    urls = {}
    for backup_id in (full, incremental):
        code, out, err = run(capsys, "export-record", backup_id, "--json", *a)
        assert code == 0, err
        exported = json.loads(out)
        record = json.loads(base64.b64decode(exported["backup_url"]))
        assert secret not in out and secret not in json.dumps(record)
        assert exported["backup_service"] == "backup.drivers.s3" and f"/{bucket}" in record["store_location"]
        urls[backup_id] = exported["backup_url"]
    code, _, err = run(capsys, "import-record", "backup.drivers.s3", urls[full], "--store", f"{s3_url}/{empty}",
                       "--catalog", str(tmp_path / "b.sqlite3"), "--host", "host-b", *common)
    assert code == 1 and "not imported (nothing was recorded)" in err and "missing" in err, err
    assert keys(ceph_aio, empty) == []
    code, out, _ = run(capsys, "list", "--json", *b)
    assert json.loads(out) == []
    code, _, err = run(capsys, "import-record", "backup.drivers.s3", urls[incremental], *b)
    assert code == 1 and f"its parent backup {full!r} is not in this catalog" in err, err
    for backup_id in (full, incremental):
        code, out, err = run(capsys, "import-record", "backup.drivers.s3", urls[backup_id], *b)
        assert (code, out) == (0, f"imported {backup_id}: available\n"), err
    code, _, err = run(capsys, "import-record", "backup.drivers.s3", urls[incremental], *b)
    assert code == 1 and "is already in this catalog" in err, err
    code, _, err = run(capsys, "restore", incremental, str(tmp_path / "out.img"), *b)
    assert code == 0, err
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
