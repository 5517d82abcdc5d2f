"""Chunk compression codecs: none, zlib and zstd (the ``zstandard`` package).

Codecs are stateless from the caller's view and safe to call from several worker
threads at once (zstd contexts are not thread-safe, so each call builds its own).
"""

from __future__ import annotations

import zlib
from typing import Protocol

from ._errors import BackupConfigError, CorruptBackupError

__all__ = ["COMPRESSIONS", "LEVELS", "Compressor", "check_level", "get_compressor"]

COMPRESSIONS = ("none", "zlib", "zstd")
# Each codec's levels (lowest, highest, default); ``none`` takes no level.
LEVELS: dict[str, tuple[int, int, int]] = {"zlib": (0, 9, 6), "zstd": (1, 22, 3)}


def check_level(name: str, level: int | None) -> int | None:
    """``level`` if codec ``name`` accepts it (None: the codec's default), else a
    BackupConfigError naming the codec's range."""
    if level is None:
        return None
    if isinstance(level, bool) or not isinstance(level, int):
        raise BackupConfigError(f"compression_level must be an integer, got {level!r}")
    key = name.lower()
    if key not in LEVELS:
        raise BackupConfigError(f"compression_level {level} does not apply to compression {name!r}: leave it unset")
    low, high, _ = LEVELS[key]
    if not low <= level <= high:
        raise BackupConfigError(f"compression_level for {key} must be {low} to {high}, got {level}")
    return level


class Compressor(Protocol):
    name: str

    def compress(self, data: bytes | bytearray | memoryview) -> bytes: ...

    def decompress(self, data: bytes, expected_size: int) -> bytes: ...


class NoCompression:
    name = "none"

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return data if isinstance(data, bytes) else bytes(data)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        return data


class ZlibCompression:
    name = "zlib"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        return zlib.compress(data, self.level)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        try:
            # max_length bounds memory if a corrupt stream claims to expand forever.
            inflater = zlib.decompressobj()
            out = inflater.decompress(data, expected_size + 1)
            if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
                raise CorruptBackupError("zlib stream is truncated or has trailing data")
            return out
        except zlib.error as exc:
            raise CorruptBackupError(f"zlib stream does not decompress: {exc}") from None


class ZstdCompression:
    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self._zstd = zstandard
        self.level = level

    def compress(self, data: bytes | bytearray | memoryview) -> bytes:
        # No frame checksum (xxhash64): every block is checked against the block list's
        # sha256 after decompression, so it would only cost CPU on both ends (frames that
        # carry one, from older backups, are still checked by zstd on restore).
        return self._zstd.ZstdCompressor(level=self.level, write_checksum=False).compress(data)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        try:
            # A damaged header could declare any size; refuse before allocating it.
            declared = self._zstd.frame_content_size(data)
            if declared not in (-1, expected_size):
                raise CorruptBackupError(f"zstd frame declares {declared} bytes, expected {expected_size}")
            return self._zstd.ZstdDecompressor().decompress(data, max_output_size=max(expected_size, 1))
        except self._zstd.ZstdError as exc:
            raise CorruptBackupError(f"zstd frame does not decompress: {exc}") from None


def get_compressor(name: str, level: int | None = None) -> Compressor:
    """The codec called ``name`` (none, zlib, zstd); an unknown name is a BackupConfigError."""
    key = name.lower()
    if key in COMPRESSIONS:
        level = check_level(key, level)
    if key == "none":
        return NoCompression()
    if key == "zlib":
        return ZlibCompression(LEVELS["zlib"][2] if level is None else level)
    if key == "zstd":
        try:
            return ZstdCompression(LEVELS["zstd"][2] if level is None else level)
        except ImportError:
            raise BackupConfigError(
                "compression 'zstd' needs the zstandard package: pip install 'notifykit[backup]'"
            ) from None
    raise BackupConfigError(f"unknown compression {name!r}; choose one of: {', '.join(COMPRESSIONS)}")
