"""Restore checks each object segment by segment, right before writing it (issue 29: the
bytes are still in the CPU's cache when copied): every block is still checked, parts split
at segment boundaries are written whole, and a damaged block anywhere fails the restore."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from notifykit.backup import BackupStatus, CorruptBackupError
from notifykit.backup._block_hash import SHA256
from notifykit.backup._chunk_restore import SEGMENT as _SEGMENT
from notifykit.backup._chunk_restore import verified

from .helpers import backup_env

BLOCK = 32 * 1024


def block_list(data: bytes, block: int = BLOCK) -> bytes:
    return b"".join(hashlib.sha256(data[i:i + block]).digest() for i in range(0, len(data), block))


def test_parts_come_out_whole_across_segments_and_every_block_is_checked() -> None:
    data = os.urandom(3 * _SEGMENT + 5 * BLOCK)
    digests = block_list(data)
    parts = [(0, BLOCK), (2 * BLOCK, _SEGMENT + 3 * BLOCK), (3 * _SEGMENT, len(data))]
    out = list(verified("obj", data, 0, len(data), parts, 0, BLOCK, digests, SHA256))
    joined: list[tuple[int, int]] = []
    for a, b in out:  # contiguous pieces of one part are split only at segment ends
        assert b % _SEGMENT == 0 or b in {p[1] for p in parts}
        if joined and joined[-1][1] == a:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    assert joined == parts
    damaged = bytearray(data)
    damaged[2 * _SEGMENT + 7] ^= 1  # a block no part covers is still checked
    with pytest.raises(CorruptBackupError, match=f"block {2 * _SEGMENT // BLOCK} "):
        list(verified("obj", bytes(damaged), 0, len(data), [(0, BLOCK)], 0, BLOCK, digests, SHA256))


def test_a_block_size_above_the_segment_is_one_segment_per_block() -> None:
    block = 3 * _SEGMENT  # a chunk size that is not a multiple of 32 KiB: one block per chunk
    data = os.urandom(2 * block)
    digests = block_list(data, block)
    out = list(verified("obj", data, 0, len(data), [(0, len(data))], 0, block, digests, SHA256))
    assert out == [(0, block), (block, 2 * block)]


@pytest.mark.asyncio
async def test_a_damaged_block_late_in_a_big_object_fails_the_restore(tmp_path: Path) -> None:
    async with backup_env(tmp_path, chunk_size=4 * _SEGMENT) as env:
        volume = env.volume(8 * _SEGMENT)
        record = await env.service.create_backup(volume)
        assert record.container is not None
        ok = await env.service.restore_backup(record.id, tmp_path / "good.img")
        chunk = sorted((tmp_path / "store" / record.container).glob("*-00001"))[0]
        data = bytearray(chunk.read_bytes())
        data[-100] ^= 0xFF  # the last segment of the second chunk (stored raw: compression none)
        chunk.write_bytes(bytes(data))
        with pytest.raises(CorruptBackupError, match="-00001 is corrupt: block"):
            await env.service.restore_backup(record.id, tmp_path / "bad.img")
    assert ok.status is BackupStatus.AVAILABLE and (tmp_path / "good.img").read_bytes() == volume.read_bytes()
    assert not (tmp_path / "bad.img").exists()
