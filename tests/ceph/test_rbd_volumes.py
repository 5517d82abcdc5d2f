"""RBD images as a backup source and a restore target (issue 25, part 3), against the
session's single-node Ceph: a pool of its own, a cephx client with ``profile rbd`` on that
pool only, images made and checked with librbd as client.admin and the ``rbd`` CLI
(independent of the code under test), all removed at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit.backup import BackupStatus
from notifykit.backup._rbd import RbdLocation, connect
from notifykit.backup._rbd_target import NOTE, _acquire
from notifykit.backup._target import RestoreTargetBusyError
from notifykit.backup._verify import verify_backup
from notifykit.backup.cli import main

from ..backup.helpers import Env, backup_env
from ..helpers import unavailable

pytestmark = pytest.mark.broker

MIB = 1024 * 1024
CHUNK = 256 * 1024  # 8 blocks of 32 KiB per chunk
BLOCK = 32 * 1024


def _require_binding() -> None:
    try:
        import rados  # noqa: F401
        import rbd  # noqa: F401
    except ImportError:
        unavailable("python3-rbd not importable (apt-get install python3-rbd python3-rados; scripts/link-ceph-bindings)")


@dataclass(frozen=True)
class RbdPool:
    """A pool for RBD images and a client.nk-… allowed ``profile rbd`` on it alone."""

    aio: Any
    name: str
    client: str
    keyring: Path

    @property
    def conf(self) -> str:
        return str(self.aio.conf)

    def url(self, image: str, keyring: Path | None = None) -> str:
        return f"rbd://{self.name}/{image}?conf={self.conf}&id={self.client}&keyring={keyring or self.keyring}"

    def admin(self) -> Any:
        """(cluster, ioctx) as client.admin: the test's own view of the pool."""
        import rados

        cluster = rados.Rados(conffile=self.conf, conf={"log_to_stderr": "false", "err_to_stderr": "false"})
        cluster.connect()
        return cluster, cluster.open_ioctx(self.name)

    def rbd(self, *argv: str) -> str:
        done = subprocess.run(["rbd", "-c", self.conf, "-p", self.name, *argv], capture_output=True, text=True,
                              timeout=120, check=True)
        return done.stdout

    def snapshots(self, image: str) -> list[str]:
        return sorted(s["name"] for s in json.loads(self.rbd("snap", "ls", image, "--format", "json")))

    def sha256(self, spec: str, size: int | None = None) -> str:
        """The sha256 of an image (or ``IMAGE@SNAP``), by ``rbd export`` (its first ``size`` bytes)."""
        done = subprocess.run(["rbd", "-c", self.conf, "-p", self.name, "export", "--no-progress", spec, "-"],
                              capture_output=True, timeout=300, check=True)
        return hashlib.sha256(done.stdout[:size] if size is not None else done.stdout).hexdigest()


@pytest.fixture(scope="module")
def rbd_pool(ceph_aio: Any) -> Iterator[RbdPool]:
    _require_binding()
    name = f"nk-rbd-{uuid.uuid4().hex[:8]}"
    client = f"nk-rbd-{uuid.uuid4().hex[:6]}"
    keyring = Path(ceph_aio.root) / "keys" / f"client.{client}.keyring"
    ceph_aio.ceph("osd", "pool", "create", name, "8")
    ceph_aio.ceph("osd", "pool", "application", "enable", name, "rbd")
    ceph_aio.ceph("auth", "get-or-create", f"client.{client}", "mon", "profile rbd", "osd", f"profile rbd pool={name}",
                  "-o", str(keyring))
    try:
        yield RbdPool(ceph_aio, name, client, keyring)
    finally:
        ceph_aio.ceph("osd", "pool", "delete", name, name, "--yes-i-really-really-mean-it")
        ceph_aio.ceph("auth", "del", f"client.{client}")


class Image:
    """An image of the test pool, written as client.admin through librbd (each call opens and
    closes it, so no handle of the test holds its lock while the code under test runs)."""

    def __init__(self, pool: RbdPool, size: int, name: str | None = None) -> None:
        import rbd

        self.pool = pool
        self.name = name or f"img-{uuid.uuid4().hex[:8]}"
        self.size = size
        self._cluster, self._ioctx = pool.admin()
        rbd.RBD().create(self._ioctx, self.name, size)

    def _do(self, call: Any) -> Any:
        import rbd

        with rbd.Image(self._ioctx, self.name) as image:
            return call(image)

    def write(self, data: bytes, offset: int) -> None:
        assert self._do(lambda image: image.write(data, offset)) == len(data)

    def discard(self, offset: int, length: int) -> None:
        self._do(lambda image: image.discard(offset, length))

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._do(lambda image: image.read(offset, length)))

    def metadata(self) -> dict[str, str]:
        return dict(self._do(lambda image: list(image.metadata_list())))

    def close(self) -> None:
        import rbd

        try:
            image = rbd.Image(self._ioctx, self.name)
            for snap in list(image.list_snaps()):
                image.remove_snap(snap["name"])
            image.close()
            rbd.RBD().remove(self._ioctx, self.name)
        except rbd.ImageNotFound:
            pass
        finally:
            self._ioctx.close()
            self._cluster.shutdown()


def remove_image(pool: RbdPool, name: str) -> None:
    import rbd

    cluster, ioctx = pool.admin()
    try:
        rbd.RBD().remove(ioctx, name)
    except rbd.ImageNotFound:
        pass
    finally:
        ioctx.close()
        cluster.shutdown()


def metadata(env: Env, record: Any) -> dict[str, Any]:
    path = env.root / "store" / record.container / f"{record.service_metadata}_metadata"
    meta: dict[str, Any] = json.loads(path.read_bytes())
    return meta


def rbd_env(tmp_path: Path) -> Any:
    return backup_env(tmp_path, chunk_size=CHUNK, compression="zstd")


# -- full backup and restore -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_full_backup_of_an_image_with_holes_restores_identically(tmp_path: Path, rbd_pool: RbdPool) -> None:
    rng = random.Random(1)
    image = Image(rbd_pool, 16 * MIB)
    target = f"restored-{uuid.uuid4().hex[:6]}"
    try:
        image.write(rng.randbytes(3 * MIB), MIB)  # data, then a hole, then data, then zeros written
        image.write(rng.randbytes(100_000), 9 * MIB + 5000)
        image.write(bytes(2 * MIB), 12 * MIB)
        image.write(b"end" * 1000, 16 * MIB - 3000)
        progress: list[tuple[int, int]] = []
        async with rbd_env(tmp_path) as env:
            record = await env.service.create_backup(rbd_pool.url(image.name), name="vol",
                                                     on_progress=lambda d, t: progress.append((d, t)))
            meta = metadata(env, record)
            restored = await env.service.restore_backup(record.id, rbd_pool.url(target), create=True)
            report = await verify_backup(env.service, record.id)
        snapshot = f"notifykit-{record.id}"
        assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
        assert record.snapshot_id == snapshot and record.size_bytes == 16 * MIB
        assert record.volume_path == rbd_pool.url(image.name)  # no secret in it: the key is in the keyring
        assert rbd_pool.snapshots(image.name) == [snapshot]
        source = meta["source"]
        assert source["kind"] == "rbd" and source["snapshot"] == snapshot and source["diff_from"] is None
        # The allocated extents only (as the OSD reports them: from an object's start to its end),
        # so the never written object 4-8 MiB and the end of the one at 8 MiB are not read.
        assert 4 * MIB <= source["bytes_read"] < 10 * MIB
        assert meta["zero_blocks"] and report.volume_bytes == 16 * MIB
        assert rbd_pool.sha256(target) == rbd_pool.sha256(f"{image.name}@{snapshot}")
        assert progress[-1] == (16 * MIB, 16 * MIB) and len(progress) == 16 * MIB // CHUNK
        assert "backup.create.end" in env.event_types and "backup.restore.end" in env.event_types
        ends = [m.payload for m in env.memory.messages if m.event_type == "backup.create.end"]
        assert [p["snapshot_id"] for p in ends] == [snapshot]  # the notifications name the snapshot read
        assert any(m.event_type == "backup.createprogress" for m in env.memory.messages)
    finally:
        image.close()
        remove_image(rbd_pool, target)


# -- incremental backups ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_incremental_reads_only_the_changed_extents_and_restores(tmp_path: Path, rbd_pool: RbdPool) -> None:
    rng = random.Random(2)
    size = 16 * MIB
    image = Image(rbd_pool, size)
    target = f"restored-{uuid.uuid4().hex[:6]}"
    try:
        for at in range(0, size, 4 * MIB):
            image.write(rng.randbytes(4 * MIB), at)
        async with rbd_env(tmp_path) as env:
            full = await env.service.create_backup(rbd_pool.url(image.name))
            changed = [rng.randrange(size // BLOCK) * BLOCK for _ in range(5)]  # 5 blocks: 1 % of the image
            for at in changed:
                image.write(rng.randbytes(BLOCK), at)
            image.discard(8 * MIB, 4 * MIB)  # a whole RBD object gone: zero blocks, never read
            increment = await env.service.create_backup(rbd_pool.url(image.name), incremental=True)
            meta, full_meta = metadata(env, increment), metadata(env, full)
            await env.service.restore_backup(increment.id, rbd_pool.url(target), create=True)
            await verify_backup(env.service, increment.id)
        source = meta["source"]
        assert increment.parent_id == full.id and source["diff_from"] == f"notifykit-{full.id}"
        assert full_meta["source"]["bytes_read"] == size
        assert 0 < source["bytes_read"] <= len(set(changed)) * BLOCK <= 0.03 * size, source
        assert [8 * MIB // BLOCK, 4 * MIB // BLOCK] in meta["zero_blocks"]
        stored = sum(o["length"] for o in meta["objects"])
        assert stored == len(set(changed) - set(range(8 * MIB, 12 * MIB, BLOCK))) * BLOCK
        assert rbd_pool.sha256(target) == rbd_pool.sha256(f"{image.name}@notifykit-{increment.id}")
        assert rbd_pool.snapshots(image.name) == sorted([f"notifykit-{full.id}", f"notifykit-{increment.id}"])
    finally:
        image.close()
        remove_image(rbd_pool, target)


@pytest.mark.asyncio
async def test_a_vanished_parent_snapshot_means_a_full_read_logged_once(tmp_path: Path, rbd_pool: RbdPool,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="backup")
    rng = random.Random(3)
    image = Image(rbd_pool, 4 * MIB)
    target = f"restored-{uuid.uuid4().hex[:6]}"
    try:
        image.write(rng.randbytes(2 * MIB), 0)
        async with rbd_env(tmp_path) as env:
            full = await env.service.create_backup(rbd_pool.url(image.name))
            rbd_pool.rbd("snap", "rm", f"{image.name}@notifykit-{full.id}")
            image.write(rng.randbytes(BLOCK), 5 * BLOCK)
            increment = await env.service.create_backup(rbd_pool.url(image.name), incremental=True)
            meta = metadata(env, increment)
            await env.service.restore_backup(increment.id, rbd_pool.url(target), create=True)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len([w for w in warnings if "is gone" in w]) == 1, warnings
        assert f"notifykit-{full.id}" in warnings[0] and "reads the whole image" in warnings[0]
        assert meta["source"]["diff_from"] is None and meta["source"]["bytes_read"] == 2 * MIB
        assert sum(o["length"] for o in meta["objects"]) == BLOCK  # still only the changed block stored
        assert rbd_pool.sha256(target) == rbd_pool.sha256(f"{image.name}@notifykit-{increment.id}")
    finally:
        image.close()
        remove_image(rbd_pool, target)


@pytest.mark.asyncio
async def test_delete_removes_the_backups_snapshot(tmp_path: Path, rbd_pool: RbdPool) -> None:
    image = Image(rbd_pool, 2 * MIB)
    try:
        image.write(random.Random(4).randbytes(MIB), 0)
        async with rbd_env(tmp_path) as env:
            full = await env.service.create_backup(rbd_pool.url(image.name))
            increment = await env.service.create_backup(rbd_pool.url(image.name), incremental=True)
            both = rbd_pool.snapshots(image.name)
            await env.service.delete_backup(increment.id)
            after_increment = rbd_pool.snapshots(image.name)
            await env.service.delete_backup(full.id)
        assert both == sorted([f"notifykit-{full.id}", f"notifykit-{increment.id}"])
        assert after_increment == [f"notifykit-{full.id}"]  # the newest left keeps its snapshot
        assert rbd_pool.snapshots(image.name) == []
    finally:
        image.close()


# -- restore targets -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_restore_into_an_existing_image(tmp_path: Path, rbd_pool: RbdPool) -> None:
    rng = random.Random(5)
    image = Image(rbd_pool, 4 * MIB)
    existing = Image(rbd_pool, 6 * MIB)
    small = Image(rbd_pool, 2 * MIB)
    try:
        image.write(rng.randbytes(MIB), MIB)  # the rest of the image is holes
        tail = rng.randbytes(2 * MIB)
        existing.write(rng.randbytes(4 * MIB), 0)  # garbage where the backup has holes too
        existing.write(tail, 4 * MIB)
        async with rbd_env(tmp_path) as env:
            record = await env.service.create_backup(rbd_pool.url(image.name))
            refusals = []
            for url, kw in ((rbd_pool.url(existing.name), {}), (rbd_pool.url(small.name), {"overwrite": True}),
                            (rbd_pool.url("nk-no-such-image"), {"overwrite": True})):
                with pytest.raises(Exception) as refused:
                    await env.service.restore_backup(record.id, url, **kw)
                refusals.append(str(refused.value))
            restored = await env.service.restore_backup(record.id, rbd_pool.url(existing.name), overwrite=True)
        assert "is an existing RBD image; pass --overwrite" in refusals[0]
        assert "is 2097152 bytes, the backup 4194304: grow it" in refusals[1]
        assert "does not exist: pass --create" in refusals[2]
        assert restored.status is BackupStatus.AVAILABLE
        snapshot = f"{image.name}@notifykit-{record.id}"
        assert rbd_pool.sha256(existing.name, 4 * MIB) == rbd_pool.sha256(snapshot)  # holes discarded to zeros
        assert existing.read(4 * MIB, 2 * MIB) == tail  # past the backup's size: untouched
        assert NOTE not in existing.metadata()  # the lock's note went with the lock
    finally:
        for made in (image, existing, small):
            made.close()


@pytest.mark.asyncio
async def test_a_restore_to_an_image_another_restore_holds_is_refused_by_name(tmp_path: Path,
                                                                               rbd_pool: RbdPool) -> None:
    image = Image(rbd_pool, 2 * MIB)
    target = Image(rbd_pool, 2 * MIB)
    loc = RbdLocation.parse(rbd_pool.url(target.name))
    try:
        image.write(random.Random(6).randbytes(MIB), 0)
        async with rbd_env(tmp_path) as env:
            record = await env.service.create_backup(rbd_pool.url(image.name))
            conn = connect(loc, "restore target")  # another restore, of backup "b-other", holding the target
            import rbd

            holder = rbd.Image(conn.ioctx, target.name)
            try:
                _acquire(holder, loc, "b-other")
                with pytest.raises(RestoreTargetBusyError) as busy:
                    await env.service.restore_backup(record.id, rbd_pool.url(target.name), overwrite=True)
            finally:
                holder.close()
                conn.close()
            after = await env.service.show(record.id)
            restored = await env.service.restore_backup(record.id, rbd_pool.url(target.name), overwrite=True)
        assert "is in use by the restore of backup b-other (process" in str(busy.value)
        assert busy.value.holder["backup_id"] == "b-other"
        assert after.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    finally:
        image.close()
        target.close()


# -- errors ------------------------------------------------------------------------------------


def test_cli_wrong_key_missing_image_and_pool_are_one_line_each(tmp_path: Path, rbd_pool: RbdPool,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    image = Image(rbd_pool, MIB)
    try:
        text = rbd_pool.keyring.read_text()
        key = text.split("key = ", 1)[1].split()[0]
        wrong = key[:20] + ("AAAA" if key[20:24] != "AAAA" else "BBBB") + key[24:]
        bad_keyring = tmp_path / "wrong.keyring"
        bad_keyring.write_text(text.replace(key, wrong))
        log = tmp_path / "notifications.jsonl"
        common = ["--catalog", str(tmp_path / "catalog.sqlite3"), "--store", str(tmp_path / "store"),
                  "--notifier", f"log://{log}"]
        cases = [
            (rbd_pool.url(image.name, bad_keyring), f"access denied for client.{rbd_pool.client}"),
            (rbd_pool.url("nk-no-such-image"), f"rbd://{rbd_pool.name}/nk-no-such-image: the image does not exist"),
            (rbd_pool.url(image.name).replace(f"rbd://{rbd_pool.name}/", "rbd://nk-no-such-pool/"),
             "the pool 'nk-no-such-pool' does not exist"),
            (rbd_pool.url(image.name) + f"&key={wrong}", "an rbd URL takes no key="),
        ]
        for url, expected in cases:
            assert main(["create", url, *common]) == 1
            out, err = capsys.readouterr()
            assert err.count("\n") == 1 and expected in err, err
            assert "Traceback" not in err and wrong not in err and key not in out + err
        assert key not in log.read_text() and rbd_pool.snapshots(image.name) == []
        assert main(["create", rbd_pool.url(image.name), *common]) == 0
        backup_id = capsys.readouterr().out.strip()
        target = f"cli-{uuid.uuid4().hex[:6]}"
        assert main(["restore", backup_id, rbd_pool.url(target), *common]) == 1
        assert "pass --create" in capsys.readouterr().err
        assert main(["restore", backup_id, rbd_pool.url(target), "--create", *common]) == 0
        assert main(["delete", backup_id, *common]) == 0
        assert rbd_pool.snapshots(image.name) == []
        remove_image(rbd_pool, target)
    finally:
        image.close()


HOLD_LOCK = """
import sys, time
import rbd
from notifykit.backup._rbd import RbdLocation, connect
from notifykit.backup._rbd_target import _acquire

loc = RbdLocation.parse(sys.argv[1])
conn = connect(loc, "restore target")
image = rbd.Image(conn.ioctx, loc.image)
_acquire(image, loc, "b-killed")
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.asyncio
async def test_the_lock_of_a_restore_killed_by_sigkill_is_broken_by_the_next(tmp_path: Path, rbd_pool: RbdPool,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A restore process killed while it held the image (no unlock, its watch still on the OSD)
    does not keep the next restore out: that one sees the holder is gone and breaks the lock."""
    import sys

    caplog.set_level(logging.WARNING, logger="backup")
    image = Image(rbd_pool, 2 * MIB)
    target = Image(rbd_pool, 2 * MIB)
    try:
        image.write(random.Random(7).randbytes(MIB), 0)
        holder = await anyio.open_process([sys.executable, "-c", HOLD_LOCK, rbd_pool.url(target.name)])
        try:
            with anyio.fail_after(60):
                assert holder.stdout is not None and (await holder.stdout.receive()).strip() == b"locked"
        finally:
            holder.kill()  # SIGKILL: no unlock, its watch stays on the OSD for a while
            with anyio.fail_after(30):
                await holder.wait()
        async with rbd_env(tmp_path) as env:
            record = await env.service.create_backup(rbd_pool.url(image.name))
            restored = await env.service.restore_backup(record.id, rbd_pool.url(target.name), overwrite=True)
        assert restored.status is BackupStatus.AVAILABLE
        assert [r for r in caplog.records if "breaking the lock of the restore of backup b-killed" in r.getMessage()]
        assert rbd_pool.sha256(target.name) == rbd_pool.sha256(f"{image.name}@notifykit-{record.id}")
    finally:
        image.close()
        target.close()
