"""Backing a file up to Ceph through librados: the rados store vs a python-rados write loop and
vs the S3 store on the same Ceph's RGW.

One single-node Ceph on loopback (scripts/ceph-aio: mon + memstore OSD + RGW), a pool of its
own, and one file of SIZE_MIB (half random, half compressible) in a temporary directory.
Each round, in an order that rotates, runs:

* ``python_rados_loop`` — the anchor: ``Ioctx.write_full`` of every 4 MiB chunk of the file
  from a thread pool with as many threads as the backup has uploads in flight (what a
  hand-written bulk upload with Ceph's own binding does);
* ``rados_store_put_loop`` — the rados store's own ``put_object`` of the same chunks, as many
  in flight (no driver): what the store itself costs over bare librados;
* ``rados_backup_none`` — ``BackupService.create_backup`` with the chunked driver on the
  rados store, no compression: the same bytes as the anchor, plus a sha256 per chunk and the
  metadata objects;
* ``rados_backup_zstd`` — the same with zstd, the default compression;
* ``s3_backup_none`` — the same backup (no compression, same uploads) with the S3 store
  through RGW on the same cluster.

Each figure is the median of ROUNDS rounds in MiB/s of the file's size (deleting what was
written is outside the timing); a ratio is the median of the per-round ratios;
``client_cpu_s_median`` is this process's CPU time per run (all threads, deletes included).
Usage:
``python benchmarks/rados_backup.py [SIZE_MIB [ROUNDS]]`` (defaults 1024 and 5).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _backup_helpers import backup_once, load_script, write_volume
from _goals import goal, median, paired_ratio, rotated

from notifykit.backup.plugin import ObjectStore, store_from_url

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CHUNK = 4 * MIB
POOL = "bench"
BUCKET = "bench"
CAUSE_S3 = "RGW and the OSD share the same two cores with the client"


def chunks(volume: Path) -> list[bytes]:
    data = volume.read_bytes()
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def python_rados_loop(conf: str, parts: list[bytes], uploads: int) -> float:
    """Seconds to write every chunk with write_full from ``uploads`` threads (connecting and
    removing the objects untimed), in a namespace of its own."""
    import rados

    cluster = rados.Rados(rados_id="admin", conffile=conf)
    cluster.connect()
    try:
        ioctx = cluster.open_ioctx(POOL)
        ioctx.set_namespace("python-rados-loop")
        start = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            list(pool.map(lambda i: ioctx.write_full(f"chunk-{i:05d}", parts[i]), range(len(parts))))
        elapsed = time.perf_counter() - start
        for i in range(len(parts)):
            ioctx.remove_object(f"chunk-{i:05d}")
        ioctx.close()
    finally:
        cluster.shutdown()
    return elapsed


async def store_put_loop(store: ObjectStore, parts: list[bytes], uploads: int) -> float:
    """Seconds for the store's own put_object of every chunk, ``uploads`` at once (no driver:
    what the store adds to librados, apart from reading, hashing and packing the volume)."""
    container = "backup_store-put-loop"
    limiter = anyio.Semaphore(uploads)

    async def put(i: int) -> None:
        async with limiter:
            await store.put_object(container, f"chunk-{i:05d}", parts[i])

    await store.create_container(container)
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(parts)):
            tg.start_soon(put, i)
    elapsed = time.perf_counter() - start
    for name in await store.list_objects(container):
        await store.delete_object(container, name)
    await store.delete_container(container)
    return elapsed


async def main() -> dict[str, Any]:
    module = load_script("ceph-aio")
    missing = module.missing_binaries()
    if missing:
        return {"benchmark": "rados_backup", "skipped": f"Ceph not installed (missing {', '.join(missing)})"}
    try:
        import rados  # noqa: F401
    except ImportError:
        return {"benchmark": "rados_backup",
                "skipped": "python3-rados not importable (apt-get install python3-rados; scripts/link-ceph-bindings)"}
    with tempfile.TemporaryDirectory(prefix="notifykit-bench-rados-") as tmp:
        root = Path(tmp)
        aio = module.CephAIO(root / "ceph-aio")
        await anyio.to_thread.run_sync(aio.start)
        info = aio.info()
        conf = str(aio.conf)
        volume = root / "volume.img"
        await anyio.to_thread.run_sync(write_volume, volume, SIZE_MIB * MIB)
        parts = await anyio.to_thread.run_sync(chunks, volume)
        await anyio.to_thread.run_sync(aio.ceph, "osd", "pool", "create", POOL, "32")
        rados_store = store_from_url(f"rados://{POOL}?conf={conf}&id=admin")
        uploads = rados_store.default_uploads
        s3_store = store_from_url(f"{info['s3_url']}/{BUCKET}?create_bucket=true&uploads={uploads}")
        stores: list[ObjectStore] = [rados_store, s3_store]
        contenders: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("python_rados_loop", lambda: anyio.to_thread.run_sync(python_rados_loop, conf, parts, uploads)),
            ("rados_store_put_loop", lambda: store_put_loop(rados_store, parts, uploads)),
            ("rados_backup_none", lambda: backup_once(root, volume, rados_store, "none", uploads, CHUNK)),
            ("rados_backup_zstd", lambda: backup_once(root, volume, rados_store, "zstd", uploads, CHUNK)),
            ("s3_backup_none", lambda: backup_once(root, volume, s3_store, "none", uploads, CHUNK)),
        ]
        rounds: dict[str, list[float]] = {}
        cpu_s: dict[str, list[float]] = {}
        try:
            for store in stores:
                await store.open()
            await s3_store.create_container("warm-up")  # the bucket: RGW creates its pools (1-3 s)
            for _, run in contenders:  # warm-up: page cache, connections, PGs, imports
                await run()
            for number in range(ROUNDS):
                for name, run in rotated(contenders, number):
                    cpu = time.process_time()  # every thread of this process: librados' too
                    elapsed = await run()
                    cpu_s.setdefault(name, []).append(time.process_time() - cpu)
                    rounds.setdefault(name, []).append(SIZE_MIB / elapsed)
                    print(f"# {name}: {SIZE_MIB / elapsed:.0f} MiB/s", file=sys.stderr, flush=True)
        finally:
            for store in stores:
                await store.aclose()
            await anyio.to_thread.run_sync(aio.stop)
    rates = {k: median(v) for k, v in rounds.items()}
    cpu = {k: median(v) for k, v in cpu_s.items()}
    vs_loop = paired_ratio(rounds["rados_backup_none"], rounds["python_rados_loop"])
    vs_s3 = paired_ratio(rounds["rados_backup_none"], rounds["s3_backup_none"])
    store_vs_loop = paired_ratio(rounds["rados_store_put_loop"], rounds["python_rados_loop"])
    cause_loop = (f"the store's own put_object loop is at {store_vs_loop:.2f}x the anchor; the backup's client CPU is"
                  f" {cpu['rados_backup_none']:.2f} s against the loop's {cpu['python_rados_loop']:.2f} s (the driver"
                  " reads the file and hashes every 32 KiB block and every chunk with sha256, which the loop's chunks,"
                  " already in memory, skip), on two cores the OSD needs too")
    return {
        "benchmark": "rados_backup",
        "file_mib": SIZE_MIB,
        "chunk_mib": CHUNK // MIB,
        "uploads_in_flight": uploads,
        "rounds": ROUNDS,
        "ceph_started_in_s": round(info["started_in_s"], 1),
        "statistic": "median of interleaved rounds; ratios: median of per-round ratios",
        "mib_s": {k: round(v, 1) for k, v in rates.items()},
        "rounds_mib_s": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
        # client CPU seconds per run (untimed deletes and, for the loop, connecting included)
        "client_cpu_s_median": {k: round(v, 2) for k, v in cpu.items()},
        "ratio_rados_backup_none_vs_python_rados": round(vs_loop, 3),
        "ratio_rados_backup_none_vs_s3_backup_none": round(vs_s3, 3),
        "ratio_rados_store_put_loop_vs_python_rados": round(store_vs_loop, 3),
        "ratio_rados_backup_zstd_vs_python_rados": round(
            paired_ratio(rounds["rados_backup_zstd"], rounds["python_rados_loop"]), 3),
        "goals": [
            goal("RADOS store put_object MiB/s (same chunks, same concurrency) vs a python-rados write_full loop",
                 store_vs_loop, ">=", 1.0, anchor="python_rados_loop", cause="thread hand-offs per chunk"),
            goal("RADOS backup MiB/s (no compression: the same bytes) vs a python-rados write_full loop",
                 vs_loop, ">=", 1.0, anchor="python_rados_loop", cause=cause_loop),
            goal("RADOS backup MiB/s vs the S3 store's backup through RGW on the same Ceph",
                 vs_s3, ">=", 2.0, anchor="s3_backup_none", cause=CAUSE_S3),
        ],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(anyio.run(main), indent=2))
