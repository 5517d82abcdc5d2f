"""Swift gets each chunk's MD5 (its ETag) from the driver, which hashed the chunk once in its
pack worker; the store hashes only the objects nobody hashed for it (issue 29, "one pass over
every byte"). No whole-object sha256 is sent any more: Swift checks the ETag, restore checks
each block against the block list, and the X-Object-Meta-Sha256 of older backups' objects is
still checked on GET."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus, CorruptBackupError
from notifykit.backup import _swift as swift_module
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

from ..backup.corrupting_proxy import CorruptingProxy
from ..backup.helpers import CHUNK
from .helpers import SwiftAPI, swift_env

pytestmark = pytest.mark.asyncio


async def test_chunks_are_not_hashed_again_by_the_store(tmp_path: Path, swift_aio: Any, swift_options: SwiftOptions,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = swift_module._md5

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(swift_module, "_md5", counting)
    async with swift_env(tmp_path, swift_options, compression="zstd") as env, SwiftAPI(swift_aio) as api:
        volume = env.volume(6 * CHUNK + 5)
        record = await env.service.create_backup(volume)
        hashed_by_store_on_put = list(hashed)
        chunks = [await api.call("GET", f"{record.container}/{record.service_metadata}-{i:05d}") for i in range(7)]
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    # only the block list and the metadata object, which the driver writes without digests
    assert len(hashed_by_store_on_put) == 2
    for chunk in chunks:  # every chunk carries its MD5, which Swift checked on PUT; no second digest
        assert chunk.headers["ETag"].strip('"') == hashlib.md5(chunk.content).hexdigest()
        assert "X-Object-Meta-Sha256" not in chunk.headers
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()


async def test_an_older_objects_sha256_metadata_is_still_checked(swift_aio: Any, swift_options: SwiftOptions) -> None:
    body = b"an object written by an older notifykit" * 100
    store = SwiftObjectStore(swift_options)
    try:
        async with SwiftAPI(swift_aio) as api:
            await api.call("PUT", "backup_older")
            for name, sha in (("good", hashlib.sha256(body).hexdigest()), ("bad", hashlib.sha256(b"other").hexdigest())):
                put = await api.call("PUT", f"backup_older/{name}", content=body, headers={"X-Object-Meta-Sha256": sha})
                assert put.status_code == 201
        assert await store.get_object("backup_older", "good") == body
        with pytest.raises(CorruptBackupError, match="X-Object-Meta-Sha256"):
            await store.get_object("backup_older", "bad")
        for name in ("good", "bad"):
            await store.delete_object("backup_older", name)
        await store.delete_container("backup_older")
    finally:
        await store.aclose()


async def test_a_body_damaged_in_transit_is_refused_by_swift_and_sent_again(
        tmp_path: Path, swift_aio: Any, caplog: pytest.LogCaptureFixture) -> None:
    info = swift_aio.info()
    caplog.set_level(logging.WARNING, logger="backup.swift")
    async with CorruptingProxy(info["ports"]["proxy"], damage=2) as proxy:
        url = info["store_url"].replace(f":{info['ports']['proxy']}/", f":{proxy.port}/")
        options = SwiftOptions.from_url(url, {"retry_backoff": 0.01})
        async with swift_env(tmp_path, options, compression="none") as env, SwiftAPI(swift_aio) as api:
            volume = env.volume(4 * CHUNK)
            record = await env.service.create_backup(volume)
            restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
            stored = [(await api.call("GET", f"{record.container}/{record.service_metadata}-{i:05d}")).content
                      for i in range(4)]
    assert len(proxy.damaged) == 2 and proxy.puts == 1 + 4 + 2 + 2  # container, 4 chunks, 2 again, block list, metadata
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    assert caplog.text.count("422 Unprocessable Entity") == 2
    assert b"".join(stored) == volume.read_bytes()  # Swift kept no damaged body
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
