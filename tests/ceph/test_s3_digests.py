"""The S3 store gets each chunk's MD5 (checked against RGW's ETag) from the driver, which
hashed the chunk once in its pack worker (issue 29, "one pass over every byte")."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus
from notifykit.backup import _s3 as s3_module

from ..backup.helpers import CHUNK
from .helpers import bucket_name, in_thread, s3_client, s3_env, s3_store


@pytest.mark.asyncio
async def test_chunks_are_not_hashed_again_by_the_store(tmp_path: Path, ceph_aio: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = s3_module._md5

    def counting(data: bytes) -> str:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(s3_module, "_md5", counting)
    bucket = bucket_name("dg")
    store = s3_store(ceph_aio, bucket, create_bucket="true")
    async with s3_env(tmp_path, store, compression="zstd") as env:
        volume = env.volume(6 * CHUNK + 5)
        record = await env.service.create_backup(volume)
        hashed_by_store_on_put = list(hashed)
        key = f"{record.container}/{record.service_metadata}-00002"
        head = await in_thread(lambda: s3_client(ceph_aio).get_object(Bucket=bucket, Key=key))
        body = head["Body"].read()
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    assert len(hashed_by_store_on_put) == 2  # the block list and the metadata object only
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
