"""Swift gets each chunk's MD5 (ETag) and sha256 (X-Object-Meta-Sha256) from the driver,
which hashed the chunk once in its pack worker; the store hashes only the objects nobody
hashed for it (issue 29, "one pass over every byte")."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from notifykit.backup import BackupStatus
from notifykit.backup import _swift as swift_module
from notifykit.backup._swift import SwiftOptions

from ..backup.helpers import CHUNK
from .helpers import SwiftAPI, swift_env

pytestmark = pytest.mark.asyncio


async def test_chunks_are_not_hashed_again_by_the_store(tmp_path: Path, swift_aio: Any, swift_options: SwiftOptions,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    real = swift_module._digests

    def counting(data: bytes) -> tuple[str, str]:
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(swift_module, "_digests", counting)
    async with swift_env(tmp_path, swift_options, compression="zstd") as env, SwiftAPI(swift_aio) as api:
        volume = env.volume(6 * CHUNK + 5)
        record = await env.service.create_backup(volume)
        hashed_by_store_on_put = list(hashed)
        chunks = [await api.call("GET", f"{record.container}/{record.service_metadata}-{i:05d}") for i in range(7)]
        restored = await env.service.restore_backup(record.id, tmp_path / "restored.img")
    assert record.status is BackupStatus.AVAILABLE and restored.status is BackupStatus.AVAILABLE
    # only the block list and the metadata object, which the driver writes without digests
    assert len(hashed_by_store_on_put) == 2
    for chunk in chunks:  # every chunk still carries both, and Swift checked the ETag on PUT
        assert chunk.headers["ETag"].strip('"') == hashlib.md5(chunk.content).hexdigest()
        assert chunk.headers["X-Object-Meta-Sha256"] == hashlib.sha256(chunk.content).hexdigest()
    assert (tmp_path / "restored.img").read_bytes() == volume.read_bytes()
