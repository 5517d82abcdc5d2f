"""The zlib codec deflates with zlib-ng when it is installed (issue 29): the same format and
levels, so zlib streams of either library (Cinder's, older notifykit's) restore with the other."""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

import pytest

from notifykit.backup._compression import get_compressor

from .helpers import CHUNK, backup_env

TEXT = b"a volume of ordinary text, the kind deflate shrinks well. " * 200


def sample() -> bytes:
    rng = random.Random(29)
    return b"".join(rng.randbytes(4096) if i % 3 == 0 else TEXT[:4096] for i in range(64))


def test_the_zlib_codec_is_zlib_ng_when_installed() -> None:
    pytest.importorskip("zlib_ng", reason="zlib-ng is not installed (the backup extra brings it)")
    assert get_compressor("zlib", None).library.startswith("zlib-ng ")


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_streams_of_either_library_decompress_with_the_other(level: int) -> None:
    data = sample()
    codec = get_compressor("zlib", level)
    assert zlib.decompress(codec.compress(data)) == data  # ours, by the standard library's inflate
    theirs = zlib.compress(data, level)
    assert codec.decompress(theirs, len(data)) == data  # the standard library's, by ours
    room = memoryview(bytearray(len(data)))
    assert codec.decompress_into(theirs, room) == len(data) and bytes(room) == data


def test_without_zlib_ng_the_standard_library_deflates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zlib_ng", None)  # import zlib_ng raises ImportError
    codec = get_compressor("zlib", None)
    assert codec.library == f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    assert codec.compress(sample()) == zlib.compress(sample(), 6)


@pytest.mark.asyncio
async def test_a_backup_deflated_by_one_library_restores_with_the_other(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("zlib_ng", reason="zlib-ng is not installed (the backup extra brings it)")
    volume = tmp_path / "volume.img"
    volume.write_bytes(sample() * 3 + sample()[: CHUNK // 2])
    with monkeypatch.context() as plain:
        plain.setitem(sys.modules, "zlib_ng", None)
        async with backup_env(tmp_path / "a", compression="zlib") as env:
            old = await env.service.create_backup(volume)
    async with backup_env(tmp_path / "a", compression="zlib") as env:  # the same store, now with zlib-ng
        assert env.service.driver.compressor.library.startswith("zlib-ng ")  # type: ignore[attr-defined]
        new = await env.service.create_backup(volume)
        for record in (old, new):
            await env.service.restore_backup(record.id, tmp_path / f"{record.id}.img")
            assert (tmp_path / f"{record.id}.img").read_bytes() == volume.read_bytes()
    with monkeypatch.context() as plain:
        plain.setitem(sys.modules, "zlib_ng", None)
        async with backup_env(tmp_path / "a", compression="zlib") as env:
            await env.service.restore_backup(new.id, tmp_path / "by-zlib.img")
    assert (tmp_path / "by-zlib.img").read_bytes() == volume.read_bytes()
