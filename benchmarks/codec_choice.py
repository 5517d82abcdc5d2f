"""The backup's per-byte choices, measured (issue 29): which zstd setting packs a chunk,
which hash makes the block list, and which deflate library the zlib codec uses.

Codecs: three corpora of 64 MiB cut into 4 MiB chunks, packed one thread at a time the
way the backup packs them (``Packer.codec_for``: 4 samples of 16 KiB decide raw, mixed or
compressible, then the whole chunk is compressed), CPU time of the thread (sampling included) per GiB
and the share of bytes stored:

* ``files`` — shared libraries and Python sources of this machine, back to back;
* ``half random, half text`` — ``backup_vs_tools.py``'s volume (1 MiB random, 1 MiB text);
* ``files + random`` — 1 MiB of the files, 1 MiB random, alternately: a disk image holding
  compressed archives or encrypted files beside ordinary ones.

Policies: ``zstd-3`` (the anchor: every chunk with samples that shrink compressed at level
3, what notifykit did before), ``notifykit`` (the same, but a mixed chunk — some samples
shrink, some do not — at level 2's fast strategy: ``ZstdCompression.for_mixed``),
``zstd-2`` and ``zstd-1`` everywhere.

Block hashes: sha256 (the anchor, Cinder's) and blake3 over 32 KiB blocks of 256 MiB of
random bytes, CPU-s per GiB.

Deflate libraries for the ``zlib`` codec (Cinder's default), on the ``files`` corpus, whole
4 MiB chunks: the standard library's zlib at level 6 (the anchor: Cinder's ``zlib.compress``),
zlib-ng at the same level (what the codec uses when ``zlib-ng`` is installed) and, when the
``isal`` package is installed, ISA-L at its levels 1-3 (it has no others): compress and
inflate CPU-s per GiB of the volume, and the share stored. Every figure is the median of
interleaved rounds.

Usage: python benchmarks/codec_choice.py [ROUNDS]
"""

from __future__ import annotations

import glob
import hashlib
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _goals import median, rotated

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifykit.backup._block_hash import SHA256, get_block_hash  # noqa: E402
from notifykit.backup._chunk_pack import Packer  # noqa: E402
from notifykit.backup._compression import get_compressor  # noqa: E402

MIB = 1024 * 1024
CHUNK = 4 * MIB
CORPUS = 64 * MIB
TEXT = (b"notifykit benchmark volume, compressible text repeated over and over. " * 15_000)[:MIB]


def files(size: int) -> bytes:
    out = bytearray()
    names = sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")) + \
        sorted(glob.glob(f"{sys.base_prefix}/lib/python3*/**/*.py", recursive=True))
    for name in names:
        try:
            out += Path(name).read_bytes()
        except OSError:
            continue
        if len(out) >= size:
            break
    return bytes(out[:size])


def corpora() -> dict[str, bytes]:
    rng = random.Random(29)
    real = files(CORPUS)
    return {
        "files": real,
        "half random, half text": b"".join(rng.randbytes(MIB) if i % 2 == 0 else TEXT for i in range(CORPUS // MIB)),
        "files + random": b"".join(rng.randbytes(MIB) if i % 2 == 0 else real[i * MIB:(i + 1) * MIB]
                                   for i in range(CORPUS // MIB)),
    }


def packer(level: int, mixed: bool) -> Callable[[memoryview], int]:
    """What one chunk costs to store under a policy: the bytes stored (the CPU is timed outside)."""
    packer = Packer(get_compressor("zstd", level), (), buffers=False, block_hash=SHA256)

    def pack(chunk: memoryview) -> int:
        codec = packer.codec_for(chunk)  # the backup's own rule; the anchor keeps the level for mixed chunks
        if codec is None:
            return len(chunk)
        use = codec if mixed else packer.compressor
        return min(len(chunk), len(use.compress(chunk)))

    return pack


POLICIES = {"zstd-3": packer(3, False), "notifykit": packer(3, True), "zstd-2": packer(2, False),
            "zstd-1": packer(1, False)}


def run_policy(pack: Callable[[memoryview], int], data: bytes) -> tuple[float, float]:
    view = memoryview(data)
    start = time.thread_time()
    stored = sum(pack(view[i:i + CHUNK]) for i in range(0, len(view), CHUNK))
    return (time.thread_time() - start) * MIB * 1024 / len(data), stored / len(data)


def hash_cost(name: str, data: bytes) -> float:
    view = memoryview(data)
    new = get_block_hash(name).new
    start = time.thread_time()
    for i in range(0, len(view), 32 * 1024):
        new(view[i:i + 32 * 1024]).digest()
    return (time.thread_time() - start) * MIB * 1024 / len(data)


def deflaters() -> dict[str, tuple[Callable[[memoryview], bytes], Callable[[bytes], bytes]]]:
    """Each deflate library measured: (compress a chunk, inflate it)."""
    import zlib

    out: dict[str, tuple[Callable[[memoryview], bytes], Callable[[bytes], bytes]]] = {
        "zlib-6": (lambda chunk: zlib.compress(chunk, 6), zlib.decompress)}
    try:
        from zlib_ng import zlib_ng
    except ImportError:
        pass
    else:
        out["zlib-ng-6"] = (lambda chunk: zlib_ng.compress(chunk, 6), zlib_ng.decompress)
    try:
        from isal import isal_zlib  # not a dependency: pip install isal to compare it
    except ImportError:
        pass
    else:
        for level in (1, 2, 3):
            out[f"isal-{level}"] = (lambda chunk, level=level: isal_zlib.compress(chunk, level), isal_zlib.decompress)
    return out


def deflate_cost(compress: Callable[[memoryview], bytes], inflate: Callable[[bytes], bytes],
                 data: bytes) -> tuple[float, float, float]:
    """(compress, inflate) CPU-s per GiB of ``data`` and the share stored."""
    view, per_gib = memoryview(data), MIB * 1024 / len(data)
    start = time.thread_time()
    packed = [compress(view[i:i + CHUNK]) for i in range(0, len(view), CHUNK)]
    squeezed = time.thread_time() - start
    start = time.thread_time()
    assert b"".join(inflate(p) for p in packed) == data
    return squeezed * per_gib, (time.thread_time() - start) * per_gib, sum(map(len, packed)) / len(data)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    data = corpora()
    cpu: dict[str, dict[str, list[float]]] = {c: {p: [] for p in POLICIES} for c in data}
    stored: dict[str, dict[str, float]] = {c: {} for c in data}
    noise = b"".join(random.Random(1).randbytes(MIB) for _ in range(256))
    hashes: dict[str, list[float]] = {"sha256": [], "blake3": []}
    libraries = deflaters()
    deflate: dict[str, dict[str, list[float]]] = {lib: {"compress": [], "inflate": [], "stored": []}
                                                  for lib in libraries}
    for n in range(rounds):
        for corpus, blob in data.items():
            for policy in rotated(list(POLICIES), n):
                seconds, share = run_policy(POLICIES[policy], blob)
                cpu[corpus][policy].append(seconds)
                stored[corpus][policy] = round(share, 4)
        for name in rotated(list(hashes), n):
            hashes[name].append(hash_cost(name, noise))
        for lib in rotated(list(libraries), n):
            for key, value in zip(("compress", "inflate", "stored"), deflate_cost(*libraries[lib], data["files"]),
                                  strict=True):
                deflate[lib][key].append(value)
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(), "rounds": rounds, "chunk_mib": CHUNK // MIB,
        "codecs": {corpus: {policy: {"cpu_s_per_gib": round(median(cpu[corpus][policy]), 3),
                                     "stored_share": stored[corpus][policy],
                                     "cpu_vs_zstd_3": round(median([a / b for a, b in zip(
                                         cpu[corpus][policy], cpu[corpus]["zstd-3"], strict=True)]), 3)}
                            for policy in POLICIES} for corpus in data},
        "block_hash": {name: {"cpu_s_per_gib": round(median(v), 3)} for name, v in hashes.items()},
        "blake3_cpu_vs_sha256": round(median([a / b for a, b in zip(hashes["blake3"], hashes["sha256"],
                                                                        strict=True)]), 3),
        "sha256_has_cpu_extension": "sha_ni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists()
        else None,
        "hashlib_openssl": hashlib.sha256.__name__,
        "deflate_files": {lib: {"compress_cpu_s_per_gib": round(median(v["compress"]), 3),
                                "inflate_cpu_s_per_gib": round(median(v["inflate"]), 3),
                                "stored_share": round(median(v["stored"]), 4),
                                "compress_cpu_vs_zlib_6": round(median([a / b for a, b in zip(
                                    v["compress"], deflate["zlib-6"]["compress"], strict=True)]), 3),
                                "inflate_cpu_vs_zlib_6": round(median([a / b for a, b in zip(
                                    v["inflate"], deflate["zlib-6"]["inflate"], strict=True)]), 3)}
                          for lib, v in deflate.items()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
