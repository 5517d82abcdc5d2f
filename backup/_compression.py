"""Chunk compression codecs: none, zlib, bz2 (Cinder offers both) and zstd (the
``zstandard`` package).

``zlib`` is zlib-ng (the ``zlib-ng`` package, in the ``backup`` extra) when it is
installed: the same stream format and levels as zlib, compressing about 2.7 times and
inflating 1.5 times as fast (``benchmarks/codec_choice.py``); streams written by either
library restore with the other, so Cinder's and older notifykit's zlib backups still do.

Codecs are stateless from the caller's view and safe to call from several worker
threads at once. zstd contexts are not thread-safe, so each worker thread keeps its own
and reuses it chunk after chunk: a new context per chunk allocated and cleared its match
tables every time (about an eighth of zstd-3's time on 4 MiB chunks).

``compress_into`` and ``decompress_into`` write into a caller's buffer (the pipeline's
reused, page-aligned ones, ``_buffers``) instead of a new ``bytes`` per chunk.
"""

from __future__ import annotations

import bz2
import threading
import zlib
from types import ModuleType
from typing import Any, Protocol

from ._errors import BackupConfigError, CorruptBackupError

__all__ = ["COMPRESSIONS", "LEVELS", "Compressor", "check_level", "get_compressor"]

COMPRESSIONS = ("none", "zlib", "bz2", "zstd")
# Each codec's levels (lowest, highest, default); ``none`` takes no level.
# bz2 defaults to 9 as Python's and Cinder's bz2 driver do.
LEVELS: dict[str, tuple[int, int, int]] = {"zlib": (0, 9, 6), "bz2": (1, 9, 9), "zstd": (1, 22, 3)}


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


Buffer = bytes | bytearray | memoryview


class Compressor(Protocol):
    name: str

    def compress(self, data: Buffer) -> bytes: ...

    def compress_into(self, data: Buffer, out: memoryview) -> int | None:
        """Compress ``data`` into ``out``; the bytes written, or None when the result
        does not fit in ``out`` (the caller then stores ``data`` raw)."""
        ...

    def decompress(self, data: bytes, expected_size: int) -> bytes: ...

    def decompress_into(self, data: Buffer, out: memoryview) -> int:
        """Decompress ``data`` into ``out`` (its expected size); the bytes written, fewer
        if the stream is short (the caller checks); CorruptBackupError if it is bad."""
        ...

    def for_mixed(self) -> Compressor:
        """The codec for a chunk only part of which compresses (some of its samples do not
        shrink): itself, or a faster setting of it, read by the same decompressor."""
        ...


def _copy_into(data: bytes, out: memoryview) -> int | None:
    if len(data) >= len(out):
        return None
    out[:len(data)] = data
    return len(data)


class NoCompression:
    name = "none"

    def compress(self, data: Buffer) -> bytes:
        return data if isinstance(data, bytes) else bytes(data)

    def compress_into(self, data: Buffer, out: memoryview) -> int | None:
        return None  # stored as it is

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        return data

    def decompress_into(self, data: Buffer, out: memoryview) -> int:
        n = min(len(data), len(out))
        out[:n] = memoryview(data)[:n]
        return len(data)

    def for_mixed(self) -> Compressor:
        return self


def deflate_library() -> ModuleType:
    """zlib-ng's zlib API when the package is installed, else the standard library's zlib."""
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        return zlib
    return zlib_ng


class ZlibCompression:
    name = "zlib"

    def __init__(self, level: int = 6) -> None:
        self.level = level
        self._zlib = deflate_library()
        self._errors: tuple[type[Exception], ...] = (zlib.error, self._zlib.error)

    @property
    def library(self) -> str:
        """Which deflate implementation and version does the work (for reports)."""
        if self._zlib is zlib:
            return f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
        return f"zlib-ng {getattr(self._zlib, 'ZLIBNG_VERSION', '?')}"

    def compress(self, data: Buffer) -> bytes:
        return bytes(self._zlib.compress(data, self.level))

    def compress_into(self, data: Buffer, out: memoryview) -> int | None:
        return _copy_into(self.compress(data), out)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        try:
            # max_length bounds memory if a corrupt stream claims to expand forever.
            inflater = self._zlib.decompressobj()
            out = bytes(inflater.decompress(data, expected_size + 1))
            if not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
                raise CorruptBackupError("zlib stream is truncated or has trailing data")
            return out
        except self._errors as exc:
            raise CorruptBackupError(f"zlib stream does not decompress: {exc}") from None

    def decompress_into(self, data: Buffer, out: memoryview) -> int:
        raw = self.decompress(bytes(data), len(out))
        n = min(len(raw), len(out))
        out[:n] = raw[:n]
        return len(raw)

    def for_mixed(self) -> Compressor:
        return self


class Bz2Compression:
    """Cinder's ``bz2`` choice: much slower than zstd at a similar ratio, offered so a
    deployment moving from Cinder can keep it."""

    name = "bz2"

    def __init__(self, level: int = 9) -> None:
        self.level = level

    def compress(self, data: Buffer) -> bytes:
        return bz2.compress(data, self.level)

    def compress_into(self, data: Buffer, out: memoryview) -> int | None:
        return _copy_into(self.compress(data), out)

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        try:
            # max_length bounds memory if a corrupt stream claims to expand forever.
            inflater = bz2.BZ2Decompressor()
            out = inflater.decompress(data, expected_size + 1)
            if not inflater.eof or inflater.unused_data or len(out) > expected_size:
                raise CorruptBackupError("bz2 stream is truncated, too long or has trailing data")
            return out
        except (OSError, ValueError) as exc:
            raise CorruptBackupError(f"bz2 stream does not decompress: {exc}") from None

    def decompress_into(self, data: Buffer, out: memoryview) -> int:
        raw = self.decompress(bytes(data), len(out))
        out[:len(raw)] = raw
        return len(raw)

    def for_mixed(self) -> Compressor:
        return self


class ZstdCompression:
    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        import zstandard

        self._zstd = zstandard
        self.level = level
        self._local = threading.local()  # this thread's compressor and decompressor contexts
        # At level 3 (dfast), zstd searches the incompressible part of a mixed chunk for
        # matches at about 1 CPU-s per GiB of it; level 2's fast strategy does not, and
        # stores about 1 % more of such a chunk (docs/backup.md, "Choosing the codec").
        self._mixed: Compressor = ZstdCompression(2) if level == 3 else self

    def _compressor(self) -> Any:
        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            # No frame checksum (xxhash64): every block is checked against the block list
            # after decompression, so it would only cost CPU on both ends (frames that
            # carry one, from older backups, are still checked by zstd on restore).
            cctx = self._local.cctx = self._zstd.ZstdCompressor(level=self.level, write_checksum=False)
        return cctx

    def _decompressor(self) -> Any:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = self._zstd.ZstdDecompressor()
        return dctx

    def for_mixed(self) -> Compressor:
        return self._mixed

    def compress(self, data: Buffer) -> bytes:
        return bytes(self._compressor().compress(data))

    def compress_into(self, data: Buffer, out: memoryview) -> int | None:
        done = 0
        with self._compressor().stream_reader(data, size=len(data)) as reader:
            while done < len(out):
                n = reader.readinto(out[done:])
                if not n:
                    return done
                done += n
            return None  # out is full: the frame is at least as long as the space given

    def _check_declared(self, data: Buffer, expected_size: int) -> None:
        # A damaged header could declare any size; refuse before allocating it.
        declared = self._zstd.frame_content_size(data)
        if declared not in (-1, expected_size):
            raise CorruptBackupError(f"zstd frame declares {declared} bytes, expected {expected_size}")

    def decompress(self, data: bytes, expected_size: int) -> bytes:
        try:
            self._check_declared(data, expected_size)
            return bytes(self._decompressor().decompress(data, max_output_size=max(expected_size, 1)))
        except self._zstd.ZstdError as exc:
            raise CorruptBackupError(f"zstd frame does not decompress: {exc}") from None

    def decompress_into(self, data: Buffer, out: memoryview) -> int:
        try:
            self._check_declared(data, len(out))
            done = 0
            with self._decompressor().stream_reader(data) as reader:
                while done < len(out):
                    n = reader.readinto(out[done:])
                    if not n:
                        break
                    done += n
            return done
        except self._zstd.ZstdError as exc:
            raise CorruptBackupError(f"zstd frame does not decompress: {exc}") from None


def get_compressor(name: str, level: int | None = None) -> Compressor:
    """The codec called ``name`` (none, zlib, bz2, zstd); an unknown name is a BackupConfigError."""
    key = name.lower()
    if key in COMPRESSIONS:
        level = check_level(key, level)
    if key == "none":
        return NoCompression()
    if key == "zlib":
        return ZlibCompression(LEVELS["zlib"][2] if level is None else level)
    if key == "bz2":
        return Bz2Compression(LEVELS["bz2"][2] if level is None else level)
    if key == "zstd":
        try:
            return ZstdCompression(LEVELS["zstd"][2] if level is None else level)
        except ImportError:
            raise BackupConfigError(
                "compression 'zstd' needs the zstandard package: pip install 'notifykit[backup]'"
            ) from None
    raise BackupConfigError(f"unknown compression {name!r}; choose one of: {', '.join(COMPRESSIONS)}")
