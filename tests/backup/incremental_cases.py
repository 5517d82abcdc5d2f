"""Incremental-backup scenarios shared by the posix and the Swift tests: each takes a ready
Env (see helpers.backup_env) whose chunks are CHUNK bytes, 4 blocks of 32 KiB each."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from notifykit.backup import BackupStatus, CorruptBackupError, DependentBackupsError
from notifykit.backup._chunked import BLOCK_SIZE
from notifykit.backup.plugin import ObjectNotFoundError

from .helpers import Env, volume_bytes

CHUNK = 4 * BLOCK_SIZE  # 128 KiB: blocks and chunks differ, as with the 4 MiB default
SIZE = 8 * CHUNK + 5000  # nine chunks, the last one short (and its last block too)


def rewrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def grow(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


async def stored_bytes(env: Env, container: str) -> dict[str, int]:
    """name -> size of every object the store holds for the backup (not the metadata)."""
    sizes = {}
    for name in await env.store.list_objects(container):
        if not name.endswith(("_metadata", "_sha256file")):
            sizes[name] = len(await env.store.get_object(container, name))
    return sizes


async def full_change_incremental_restore(env: Env) -> None:
    volume = env.volume(SIZE, seed=3)
    before = volume.read_bytes()
    full = await env.service.create_backup(volume, name="full")
    # Change 100 bytes inside block 5, and 70 KiB over blocks 7 | 8, 9 (a chunk edge between 7 and 8).
    rewrite(volume, 5 * BLOCK_SIZE + 10, b"\x01" * 100)
    rewrite(volume, 2 * CHUNK - 20_000, random.Random(5).randbytes(70 * 1024))
    after = volume.read_bytes()
    inc = await env.service.create_backup(volume, name="inc", incremental=True)
    assert inc.parent_id == full.id and inc.size_bytes == SIZE and inc.status is BackupStatus.AVAILABLE
    assert (await env.service.show(full.id)).num_dependent_backups == 1
    assert inc.container is not None
    pieces = await stored_bytes(env, inc.container)
    # one object per run of changed blocks within a chunk: [5], [7] in chunk 1, [8, 9] in chunk 2
    assert sorted(pieces.values()) == [BLOCK_SIZE, BLOCK_SIZE, 2 * BLOCK_SIZE]
    assert inc.object_count == 3

    await env.service.restore_backup(full.id, env.root / "full.img")
    await env.service.restore_backup(inc.id, env.root / "inc.img")
    assert (env.root / "full.img").read_bytes() == before
    assert (env.root / "inc.img").read_bytes() == after

    # Every payload carries the real parent_id / num_dependent_backups.
    inc_events = [n for n in env.memory.messages if n.payload["backup_id"] == inc.id]
    assert inc_events and all(n.payload["parent_id"] == full.id for n in inc_events)
    assert {n.payload["num_dependent_backups"] for n in inc_events} == {0}
    full_restore = [n for n in env.memory.messages
                    if n.payload["backup_id"] == full.id and n.event_type.startswith("backup.restore")]
    assert full_restore and {n.payload["num_dependent_backups"] for n in full_restore} == {1}
    # Progress counts chunks read, for an increment too, and ends at 100 %.
    progress = [n.payload for n in inc_events if n.event_type == "backup.createprogress"]
    assert progress[-1]["percentage"] == 100.0 and progress[-1]["bytes_done"] == SIZE
    assert progress[-1]["objects_done"] == 9


async def chain_of_three(env: Env) -> None:
    volume = env.volume(SIZE, seed=4)
    images = [volume.read_bytes()]
    full = await env.service.create_backup(volume)
    rewrite(volume, 3 * CHUNK, b"first change" * 100)
    images.append(volume.read_bytes())
    inc1 = await env.service.create_backup(volume, incremental=True)
    rewrite(volume, 10, b"second change")
    grow(volume, volume_bytes(BLOCK_SIZE + 77, seed=9))  # by a block and a bit
    images.append(volume.read_bytes())
    inc2 = await env.service.create_backup(volume, incremental=True)
    assert (inc1.parent_id, inc2.parent_id) == (full.id, inc1.id)
    assert inc2.size_bytes == SIZE + BLOCK_SIZE + 77
    for n, record in enumerate((full, inc1, inc2)):
        target = env.root / f"restored-{n}.img"
        await env.service.restore_backup(record.id, target)
        assert target.read_bytes() == images[n], f"restore of backup {n} differs"
    # The volume shrinks: an increment restores to the smaller size.
    os.truncate(volume, CHUNK + 3)
    inc3 = await env.service.create_backup(volume, incremental=True)
    assert inc3.parent_id == inc2.id
    await env.service.restore_backup(inc3.id, env.root / "restored-3.img")
    assert (env.root / "restored-3.img").read_bytes() == volume.read_bytes()
    counts = {r.id: r.num_dependent_backups for r in await env.service.list()}
    assert counts == {full.id: 1, inc1.id: 1, inc2.id: 1, inc3.id: 0}


async def delete_order(env: Env) -> None:
    volume = env.volume(SIZE, seed=6)
    full = await env.service.create_backup(volume)
    rewrite(volume, 0, b"changed")
    inc = await env.service.create_backup(volume, incremental=True)
    with pytest.raises(DependentBackupsError, match=f"delete them first \\({inc.id}\\)"):
        await env.service.delete_backup(full.id)
    assert (await env.service.show(full.id)).status is BackupStatus.AVAILABLE
    refused = [n for n in env.memory.messages if n.event_type == "backup.delete.error"]
    assert len(refused) == 1 and inc.id in refused[0].payload["fail_reason"]
    assert refused[0].payload["num_dependent_backups"] == 1
    await env.service.delete_backup(inc.id)
    assert (await env.service.show(full.id)).num_dependent_backups == 0
    await env.service.delete_backup(full.id)
    for record in (full, inc):  # both containers are gone from the store
        assert record.container is not None
        with pytest.raises(ObjectNotFoundError):
            await env.store.list_objects(record.container)
    deleted = await env.service.list(include_deleted=True)
    assert {r.status for r in deleted} == {BackupStatus.DELETED}
    assert all(r.deleted_at is not None for r in deleted)


async def damaged_increment_fails_restore(env: Env) -> None:
    volume = env.volume(SIZE, seed=8)
    await env.service.create_backup(volume)
    rewrite(volume, CHUNK + 1, b"x")
    inc = await env.service.create_backup(volume, incremental=True)
    assert inc.container is not None and inc.service_metadata is not None
    meta = json.loads(await env.store.get_object(inc.container, f"{inc.service_metadata}_metadata"))
    [piece] = meta["objects"]
    data = bytearray(await env.store.get_object(inc.container, piece["name"]))
    data[100] ^= 0xFF
    await env.store.delete_object(inc.container, piece["name"])
    await env.store.put_object(inc.container, piece["name"], bytes(data))
    with pytest.raises(CorruptBackupError, match=f"{piece['name']} is corrupt: block 4 "):
        await env.service.restore_backup(inc.id, env.root / "bad.img")
    assert not (env.root / "bad.img").exists()
    assert (await env.service.show(inc.id)).status is BackupStatus.ERROR_RESTORING
