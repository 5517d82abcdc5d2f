"""The block list's hash (issue 29): blake3 for new full backups, sha256 (Cinder's) on
request; an increment hashes with its parent's, whatever the driver is set to, so the
blocks of a chain compare; the metadata names it, and a name this notifykit does not know,
or a chain that mixes hashes, is one clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupConfig, BackupConfigError, BackupError, BackupRecord, CorruptBackupError
from notifykit.backup._block_hash import get_block_hash
from notifykit.backup._chunked import ChunkedBackupDriver
from notifykit.backup._posix import PosixObjectStore
from notifykit.backup._verify import verify_backup

from .helpers import CHUNK, Env, backup_env

SIZE = 64 * CHUNK + 123


def metadata_path(env: Env, record: BackupRecord) -> Path:
    return env.root / "store" / str(record.container) / f"{record.service_metadata}_metadata"


def metadata(env: Env, record: BackupRecord) -> dict[str, Any]:
    return dict(json.loads(metadata_path(env, record).read_bytes()))


def block_list(env: Env, record: BackupRecord) -> bytes:
    return (env.root / "store" / str(record.container) / f"{record.service_metadata}_sha256file").read_bytes()


def rewrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@pytest.mark.asyncio
async def test_a_new_full_backup_is_blake3_and_checked_by_it(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:  # stored raw: a damaged byte reaches the block check
        volume = env.volume(SIZE)
        record = await env.service.create_backup(volume)
        meta = metadata(env, record)
        assert (meta["version"], meta["block_hash"]) == (4, "blake3")
        data = volume.read_bytes()
        block = int(meta["block_size"])
        new = get_block_hash("blake3").new
        assert block_list(env, record) == b"".join(new(data[i:i + block]).digest() for i in range(0, SIZE, block))
        await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert (tmp_path / "out.img").read_bytes() == data
        assert (await verify_backup(env.service, record.id)).objects == len(meta["objects"])
        # A block damaged after the backup is found by the blake3 list
        obj = next(p for p in (env.root / "store" / str(record.container)).iterdir() if p.name.endswith("-00003"))
        rewrite(obj, 5, b"\xff" if obj.read_bytes()[5:6] != b"\xff" else b"\x00")
        with pytest.raises(CorruptBackupError, match=r"block 3 .*does not match the block list"):
            await env.service.restore_backup(record.id, tmp_path / "bad.img")


@pytest.mark.asyncio
async def test_an_increment_keeps_its_sha256_parents_hash(tmp_path: Path) -> None:
    async with backup_env(tmp_path, block_hash="sha256") as env:
        volume = env.volume(SIZE)
        full = await env.service.create_backup(volume)
        assert metadata(env, full)["version"] == 3 and "block_hash" not in metadata(env, full)
    rewrite(volume, 7 * CHUNK + 10, b"changed")
    async with backup_env(tmp_path) as env:  # the driver's own default is blake3
        increment = await env.service.create_backup(volume, incremental=True)
        meta = metadata(env, increment)
        assert meta["version"] == 3 and "block_hash" not in meta
        assert [o["offset"] for o in meta["objects"]] == [7 * CHUNK]  # only the changed block compared unequal
        await env.service.restore_backup(increment.id, tmp_path / "out.img")
        assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
        await verify_backup(env.service, increment.id)
        # and a new full backup on that driver is blake3 again
        assert metadata(env, await env.service.create_backup(volume))["block_hash"] == "blake3"


@pytest.mark.asyncio
async def test_a_chain_that_mixes_hashes_is_refused(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        volume = env.volume(SIZE)
        await env.service.create_backup(volume)
        rewrite(volume, 3, b"x")
        increment = await env.service.create_backup(volume, incremental=True)
        meta = metadata(env, increment)
        meta["version"] = 3  # as if the increment were a sha256 one
        del meta["block_hash"]
        metadata_path(env, increment).write_text(json.dumps(meta))
        with pytest.raises(CorruptBackupError, match=r"does not line up with its parent .*block hash differs"):
            await env.service.restore_backup(increment.id, tmp_path / "out.img")
        assert not (tmp_path / "out.img").exists()


@pytest.mark.asyncio
async def test_a_block_hash_this_notifykit_does_not_know_is_named(tmp_path: Path) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(SIZE))
        meta = metadata(env, record)
        meta["block_hash"] = "md4"
        metadata_path(env, record).write_text(json.dumps(meta))
        with pytest.raises(CorruptBackupError, match="names block hash 'md4'; this notifykit knows blake3, sha256"):
            await env.service.restore_backup(record.id, tmp_path / "out.img")
        with pytest.raises(CorruptBackupError, match="'md4'"):
            await verify_backup(env.service, record.id)


def test_the_setting_is_checked_where_it_comes_from(tmp_path: Path) -> None:
    assert BackupConfig.load(env={}).block_hash == "blake3"
    assert BackupConfig.load(env={"NOTIFYKIT_BACKUP_BLOCK_HASH": "SHA256"}).block_hash == "sha256"
    toml = tmp_path / "backup.toml"
    toml.write_text('[backup]\nblock_hash = "md5"\n')
    with pytest.raises(BackupConfigError, match="block_hash must be one of blake3, sha256, got 'md5'") as raised:
        BackupConfig.load(toml, env={})
    assert str(toml) in str(raised.value)


@pytest.mark.asyncio
async def test_without_the_blake3_package_each_use_is_one_error_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with backup_env(tmp_path) as env:
        record = await env.service.create_backup(env.volume(SIZE))
    monkeypatch.setitem(sys.modules, "blake3", None)  # import blake3 raises ImportError
    get_block_hash.cache_clear()
    try:
        with pytest.raises(BackupConfigError, match=r"block_hash 'blake3' needs the blake3 package: pip install"):
            ChunkedBackupDriver(PosixObjectStore(tmp_path / "other"))
        assert ChunkedBackupDriver(PosixObjectStore(tmp_path / "other"), block_hash="sha256").block_hash.name == "sha256"
        async with backup_env(tmp_path, block_hash="sha256") as env:  # a blake3 backup cannot be checked here
            with pytest.raises(BackupError, match=r"_metadata: block_hash 'blake3' needs the blake3 package"):
                await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert not (tmp_path / "out.img").exists()
    finally:
        get_block_hash.cache_clear()
