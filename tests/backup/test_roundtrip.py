"""Byte-identical round trips on real files, for every compression and the chunk-edge sizes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus, ProgressPolicy
from notifykit.backup._block_hash import BLOCK_HASHES, get_block_hash
from notifykit.backup._compression import COMPRESSIONS
from notifykit.backup._setup import PosixBackupDriver

from .helpers import CHUNK, backup_env

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 123]


@pytest.mark.asyncio
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("block_hash", BLOCK_HASHES)
async def test_round_trip_is_byte_identical(tmp_path: Path, compression: str, size: int, block_hash: str) -> None:
    async with backup_env(tmp_path, compression=compression, block_hash=block_hash,
                          policy=ProgressPolicy(backup_object_number_per_notification=1,
                                                backup_enable_progress_timer=False)) as env:
        volume = env.volume(size)
        record = await env.service.create_backup(volume)
        assert record.container is not None and record.service_metadata is not None
        container = tmp_path / "store" / record.container
        metadata = json.loads((container / f"{record.service_metadata}_metadata").read_bytes())
        digests = (container / f"{record.service_metadata}_sha256file").read_bytes()
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
        same = (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
        await env.service.delete_backup(record.id)
        gone = not container.exists()
    assert same
    assert record.size_bytes == size and record.object_count == math.ceil(size / CHUNK)
    assert restored.status is BackupStatus.AVAILABLE
    assert metadata["volume_size"] == size and metadata["compression"] == compression
    assert [o["length"] for o in metadata["objects"]] == [min(CHUNK, size - i * CHUNK)
                                                         for i in range(record.object_count)]
    # Beside the metadata, the digest of every block of the volume (one block per 4 KiB chunk here),
    # in the hash the metadata names (sha256 lists are written as version 3 was, without the key).
    data = volume.read_bytes()
    assert metadata["block_size"] == CHUNK and metadata["sha256file"]["blocks"] == math.ceil(size / CHUNK)
    assert (metadata["version"], metadata.get("block_hash")) == ((3, None) if block_hash == "sha256" else (4, block_hash))
    new = get_block_hash(block_hash).new
    assert digests == b"".join(new(data[i:i + CHUNK]).digest() for i in range(0, size, CHUNK))
    assert gone
    progress = [n.payload["percentage"] for n in env.memory.messages if n.event_type == "backup.createprogress"]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert len(progress) == max(1, record.object_count)


@pytest.mark.asyncio
async def test_compressible_chunks_are_stored_smaller(tmp_path: Path) -> None:
    async with backup_env(tmp_path, compression="zstd") as env:
        volume = tmp_path / "zeros.img"
        volume.write_bytes(bytes(4 * CHUNK))
        record = await env.service.create_backup(volume)
        assert record.container is not None
        stored = sum(p.stat().st_size for p in (tmp_path / "store" / record.container).glob("*-0000*"))
    assert stored < CHUNK


@pytest.mark.asyncio
async def test_posix_driver_with_default_chunks_round_trips(tmp_path: Path) -> None:
    driver = PosixBackupDriver(tmp_path / "objects", fsync=True)
    async with backup_env(tmp_path, store=driver.store, chunk_size=driver.chunk_size, compression="zstd") as env:
        volume = env.volume(driver.chunk_size + 5)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, tmp_path / "out.img")
    assert record.object_count == 2
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()


@pytest.mark.parametrize("compression", ["zlib", "bz2", "zstd"])
def test_codecs_refuse_damaged_streams_with_a_clear_error(compression: str) -> None:
    from notifykit.backup import CorruptBackupError
    from notifykit.backup._compression import get_compressor

    codec = get_compressor(compression)
    packed = codec.compress(b"x" * 10_000)
    assert codec.decompress(packed, 10_000) == b"x" * 10_000
    with pytest.raises(CorruptBackupError, match=compression):
        codec.decompress(packed[: len(packed) // 2], 10_000)  # truncated
    with pytest.raises(CorruptBackupError):
        codec.decompress(packed, 5_000)  # expands beyond what the metadata allows
    with pytest.raises(CorruptBackupError):
        codec.decompress(b"\x00" * 32, 10_000)  # not a stream at all


@pytest.mark.asyncio
async def test_random_chunks_are_stored_raw_without_compressing_them_whole(tmp_path: Path) -> None:
    """A chunk whose spread samples do not compress is stored raw; one that is half random,
    half compressible is still compressed (the samples see both halves), with zstd's fast
    strategy (level 2), which does not search the random half for matches."""
    chunk = 256 * 1024
    random_part = os.urandom(chunk)
    text = (b"compressible text. " * 20_000)[:chunk]
    mixed = random_part[: chunk // 2] + text[: chunk // 2]
    calls: list[tuple[int, int]] = []  # (level, bytes) of each compression
    async with backup_env(tmp_path, compression="zstd", chunk_size=chunk) as env:
        main = env.service.driver.compressor  # type: ignore[attr-defined]
        for codec in (main, main.for_mixed()):
            def counting(data: bytes | memoryview, level: int = codec.level, compress: Any = codec.compress) -> bytes:
                calls.append((level, len(data)))
                return compress(data)  # type: ignore[no-any-return]

            def counting_into(data: bytes | memoryview, out: memoryview, level: int = codec.level,
                              compress_into: Any = codec.compress_into) -> int | None:
                calls.append((level, len(data)))
                return compress_into(data, out)  # type: ignore[no-any-return]

            codec.compress, codec.compress_into = counting, counting_into
        volume = tmp_path / "v.img"
        volume.write_bytes(random_part + text + mixed)
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, tmp_path / "out.img")
        assert record.container is not None and record.service_metadata is not None
        meta = json.loads((tmp_path / "store" / record.container / f"{record.service_metadata}_metadata").read_bytes())
    assert [o["compression"] for o in meta["objects"]] == ["none", "zstd", "zstd"]
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    # the random chunk was never compressed whole; the text at level 3, the mixed one at 2
    assert sorted(c for c in calls if c[1] == chunk) == [(2, chunk), (3, chunk)]
