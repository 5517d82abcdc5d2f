"""Sparse volumes (issue 29): only data regions are read, zero blocks are stored as nothing,
and a restore keeps them holes (or, written in place, makes them zero)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import CorruptBackupError
from notifykit.backup._catalog import BackupRecord
from notifykit.backup._verify import verify_backup

from .helpers import Env, backup_env

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = 32 * 1024


def make_sparse(path: Path, size: int, data: dict[int, bytes]) -> Path:
    """A file of ``size`` bytes, holes everywhere but at ``data``'s offsets."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, chunk in data.items():
            fh.seek(offset)
            fh.write(chunk)
    return path


def write_at(path: Path, offset: int, data: bytes) -> None:
    """Write in place and sync (a device's page cache is what a reader then sees)."""
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def extents(path: Path) -> list[tuple[int, int]]:
    """The file's data regions, by SEEK_DATA/SEEK_HOLE."""
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, pos))
    finally:
        os.close(fd)
    return found


def same_content(a: Path, b: Path) -> bool:
    """Byte equality of two sparse files, reading only where either holds data."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for start, stop in sorted(extents(a) + extents(b)):
            fa.seek(start)
            fb.seek(start)
            if fa.read(stop - start) != fb.read(stop - start):
                return False
    return True


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def metadata(env: Env, record: BackupRecord) -> dict[str, Any]:
    path = env.root / "store" / str(record.container) / f"{record.service_metadata}_metadata"
    return dict(json.loads(path.read_bytes()))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes the backup reads from volumes (os.pread and os.preadv, as _sparse reads)."""
    counted: list[int] = []
    pread, preadv = os.pread, os.preadv

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        data = pread(fd, n, offset)
        counted.append(len(data))
        return data

    def counting_preadv(fd: int, buffers: Any, offset: int) -> int:
        n = preadv(fd, buffers, offset)
        counted.append(n)
        return n

    monkeypatch.setattr(os, "pread", counting_pread)
    monkeypatch.setattr(os, "preadv", counting_preadv)
    return counted


@pytest.mark.asyncio
async def test_a_4gib_sparse_volume_reads_and_stores_only_its_3mib_of_data(tmp_path: Path, reads: list[int]) -> None:
    rng = random.Random(29)
    volume = make_sparse(tmp_path / "sparse.img", 4 * GiB, {
        0: rng.randbytes(MiB), 2 * GiB + 12345: rng.randbytes(MiB), 4 * GiB - MiB: rng.randbytes(MiB)})
    async with backup_env(tmp_path, chunk_size=4 * MiB, compression="zstd") as env:
        record = await env.service.create_backup(volume)
        read_by_backup = sum(reads)
        meta = metadata(env, record)
        await env.service.restore_backup(record.id, tmp_path / "restored.img")
        report = await verify_backup(env.service, record.id)
    restored = tmp_path / "restored.img"
    # Only the data regions were read, and only blocks holding data were stored.
    assert read_by_backup <= 3 * MiB + 2 * 4096
    assert record.size_bytes == 4 * GiB and 3 * MiB <= record_stored(meta) <= 3 * MiB + 2 * BLOCK + 4096
    assert sum(n for _, n in meta["zero_blocks"]) == 4 * GiB // BLOCK - (3 * MiB // BLOCK + 1)
    assert meta["version"] == 4 and report.zero_blocks == sum(n for _, n in meta["zero_blocks"])
    # Holes stay holes: the restore allocates about what the original does.
    assert restored.stat().st_size == 4 * GiB
    assert allocated(restored) <= 2 * allocated(volume)
    assert same_content(volume, restored)


def record_stored(meta: dict[str, Any]) -> int:
    return sum(int(o["stored_length"]) for o in meta["objects"])


@pytest.mark.asyncio
async def test_written_zeros_are_stored_as_nothing_and_restored_as_holes(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = rng.randbytes(MiB) + bytes(2 * MiB) + rng.randbytes(MiB - 100)  # the zeros are written, not holes
    volume = tmp_path / "dense.img"
    volume.write_bytes(data)
    assert extents(volume) == [(0, len(data))]
    async with backup_env(tmp_path, chunk_size=MiB) as env:
        record = await env.service.create_backup(volume)
        meta = metadata(env, record)
        await env.service.restore_backup(record.id, tmp_path / "restored.img")
    restored = tmp_path / "restored.img"
    assert meta["zero_blocks"] == [[MiB // BLOCK, 2 * MiB // BLOCK]]
    assert record_stored(meta) == len(data) - 2 * MiB and record.object_count == 2
    assert restored.read_bytes() == data
    assert extents(restored) == [(0, MiB), (3 * MiB, len(data))]


@pytest.mark.asyncio
async def test_zero_blocks_inside_a_chunk_split_it_and_a_short_zero_tail_is_a_zero_block(tmp_path: Path) -> None:
    rng = random.Random(2)
    data = rng.randbytes(BLOCK) + bytes(BLOCK) + rng.randbytes(2 * BLOCK) + bytes(1000)
    volume = tmp_path / "mixed.img"
    volume.write_bytes(data)
    async with backup_env(tmp_path, chunk_size=8 * BLOCK) as env:
        record = await env.service.create_backup(volume)
        meta = metadata(env, record)
        await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert [(o["offset"], o["length"]) for o in meta["objects"]] == [(0, BLOCK), (2 * BLOCK, 2 * BLOCK)]
    assert meta["zero_blocks"] == [[1, 1], [4, 1]]
    assert (tmp_path / "restored.img").read_bytes() == data


@pytest.mark.asyncio
async def test_incremental_over_a_sparse_volume_stores_only_the_changed_data(tmp_path: Path) -> None:
    rng = random.Random(3)
    size = 256 * MiB
    volume = make_sparse(tmp_path / "sparse.img", size, {0: rng.randbytes(MiB), 100 * MiB: rng.randbytes(MiB)})
    images = [tmp_path / "gen0.img"]
    async with backup_env(tmp_path, chunk_size=4 * MiB) as env:
        full = await env.service.create_backup(volume)
        make_copy(volume, images[0])
        # Data appears in a hole, a data region is overwritten with zeros, another punched.
        write_at(volume, 50 * MiB, b"new data in a hole" * 1000)
        write_at(volume, 0, bytes(BLOCK))
        punch(volume, 100 * MiB, MiB)
        images.append(tmp_path / "gen1.img")
        make_copy(volume, images[1])
        inc = await env.service.create_backup(volume, incremental=True)
        meta = metadata(env, inc)
        for n, record in enumerate((full, inc)):
            await env.service.restore_backup(record.id, tmp_path / f"restored-{n}.img")
        report = await verify_backup(env.service, inc.id)
    assert inc.parent_id == full.id
    # Stored: only the blocks of the new data; the zeroed and punched blocks are zero runs.
    assert [(o["offset"], o["length"]) for o in meta["objects"]] == [(50 * MiB, BLOCK)]
    assert meta["zero_blocks"] == [[0, 1], [100 * MiB // BLOCK, MiB // BLOCK]]
    assert report.backups == 2
    for n in range(2):
        restored = tmp_path / f"restored-{n}.img"
        assert same_content(images[n], restored), f"generation {n} differs"
        assert allocated(restored) <= 2 * allocated(images[n]) + 2 * BLOCK


def make_copy(src: Path, dst: Path) -> None:
    """A sparse copy (cp --sparse=always would do; this keeps the test self-contained)."""
    with open(dst, "wb") as out:
        out.truncate(src.stat().st_size)
        with open(src, "rb") as inp:
            for start, stop in extents(src):
                inp.seek(start)
                out.seek(start)
                out.write(inp.read(stop - start))


def punch(path: Path, offset: int, length: int) -> None:
    from notifykit.backup._sparse import zero_range

    fd = os.open(path, os.O_RDWR)
    try:
        assert zero_range(fd, offset, length, str(path))
    finally:
        os.close(fd)


@pytest.mark.asyncio
async def test_overwriting_an_existing_non_zero_file_leaves_zeros_and_holes(tmp_path: Path) -> None:
    rng = random.Random(4)
    volume = make_sparse(tmp_path / "sparse.img", 64 * MiB, {5 * MiB: rng.randbytes(MiB)})
    target = tmp_path / "target.img"
    target.write_bytes(b"\xff" * 64 * MiB)
    async with backup_env(tmp_path, chunk_size=4 * MiB) as env:
        record = await env.service.create_backup(volume)
        await env.service.restore_backup(record.id, target, overwrite=True)
    assert same_content(volume, target)
    assert extents(target) == [(5 * MiB, 6 * MiB)]


@pytest.mark.asyncio
async def test_verify_finds_a_zero_run_whose_block_list_entry_is_not_zero(tmp_path: Path) -> None:
    import hashlib

    volume = make_sparse(tmp_path / "sparse.img", 4 * MiB, {0: b"x" * BLOCK})
    async with backup_env(tmp_path, chunk_size=MiB) as env:
        record = await env.service.create_backup(volume)
        container = env.root / "store" / str(record.container)
        sha_file = container / f"{record.service_metadata}_sha256file"
        digests = bytearray(sha_file.read_bytes())
        digests[32 * 5:32 * 6] = hashlib.sha256(b"not zero").digest()  # block 5: a zero block
        sha_file.write_bytes(bytes(digests))
        meta_file = container / f"{record.service_metadata}_metadata"
        meta = json.loads(meta_file.read_bytes())
        meta["sha256file"]["sha256"] = hashlib.sha256(bytes(digests)).hexdigest()
        meta_file.write_text(json.dumps(meta))
        with pytest.raises(CorruptBackupError, match=r"zero blocks 1 to 127 are not zero in the block list"):
            await verify_backup(env.service, record.id)


def test_zero_range_punches_a_hole_or_writes_zeros(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from notifykit.backup import _sparse

    for punched in (True, False):
        path = tmp_path / f"file-{punched}.img"
        path.write_bytes(b"\xaa" * 4 * MiB)
        if not punched:  # a system without fallocate(PUNCH_HOLE): zeros are written
            monkeypatch.setattr(_sparse, "_FALLOCATE", None)
        fd = os.open(path, os.O_RDWR)
        try:
            assert _sparse.zero_range(fd, MiB, 2 * MiB, str(path)) is punched
        finally:
            os.close(fd)
        assert path.read_bytes() == b"\xaa" * MiB + bytes(2 * MiB) + b"\xaa" * MiB
        assert (extents(path) == [(0, MiB), (3 * MiB, 4 * MiB)]) is punched


@pytest.fixture
def loop_device(tmp_path: Path) -> Any:
    """A loop device over a 16 MiB file (root and a working losetup only), detached after."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("loop devices need root and losetup")
    backing = tmp_path / "backing.img"
    backing.write_bytes(b"\xff" * 16 * MiB)
    made = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"losetup cannot attach a loop device here: {made.stderr.strip()}")
    device = made.stdout.strip()
    try:
        yield Path(device), backing
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)


@pytest.mark.asyncio
async def test_a_block_device_is_read_whole_and_restored_in_place_with_its_zeros(
        tmp_path: Path, loop_device: tuple[Path, Path], reads: list[int]) -> None:
    device, _ = loop_device
    rng = random.Random(5)
    content = rng.randbytes(4 * MiB) + bytes(8 * MiB) + rng.randbytes(4 * MiB)
    write_at(device, 0, content)
    async with backup_env(tmp_path, chunk_size=4 * MiB) as env:
        record = await env.service.create_backup(device)
        read_by_backup = sum(reads)
        meta = metadata(env, record)
        write_at(device, 0, b"\xee" * 16 * MiB)  # the device is overwritten with other bytes
        with pytest.raises(Exception, match="block device; pass overwrite"):
            await env.service.restore_backup(record.id, device)
        await env.service.restore_backup(record.id, device, overwrite=True)
    # No hole reporting on a device: every byte read, the zeros found by their digests.
    assert read_by_backup == 16 * MiB
    assert meta["zero_blocks"] == [[4 * MiB // BLOCK, 8 * MiB // BLOCK]] and record_stored(meta) == 8 * MiB
    assert device.read_bytes() == content
