"""The hash of a backup's block list: one 32-byte digest per 32 KiB block of the volume.

Two are offered. ``sha256`` is Cinder's (``_sha256file``) and every backup's before
metadata version 4. ``blake3`` (the ``blake3`` package) is as strong and, measured on a
2-core AMD EPYC with SHA extensions, 0.27 CPU-s per GiB against sha256's 0.65: the block
list is the one hash a backup pays on every byte and a restore pays again to check them,
so it is the default for new full backups. An incremental backup always hashes with its
parent's, so the blocks of a chain compare. The hash is named in the metadata
(``block_hash``, version 4); a backup without the key is sha256.

Digests of zero blocks are constants per hash and length (a zero block is one whose digest
is that of zeros), computed once and kept.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._errors import BackupConfigError

__all__ = ["BLOCK_HASHES", "DEFAULT_BLOCK_HASH", "DIGEST_SIZE", "SHA256", "BlockHash", "check_block_hash",
           "get_block_hash"]

BLOCK_HASHES = ("blake3", "sha256")
DEFAULT_BLOCK_HASH = "blake3"
DIGEST_SIZE = 32

Data = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class BlockHash:
    """A block list's hash: ``new(data).digest()`` is one entry (32 bytes)."""

    name: str
    new: Callable[[Data], Any]
    _zeros: dict[int, bytes] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __repr__(self) -> str:
        return f"BlockHash({self.name!r})"

    def digest(self, data: Data) -> bytes:
        return bytes(self.new(data).digest())

    def digests(self, data: Data, block_size: int) -> bytes:
        """The digest of each ``block_size`` block of ``data``, concatenated (worker thread)."""
        view = memoryview(data)
        new = self.new
        return b"".join([new(view[i:i + block_size]).digest() for i in range(0, len(view), block_size)])

    def zero(self, length: int) -> bytes:
        """The digest of ``length`` zero bytes (a zero block's entry in the block list),
        computed once per length (the dict lookup is what a per-block loop pays)."""
        digest = self._zeros.get(length)
        if digest is None:
            digest = self._zeros[length] = self.digest(bytes(length))
        return digest

    def zeros(self, length: int, block_size: int) -> bytes:
        """The block list of ``length`` zero bytes: every block a zero block."""
        full, tail = divmod(length, block_size)
        return self.zero(block_size) * full + (self.zero(tail) if tail else b"")


SHA256 = BlockHash("sha256", hashlib.sha256)


def check_block_hash(name: str) -> str:
    """``name`` lower-cased if it is a block hash this notifykit offers, else a BackupConfigError."""
    key = str(name).lower()
    if key not in BLOCK_HASHES:
        raise BackupConfigError(f"block_hash must be one of {', '.join(BLOCK_HASHES)}, got {name!r}")
    return key


@functools.cache
def get_block_hash(name: str) -> BlockHash:
    """The block hash called ``name``; BackupConfigError if unknown or its package is missing."""
    key = check_block_hash(name)
    if key == "sha256":
        return SHA256
    try:
        import blake3
    except ImportError:
        raise BackupConfigError(
            "block_hash 'blake3' needs the blake3 package: pip install 'notifykit[backup]'"
            " (or set block_hash = \"sha256\")") from None
    return BlockHash("blake3", blake3.blake3)
