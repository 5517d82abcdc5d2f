"""Backing a file up to Ceph through S3: notifykit's backup vs a boto3 upload loop, same RGW.

One single-node Ceph on loopback (scripts/ceph-aio: mon + memstore OSD + RGW) and one file
of SIZE_MIB (half random, half compressible), in a temporary directory. Each round, in an
order that rotates, runs:

* ``boto3_put_loop`` — the anchor: boto3 ``put_object`` of every 4 MiB chunk of the file
  from a thread pool with as many threads as the backup has uploads in flight (what a
  hand-written bulk upload with the usual client does);
* ``notifykit_backup_none`` — ``BackupService.create_backup`` with the chunked driver on the
  S3 store, no compression: the same bytes as the anchor, plus the block list's blake3 per
  32 KiB block and the block list and metadata objects;
* ``notifykit_backup_zstd`` — the same with zstd, the default compression;
* ``aiobotocore_put_loop`` and ``obstore_put_loop`` — the two async clients considered for
  the store, uploading the same chunks with the same concurrency (why obstore was chosen);
* ``boto3_read_put_loop`` — the anchor's loop, but each thread reads its chunk from the file
  (``os.pread``) inside the timing, as the backup must: not a goal's anchor, it tells how
  much of the gap to the anchor is reading the volume.

What each does per object is in the JSON (``per_object``; ``boto3_request_headers`` are the
headers the anchor's first PUT carried). Each rate is the median of ROUNDS rounds in MiB/s
of the file's size, each ratio the median of the per-round ratios (deleting what was
uploaded is outside the timing, and each timing starts once RGW and the OSD are idle, so
work they defer after the previous contender lands in nobody's timing: ``settle_s_median``
is the wait, 0.2 s meaning idle at once); the CPU seconds of this process (the client) and of RGW and
the OSD during each contender's timed part are reported too (``cpu_s_median``): client and Ceph share the
machine's cores, so CPU spent by one is time the other waits for. Usage: ``python benchmarks/s3_backup.py [SIZE_MIB [ROUNDS]]``
(defaults 256 and 5).
"""

from __future__ import annotations

import asyncio
import hashlib
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
from _backup_helpers import CpuWindow, backup_once, load_script, write_volume
from _goals import goal, median, paired_ratio, rotated

from notifykit.backup._s3 import S3ObjectStore
from notifykit.backup.plugin import store_from_url

MIB = 1024 * 1024
SIZE_MIB = int(sys.argv[1]) if len(sys.argv) > 1 else 256
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CHUNK = 4 * MIB
BUCKET = "bench"


# What each contender does per object (botocore's S3SigV4Auth over http; backup/_s3.py).
PER_OBJECT = {
    "boto3_put_loop": "one put_object per 4 MiB chunk from a thread pool, the chunks read from the file before the "
                      "timing starts: SigV4 with the body's sha256 signed (X-Amz-Content-SHA256: RGW refuses a body "
                      "that does not match), Expect: 100-continue, no Content-MD5 and no ETag check (checksums "
                      "'when_required')",
    "notifykit_backup": "one PUT per 4 MiB chunk read from the file: blake3 of every 32 KiB block (the block list: "
                        "increments and restore checks) and zstd in a pack worker (the zstd run), then obstore's "
                        "PUT, SigV4 with the body's sha256 signed as boto3 does (RGW refuses a body that does not "
                        "match); after: the block list and the metadata object, and the catalog's records",
    "aiobotocore_put_loop": "as boto3_put_loop, on the event loop (aiohttp)",
    "boto3_read_put_loop": "as boto3_put_loop, each thread reading its chunk from the file (os.pread) inside the "
                           "timing",
    "obstore_put_loop": "obstore put_async per chunk (read before the timing), SigV4 with the body's sha256 signed "
                        "(obstore's default)",
}


def cause(cpu: dict[str, dict[str, float]], contender: str) -> str:
    """Where the time goes, from this run's CPU seconds (shown on the page when the goal is missed)."""
    ours, theirs = cpu.get(contender, {}), cpu.get("boto3_put_loop", {})
    ceph = lambda per: sum(v for k, v in per.items() if k != "client")  # noqa: E731
    return (f"client CPU {ours.get('client', 0):.2f} s against the boto3 loop's {theirs.get('client', 0):.2f} s, RGW + OSD "
            f"{ceph(ours):.2f} s against {ceph(theirs):.2f} s, all on the same two cores: besides the signed sha256 "
            "both compute, the backup hashes every 32 KiB block with blake3 (its block list: increments and restore "
            "checks), reads the file inside the timing (the loop's chunks are read before it) and writes the block "
            "list and a metadata object")


def chunks(volume: Path) -> list[bytes]:
    data = volume.read_bytes()
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def botocore_config(uploads: int) -> Any:
    from botocore.config import Config

    return Config(max_pool_connections=uploads + 2, s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                  request_checksum_calculation="when_required", response_checksum_validation="when_required")


def boto3_client(info: dict[str, Any], uploads: int) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=info["endpoint"], aws_access_key_id=info["access_key"],
                        aws_secret_access_key=info["secret_key"], region_name="us-east-1",
                        config=botocore_config(uploads))


SEEN_HEADERS: dict[str, str] = {}


def remember_headers(request: Any, **_: Any) -> None:
    """The anchor's first PUT's headers (warm-up run only), for the JSON: signature, date and ids left out."""
    if not SEEN_HEADERS:
        for name, value in request.headers.items():
            text = value.decode() if isinstance(value, bytes) else str(value)
            if name.lower() == "x-amz-content-sha256" and text != "UNSIGNED-PAYLOAD":
                with request.body.getbuffer() as body:  # a BytesIO of the chunk
                    text = "sha256 of the body" if text == hashlib.sha256(body).hexdigest() else text
            elif name.lower() in ("authorization", "x-amz-date", "amz-sdk-invocation-id", "user-agent"):
                text = "…"
            SEEN_HEADERS[name] = text


def boto3_put_loop(info: dict[str, Any], parts: list[bytes], uploads: int, mark: Callable[[], None]) -> float:
    client = boto3_client(info, uploads)
    if not SEEN_HEADERS:  # the warm-up run: no hook in the timed ones
        client.meta.events.register("before-send.s3.PutObject", remember_headers)
    start = time.perf_counter()
    with ThreadPoolExecutor(uploads) as pool:
        list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"boto3/{i:05d}", Body=parts[i]),
                      range(len(parts))))
    elapsed = time.perf_counter() - start
    mark()
    for i in range(len(parts)):
        client.delete_object(Bucket=BUCKET, Key=f"boto3/{i:05d}")
    return elapsed


def boto3_read_put_loop(info: dict[str, Any], volume: Path, count: int, uploads: int,
                        mark: Callable[[], None]) -> float:
    client = boto3_client(info, uploads)
    fd = os.open(volume, os.O_RDONLY)
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            list(pool.map(lambda i: client.put_object(Bucket=BUCKET, Key=f"boto3r/{i:05d}",
                                                      Body=os.pread(fd, CHUNK, i * CHUNK)), range(count)))
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    mark()
    for i in range(count):
        client.delete_object(Bucket=BUCKET, Key=f"boto3r/{i:05d}")
    return elapsed


async def limited(uploads: int, jobs: list[Callable[[], Awaitable[Any]]]) -> None:
    gate = asyncio.Semaphore(uploads)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def aiobotocore_put_loop(info: dict[str, Any], parts: list[bytes], uploads: int,
                               mark: Callable[[], None]) -> float:
    from aiobotocore.session import get_session

    async with get_session().create_client(
            "s3", endpoint_url=info["endpoint"], aws_access_key_id=info["access_key"],
            aws_secret_access_key=info["secret_key"], region_name="us-east-1", config=botocore_config(uploads)) as c:
        start = time.perf_counter()
        await limited(uploads, [lambda i=i: c.put_object(Bucket=BUCKET, Key=f"aiobotocore/{i:05d}", Body=parts[i])
                                for i in range(len(parts))])
        elapsed = time.perf_counter() - start
        mark()
        for i in range(len(parts)):
            await c.delete_object(Bucket=BUCKET, Key=f"aiobotocore/{i:05d}")
    return elapsed


async def obstore_put_loop(info: dict[str, Any], parts: list[bytes], uploads: int, mark: Callable[[], None]) -> float:
    import obstore
    from obstore.store import S3Store

    s3 = S3Store(BUCKET, endpoint=info["endpoint"], access_key_id=info["access_key"],
                 secret_access_key=info["secret_key"], region="us-east-1", client_options={"allow_http": True})
    start = time.perf_counter()
    await limited(uploads, [lambda i=i: obstore.put_async(s3, f"obstore/{i:05d}", parts[i], use_multipart=False)
                            for i in range(len(parts))])
    elapsed = time.perf_counter() - start
    mark()
    await obstore.delete_async(s3, [f"obstore/{i:05d}" for i in range(len(parts))])
    return elapsed


async def main() -> dict[str, Any]:
    module = load_script("ceph-aio")
    missing = module.missing_binaries()
    if missing:
        return {"benchmark": "s3_backup", "skipped": f"Ceph not installed (missing {', '.join(missing)})"}
    with tempfile.TemporaryDirectory(prefix="notifykit-bench-s3-") as tmp:
        root = Path(tmp)
        aio = module.CephAIO(root / "ceph-aio")
        await anyio.to_thread.run_sync(aio.start)
        info = aio.info()
        volume = root / "volume.img"
        await anyio.to_thread.run_sync(write_volume, volume, SIZE_MIB * MIB)
        parts = await anyio.to_thread.run_sync(chunks, volume)
        store = store_from_url(f"{info['s3_url']}/{BUCKET}?create_bucket=true")
        assert isinstance(store, S3ObjectStore)
        uploads = store.default_uploads
        window = CpuWindow({"rgw": info["pids"].get("client.rgw.aio"), "osd": info["pids"].get("osd.0")})
        contenders: list[tuple[str, Callable[[], Awaitable[float]]]] = [
            ("boto3_put_loop", lambda: anyio.to_thread.run_sync(boto3_put_loop, info, parts, uploads, window.mark)),
            ("notifykit_backup_none", lambda: backup_once(root, volume, store, "none", uploads, CHUNK, window.mark)),
            ("notifykit_backup_zstd", lambda: backup_once(root, volume, store, "zstd", uploads, CHUNK, window.mark)),
            ("aiobotocore_put_loop", lambda: aiobotocore_put_loop(info, parts, uploads, window.mark)),
            ("obstore_put_loop", lambda: obstore_put_loop(info, parts, uploads, window.mark)),
            ("boto3_read_put_loop", lambda: anyio.to_thread.run_sync(boto3_read_put_loop, info, volume, len(parts),
                                                                     uploads, window.mark)),
        ]
        rounds: dict[str, list[float]] = {}
        cpu: dict[str, dict[str, list[float]]] = {}
        settled: list[float] = []
        try:
            await store.open()
            await store.create_container("warm-up")  # the bucket: RGW creates its pools (1-3 s)
            await contenders[1][1]()  # warm-up: page cache, connections, imports
            await contenders[0][1]()
            for number in range(ROUNDS):
                for name, run in rotated(contenders, number):
                    settled.append(await window.settle())
                    window.start()
                    elapsed = await run()
                    used = window.used()
                    for k, v in used.items():
                        cpu.setdefault(name, {}).setdefault(k, []).append(v)
                    rounds.setdefault(name, []).append(SIZE_MIB / elapsed)
                    print(f"# {name}: {SIZE_MIB / elapsed:.0f} MiB/s", file=sys.stderr, flush=True)
        finally:
            await store.aclose()
            await anyio.to_thread.run_sync(aio.stop)
    rates = {k: median(v) for k, v in rounds.items()}
    plain = paired_ratio(rounds["notifykit_backup_none"], rounds["boto3_put_loop"])
    cpu_median = {name: {k: round(median(v), 2) for k, v in per.items()} for name, per in cpu.items()}
    return {
        "benchmark": "s3_backup",
        "file_mib": SIZE_MIB,
        "chunk_mib": CHUNK // MIB,
        "uploads_in_flight": uploads,
        "rounds": ROUNDS,
        "ceph_started_in_s": round(info["started_in_s"], 1),
        "statistic": "median of interleaved rounds",
        "settle_s_median": round(median(settled), 2),
        "per_object": PER_OBJECT,
        "boto3_request_headers": SEEN_HEADERS,
        "mib_s": {k: round(v, 1) for k, v in rates.items()},
        "rounds_mib_s": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
        "cpu_s_median": cpu_median,
        "ratio_backup_none_vs_boto3": round(plain, 3),
        "ratio_backup_zstd_vs_boto3": round(paired_ratio(rounds["notifykit_backup_zstd"], rounds["boto3_put_loop"]), 3),
        "ratio_backup_none_vs_boto3_reading": round(paired_ratio(rounds["notifykit_backup_none"],
                                                                 rounds["boto3_read_put_loop"]), 3),
        "ratio_obstore_vs_aiobotocore": round(paired_ratio(rounds["obstore_put_loop"], rounds["aiobotocore_put_loop"]),
                                              3),
        "goals": [
            goal("S3-on-Ceph backup MiB/s (no compression: the same bytes) vs boto3 put_object loop",
                 plain, ">=", 1.0, anchor="boto3_put_loop",
                 cause=cause(cpu_median, "notifykit_backup_none")),
        ],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    print(json.dumps(anyio.run(main), indent=2))
