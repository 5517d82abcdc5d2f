"""Backing a file up to Ceph through librados: the rados store vs a python-rados write loop and
vs the S3 store on the same Ceph's RGW.

One single-node Ceph on loopback (scripts/ceph-aio: mon + memstore OSD + RGW), a pool of its
own, and one file of SIZE_MIB (half random, half compressible) in a temporary directory.
Each round, in an order that rotates, runs (``per_chunk`` in the JSON says it again):

* ``python_rados_loop`` — the anchor: ``Ioctx.write_full`` of every 4 MiB chunk of the file
  (``bytes`` read into memory before the timing) from a thread pool with as many threads as
  the backup has uploads in flight, through one client connected before the rounds (as the
  store's is); removing the objects is untimed. What a hand-written bulk upload with Ceph's
  own binding does;
* ``python_rados_loop_hashing`` — the same loop that also computes, in its threads before each
  write, what the backup must compute per chunk: the digest of every 32 KiB block (the block
  list, in the backup's default block hash, blake3). Not an anchor of a goal: it tells the hashing's own cost from the pipeline's;
* ``rados_store_put_loop`` — the rados store's own ``put_object`` of the same chunks, as many
  in flight (no driver): what the store itself costs over bare librados;
* ``rados_backup_none`` — ``BackupService.create_backup`` with the chunked driver on the
  rados store, no compression: the same bytes as the anchor, read from the file, plus the
  block list and the metadata objects;
* ``rados_backup_zstd`` — the same with zstd, the default compression (fewer bytes stored);
* ``s3_backup_none`` — the same backup (no compression, same uploads) with the S3 store
  through RGW on the same cluster.

Every run writes into a RADOS namespace of its own, as each backup does (``backup_<id>``):
where 8 writes in flight land among the pool's PGs depends on the names, and with one fixed
namespace per contender the same placement favoured or handicapped it in every round (in
one 8-round run the same loop's median was 1.33-1.67x higher in four other namespaces than
in its own; 1.11x in a quieter one).

Each figure is the median of ROUNDS rounds in MiB/s of the file's size (deleting what was
written is outside the timing); a ratio is the median of the per-round ratios. CPU seconds
per run (medians) cover the timed part only: this process (``client``, every thread:
librados' too), the OSD and RGW (``CpuWindow``). ``block_list_cpu_s`` is one thread's CPU
for the digest of every 32 KiB block of the file (blake3), measured once outside the rounds.
Usage:
``python benchmarks/rados_backup.py [SIZE_MIB [ROUNDS]]`` (defaults 1024 and 7).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _backup_helpers import CpuWindow, backup_once, load_script, write_volume
from _goals import goal, median, paired_ratio, rotated

from notifykit.backup._block_hash import DEFAULT_BLOCK_HASH, get_block_hash
from notifykit.backup.plugin import ObjectStore, store_from_url

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 7
CHUNK = 4 * MIB
BLOCK = 32 * 1024  # the driver's block-list block (Cinder's backup_sha_block_size_bytes)
POOL = "bench"
BUCKET = "bench"
CAUSE_S3 = "RGW and the OSD share the same two cores with the client"
NAMESPACE = "python-rados-loop"
PER_CHUNK = {
    "python_rados_loop": "Ioctx.write_full(name, chunk) in one of uploads_in_flight threads; the chunk is bytes already"
                         " in memory (the file read before the timing); nothing else (no reading, hashing,"
                         " compression or metadata); one client connected before the rounds, removing untimed",
    "python_rados_loop_hashing": "as python_rados_loop, plus in the same thread before the write the blake3 of each"
                                 " 32 KiB block of the chunk (what the backup computes for its block list)",
    "rados_store_put_loop": "RadosObjectStore.put_object(container, name, chunk), uploads_in_flight at once (one"
                            " write_full in a worker thread each), chunks already in memory",
    "rados_backup_none": "the chunked driver: pread of the chunk from the file, blake3 of each 32 KiB block (block"
                         " list), put_object (one write_full), uploads_in_flight writes in flight; then the block"
                         " list and metadata objects",
    "rados_backup_zstd": "as rados_backup_none, the chunk compressed with zstd (the default compression and level)"
                         " when the driver finds it compressible",
    "s3_backup_none": "as rados_backup_none through the S3 store (obstore) to RGW, with the MD5 the store asks for",
}


def chunks(volume: Path) -> list[bytes]:
    data = volume.read_bytes()
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def block_list(chunk: bytes) -> bytes:
    """The digest of each 32 KiB block of ``chunk``: the driver's block list, computed the same way."""
    return get_block_hash(DEFAULT_BLOCK_HASH).digests(chunk, BLOCK)


def block_list_cpu(parts: list[bytes]) -> float:
    """One thread's CPU seconds for the block list of every chunk."""
    start = time.thread_time()
    for part in parts:
        block_list(part)
    return time.thread_time() - start


def python_rados_loop(cluster: Any, parts: list[bytes], uploads: int, mark: Callable[[], None], *,
                      hashing: bool = False) -> float:
    """Seconds to write every chunk with write_full from ``uploads`` threads through
    ``cluster`` (connected once for the whole run, as the store is), into a namespace of its
    own for this run (opening it and removing the objects untimed); ``hashing`` computes each
    chunk's block list in its thread first."""
    ioctx = cluster.open_ioctx(POOL)
    try:
        ioctx.set_namespace(f"{NAMESPACE}-{uuid.uuid4().hex}")

        def put(i: int) -> None:
            if hashing:
                block_list(parts[i])
            ioctx.write_full(f"chunk-{i:05d}", parts[i])

        start = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            list(pool.map(put, range(len(parts))))
        elapsed = time.perf_counter() - start
        mark()
        for i in range(len(parts)):
            ioctx.remove_object(f"chunk-{i:05d}")
    finally:
        ioctx.close()
    return elapsed


def connect_loop(conf: str) -> Any:
    """The loop's own client, connected once before the rounds, as the store keeps its own and
    a hand-written uploader keeps its client (connecting for each run put the connection's
    warm-up in the anchor's timing and not in the store's)."""
    import rados

    cluster = rados.Rados(rados_id="admin", conffile=conf)
    cluster.connect()
    return cluster


async def store_put_loop(store: ObjectStore, parts: list[bytes], uploads: int, mark: Callable[[], None]) -> float:
    """Seconds for the store's own put_object of every chunk, ``uploads`` at once (no driver:
    what the store adds to librados, apart from reading, hashing and packing the volume)."""
    container = f"backup_store-put-loop-{uuid.uuid4().hex}"
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
    mark()
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
        pids = info["pids"]
        window = CpuWindow({"osd": pids.get("osd.0"), "rgw": pids.get("client.rgw.aio")})

        loop_client: list[Any] = []  # the loop's cluster, once connected

        def loop(hashing: bool) -> Callable[[], Awaitable[float]]:
            return lambda: anyio.to_thread.run_sync(
                lambda: python_rados_loop(loop_client[0], parts, uploads, window.mark, hashing=hashing))

        contenders: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("python_rados_loop", loop(False)),
            ("python_rados_loop_hashing", loop(True)),
            ("rados_store_put_loop", lambda: store_put_loop(rados_store, parts, uploads, window.mark)),
            ("rados_backup_none", lambda: backup_once(root, volume, rados_store, "none", uploads, CHUNK, window.mark)),
            ("rados_backup_zstd", lambda: backup_once(root, volume, rados_store, "zstd", uploads, CHUNK, window.mark)),
            ("s3_backup_none", lambda: backup_once(root, volume, s3_store, "none", uploads, CHUNK, window.mark)),
        ]
        rounds: dict[str, list[float]] = {}
        cpu_s: dict[str, dict[str, list[float]]] = {}
        try:
            for store in stores:
                await store.open()
            loop_client.append(await anyio.to_thread.run_sync(connect_loop, conf))
            await s3_store.create_container("warm-up")  # the bucket: RGW creates its pools (1-3 s)
            for _, run in contenders:  # warm-up: page cache, connections, PGs, imports
                await run()
            hash_cpu = await anyio.to_thread.run_sync(block_list_cpu, parts)
            for number in range(ROUNDS):
                for name, run in rotated(contenders, number):
                    window.start()
                    elapsed = await run()
                    for who, seconds in window.used().items():
                        cpu_s.setdefault(who, {}).setdefault(name, []).append(seconds)
                    rounds.setdefault(name, []).append(SIZE_MIB / elapsed)
                    print(f"# {name}: {SIZE_MIB / elapsed:.0f} MiB/s", file=sys.stderr, flush=True)
        finally:
            for store in stores:
                await store.aclose()
            if loop_client:
                await anyio.to_thread.run_sync(loop_client[0].shutdown)
            await anyio.to_thread.run_sync(aio.stop)
    rates = {k: median(v) for k, v in rounds.items()}
    cpu = {who: {k: round(median(v), 2) for k, v in runs.items()} for who, runs in cpu_s.items()}
    loop_rates = rounds["python_rados_loop"]
    vs_loop = paired_ratio(rounds["rados_backup_none"], loop_rates)
    vs_s3 = paired_ratio(rounds["rados_backup_none"], rounds["s3_backup_none"])
    store_vs_loop = paired_ratio(rounds["rados_store_put_loop"], loop_rates)
    hashing_vs_loop = paired_ratio(rounds["python_rados_loop_hashing"], loop_rates)
    vs_hashing = paired_ratio(rounds["rados_backup_none"], rounds["python_rados_loop_hashing"])
    client, osd = cpu["client"], cpu["osd"]
    cause_loop = (f"the anchor hashes nothing and reads nothing in its timing; the backup reads every chunk from the"
                  f" file and computes its block list (blake3 of every 32 KiB block: {hash_cpu:.2f} CPU-s per run on"
                  f" one core here): client CPU {client['rados_backup_none']:.2f} s against the loop's"
                  f" {client['python_rados_loop']:.2f} s, the OSD {osd['rados_backup_none']:.2f} s against"
                  f" {osd['python_rados_loop']:.2f} s, all on the same two cores. The same loop hashing the same"
                  f" blocks in its threads runs at {hashing_vs_loop:.2f}x the anchor, the backup at {vs_hashing:.2f}x"
                  f" that loop; the store's own put_object loop at {store_vs_loop:.2f}x the anchor")
    return {
        "benchmark": "rados_backup",
        "file_mib": SIZE_MIB,
        "chunk_mib": CHUNK // MIB,
        "uploads_in_flight": uploads,
        "rounds": ROUNDS,
        "ceph_started_in_s": round(info["started_in_s"], 1),
        "statistic": "median of interleaved rounds; ratios: median of per-round ratios",
        "per_chunk": PER_CHUNK,
        "mib_s": {k: round(v, 1) for k, v in rates.items()},
        "rounds_mib_s": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
        # CPU seconds per run, timed part only: this process (every thread), the OSD, RGW
        "client_cpu_s_median": client,
        "osd_cpu_s_median": osd,
        "rgw_cpu_s_median": cpu["rgw"],
        "block_list_cpu_s": round(hash_cpu, 2),
        "ratio_rados_backup_none_vs_python_rados": round(vs_loop, 3),
        "ratio_rados_backup_none_vs_s3_backup_none": round(vs_s3, 3),
        "ratio_rados_store_put_loop_vs_python_rados": round(store_vs_loop, 3),
        "ratio_rados_backup_zstd_vs_python_rados": round(
            paired_ratio(rounds["rados_backup_zstd"], loop_rates), 3),
        "ratio_python_rados_hashing_vs_python_rados": round(hashing_vs_loop, 3),
        "ratio_rados_backup_none_vs_python_rados_hashing": round(vs_hashing, 3),
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
