"""Block plans: which blocks of a chunk a source read, which it knows to be zero, and which
it knows to be as in the parent backup — so a reader that can tell (an RBD snapshot diff)
spares the reads and the hashing of everything it did not read.

A plan is one byte per block of the chunk: :data:`READ` (its bytes are in the chunk's
buffer: hash them), :data:`ZERO` (not read: the digest of zeros) or :data:`PARENT` (not
read: the parent's block list entry). A chunk without a plan is hashed whole, as a file's.
"""

from __future__ import annotations

from ._block_hash import DIGEST_SIZE, BlockHash

__all__ = ["PARENT", "READ", "ZERO", "planned_digests"]

READ = 0
ZERO = 1
PARENT = 2


def planned_digests(data: bytes | bytearray | memoryview | None, plan: bytes, offset: int, length: int, block_size: int,
                    parent: bytes | None, block_hash: BlockHash) -> bytes:
    """The block list entries of the chunk at volume ``offset`` (``length`` bytes) by its plan."""
    first = offset // block_size
    view = memoryview(data) if data is not None else None
    out: list[bytes] = []
    for i, kind in enumerate(plan):
        start = i * block_size
        size = min(block_size, length - start)
        if kind == ZERO:
            out.append(block_hash.zero(size))
        elif kind == READ:
            if view is None:
                raise ValueError(f"block {first + i}: planned as read, but the chunk has no data")
            out.append(block_hash.digest(view[start:start + size]))
        else:  # PARENT
            entry = parent[(first + i) * DIGEST_SIZE:(first + i + 1) * DIGEST_SIZE] if parent is not None else b""
            if len(entry) != DIGEST_SIZE:
                raise ValueError(f"block {first + i}: planned as the parent's, which has no such block")
            out.append(entry)
    return b"".join(out)
