"""Precomputed digests (issue 29, "one pass over every byte"): a store that names the digests
it checks objects by (``object_digests``) gets them with each chunk, computed once by the
driver in the chunk's pack worker; a store without the attribute is called as before."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from notifykit.backup import BackupStatus
from notifykit.backup._objectstore import ObjectDigests, compute_digests, wanted_digests
from notifykit.backup._posix import PosixObjectStore

from .helpers import CHUNK, backup_env


class DigestTakingStore(PosixObjectStore):
    """A posix store that asks for precomputed digests and records what it was handed."""

    def __init__(self, root: Path, wanted: tuple[str, ...]) -> None:
        super().__init__(root, fsync=False)
        self.object_digests = wanted
        self.handed: dict[str, tuple[bytes, ObjectDigests | None]] = {}

    async def put_object(self, container: str, name: str, data: bytes, *,
                         digests: ObjectDigests | None = None) -> None:
        self.handed[name] = (bytes(data), digests)
        await super().put_object(container, name, data)


class ThirdPartyStore(PosixObjectStore):
    """A store written before digests existed: put_object takes exactly three arguments."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.calls = 0

    async def put_object(self, container: str, name: str, data: bytes) -> None:
        self.calls += 1
        await super().put_object(container, name, data)


@pytest.mark.asyncio
@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_a_store_asking_for_md5_and_sha256_gets_both_for_every_chunk(tmp_path: Path, compression: str) -> None:
    store = DigestTakingStore(tmp_path / "store", ("md5", "sha256"))
    async with backup_env(tmp_path, store=store, compression=compression) as env:
        volume = env.volume(6 * CHUNK + 100)
        record = await env.service.create_backup(volume)
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    chunks = {name: handed for name, handed in store.handed.items() if not name.endswith(("_metadata", "_sha256file"))}
    assert len(chunks) == 7 and record.status is BackupStatus.AVAILABLE
    for data, digests in chunks.values():
        assert digests == ObjectDigests(md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest())
    # the block list and the metadata are small and written by the driver itself: the store hashes them
    assert [d for name, (_, d) in store.handed.items() if name.endswith(("_metadata", "_sha256file"))] == [None, None]
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
    assert restored.status is BackupStatus.AVAILABLE


@pytest.mark.asyncio
async def test_only_the_digests_a_store_names_are_computed(tmp_path: Path) -> None:
    store = DigestTakingStore(tmp_path / "store", ("md5", "crc32c"))  # an unknown name is ignored
    async with backup_env(tmp_path, store=store) as env:
        await env.service.create_backup(env.volume(3 * CHUNK))
    handed = [d for name, (_, d) in store.handed.items() if name.endswith(("-00000", "-00001", "-00002"))]
    assert len(handed) == 3
    assert all(d is not None and d.md5 and d.sha256 is None for d in handed)


@pytest.mark.asyncio
async def test_an_increment_hands_over_the_digests_of_each_changed_run(tmp_path: Path) -> None:
    store = DigestTakingStore(tmp_path / "store", ("md5",))
    async with backup_env(tmp_path, store=store, chunk_size=4 * 32 * 1024) as env:
        volume = env.volume(8 * 32 * 1024)
        full = await env.service.create_backup(volume)
        data = bytearray(volume.read_bytes())
        data[5 * 32 * 1024 + 7] ^= 0xFF  # one block of the second chunk
        volume.write_bytes(bytes(data))
        before = set(store.handed)
        increment = await env.service.create_backup(volume, incremental=True)
        restored = await env.service.restore_backup(increment.id, tmp_path / "restored.img")
    assert full.status is increment.status is restored.status is BackupStatus.AVAILABLE
    pieces = {n: v for n, v in store.handed.items() if n not in before and not n.endswith(("_metadata", "_sha256file"))}
    assert len(pieces) == 1
    ((stored, digests),) = pieces.values()
    assert digests == ObjectDigests(md5=hashlib.md5(stored).hexdigest())
    assert (tmp_path / "restored.img").read_bytes() == bytes(data)


@pytest.mark.asyncio
async def test_a_store_without_object_digests_is_called_as_before(tmp_path: Path) -> None:
    store = ThirdPartyStore(tmp_path / "store")
    async with backup_env(tmp_path, store=store, compression="zstd") as env:
        volume = env.volume(5 * CHUNK)
        record = await env.service.create_backup(volume)
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert store.calls == 5 + 2 and restored.status is BackupStatus.AVAILABLE
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()


def test_digest_helpers() -> None:
    assert wanted_digests(object()) == ()
    assert wanted_digests(type("S", (), {"object_digests": ["sha256", "md5", "xxh3"]})()) == ("md5", "sha256")
    assert compute_digests(b"abc", ()) is None
    assert compute_digests(memoryview(b"abc"), ("sha256",)) == ObjectDigests(sha256=hashlib.sha256(b"abc").hexdigest())
