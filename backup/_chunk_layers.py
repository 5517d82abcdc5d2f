"""A backup's metadata as a restore or verify reads it: each backup of a chain (its objects,
block list and zero runs, every field and size checked against the catalog's record), and
the plan of which object gives each block of the volume (the newest backup holding it).

Metadata versions: 1, one sha256 per chunk and no block list (read only); 2, the block
list (increments); 3, zero blocks stored as nothing, listed as runs in ``zero_blocks``;
4, the block list's hash named in ``block_hash`` (before 4 it is sha256; ``_block_hash``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from ._block_hash import BLOCK_HASHES, DIGEST_SIZE, BlockHash, get_block_hash
from ._catalog import BackupRecord
from ._errors import BackupConfigError, BackupError, CorruptBackupError, ObjectNotFoundError
from ._objectstore import ObjectStore
from ._sparse import ZeroRuns

__all__ = ["METADATA_VERSION", "Layer", "PlanItem", "check_coverage", "data_ranges", "get_backup_object",
           "merge_runs", "read_chain", "read_layer", "restore_plan", "zero_run_digests"]

# 1: one sha256 per chunk, no block list (read only). 2: the block list, increments.
# 3: zero blocks stored as nothing, listed as runs in ``zero_blocks``. 4: ``block_hash``.
METADATA_VERSION = 4
_ENTRY_KEYS = ("name", "offset", "length", "stored_length", "compression")


@dataclass(frozen=True, slots=True)
class Layer:
    """One backup of a chain, as restore reads it: its objects, block list and geometry."""

    record: BackupRecord
    meta: dict[str, Any]
    objects: list[dict[str, Any]]
    digests: bytes | None  # None: a version 1 backup (a sha256 per chunk instead)
    zeros: ZeroRuns  # runs of zero blocks, held by no object (version 3)
    block_hash: BlockHash  # what ``digests`` are digests of (version 4 names it; before: sha256)


#: One object a restore reads: its backup, its metadata entry, the byte ranges (within it) to write.
PlanItem = tuple[Layer, dict[str, Any], list[tuple[int, int]]]


async def get_backup_object(store: ObjectStore, record: BackupRecord, name: str, what: str) -> bytes:
    assert record.container is not None
    try:
        return await store.get_object(record.container, name)
    except ObjectNotFoundError:
        raise CorruptBackupError(
            f"{what} object {record.container}/{name} is missing: the backup is incomplete or damaged"
        ) from None


async def read_layer(store: ObjectStore, record: BackupRecord, metadata_name: str) -> Layer:
    """A backup's metadata and block list, every field and size checked."""
    if not record.container or not record.service_metadata:
        raise CorruptBackupError(f"backup {record.id} has no objects recorded (it never completed)")
    where = f"metadata object {record.container}/{metadata_name}"
    raw = await get_backup_object(store, record, metadata_name, "metadata")
    try:
        meta = await anyio.to_thread.run_sync(json.loads, raw)
        version = int(meta.get("version", 1))
        owner = (meta.get("backup_id"), meta.get("volume_id"))
        size = int(meta["volume_size"])
        objects = [{key: (str if key in ("name", "compression") else int)(o[key]) for key in _ENTRY_KEYS}
                   | ({"sha256": str(o["sha256"])} if version == 1 else {}) for o in meta["objects"]]
        if version >= 2:
            block_size = int(meta["block_size"])
            sha_info = meta["sha256file"]
            sha_name, blocks, sha_hex = str(sha_info["name"]), int(sha_info["blocks"]), str(sha_info["sha256"])
            parent_id = meta.get("parent_id")
        zeros: ZeroRuns = [(int(a), int(n)) for a, n in meta["zero_blocks"]] if version >= 3 else []
        hash_name = str(meta["block_hash"]) if version >= 4 else "sha256"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptBackupError(f"{where} is unreadable: {exc!r}") from None
    if version not in range(1, METADATA_VERSION + 1):
        raise CorruptBackupError(f"{where} has version {version}; this notifykit reads versions 1 to"
                                 f" {METADATA_VERSION}")
    if owner != (record.id, record.volume_id):  # another backup's objects copied in
        raise CorruptBackupError(f"{where} is of backup {owner[0]!r} (volume {owner[1]!r}), the catalog's record"
                                 f" is backup {record.id!r} (volume {record.volume_id!r}): refusing to restore it")
    if size != record.size_bytes:
        raise CorruptBackupError(f"{where}: metadata says {size} bytes, catalog says {record.size_bytes}")
    if hash_name not in BLOCK_HASHES:
        raise CorruptBackupError(f"{where} names block hash {hash_name!r}; this notifykit knows"
                                 f" {', '.join(BLOCK_HASHES)}")
    try:
        block_hash = get_block_hash(hash_name)
    except BackupConfigError as exc:  # blake3 not installed here
        raise BackupError(f"{where}: {exc}") from None
    for i, entry in enumerate(objects):
        entry["index"] = i
    digests: bytes | None = None
    if version == 1:
        check_coverage(objects, size, where, contiguous=True, block_size=1)
    else:
        if parent_id != record.parent_id:
            raise CorruptBackupError(f"{where}: parent {parent_id!r}, catalog says {record.parent_id!r}")
        if block_size < 1 or blocks != math.ceil(size / block_size):
            raise CorruptBackupError(f"{where}: {blocks} blocks of {block_size} bytes cannot hold {size} bytes")
        runs = [{"name": f"zero blocks {a} to {a + n - 1}", "offset": a * block_size,
                 "length": min(n * block_size, size - a * block_size) if 0 < n and (a + n - 1) * block_size < size
                 else 0} for a, n in zeros]
        check_coverage(sorted(objects + runs, key=lambda e: int(e["offset"])), size, where,
                        contiguous=record.parent_id is None, block_size=block_size)
        digests = await get_backup_object(store, record, sha_name, "block list")
        if len(digests) != blocks * DIGEST_SIZE or \
                await anyio.to_thread.run_sync(lambda: hashlib.sha256(digests).hexdigest()) != sha_hex:
            raise CorruptBackupError(f"block list {record.container}/{sha_name} does not match its metadata")
        for a, n in zeros:  # a zero block is zero in the block list too (verify relies on it)
            if digests[a * DIGEST_SIZE:(a + n) * DIGEST_SIZE] != zero_run_digests(block_hash, a, n, block_size, size):
                raise CorruptBackupError(f"{where}: zero blocks {a} to {a + n - 1} are not zero in the block"
                                         f" list {record.container}/{sha_name}")
    return Layer(record, dict(meta), objects, digests, zeros, block_hash)


async def read_chain(read: Callable[[BackupRecord], Awaitable[Layer]], record: BackupRecord,
                     parents: Sequence[BackupRecord]) -> list[Layer]:
    layers = [await read(r) for r in (*parents, record)]
    for child, parent in zip(layers[1:], layers, strict=False):
        if child.record.parent_id != parent.record.id:
            raise BackupError(f"backup {child.record.id}: its parent is {child.record.parent_id},"
                              f" not {parent.record.id}")
        if child.digests is None or parent.digests is None or \
                (child.meta["chunk_size"], child.meta["block_size"], child.block_hash.name) != \
                (parent.meta["chunk_size"], parent.meta["block_size"], parent.block_hash.name):
            raise CorruptBackupError(f"backup {child.record.id} does not line up with its parent"
                                     f" {parent.record.id} (chunk size, block size or block hash differs)")
    if layers[0].record.parent_id is not None:
        raise BackupError(f"backup {layers[0].record.id} is incremental: restore needs its parent")
    return layers


def restore_plan(layers: list[Layer]) -> tuple[list[PlanItem], list[tuple[int, int]]]:
    """Which object gives each block: the newest backup holding it. Returns, per object
    that gives any, the byte ranges (within the object) to write, and the volume's byte
    ranges that are zero blocks (checked against the newest block list)."""
    newest = layers[-1]
    size = int(newest.meta["volume_size"])
    block_size = int(newest.meta.get("block_size", size or 1))
    if len(layers) == 1:  # a full backup: every object, whole
        return ([(newest, entry, [(0, entry["length"])]) for entry in newest.objects],
                [(a * block_size, min(n * block_size, size - a * block_size)) for a, n in newest.zeros])
    nblocks = math.ceil(size / block_size)
    owner = [-1] * nblocks
    zero = bytearray(nblocks)  # 1: the block's newest holder lists it as a zero block
    for n, layer in enumerate(layers):
        for entry in layer.objects:
            first = entry["offset"] // block_size
            last = min(nblocks, math.ceil((entry["offset"] + entry["length"]) / block_size))
            owner[first:last] = [n] * max(0, last - first)
            zero[first:last] = bytes(max(0, last - first))
        for first, count in layer.zeros:
            last = min(nblocks, first + count)
            owner[first:last] = [n] * max(0, last - first)
            zero[first:last] = b"\x01" * max(0, last - first)
    zeros: list[tuple[int, int]] = []
    k = zero.find(1)
    while k >= 0:
        end = zero.find(0, k)
        end = nblocks if end < 0 else end
        assert newest.digests is not None  # a chain's layers all have block lists
        if newest.digests[k * DIGEST_SIZE:end * DIGEST_SIZE] != \
                zero_run_digests(newest.block_hash, k, end - k, block_size, size):
            raise CorruptBackupError(f"backup {newest.record.id}: blocks {k} to {end - 1} are zero blocks of an"
                                     " older backup but not zero in its block list")
        zeros.append((k * block_size, min(end * block_size, size) - k * block_size))
        k = zero.find(1, end)
    if -1 in owner:
        block = owner.index(-1)
        raise CorruptBackupError(f"backup {newest.record.id}: no backup in its chain holds block {block}")
    plan: list[PlanItem] = []
    for n, layer in enumerate(layers):
        for entry in layer.objects:
            first = entry["offset"] // block_size
            ranges: list[tuple[int, int]] = []
            for k in range(first, min(nblocks, math.ceil((entry["offset"] + entry["length"]) / block_size))):
                if owner[k] != n:
                    continue
                start = k * block_size - entry["offset"]
                stop = min(start + block_size, size - entry["offset"], entry["length"])
                if ranges and ranges[-1][1] == start:
                    ranges[-1] = (ranges[-1][0], stop)
                else:
                    ranges.append((start, stop))
            if ranges:
                plan.append((layer, entry, ranges))
    return plan, zeros


def data_ranges(start: int, stop: int, offset: int, block_size: int, digests: bytes,
                size: int, block_hash: BlockHash) -> list[tuple[int, int]]:
    """The parts of ``start:stop`` (bytes of an object at volume ``offset``) that are not
    zero blocks in the block list."""
    zero_digest = block_hash.zero
    zero = zero_digest(block_size)
    first, stop_block = (offset + start) // block_size, (offset + stop - 1) // block_size + 1
    # the usual case, at C speed over this object's part of the list (a short last block is checked below)
    if zero not in digests[first * DIGEST_SIZE:stop_block * DIGEST_SIZE]:
        last = (size - 1) // block_size
        if (offset + stop - 1) // block_size != last or size % block_size == 0:
            return [(start, stop)]
    parts: list[tuple[int, int]] = []
    for i in range(start, stop, block_size):
        k = (offset + i) // block_size
        end = min(i + block_size, stop)
        if digests[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE] in (zero, zero_digest(end - i)):
            continue
        if parts and parts[-1][1] == i:
            parts[-1] = (parts[-1][0], end)
        else:
            parts.append((i, end))
    return parts


def merge_runs(runs: ZeroRuns) -> ZeroRuns:
    """Runs of blocks in order, touching runs joined."""
    merged: ZeroRuns = []
    for first, count in sorted(runs):
        if merged and merged[-1][0] + merged[-1][1] == first:
            merged[-1] = (merged[-1][0], merged[-1][1] + count)
        else:
            merged.append((first, count))
    return merged


def zero_run_digests(block_hash: BlockHash, first: int, count: int, block_size: int, size: int) -> bytes:
    """What the block list holds for a run of zero blocks (the volume's last block may be short)."""
    end = min(size, (first + count) * block_size)
    return block_hash.zeros(end - first * block_size, block_size)


def check_coverage(objects: list[dict[str, Any]], size: int, where: str, *, contiguous: bool,
                    block_size: int) -> None:
    """Objects in offset order, not overlapping, inside the volume, on block boundaries; a
    full backup's cover it exactly."""
    expected = 0
    for entry in objects:
        offset, length = entry["offset"], entry["length"]
        if length <= 0 or offset < expected or (contiguous and offset != expected) or offset % block_size:
            raise CorruptBackupError(f"{where}: object {entry['name']} is out of place")
        expected = offset + length
    if expected > size or (contiguous and expected != size):
        raise CorruptBackupError(f"{where}: objects cover {expected} bytes, the volume is {size}")
