"""Backups written before zero blocks existed (metadata version 2, issue 29) still restore.

``fixtures/metadata_v2`` holds a full backup and an increment made by the version 2 code
(``git show 0614a92:backup/_chunked.py``), zero regions stored as data; its volumes are
:func:`generation` 0 and 1.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from notifykit.backup._catalog import BackupRecord, BackupStatus
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore

FIXTURE = Path(__file__).parent / "fixtures" / "metadata_v2"
CHUNK = 64 * 1024
BLOCK = 32 * 1024
# Per generation, what each 32 KiB block holds: data, or zeros (None); then a 1000-byte tail.
_LAYOUT = {0: ["d", None, None, None, "d", "d", "d", "d"],
           1: ["d", "d", None, None, None, "d", "d", "d"]}


def generation(g: int) -> bytes:
    """The fixture's volume ``g``: compressible blocks, zero blocks, a short data tail."""
    parts = []
    for i, kind in enumerate(_LAYOUT[g]):
        parts.append(bytes(BLOCK) if kind is None else (f"gen{g}-block{i:03d}-".encode() * BLOCK)[:BLOCK])
    parts.append((f"gen{g}-tail-".encode() * 1000)[:1000])
    return b"".join(parts)


def _records() -> list[BackupRecord]:
    made = []
    for item in json.loads((FIXTURE / "records.json").read_text()):
        made.append(BackupRecord(
            id=item["id"], project_id="p", user_id="u", availability_zone="az-1", host="h", display_name=None,
            volume_id=item["volume_id"], volume_path="/nonexistent", service="backup.drivers.posix",
            status=BackupStatus.AVAILABLE, size_bytes=item["size_bytes"], container=item["container"],
            service_metadata=item["service_metadata"], parent_id=item["parent_id"],
            created_at=datetime.fromisoformat(item["created_at"])))
    return made


async def _nothing(nbytes: int) -> None:
    pass


@pytest.mark.asyncio
async def test_version_2_full_and_incremental_backups_restore(tmp_path: Path) -> None:
    full, incr = _records()
    meta = json.loads((FIXTURE / "store" / str(full.container) / f"{full.service_metadata}_metadata").read_text())
    assert meta["version"] == 2 and "zero_blocks" not in meta
    driver = ChunkedBackupDriver(PosixObjectStore(FIXTURE / "store", fsync=False), chunk_size=CHUNK)
    await driver.restore(full, tmp_path / "full.img", _nothing)
    await driver.restore(incr, tmp_path / "incr.img", _nothing, parents=[full])
    assert (tmp_path / "full.img").read_bytes() == generation(0)
    assert (tmp_path / "incr.img").read_bytes() == generation(1)
