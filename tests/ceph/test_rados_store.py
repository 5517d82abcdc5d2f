"""The backup service on Ceph through librados with the rados store (issue 25, part 2): each
chunk a RADOS object in a pool of its own for the session, each backup in its own namespace.

What the store left in the pool is read with the ``rados`` CLI (independent of the store).
The OSD outage tests run on a private cluster of their own, so stopping its only OSD cannot
disturb the session's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from notifykit.backup import BackupConfigError, BackupStatus, ObjectStoreError
from notifykit.backup._rados import FIRST_READ_BOUND, RadosObjectStore
from notifykit.backup.cli import main
from notifykit.backup.plugin import PermanentObjectStoreError, TransientObjectStoreError, store_from_url

from ..backup import incremental_cases as cases
from ..backup.helpers import CHUNK, Env, backup_env, write_volume
from ..helpers import load_script, unavailable
from .helpers import in_thread

pytestmark = pytest.mark.broker


@dataclass(frozen=True)
class Pool:
    """A pool of the session's Ceph and a cephx client allowed to use only that pool."""

    aio: Any
    name: str
    client: str
    keyring: Path

    @property
    def conf(self) -> str:
        return str(self.aio.conf)

    def url(self, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"conf": self.conf, "id": self.client, "keyring": str(self.keyring),
                                                  "retry_backoff": "0.05", **options}.items())
        return f"rados://{self.name}?{query}"

    def key(self) -> str:
        text = self.keyring.read_text()
        return text.split("key = ", 1)[1].split()[0]

    def wrong_key(self) -> str:
        """The client's key with four characters of its secret changed (still a well-formed key)."""
        key = self.key()  # base64: 16 characters of header, then the secret
        return key[:20] + ("AAAA" if key[20:24] != "AAAA" else "BBBB") + key[24:]


def _require_binding() -> None:
    try:
        import rados  # noqa: F401
    except ImportError:
        unavailable("python3-rados not importable (apt-get install python3-rados; scripts/link-ceph-bindings)")


def make_pool(aio: Any, label: str) -> Pool:
    """A fresh pool and a client.nk-… whose caps name only that pool (least privilege)."""
    name = f"nk-{label}-{uuid.uuid4().hex[:8]}"
    client = f"nk-{label}-{uuid.uuid4().hex[:6]}"
    keyring = Path(aio.root) / "keys" / f"client.{client}.keyring"
    aio.ceph("osd", "pool", "create", name, "8")
    aio.ceph("auth", "get-or-create", f"client.{client}", "mon", "allow r", "osd", f"allow rw pool={name}",
             "-o", str(keyring))
    return Pool(aio, name, client, keyring)


def drop_pool(pool: Pool) -> None:
    pool.aio.ceph("osd", "pool", "delete", pool.name, pool.name, "--yes-i-really-really-mean-it")
    pool.aio.ceph("auth", "del", f"client.{pool.client}")


@pytest.fixture(scope="session")
def pool(ceph_aio: Any) -> Iterator[Pool]:
    _require_binding()
    made = make_pool(ceph_aio, "rados")
    try:
        yield made
    finally:
        drop_pool(made)


def pool_objects(pool: Pool, prefix: str = "") -> list[tuple[str, str]]:
    """(namespace, name) of every object in the pool whose namespace starts with ``prefix``, by
    the ``rados`` CLI as client.admin (tests share the pool: each uses a prefix of its own)."""
    done = subprocess.run(["rados", "-c", pool.conf, "-p", pool.name, "ls", "--all", "--format", "json"],
                          capture_output=True, text=True, timeout=60, check=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    return sorted((o["namespace"], o["name"]) for o in json.loads(lines[-1] if lines else "[]")
                  if o["namespace"].startswith(prefix))


def rados_store(pool: Pool, options: dict[str, Any] | None = None, **query: str) -> RadosObjectStore:
    store = store_from_url(pool.url(**query), options)
    assert isinstance(store, RadosObjectStore)
    return store


@asynccontextmanager
async def rados_env(root: Path, store: RadosObjectStore, **kw: Any) -> AsyncIterator[Env]:
    await store.open()
    try:
        async with backup_env(root, store=store, uploads=kw.pop("uploads", store.default_uploads), **kw) as env:
            yield env
    finally:
        await store.aclose()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.asyncio
async def test_round_trip_restore_and_delete_leave_nothing_in_the_pool(tmp_path: Path, pool: Pool) -> None:
    store = rados_store(pool, prefix="cinder")
    async with rados_env(tmp_path, store, compression="zstd") as env:
        volume = env.volume(40 * CHUNK + 17)
        record = await env.service.create_backup(volume, name="nightly")
        assert record.container is not None and record.service_metadata is not None
        stored = await in_thread(pool_objects, pool, "cinder/")
        listed = await env.store.list_objects(record.container)
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
        deleted = await env.service.delete_backup(record.id)
        after = await in_thread(pool_objects, pool, "cinder/")
    namespace = f"cinder/{record.container}"
    names = [f"{record.service_metadata}-{i:05d}" for i in range(41)] + [
        f"{record.service_metadata}_metadata", f"{record.service_metadata}_sha256file"]
    assert record.status is BackupStatus.AVAILABLE and record.service == "backup.drivers.rados"
    assert record.store_kind == "rados" and record.store_location == f"rados://{pool.name}/cinder"
    assert stored == [(namespace, n) for n in sorted(names)] and listed == sorted(names)
    assert sha256(tmp_path / "restored.img") == sha256(volume) and restored.status is BackupStatus.AVAILABLE
    assert deleted.status is BackupStatus.DELETED and after == []


@pytest.mark.asyncio
async def test_incremental_stores_only_changed_blocks_and_restores(tmp_path: Path, pool: Pool) -> None:
    async with rados_env(tmp_path, rados_store(pool), chunk_size=cases.CHUNK) as env:
        await cases.full_change_incremental_restore(env)


@pytest.mark.asyncio
async def test_chain_of_increments_restores_and_deleting_them_all_leaves_nothing(tmp_path: Path, pool: Pool) -> None:
    async with rados_env(tmp_path, rados_store(pool, prefix="chain"), chunk_size=cases.CHUNK) as env:
        await cases.chain_of_three(env)
        while leaves := [r for r in await env.service.list() if r.num_dependent_backups == 0]:
            for record in leaves:  # the newest increment first: nothing depends on it
                await env.service.delete_backup(record.id)
        assert await env.service.list() == []
    assert await in_thread(pool_objects, pool, "chain/") == []


@pytest.mark.asyncio
async def test_missing_object_and_missing_pool(tmp_path: Path, pool: Pool) -> None:
    store = rados_store(pool)
    await store.open()
    try:
        with pytest.raises(ObjectStoreError, match="object not found") as missing:
            await store.get_object("backup_none", "nothing")
        await store.delete_object("backup_none", "nothing")  # already gone: done
        assert await store.list_objects("backup_none") == []
    finally:
        await store.aclose()
    assert type(missing.value).__name__ == "ObjectNotFoundError"
    other = store_from_url(pool.url().replace(f"rados://{pool.name}?", "rados://nk-no-such-pool?"))
    with pytest.raises(PermanentObjectStoreError, match="the pool does not exist"):
        await other.open()


class _CountingIoctx:
    """An I/O context that records which librados calls a read makes (read, stat)."""

    def __init__(self, ioctx: Any, calls: list[str]) -> None:
        self._ioctx, self._calls = ioctx, calls

    def read(self, key: str, length: int, offset: int) -> bytes:
        self._calls.append("read")
        data: bytes = self._ioctx.read(key, length, offset)
        return data

    def stat(self, key: str) -> Any:
        self._calls.append("stat")
        return self._ioctx.stat(key)


async def _read_counting(pool: Pool, names: list[str]) -> list[tuple[bytes, list[str]]]:
    """Each object of ``names`` read in turn by one fresh store, with the librados calls of each read."""
    store = rados_store(pool, prefix="bound")
    await store.open()
    calls: list[str] = []
    real_ioctx = store._ioctx
    store._ioctx = lambda container: _CountingIoctx(real_ioctx(container), calls)  # type: ignore[method-assign,assignment,return-value]
    read = []
    try:
        for name in names:
            calls.clear()
            read.append((await store.get_object("backup_bound", name), list(calls)))
    finally:
        await store.aclose()
    return read


@pytest.mark.asyncio
async def test_objects_at_and_past_the_read_bound_come_back_whole(pool: Pool) -> None:
    """A read asks for FIRST_READ_BOUND bytes in one call: an object that long or longer must
    not come back cut at the bound, and the raised bound then serves the next reads in one call."""
    bound = FIRST_READ_BOUND
    sizes = {"empty": 0, "small": 1, "under": bound - 1, "at": bound, "past": bound + 1, "larger": bound + 4099}
    bodies = {name: random.randbytes(size) for name, size in sizes.items()}
    store = rados_store(pool, prefix="bound")
    await store.open()
    try:
        for name, body in bodies.items():
            await store.put_object("backup_bound", name, body)
        first = await _read_counting(pool, ["empty", "small", "under", "larger", "past", "at", "under"])
        exact = await _read_counting(pool, ["at"])
        for name in bodies:
            await store.delete_object("backup_bound", name)
    finally:
        await store.aclose()
    assert [data for data, _ in first] == [bodies[n] for n in ("empty", "small", "under", "larger", "past", "at", "under")]
    assert exact[0][0] == bodies["at"]
    assert [calls for _, calls in first] == [
        ["read"], ["read"], ["read"],
        ["read", "stat", "read"],  # longer than the bound: the rest read after the size, the bound raised
        ["read"], ["read"], ["read"]]
    assert exact[0][1] == ["read", "stat"]  # exactly the bound: the size says there is no more
    assert await in_thread(pool_objects, pool, "bound/") == []


def test_cli_create_restore_delete_with_a_wrong_key_first(tmp_path: Path, pool: Pool,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong cephx key is one permanent error line that names the client and never the key;
    the right key (from the keyring the URL names) then makes the round trip."""
    volume = write_volume(tmp_path / "vol.img", 70_000)
    log = tmp_path / "notifications.jsonl"
    wrong = pool.wrong_key()
    common = ["--catalog", str(tmp_path / "catalog.sqlite3"), "--chunk-size", "16KiB", "--notifier", f"log://{log}"]
    base = f"rados://{pool.name}?conf={pool.conf}&id={pool.client}&retry_backoff=0.05"
    assert main(["create", str(volume), "--store", f"{base}&key={wrong}", *common]) == 1
    out, err = capsys.readouterr()
    # librados answers a wrong key with EACCES or, now and then, EINVAL: both name the key
    assert err.count("\n") == 1 and ("access denied" in err or "check the key" in err), err
    assert f"client.{pool.client}" in err, err
    assert "Traceback" not in err and wrong not in out + err
    assert not log.exists() or wrong not in log.read_text()

    good = ["--store", f"{base}&keyring={pool.keyring}&prefix=cli", *common]
    assert main(["create", str(volume), *good]) == 0
    backup_id = capsys.readouterr().out.strip()
    assert main(["restore", backup_id, str(tmp_path / "out.img"), *good]) == 0
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    assert main(["delete", backup_id, *good]) == 0
    assert pool_objects(pool, "cli/") == []
    assert pool.key() not in log.read_text() + capsys.readouterr().err


@pytest.mark.asyncio
async def test_wrong_key_in_store_options_is_permanent_and_not_retried(tmp_path: Path, pool: Pool,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = pool.wrong_key()
    store = store_from_url(f"rados://{pool.name}?conf={pool.conf}&id={pool.client}", {"key": wrong})
    with pytest.raises(PermanentObjectStoreError, match=f"access denied .*client.{pool.client}") as failed:
        await store.open()
    texts = [str(failed.value), repr(store), repr(store.options), *(r.getMessage() for r in caplog.records)]
    assert not [t for t in texts if wrong in t]
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]  # not retried


# -- a stopped OSD, on a private cluster --------------------------------------------------------


@pytest.fixture(scope="module")
def private_pool(tmp_path_factory: pytest.TempPathFactory, ceph_aio: Any) -> Iterator[Pool]:
    """A cluster of its own (after the session's is up, so a missing Ceph is reported once)."""
    _require_binding()
    aio = load_script("ceph-aio").CephAIO(tmp_path_factory.mktemp("ceph-osd-outage"))
    aio.start()
    try:
        yield make_pool(aio, "outage")
    finally:
        aio.stop()


@pytest.mark.asyncio
async def test_osd_stopped_mid_backup_is_retried_until_it_returns(tmp_path: Path, private_pool: Pool,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup.rados")
    aio = private_pool.aio
    store = rados_store(private_pool, rados_osd_op_timeout="2", retry_attempts="30", retry_backoff="0.1")
    stopped: list[int] = []

    def stop_osd_at_object_3(done: int, total: int) -> None:
        if done >= 3 * CHUNK and not stopped:
            stopped.append(done)
            aio.stop_osd()

    try:
        async with rados_env(tmp_path, store) as env:
            volume = env.volume(16 * CHUNK)
            records = []
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    async def create() -> None:
                        records.append(await env.service.create_backup(volume, on_progress=stop_osd_at_object_3))

                    tg.start_soon(create)
                    while not any("attempt 2 of 30" in r.getMessage() for r in caplog.records):
                        await anyio.sleep(0.05)
                    await in_thread(aio.start_osd)
            await env.service.restore_backup(records[0].id, tmp_path / "restored.img")
    finally:
        await in_thread(aio.start_osd)
    assert stopped and records[0].status is BackupStatus.AVAILABLE
    assert sha256(tmp_path / "restored.img") == sha256(volume)
    assert any("timed out" in r.getMessage() for r in caplog.records)


@pytest.mark.asyncio
async def test_osd_down_gives_up_within_the_op_timeout_bound(tmp_path: Path, private_pool: Pool,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backup.rados")
    aio = private_pool.aio
    store = rados_store(private_pool, rados_osd_op_timeout="2", retry_attempts="2", retry_backoff="0.05")

    def stop_osd_at_object_2(done: int, total: int) -> None:
        if done >= 2 * CHUNK and aio.osd_running():
            aio.stop_osd()

    try:
        async with rados_env(tmp_path, store) as env:
            with anyio.fail_after(60), pytest.raises(TransientObjectStoreError, match=r"gave up after 2 attempt\(s\)"):
                await env.service.create_backup(env.volume(12 * CHUNK), on_progress=stop_osd_at_object_2)
            record = (await env.service.list())[0]
    finally:
        await in_thread(aio.start_osd)
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert record.fail_reason.startswith(f"rados: cannot store object {private_pool.name}/backup_"), record.fail_reason
    assert "timed out" in record.fail_reason
    assert any("attempt 2 of 2" in r.getMessage() for r in caplog.records)


# -- the store URL (no cluster needed) ---------------------------------------------------------


def test_url_rules_name_the_option_and_never_print_the_key() -> None:
    secret = "AQBsecretsecretsecretsecretsecretsecret=="
    with pytest.raises(BackupConfigError, match=r"unknown option\(s\) 'colour' \(allowed: conf, id, key, keyring,"):
        store_from_url(f"rados://backups?colour=red&key={secret}")
    for url, problem in [(f"rados://backups?id=client.backup&key={secret}", "as `rados --id` takes it"),
                         (f"rados://backups?rados_osd_op_timeout=soon&key={secret}", "rados_osd_op_timeout must be"),
                         (f"rados://admin:{secret}@backups", "takes no USER:KEY@"),
                         (f"rados://backups:6789?key={secret}", "must look like rados://POOL"),
                         (f"rados://a,b?key={secret}", "must look like rados://POOL")]:
        with pytest.raises(BackupConfigError, match=problem) as failed:
            store_from_url(url)
        assert secret not in str(failed.value), url
    store = store_from_url("rados://backups/cinder?conf=/etc/ceph/ceph.conf&id=backup&rados_osd_op_timeout=2.5s",
                           {"key": secret, "uploads": 3})
    assert isinstance(store, RadosObjectStore) and secret not in repr(store) + repr(store.options)
    assert store.location == "rados://backups/cinder" and store.default_uploads == 3
    assert store.options.client_conf()["rados_osd_op_timeout"] == "3"  # Ceph takes whole seconds


def test_without_python3_rados_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['rados'] = None\n"
            "from notifykit.backup.plugin import store_from_url\n"
            "try:\n    store_from_url('rados://backups')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.stdout.startswith("BackupConfigError ") and "apt-get install python3-rados" in done.stdout, done


@pytest.mark.asyncio
async def test_a_client_confined_to_its_namespaces_backs_up_there_and_nowhere_else(tmp_path: Path, pool: Pool) -> None:
    """Namespaces per backup let a cephx cap fence the backup client in: ``namespace=PREFIX/*``."""
    client = f"nk-fenced-{uuid.uuid4().hex[:6]}"
    keyring = Path(pool.aio.root) / "keys" / f"client.{client}.keyring"
    await in_thread(lambda: pool.aio.ceph("auth", "get-or-create", f"client.{client}", "mon", "allow r", "osd",
                                          f"allow rw pool={pool.name} namespace=fenced/*", "-o", str(keyring)))
    fenced = Pool(pool.aio, pool.name, client, keyring)
    try:
        async with rados_env(tmp_path, rados_store(fenced, prefix="fenced")) as env:
            volume = env.volume(5 * CHUNK)
            record = await env.service.create_backup(volume)
            await env.service.restore_backup(record.id, tmp_path / "out.img")
            await env.service.delete_backup(record.id)
        outside = rados_store(fenced, prefix="elsewhere")
        await outside.open()
        try:
            with pytest.raises(PermanentObjectStoreError, match="access denied") as denied:
                await outside.put_object("backup_x", "chunk", b"data")
        finally:
            await outside.aclose()
    finally:
        await in_thread(lambda: pool.aio.ceph("auth", "del", f"client.{client}"))
    assert (tmp_path / "out.img").read_bytes() == volume.read_bytes()
    assert await in_thread(pool_objects, pool, "fenced/") == []
    assert f"client.{client}" in str(denied.value) and "elsewhere/backup_x" in str(denied.value)
