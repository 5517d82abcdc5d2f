"""Backing a file up to Swift: notifykit's backup vs python-swiftclient's ``swift upload``, same Swift.

One OpenStack Swift all-in-one on loopback (scripts/swift-aio, unless
``NOTIFYKIT_BENCH_SWIFT_URL`` = ``swift://USER:KEY@HOST:PORT/auth/v1.0`` names one) and
one file of SIZE_MIB (half random, half compressible), in a temporary directory. Each
round, in an order that rotates, runs:

* ``swift_upload`` — the anchor: python-swiftclient's ``SwiftService.upload`` (what
  ``swift upload --segment-size CHUNK --segment-threads UPLOADS`` runs, in-process, so no
  interpreter start-up is counted), segment size = the backup's chunk size, as many
  segment uploads in flight as the backup has chunk uploads, MD5 checked per segment;
* ``notifykit_backup_zstd`` — ``BackupService.create_backup`` with the chunked driver on
  the Swift store (zstd, the default compression);
* ``notifykit_backup_none`` — the same without compression (the same bytes as the anchor);

What each does per object is in the JSON (``per_object``).
* ``posix_fsync`` — the same backup to the posix store with fsync, for reference.

Each rate is the median of ROUNDS rounds in MiB/s of the file's size, each ratio the
median of the per-round ratios (the backup's
catalog and its deletion, and the anchor's container deletion, are outside the timing).
The CPU seconds used by the client (this process) and by each Swift server during each
contender's timed part (clean-up left out for every contender) are reported too, to show
where the time goes on the two shared cores.
Usage: ``python benchmarks/swift_backup.py [SIZE_MIB [ROUNDS]]`` (defaults 256 and 5).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
from _backup_helpers import CpuWindow, backup_once, load_script, write_volume
from _goals import goal, median, paired_ratio, rotated

from notifykit.backup._setup import PosixBackupDriver
from notifykit.backup._swift import SwiftObjectStore, SwiftOptions

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 256
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CHUNK = 4 * MIB
UPLOADS = SwiftObjectStore.default_uploads


# What each contender does per object (python-swiftclient 4.x service.py; backup/_swift.py).
PER_OBJECT = {
    "swift_upload": "one PUT per 4 MiB segment, read from the file 64 KiB at a time while it is sent, its MD5 "
                    "computed on the way (no ETag header: Swift does not check the body) and compared with the "
                    "answer's ETag; before: GET /info, HEAD of the object, PUT of the container and of "
                    "<container>_segments; after: the SLO manifest PUT (the proxy HEADs every segment)",
    "notifykit_backup": "one PUT per 4 MiB chunk read into memory: blake3 of every 32 KiB block (the block list: "
                        "increments and restore checks), zstd (the zstd run: raw when incompressible), the MD5 of "
                        "the stored bytes (all in a pack worker); the PUT carries it as ETag (Swift refuses a body "
                        "that does not match it) and the answer's ETag is checked; before: PUT of the container; "
                        "after: the block list and the metadata object, and the catalog's records",
    "posix_fsync": "the same chunks, zstd, written to files (no MD5), one sync of them all at the end",
}


def cause(cpu: dict[str, dict[str, float]], contender: str) -> str:
    """Where the time goes, from this run's CPU seconds (shown on the page when a goal is missed)."""
    ours, theirs = cpu.get(contender, {}), cpu.get("swift_upload", {})
    servers = lambda per: sum(v for k, v in per.items() if k != "client")  # noqa: E731
    return (f"client CPU {ours.get('client', 0):.2f} s against swift upload's {theirs.get('client', 0):.2f} s, "
            f"Swift servers {servers(ours):.2f} s against {servers(theirs):.2f} s, all on the same two cores: "
            "besides the MD5 both compute for the ETag, the backup hashes every 32 KiB block with blake3 (its "
            "block list: increments and restore checks), in the pack workers (zstd compresses too); the rest is "
            "httpx/asyncio per-request work, and the Swift servers' share of the same cores")


def swift_upload(auth_url: str, user: str, key: str, volume: Path) -> float:
    """Seconds of python-swiftclient's upload, as ``swift upload`` drives it (authentication included)."""
    from swiftclient.service import SwiftService, SwiftUploadObject

    container = f"bench_{uuid.uuid4().hex[:8]}"
    options = {"auth": auth_url, "user": user, "key": key, "auth_version": "1.0"}
    start = time.perf_counter()
    with SwiftService(options=options) as service:
        upload = {"segment_size": CHUNK, "segment_threads": UPLOADS, "object_threads": 1}
        for result in service.upload(container, [SwiftUploadObject(str(volume), object_name="volume.img")],
                                     options=upload):
            if not result["success"]:
                raise RuntimeError(f"swift upload failed: {result.get('error')}")
    return time.perf_counter() - start


def swift_cleanup(auth_url: str, user: str, key: str) -> None:
    from swiftclient.service import SwiftService

    with SwiftService(options={"auth": auth_url, "user": user, "key": key, "auth_version": "1.0"}) as service:
        for page in service.list():
            for item in page.get("listing", []) if page["success"] else []:
                if item["name"].startswith("bench_"):
                    for _ in service.delete(container=item["name"]):
                        pass


async def main() -> dict[str, Any]:
    aio: Any = None
    url = os.environ.get("NOTIFYKIT_BENCH_SWIFT_URL")
    pids: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="notifykit-bench-swift-") as tmp:
        root = Path(tmp)
        if not url:
            module = load_script("swift-aio")
            missing = module.missing_binaries()
            if missing:
                return {"benchmark": "swift_backup", "skipped": f"Swift not installed (missing {', '.join(missing)})"}
            aio = module.SwiftAIO(root / "swift-aio")
            await anyio.to_thread.run_sync(aio.start)
            url = aio.info()["store_url"]
            pids = {k: v for k, v in aio.info()["pids"].items() if k in ("proxy", "object", "container", "account")}
        parts = urlsplit(url)
        auth_url = f"http://{parts.hostname}:{parts.port}{parts.path}"
        user, key = unquote(parts.username or ""), unquote(parts.password or "")
        volume = root / "volume.img"
        await anyio.to_thread.run_sync(write_volume, volume, SIZE_MIB * MIB)
        store = SwiftObjectStore(SwiftOptions.from_url(url), max_connections=UPLOADS + 4)
        posix = PosixBackupDriver(root / "objects-fsync", fsync=True).store
        window = CpuWindow(pids)  # Swift servers run workers = 0: one process each
        contenders: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("swift_upload", lambda: anyio.to_thread.run_sync(swift_upload, auth_url, user, key, volume)),
            ("notifykit_backup_zstd", lambda: backup_once(root, volume, store, "zstd", UPLOADS, CHUNK, window.mark)),
            ("notifykit_backup_none", lambda: backup_once(root, volume, store, "none", UPLOADS, CHUNK, window.mark)),
            ("posix_fsync", lambda: backup_once(root, volume, posix, "zstd", 2, CHUNK, window.mark)),
        ]
        rounds: dict[str, list[float]] = {}
        cpu: dict[str, dict[str, list[float]]] = {}
        try:
            await contenders[0][1]()  # warm-up: page cache, connections, imports
            await contenders[1][1]()
            for number in range(ROUNDS):
                for name, run in rotated(contenders, number):
                    await anyio.to_thread.run_sync(os.sync)  # no writeback of an earlier run inside a timing
                    window.start()
                    elapsed = await run()
                    used = window.used()
                    rounds.setdefault(name, []).append(SIZE_MIB / elapsed)
                    for k, v in used.items():
                        cpu.setdefault(name, {}).setdefault(k, []).append(v)
                    print(f"# {name}: {SIZE_MIB / elapsed:.0f} MiB/s", file=sys.stderr, flush=True)
                    if name == "swift_upload":
                        await anyio.to_thread.run_sync(swift_cleanup, auth_url, user, key)
        finally:
            await store.aclose()
            if aio is not None:
                await anyio.to_thread.run_sync(aio.stop)
    rates = {k: median(v) for k, v in rounds.items()}
    cpu_median = {name: {k: round(median(v), 2) for k, v in per.items()} for name, per in cpu.items()}
    zstd = paired_ratio(rounds["notifykit_backup_zstd"], rounds["swift_upload"])
    plain = paired_ratio(rounds["notifykit_backup_none"], rounds["swift_upload"])
    return {
        "benchmark": "swift_backup",
        "file_mib": SIZE_MIB,
        "chunk_mib": CHUNK // MIB,
        "uploads_in_flight": UPLOADS,
        "rounds": ROUNDS,
        "swift_started_here": aio is not None,
        "statistic": "median of interleaved rounds",
        "per_object": PER_OBJECT,
        "mib_s": {k: round(v, 1) for k, v in rates.items()},
        "rounds_mib_s": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
        "cpu_s_median": cpu_median,
        "ratio_backup_zstd_vs_swift_upload": round(zstd, 3),
        "ratio_backup_none_vs_swift_upload": round(plain, 3),
        "ratio_swift_vs_posix_fsync": round(paired_ratio(rounds["notifykit_backup_zstd"], rounds["posix_fsync"]), 3),
        "goals": [
            goal("backup MiB/s (zstd, the default) vs swift upload", zstd, ">=", 1.0, anchor="swift_upload",
                 cause=cause(cpu_median, "notifykit_backup_zstd")),
            goal("backup MiB/s (no compression: the same bytes) vs swift upload", plain, ">=", 1.0,
                 anchor="swift_upload", cause=cause(cpu_median, "notifykit_backup_none")),
        ],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(anyio.run(main), indent=2))
