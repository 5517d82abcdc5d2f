"""Packing one chunk of a backup (worker thread): its block list entries, then each run of
blocks to store compressed (or raw) into an object, and the runs of zero blocks listed.

Every byte is hashed once for the block list (one digest per 32 KiB block, ``_block_hash``) and, when the store
asks for them, once per digest of the bytes stored (``compute_digests``). With reused
buffers (``_buffers``: a store that ``accepts_buffers``) the chunk was read into a pooled
buffer, is compressed into another, and the objects handed to the store are views of them:
no byte is copied in user space between the read and the store's write.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._block_hash import DIGEST_SIZE, BlockHash
from ._blockplan import planned_digests
from ._buffers import ALIGN, Buffer, BufferPool
from ._compression import Compressor
from ._objectstore import ObjectDigests, compute_digests

__all__ = ["Packed", "Packer", "Piece", "Raw", "object_name", "piece_name"]

# A chunk whose samples (4 x 16 KiB, spread over it) do not shrink by 3 % is stored raw
# without compressing it whole: on random, compressed or encrypted data, zstd costs as
# much CPU as hashing the chunk and saves nothing (borg's "auto" does the same). A chunk
# with some samples that do not shrink and some that do is mixed: its codec's
# ``for_mixed()`` compresses it (zstd 3: level 2's fast strategy).
_SAMPLES = 4
_SAMPLE_SIZE = 16 * 1024
_INCOMPRESSIBLE = 0.97

Data = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Raw:
    index: int
    offset: int
    length: int
    data: Data | None  # None: wholly in a hole, not read
    plan: bytes | None = None  # per block READ/ZERO/PARENT (_blockplan); None: hash data whole
    buffer: tuple[BufferPool, Buffer] | None = None  # the pooled buffer data is a view of


@dataclass(frozen=True, slots=True)
class Piece:
    """One object to store: a whole chunk, or (in an increment) a run of changed blocks."""

    name: str
    offset: int
    length: int
    compression: str
    stored: bytes | memoryview
    digests: ObjectDigests | None = None  # what the store checks it by (object_digests)


@dataclass(frozen=True, slots=True)
class Packed:
    index: int
    length: int
    digests: bytes
    pieces: tuple[Piece, ...]
    zeros: tuple[tuple[int, int], ...]  # runs of zero blocks: (first block, count)
    buffers: tuple[tuple[BufferPool, Buffer], ...] = ()  # what the pieces are views of: released once stored


def object_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


def piece_name(prefix: str, index: int, block: int) -> str:
    """An increment's run of changed blocks: chunk ``index``, from its block ``block``."""
    return f"{prefix}-{index:05d}-{block:04d}"


def _holds_zero_block(digests: bytes, zero: bytes) -> bool:
    """Whether a block list holds ``zero`` as one of its entries (at C speed)."""
    at = digests.find(zero)
    while at >= 0:
        if at % DIGEST_SIZE == 0:
            return True
        at = digests.find(zero, at + 1)
    return False


class Packer:
    """Packs chunks with one compressor and block hash, for a store wanting ``digests``;
    ``buffers``: the store takes views of reused buffers (else each object is a ``bytes``)."""

    def __init__(self, compressor: Compressor, digests: tuple[str, ...], *, buffers: bool,
                 block_hash: BlockHash) -> None:
        self.compressor = compressor
        self.digests = digests
        self.buffers = buffers
        self.block_hash = block_hash

    def codec_for(self, data: Data) -> Compressor | None:
        """The codec to compress ``data`` with, from its samples; None: store it raw."""
        if self.compressor.name == "none":
            return None
        if len(data) < 4 * _SAMPLES * _SAMPLE_SIZE:
            return self.compressor
        view = memoryview(data)
        step = len(view) // _SAMPLES
        sizes = [len(self.compressor.compress(view[i * step:i * step + _SAMPLE_SIZE])) for i in range(_SAMPLES)]
        if sum(sizes) >= _INCOMPRESSIBLE * _SAMPLES * _SAMPLE_SIZE:
            return None
        return self.compressor.for_mixed() if max(sizes) >= _INCOMPRESSIBLE * _SAMPLE_SIZE else self.compressor

    def _raw(self, data: Data) -> bytes | memoryview:
        if isinstance(data, bytes) or not self.buffers:
            return data if isinstance(data, bytes) else bytes(data)
        return memoryview(data)

    def stored(self, data: Data, room: memoryview | None) -> tuple[str, bytes | memoryview, int]:
        """(compression, the bytes to store, how much of ``room`` they use): compressed into
        ``room`` (at least ``len(data)`` bytes) or a new object, or raw when that saves nothing."""
        codec = self.codec_for(data)
        if codec is None:
            return "none", self._raw(data), 0
        if room is not None:
            used = codec.compress_into(data, room[:len(data)])
            if used is None:  # incompressible: keep it raw, restore gets cheaper
                return "none", self._raw(data), 0
            return codec.name, room[:used], used
        packed = codec.compress(data)
        if len(packed) >= len(data):
            return "none", self._raw(data), 0
        return codec.name, packed, len(packed)

    def pack(self, raw: Raw, prefix: str, block_size: int, parent: bytes | None,
             out: tuple[BufferPool, Buffer] | None = None) -> Packed:
        """Block digests, then each run of non-zero blocks (that differ from the parent's, in
        an increment) into an object (compressed into ``out`` if given), and the runs of zero
        blocks (that differ from the parent's) listed, stored as nothing. The Packed holds
        the buffers its pieces are views of."""
        first = raw.offset // block_size
        data = raw.data
        if raw.plan is not None:  # a reader that knows which blocks it read (an RBD diff)
            digests = planned_digests(data, raw.plan, raw.offset, raw.length, block_size, parent, self.block_hash)
        else:
            digests = self.block_hash.zeros(raw.length, block_size) if data is None \
                else self.block_hash.digests(data, block_size)
        nblocks = len(digests) // DIGEST_SIZE
        if parent is not None and parent[first * DIGEST_SIZE:(first + nblocks) * DIGEST_SIZE] == digests:
            return Packed(raw.index, raw.length, digests, (), ())
        if data is None and parent is None:
            return Packed(raw.index, raw.length, digests, (), ((first, nblocks),))
        zero_digest = self.block_hash.zero
        zero = zero_digest(block_size)
        kinds = bytearray(nblocks)  # 0: as in the parent, 1: data to store, 2: a zero block
        tail = raw.length % block_size
        if data is not None and parent is None and not _holds_zero_block(digests, zero) and \
                not (tail and digests[-DIGEST_SIZE:] == zero_digest(tail)):
            kinds[:] = b"\x01" * nblocks  # the usual full backup's chunk: one run of data
        else:
            for i in range(nblocks):
                d = digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]
                if parent is not None and parent[(first + i) * DIGEST_SIZE:(first + i + 1) * DIGEST_SIZE] == d:
                    continue
                zero_here = d == zero or d == zero_digest(min(block_size, raw.length - i * block_size))
                kinds[i] = 2 if data is None or zero_here else 1
        pieces: list[Piece] = []
        zeros: list[tuple[int, int]] = []
        used = 0  # of out: each piece starts on an ALIGN boundary (O_DIRECT)
        raw_views = False
        i = 0
        while i < nblocks:
            kind, j = kinds[i], i + 1
            while j < nblocks and kinds[j] == kind:
                j += 1
            if kind == 2:
                zeros.append((first + i, j - i))
            elif kind == 1 and data is not None:
                whole = i == 0 and j == nblocks
                part = data if whole else memoryview(data)[i * block_size:j * block_size]
                room = out[1].view[used:] if out is not None else None
                compression, stored, size = self.stored(part, room)
                if compression == "none":
                    raw_views |= isinstance(stored, memoryview)
                elif room is not None:
                    used += -(-size // ALIGN) * ALIGN
                name = object_name(prefix, raw.index) if whole and parent is None else piece_name(prefix, raw.index, i)
                pieces.append(Piece(name, raw.offset + i * block_size, len(part), compression, stored,
                                    compute_digests(stored, self.digests)))
            i = j
        held: list[tuple[BufferPool, Buffer]] = []
        if raw_views and raw.buffer is not None:
            held.append(raw.buffer)
        if used and out is not None:
            held.append(out)
        return Packed(raw.index, raw.length, digests, tuple(pieces), tuple(zeros), tuple(held))
