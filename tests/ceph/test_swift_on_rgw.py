"""The existing Swift store, unchanged, on Ceph through RGW's Swift API (RGW answers v1 auth
under /auth and returns a storage URL …/swift/v1 without an AUTH_ part)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus, ObjectStoreError, ProgressPolicy
from notifykit.backup._swift import SwiftOptions

from ..backup.helpers import CHUNK
from ..swift.helpers import SwiftAPI, swift_env

pytestmark = pytest.mark.asyncio

EVERY_OBJECT = ProgressPolicy(backup_object_number_per_notification=1, backup_enable_progress_timer=False)


class RGWSwift:
    """The session's RGW in the shape tests/swift/helpers.SwiftAPI reads."""

    def __init__(self, aio: Any) -> None:
        self._info = aio.info()

    def info(self) -> dict[str, str]:
        return {"auth_url": self._info["swift_auth_url"], "user": self._info["swift_user"],
                "key": self._info["swift_key"]}


async def test_swift_store_round_trip_on_rgw(tmp_path: Path, ceph_aio: Any) -> None:
    options = SwiftOptions.from_url(ceph_aio.info()["swift_url"], {"retry_backoff": 0.05})
    async with swift_env(tmp_path, options, compression="zstd", policy=EVERY_OBJECT) as env, \
            SwiftAPI(RGWSwift(ceph_aio)) as api:
        volume = env.volume(30 * CHUNK + 5)  # 31 chunks + metadata: more than one listing page (25)
        record = await env.service.create_backup(volume, name="nightly")
        assert record.container is not None
        names = await api.listing(record.container)
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
        deleted = await env.service.delete_backup(record.id)
        after = await api.listing(record.container)
    assert "/swift/v1" in api.storage_url and "AUTH_" not in api.storage_url
    assert record.status is BackupStatus.AVAILABLE and record.service == "backup.drivers.swift"
    assert names is not None and len(names) == 33  # 31 chunks, the block list and the metadata
    progress = [n.payload for n in env.memory.messages if n.event_type == "backup.createprogress"]
    assert len(progress) == 31 and progress[-1]["percentage"] == 100.0
    assert hashlib.sha256((tmp_path / "restored.img").read_bytes()).hexdigest() == \
        hashlib.sha256(volume.read_bytes()).hexdigest()
    assert restored.status is BackupStatus.AVAILABLE and deleted.status is BackupStatus.DELETED
    assert after is None  # objects and container gone


async def test_wrong_swift_key_on_rgw_fails_without_leaking_it(tmp_path: Path, ceph_aio: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-swift-key-0815"
    options = SwiftOptions.from_url(ceph_aio.info()["swift_url"], {"key": wrong, "retry_backoff": 0.05})
    async with swift_env(tmp_path, options) as env:
        with pytest.raises(ObjectStoreError, match="authentication"):
            await env.service.create_backup(env.volume(2 * CHUNK))
        record = (await env.service.list())[0]
    assert record.status is BackupStatus.ERROR and record.fail_reason is not None
    assert "401" in record.fail_reason or "403" in record.fail_reason
    texts = [record.fail_reason, *(r.getMessage() for r in caplog.records),
             *(json.dumps(n.payload) for n in env.memory.messages)]
    assert not [t for t in texts if wrong in t]
