"""Fault scenarios for benchmarks/reliability_report.py, against the real brokers.

Each returns a row: faults injected, notifications emitted, sent (confirmed), received
(by an independent consumer), duplicated, lost and dead-lettered. The broker helpers are
the test suite's own (tests/amqp, tests/kafka, tests/webhook), so the report and the
tests exercise the same faults.
"""

from __future__ import annotations

import base64
import json
import logging
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from notifykit import Notifier  # noqa: E402

# Cut connections make aiormq log a traceback each; the rows below are the result that matters.
logging.getLogger("aiormq").setLevel(logging.CRITICAL)
from tests.amqp.support import BROKER_URL, CuttableProxy, Names, consume, delete_all, queue_length  # noqa: E402
from tests.helpers import run_publisher_then_sigkill  # noqa: E402


def row(name: str, faults: int, emitted: set[str], received: list[str], stats: Any) -> dict[str, Any]:
    counts = Counter(received)
    return {
        "scenario": name,
        "faults_injected": faults,
        "emitted": len(emitted),
        "sent": stats.sent,
        "received": len(received),
        "duplicated": sum(c - 1 for c in counts.values()),
        "lost": len(emitted - set(counts)),
        "dead_lettered": stats.dead_lettered,
    }


async def rabbitmq_cuts(n: int = 20_000, cuts: int = 10) -> dict[str, Any]:
    """The connection to RabbitMQ reset ``cuts`` times mid-stream (a TCP proxy cuts it)."""
    names = Names.fresh()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with CuttableProxy() as proxy:
                url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
                       "&queue_size=2000&block_timeout=30&retry_initial_delay=0.02&retry_max_delay=0.2"
                       "&circuit_reset_timeout=0.2&heartbeat=0")
                done = 0
                async with Notifier.from_url(url, publisher_id="report", dead_letters=Path(tmp) / "dl") as notifier:

                    async def cutter() -> None:
                        nonlocal done
                        for k in range(1, cuts + 1):
                            while notifier.stats()["amqp"].sent < k * n // (cuts + 1):
                                await anyio.sleep(0.001)
                            done += 1 if proxy.cut() else 0

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cutter)
                        emitted = {(await notifier.info({}, "backup.createprogress", {"i": i})).message_id
                                   for i in range(n)}
        queued = await queue_length(f"{names.topic}.info")
        received = [m.message_id or "" for m in await consume(f"{names.topic}.info", queued, timeout=60)]
        return row("rabbitmq: connection cut mid-stream", done, emitted, received, notifier.stats()["amqp"])
    finally:
        await delete_all(names)


async def rabbitmq_sigkill(kills: int = 3, per_run: int = 2000) -> dict[str, Any]:
    """The publishing process SIGKILLed ``kills`` times in durable mode; a last one replays the spool."""
    names = Names.fresh()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spool, dead = Path(tmp) / "spool.sqlite", Path(tmp) / "dl.jsonl"
            url = f"{BROKER_URL}?exchange={names.exchange}&topic={names.topic}&name=rabbit&durable=true"
            emitted: set[str] = set()
            for _ in range(kills):
                emitted |= set(await run_publisher_then_sigkill(url, spool, dead, lines=per_run))
            async with Notifier.from_url(url, publisher_id="replay", spool=spool, dead_letters=dead) as notifier:
                pass
        queued = await queue_length(f"{names.topic}.info")
        received = [m.message_id or "" for m in await consume(f"{names.topic}.info", queued, timeout=60)]
        return row("rabbitmq: publisher SIGKILLed (durable), then replayed", kills, emitted, received,
                   notifier.stats()["rabbit"])
    finally:
        await delete_all(names)


async def corrupt_spool_record(n: int = 2000, corrupt: int = 5) -> dict[str, Any]:
    """A durable publisher's spool left with ``corrupt`` damaged records in the middle and a
    torn last write; the next Notifier replays it to RabbitMQ. The damaged records are
    quarantined (quarantine.jsonl keeps their bytes), everything else is delivered."""
    names = Names.fresh()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spool, dead = Path(tmp) / "spool", Path(tmp) / "dl.jsonl"
            first = Notifier.from_url("memory://?name=rabbit&durable=true", publisher_id="report", spool=spool,
                                      dead_letters=dead, close_timeout=0.05)
            async with first:
                first.transports["rabbit"].stall()  # type: ignore[attr-defined]  # nothing confirmed
                emitted = [(await first.info({}, "backup.createprogress", {"i": i})).message_id for i in range(n)]
            (segment,) = sorted(spool.glob("segment-*.log"))
            data = bytearray(segment.read_bytes())
            for k in range(corrupt):  # one byte flipped inside records spread over the log
                at = data.index(f'\x00{{"i":{(k + 1) * n // (corrupt + 1)}}}\x00'.encode())  # an N record's payload
                data[at + 3] ^= 0x20
            data += b"\xa7K\x00\x01\x00\x00torn"  # and a torn last write
            segment.write_bytes(bytes(data))
            url = f"{BROKER_URL}?exchange={names.exchange}&topic={names.topic}&name=rabbit&durable=true"
            async with Notifier.from_url(url, publisher_id="replay", spool=spool, dead_letters=dead) as notifier:
                pass
            quarantine = (spool / "quarantine.jsonl").read_text().splitlines()
            kept = "".join(base64.b64decode(json.loads(line)["data_base64"]).decode("utf-8", "replace")
                           for line in quarantine)
        quarantined = {m for m in emitted if m in kept}
        queued = await queue_length(f"{names.topic}.info")
        received = [m.message_id or "" for m in await consume(f"{names.topic}.info", queued, timeout=60)]
        result = row("corrupt spool record (durable), then replayed", corrupt + 1, set(emitted) - quarantined,
                     received, notifier.stats()["rabbit"])
        # lost: emitted, neither received by the consumer nor kept in quarantine.jsonl
        return {**result, "emitted": len(emitted), "quarantined": len(quarantined),
                "quarantine_entries": len(quarantine)}
    finally:
        await delete_all(names)


async def status_unwritable(n: int = 5000) -> dict[str, Any]:
    """The status file cannot be written (a file where its directory should be) while a
    backup emits to RabbitMQ: the status writer fails every 10 ms; the caller goes on."""
    names = Names.fresh()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "run").write_text("not a directory")
            config = {"status_path": str(Path(tmp) / "run" / "status.json"), "status_interval": 0.01,
                      "transports": {"amqp": {"url": f"{BROKER_URL}?exchange={names.exchange}", "topics": [names.topic]}}}
            async with Notifier.from_config(config, publisher_id="report", dead_letters=Path(tmp) / "dl") as notifier:
                emitted = set()
                for i in range(n):
                    emitted.add((await notifier.info({}, "backup.createprogress", {"i": i})).message_id)
                    if i % 100 == 0:
                        await anyio.sleep(0.001)  # let the status writer fail along the way
        failures = notifier.background_tasks()["status"].failures
        queued = await queue_length(f"{names.topic}.info")
        received = [m.message_id or "" for m in await consume(f"{names.topic}.info", queued, timeout=60)]
        return row("status file unwritable", failures, emitted, received, notifier.stats()["amqp"])
    finally:
        await delete_all(names)


async def poison_in_batch(n: int = 10_000, poison_every: int = 1000, durable: bool = False) -> dict[str, Any]:
    """A peer that refuses a whole request for good when one item of it is malformed (an
    HTTP 400 for a JSON array with one bad element): every ``poison_every``-th notification
    is such an item. Each send takes 1 ms, so batches gather as they would on a real broker.
    The dispatcher bisects each refused batch (``_isolate``): only the poison notifications
    are dead-lettered, every other one is delivered. ``extra_sends`` are the sends the
    bisection cost (calls re-sending notifications already sent once), ``resent`` the
    notifications they carried; lost: emitted, neither delivered nor in the dead-letter file."""
    from notifykit import Notification
    from notifykit.testing import MemoryTransport
    from notifykit.transport import PermanentError

    with tempfile.TemporaryDirectory() as tmp:
        dead, spool = Path(tmp) / "dl.jsonl", Path(tmp) / "spool"
        url = f"memory://?name=m&delay=0.001&durable={str(durable).lower()}"
        notifier = Notifier.from_url(url, publisher_id="report", dead_letters=dead, spool=spool)
        seen: set[str] = set()
        calls = {"sends": 0, "first_sends": 0, "extra_sends": 0, "resent": 0, "refused": 0, "largest_batch": 0}
        async with notifier:
            transport = notifier.transports["m"]
            assert isinstance(transport, MemoryTransport)
            original = transport.send

            async def send(batch: Any) -> None:
                ids = [m.message_id for m in batch]
                again = sum(1 for i in ids if i in seen)
                calls["sends"] += 1
                calls["extra_sends" if again else "first_sends"] += 1
                calls["resent"] += again
                calls["largest_batch"] = max(calls["largest_batch"], len(ids))
                seen.update(ids)
                if any(m.payload.get("poison") for m in batch):
                    calls["refused"] += 1
                    await anyio.sleep(0.001)
                    raise PermanentError("400 Bad Request: item of the array is malformed")
                await original(batch)

            transport.send = send  # type: ignore[method-assign]
            poison: set[str] = set()
            emitted: set[str] = set()
            for i in range(n):
                bad = i % poison_every == poison_every // 2
                note: Notification = await notifier.info({}, "backup.createprogress", {"i": i, "poison": bad})
                emitted.add(note.message_id)
                if bad:
                    poison.add(note.message_id)
        delivered = [m.message_id for m in transport.messages]
        on_disk = [json.loads(line)["message"]["message_id"] for line in dead.read_text().splitlines()] \
            if dead.exists() else []
        stats = notifier.stats()["m"]
    counts = Counter(delivered)
    return {
        "scenario": "poison notification in a batch" + (" (durable)" if durable else ""),
        "faults_injected": len(poison),
        "emitted": len(emitted),
        "sent": stats.sent,
        "received": len(delivered),
        "duplicated": sum(c - 1 for c in counts.values()),
        "lost": len(emitted - set(counts) - set(on_disk)),
        "dead_lettered": stats.dead_lettered,
        "dead_lettered_not_poison": len(set(on_disk) - poison),
        "poison_delivered": len(poison & set(counts)),
        "batches_refused": calls["refused"],
        "sends": calls["sends"],
        "first_sends": calls["first_sends"],
        "extra_sends": calls["extra_sends"],
        "extra_sends_per_poison": round(calls["extra_sends"] / max(len(poison), 1), 1),
        "resent": calls["resent"],
        "largest_batch": calls["largest_batch"],
    }


async def dead_letter_disk_full(n: int = 5000, poison_every: int = 10, durable: bool = False) -> dict[str, Any]:
    """A transport rejecting every ``poison_every``-th notification for good while the
    dead-letter file's disk is full (a symlink to /dev/full: every write fails with ENOSPC).
    In memory mode the disk gets room again mid-run (the symlink is replaced by a file) and
    the kept letters are written; in durable mode it stays full until close, the letters stay
    in the spool, and the next Notifier (disk fixed) replays and dead-letters them.
    lost: emitted, neither delivered nor in the dead-letter file."""
    with tempfile.TemporaryDirectory() as tmp:
        dead, spool = Path(tmp) / "dl.jsonl", Path(tmp) / "spool"
        dead.symlink_to("/dev/full")
        url = f"memory://?name=m&reject=poison.*&batch_size=100&durable={str(durable).lower()}"
        delivered: list[str] = []
        notifier = Notifier.from_url(url, publisher_id="report", dead_letters=dead, spool=spool)
        async with notifier:
            emitted = set()
            for i in range(n):
                event = "poison.x" if i % poison_every == 0 else "backup.createprogress"
                emitted.add((await notifier.info({}, event, {"i": i})).message_id)
                if i == n // 2:
                    while notifier.stats()["m"].in_flight == 0:  # the disk is full: letters are kept
                        await anyio.sleep(0.01)
                    if not durable:
                        dead.unlink()  # room again: the kept letters are written at the next attempt
            if not durable:
                with anyio.fail_after(60):
                    while notifier.stats()["m"].dead_lettered < n // poison_every:
                        await anyio.sleep(0.05)
        delivered += [m.message_id for m in notifier.transports["m"].messages]  # type: ignore[attr-defined]
        stats, faults = notifier.stats()["m"], 1
        if durable:
            dead.unlink()
            notifier = Notifier.from_url(url, publisher_id="report", dead_letters=dead, spool=spool)
            async with notifier:
                pass
            delivered += [m.message_id for m in notifier.transports["m"].messages]  # type: ignore[attr-defined]
            replayed = notifier.stats()["m"]
        on_disk = [json.loads(line)["message"]["message_id"] for line in dead.read_text().splitlines()]
    counts = Counter(delivered)
    result = {
        "scenario": "dead-letter disk full" + (" (durable: kept in the spool, replayed)" if durable
                                               else " for a while, then room"),
        "faults_injected": faults,
        "emitted": len(emitted),
        "sent": stats.sent,
        "received": len(delivered),
        "duplicated": sum(c - 1 for c in counts.values()) + len(on_disk) - len(set(on_disk)),
        "lost": len(emitted - set(counts) - set(on_disk)),
        "dead_lettered": len(on_disk),
        "dead_letter_failed": stats.dead_letter_failed,
        "in_the_file": len(on_disk),
    }
    if durable:
        result.update(kept_in_spool_at_close=stats.spooled, replayed=replayed.replayed,
                      dead_lettered_after_replay=replayed.dead_lettered)
    return result


async def kafka_restart(during: int = 500) -> dict[str, Any] | None:
    """The Kafka broker stopped mid-stream and a new one started on the same port."""
    from tests.kafka.records import NO_IDEMPOTENCE, create_topic
    from tests.kafka.records import consume as kafka_consume
    from tests.kafka.tansu import Tansu, TansuUnavailable, find_tansu

    try:
        broker = Tansu(find_tansu())
        broker.start()
    except TansuUnavailable as exc:
        return {"scenario": "kafka: broker restarted", "skipped": str(exc)}
    try:
        topic = f"report-{Names.fresh().topic}"
        await create_topic(broker.bootstrap, f"{topic}.info", 2)
        url = (f"kafka://{broker.bootstrap}/?topic={topic}&{NO_IDEMPOTENCE}&request_timeout_ms=1000"
               "&retry_initial_delay=0.05&retry_max_delay=0.5&circuit_failure_threshold=1&circuit_reset_timeout=2")
        with tempfile.TemporaryDirectory() as tmp:
            async with Notifier.from_url(url, publisher_id="report", dead_letters=Path(tmp) / "dl") as notifier:
                await notifier.info({}, "backup.createprogress", {"backup_id": "b", "i": -1})
                while notifier.stats()["kafka"].sent < 1:
                    await anyio.sleep(0.01)
                broker.stop(grace=0.5)
                emitted = {(await notifier.info({}, "backup.createprogress", {"backup_id": "b", "i": i})).message_id
                           for i in range(during)}
                broker.start()
                await create_topic(broker.bootstrap, f"{topic}.info", 2)  # Tansu forgets topics on restart
                with anyio.fail_after(60):
                    while notifier.stats()["kafka"].sent < during + 1:
                        await anyio.sleep(0.05)
        records = await kafka_consume(broker.bootstrap, [f"{topic}.info"], during)
        received = [json.loads(r.value)["message_id"] for r in records]
        result = row("kafka: broker stopped, emitted during outage, restarted", 1, emitted, received,
                     notifier.stats()["kafka"])
        result["sent"] -= 1  # the warm-up notification before the outage
        return result
    finally:
        broker.stop()


async def webhook_flapping(per_phase: int = 100) -> dict[str, Any]:
    """A receiver answering 503, then too slowly, then refusing connections, then healthy."""
    from tests.reliability.test_webhook_flapping import FlappingReceiver

    delivered: list[str] = []
    receiver = FlappingReceiver(delivered)
    emitted: set[str] = set()
    faults = 0
    url = (f"{receiver.url}?timeout=0.3&max_concurrency=8&retry_initial_delay=0.01&retry_max_delay=0.2"
           "&circuit_failure_threshold=5&circuit_reset_timeout=0.2")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with Notifier.from_url(url, publisher_id="report", dead_letters=Path(tmp) / "dl") as notifier:
                await anyio.to_thread.run_sync(receiver.start)
                for mode in ("error", "slow", "down", "ok"):
                    if mode == "down":
                        await anyio.to_thread.run_sync(receiver.stop)
                    else:
                        receiver.mode = mode
                    faults += mode != "ok"
                    for i in range(per_phase):
                        emitted.add((await notifier.info({}, "backup.createprogress", {"i": i})).message_id)
                    await anyio.sleep(0.3)
                    if mode == "down":
                        receiver = FlappingReceiver(delivered, receiver.port)
                        await anyio.to_thread.run_sync(receiver.start)
                with anyio.fail_after(60):
                    while notifier.stats()["http"].sent < len(emitted):
                        await anyio.sleep(0.05)
        # A "slow" 200 the client gave up on counts as received once per request answered.
        return row("webhook: 503s, timeouts, connection refused", faults, emitted, delivered, notifier.stats()["http"])
    finally:
        await anyio.to_thread.run_sync(receiver.stop)


def _per_run(outcome: Any, failover: float | None) -> dict[str, Any]:
    row = outcome.row()
    return {**{k: row[k] for k in ("emitted", "sent", "received", "duplicated", "lost", "dead_lettered")},
            "failover_s": None if failover is None else round(failover, 3)}


def _cluster_row(outcomes: list[Any], failovers: list[float | None], **extra: Any) -> dict[str, Any]:
    """One row per fault over its runs: the sums, each run's figures, the median and max failover."""
    first = outcomes[0].row()
    timed = [f for f in failovers if f is not None]
    return {
        "scenario": first["scenario"],
        "faults_injected": sum(o.faults for o in outcomes),
        "runs": len(outcomes),
        **{k: sum(o.row()[k] for o in outcomes) for k in ("emitted", "sent", "received", "duplicated", "lost", "dead_lettered")},
        "failover_median_s": round(statistics.median(timed), 3) if timed else None,
        "failover_max_s": round(max(timed), 3) if timed else None,
        "per_run": [_per_run(o, f) for o, f in zip(outcomes, failovers, strict=True)],
        **extra,
    }


async def rabbitmq_cluster(runs: int = 5, n: int = 20_000) -> list[dict[str, Any]]:
    """A 3-node cluster (scripts/rabbitmq-cluster) with quorum queues: the connected node
    stopped, the connected node killed, the queue leader's node killed (mid-stream of ``n``),
    and the whole cluster down then back in durable mode, ``runs`` times each. Failover is
    fault → first confirm after it; for the whole cluster, the restart command → the last of
    the notifications emitted during the outage confirmed (the nodes' own boot included)."""
    from tests.amqp.support import Names as ClusterNames
    from tests.cluster.support import delete_entities, load_cluster_module, node_fault_mid_stream, whole_cluster_outage

    module = load_cluster_module()
    if module.missing_binaries():
        return []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = module.RabbitCluster(Path(tmp) / "cluster")
        await anyio.to_thread.run_sync(cluster.start)
        try:
            for fault in ("stop", "kill", "kill-leader"):
                outcomes = []
                for run in range(runs):
                    await anyio.to_thread.run_sync(cluster.heal)
                    names = ClusterNames.fresh()
                    try:
                        outcomes.append(await node_fault_mid_stream(cluster, names, Path(tmp) / f"dl-{fault}-{run}", fault, n))
                    finally:
                        await anyio.to_thread.run_sync(cluster.heal)
                        await delete_entities(cluster.nodes[0].url, names)
                rows.append(_cluster_row(outcomes, [o.failover_s for o in outcomes],
                                         nodes=[o.row()["nodes"] for o in outcomes],
                                         connects=[o.connects for o in outcomes],
                                         channel_replacements=[o.channel_replacements for o in outcomes]))
            outcomes = []
            for run in range(runs):
                names = ClusterNames.fresh()
                where = Path(tmp) / f"whole-{run}"
                where.mkdir()
                try:
                    outcomes.append(await whole_cluster_outage(cluster, names, where))
                finally:
                    await delete_entities(cluster.nodes[0].url, names)
            rows.append(_cluster_row(outcomes, [o.extra["all_sent_after_s"] for o in outcomes],
                                     emitted_during_outage=sum(o.extra["emitted_during_outage"] for o in outcomes),
                                     sent_during_outage=sum(o.extra["sent_during_outage"] for o in outcomes),
                                     restart_s=[o.extra["restart_s"] for o in outcomes]))
        finally:
            await anyio.to_thread.run_sync(cluster.stop)
    return rows


async def poison_rows() -> list[dict[str, Any]]:
    return [await poison_in_batch(), await poison_in_batch(durable=True)]


async def dead_letter_rows() -> list[dict[str, Any]]:
    return [await dead_letter_disk_full(), await dead_letter_disk_full(durable=True)]


async def all_faults() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [await rabbitmq_cuts(), await rabbitmq_sigkill(), await webhook_flapping(),
                                  await status_unwritable(), await corrupt_spool_record(), *await poison_rows(),
                                  *await dead_letter_rows()]
    kafka = await kafka_restart()
    if kafka is not None:
        rows.append(kafka)
    rows += await rabbitmq_cluster()
    return rows
