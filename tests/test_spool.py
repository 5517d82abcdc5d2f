"""Durable spool: stored before notify() returns, deleted after confirmation, replayed on start."""

from __future__ import annotations

import base64
import errno
import json
import sqlite3
import struct
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import ConfigError, Notification, Notifier, NotifierConfig, WireFormat
from notifykit._log import frame, frame_notification, frame_record, segment_name
from notifykit._spool import Spool
from notifykit.deadletters import read_dead_letters
from notifykit.testing import MemoryTransport

from .helpers import run_publisher_then_sigkill
from .test_notifier import memory, until

pytestmark = pytest.mark.asyncio


def spool_counts(path: Path) -> dict[str, int]:
    """Notifications waiting in a spool, per transport (read-only)."""
    return Spool.inspect(path).counts


async def test_durable_keeps_unconfirmed_and_replays_in_order(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    first = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                              dead_letters=dead_letter_path, close_timeout=0.05)
    async with first:
        memory(first, "events").stall()
        ids = [(await first.info({}, "e.v", {"i": i})).message_id for i in range(25)]
        assert spool_counts(spool) == {"events": 25}  # committed before notify() returned
    assert first.stats()["events"].spooled == 25
    assert first.stats()["events"].dead_lettered == 0 and not dead_letter_path.exists()

    second = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                               dead_letters=dead_letter_path)
    async with second:
        await until(lambda: len(memory(second, "events").messages) == 25)
        await second.info({}, "e.v", {"i": 25})
    delivered = memory(second, "events").messages
    assert [m.message_id for m in delivered[:25]] == ids
    assert [m.payload["i"] for m in delivered] == list(range(26))
    assert second.stats()["events"].replayed == 25
    assert spool_counts(spool) == {}


async def test_only_unconfirmed_notifications_are_replayed(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    first = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                              dead_letters=dead_letter_path, close_timeout=0.05)
    async with first:
        for i in range(10):
            await first.info({}, "e.v", {"i": i})
        await until(lambda: first.stats()["events"].sent == 10)
        memory(first, "events").stall()
        for i in range(10, 15):
            await first.info({}, "e.v", {"i": i})
    assert spool_counts(spool) == {"events": 5}
    second = await replay(spool, dead_letter_path)
    assert [m.payload["i"] for m in memory(second, "events").messages] == list(range(10, 15))
    assert second.stats()["events"].replayed == 5


async def test_durable_deletes_after_confirmation(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    async with Notifier.from_url("memory://?durable=true", publisher_id="t", spool=spool,
                                 dead_letters=dead_letter_path) as n:
        for i in range(300):
            await n.info({}, "e.v", {"i": i})
    assert [m.payload["i"] for m in memory(n).messages] == list(range(300))
    assert spool_counts(spool) == {}
    stats = n.stats()["memory"]
    assert (stats.enqueued, stats.sent, stats.spooled) == (300, 300, 0)


async def test_spool_cap_dead_letters_and_counts(tmp_path: Path, dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://?durable=true&spool_max_messages=3&block_timeout=0", publisher_id="t",
                          spool=tmp_path / "s.sqlite", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n).stall()
        for i in range(5):
            await n.info({}, "e.v", {"i": i})
    stats = n.stats()["memory"]
    assert (stats.spool_full, stats.dead_lettered, stats.spooled) == (2, 2, 3)
    reasons = [r["reason"] for r in read_dead_letters(dead_letter_path)]
    assert reasons == ["spool full: 3 notifications already waiting"] * 2


async def test_spill_overflow_keeps_order(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "s.sqlite"
    async with Notifier.from_url("memory://?queue_size=2&batch_size=1&overflow=spill", publisher_id="t",
                                 spool=spool, dead_letters=dead_letter_path) as n:
        transport = memory(n)
        transport.stall()
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        for i in range(1, 20):
            await n.info({}, "e.v", {"i": i})  # never blocks: the 2 queued move to the log, then the rest
        assert spool_counts(spool) == {"memory": 20}  # the batch in flight is copied to the log first
        transport.resume()
        await until(lambda: len(transport.messages) == 20)
        for i in range(20, 25):  # backlog drained: back to the memory queue
            await n.info({}, "e.v", {"i": i})
    assert [m.payload["i"] for m in transport.messages] == list(range(25))
    assert n.stats()["memory"].dropped == 0 and spool_counts(spool) == {}


async def test_sigkill_mid_stream_then_replay(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool.sqlite"
    # The transport never confirms (delay=1000): everything the publisher emitted is spooled.
    returned = await run_publisher_then_sigkill("memory://?name=events&durable=true&delay=1000", spool,
                                                dead_letter_path, lines=500, timeout=60)
    assert len(returned) >= 500
    out = tmp_path / "delivered.jsonl"
    async with Notifier.from_url(f"log://{out}?name=events&durable=true", publisher_id="replay",
                                 spool=spool, dead_letters=dead_letter_path) as n:
        pass
    delivered = {json.loads(line)["message_id"] for line in out.read_text().splitlines()}
    assert set(returned) <= delivered, f"{len(set(returned) - delivered)} acknowledged notifications lost"
    assert n.stats()["events"].replayed >= len(returned)
    assert spool_counts(spool) == {}


async def test_memory_transport_can_skip_keeping(dead_letter_path: Path) -> None:
    async with Notifier.from_url("memory://?keep=false", publisher_id="t", dead_letters=dead_letter_path) as n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
    transport = n.transports["memory"]
    assert isinstance(transport, MemoryTransport)
    assert transport.messages == [] and transport.delivered == 10


@pytest.mark.parametrize("url", ["memory://?queue_size=5&overflow=spill&max_batch=7",
                                 "memory://?durable=true&queue_size=5&max_batch=7"])
async def test_concurrent_callers_with_stalls_lose_nothing_and_keep_order(tmp_path: Path, url: str) -> None:
    async with Notifier.from_url(url, publisher_id="t", spool=tmp_path / "s.sqlite",
                                 dead_letters=tmp_path / "dl.jsonl") as n:
        transport = memory(n)

        async def caller(c: int) -> None:
            for i in range(200):
                await n.info({}, "e.v", {"c": c, "i": i})
                if i % 17 == 0:
                    await anyio.lowlevel.checkpoint()

        async def flapper() -> None:
            for _ in range(30):
                transport.stall()
                await anyio.sleep(0.002)
                transport.resume()
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(flapper)
            for c in range(8):
                tg.start_soon(caller, c)
    got = [(m.payload["c"], m.payload["i"]) for m in transport.messages]
    assert len(got) == len(set(got)) == 1600
    for c in range(8):
        assert [i for cc, i in got if cc == c] == list(range(200))
    assert spool_counts(tmp_path / "s.sqlite") == {}


# -- the segment log: corruption, bounds, failures, inspection ----------------------------------


def segments(spool: Path) -> list[Path]:
    return sorted(spool.glob("segment-*.log"))


def quarantined(spool: Path) -> list[dict[str, object]]:
    path = spool / "quarantine.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def leave_in_spool(spool: Path, dead: Path, count: int, url: str = "memory://?name=events&durable=true") -> list[str]:
    """A Notifier whose transport never confirms, closed with ``count`` notifications left in the spool."""
    n = Notifier.from_url(url, publisher_id="t", spool=spool, dead_letters=dead, close_timeout=0.05)
    async with n:
        memory(n, "events").stall()
        ids = [(await n.info({}, "e.v", {"i": i})).message_id for i in range(count)]
    assert spool_counts(spool) == {"events": count}
    return ids


async def replay(spool: Path, dead: Path, url: str = "memory://?name=events&durable=true") -> Notifier:
    async with Notifier.from_url(url, publisher_id="t", spool=spool, dead_letters=dead) as n:
        pass
    return n


async def test_corrupt_record_in_the_middle_and_torn_tail_are_quarantined(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    await leave_in_spool(spool, dead_letter_path, 30)
    (segment,) = segments(spool)
    data = bytearray(segment.read_bytes())
    middle = data.index(b'"i":10}')  # inside the 11th record: its checksum no longer matches
    data[middle + 4] = ord("X")  # "i":10 becomes "i":X0
    data += b"\xa7K\x40\x00\x00\x00garbage"  # a torn last write: a header whose body never came
    segment.write_bytes(bytes(data))
    assert Spool.inspect(spool).bad_bytes > 0

    n = await replay(spool, dead_letter_path)  # never a crash
    got = [m.payload["i"] for m in memory(n, "events").messages]
    assert got == [i for i in range(30) if i != 10]  # every valid record replayed, in order
    assert n.spool is not None and n.spool.quarantined == 2
    regions = quarantined(spool)
    assert [r["reason"] for r in regions] == ["not a valid record"] * 2
    assert b'"i":X0}' in base64.b64decode(str(regions[0]["data_base64"]))
    assert spool_counts(spool) == {}
    again = await replay(spool, dead_letter_path)  # the bad bytes are gone from the log: a clean restart
    assert memory(again, "events").messages == [] and len(quarantined(spool)) == 2


async def test_a_sqlite_file_is_no_spool_and_is_left_alone(tmp_path: Path, dead_letter_path: Path) -> None:
    """No released version wrote a SQLite spool: one at spool_path is refused, untouched, and
    one beside the spool directory (``spool.sqlite``) is neither read nor renamed."""
    old = tmp_path / "spool.sqlite"
    db = sqlite3.connect(old, isolation_level=None)
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, transport TEXT, body TEXT)")
    db.execute("INSERT INTO outbox (transport, body) VALUES ('events', '{}')")
    db.close()
    content = old.read_bytes()
    n = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=old,
                          dead_letters=dead_letter_path)
    with pytest.raises(ConfigError, match="is a file that is not a notifykit spool"):
        await n.start()
    again = await replay(tmp_path / "spool", dead_letter_path)
    assert memory(again, "events").messages == [] and again.stats()["events"].replayed == 0
    assert old.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == ["spool", "spool.sqlite"]


async def test_repro_failed_delete_does_not_break_later_appends(tmp_path: Path, dead_letter_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Issue 13, reproduction 3: after one failed spool delete every later append failed
    ("cannot start a transaction within a transaction"). Now a failed deletion of confirmed
    segments is logged, appends go on, and the deletion is retried."""
    spool = tmp_path / "spool"
    calls = 0
    original = Spool._delete_blocking

    def fails_once(paths: list[Path]) -> dict[int, OSError]:
        nonlocal calls
        calls += bool(paths)
        if calls == 1 and paths:  # as failed unlinks leave them
            return dict.fromkeys(range(len(paths)), OSError(errno.EIO, "Input/output error"))
        return original(paths)

    monkeypatch.setattr(Spool, "_delete_blocking", staticmethod(fails_once))
    config = {"spool_path": str(spool), "spool_max_bytes": 16384,
              "transports": {"events": {"url": "memory://", "durable": True, "batch_size": 10}}}
    async with Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path) as n:
        for i in range(600):  # a segment is 2 KiB: ~100 rotations, deletions all along
            await n.info({}, "e.v", {"i": i})
            if i % 50 == 0:
                await until(lambda: n.stats()["events"].spooled == 0)
    stats = n.stats()["events"]
    assert calls > 2
    assert (stats.enqueued, stats.sent, stats.dead_lettered) == (600, 600, 0)
    assert [m.payload["i"] for m in memory(n, "events").messages] == list(range(600))
    assert "degraded (io_error): deleting confirmed segments: Input/output error" in caplog.text
    assert spool_counts(spool) == {} and segments(spool) == []


@pytest.mark.parametrize(("policy", "dropped", "dead"), [("drop_newest", True, False), ("block", False, True),
                                                         ("spill", False, True)])
async def test_spool_byte_cap_applies_the_overflow_policy(tmp_path: Path, dead_letter_path: Path, policy: str,
                                                          dropped: bool, dead: bool) -> None:
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_max_bytes": 8192,
              "transports": {"events": {"url": "memory://", "durable": True, "overflow": policy,
                                        "block_timeout": 0.01}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n, "events").stall()
        for i in range(100):
            await n.info({}, "e.v", {"i": i})
        on_disk = sum(p.stat().st_size for p in segments(spool))
        assert on_disk <= 8192
    stats = n.stats()["events"]
    kept = spool_counts(spool)["events"]
    assert 0 < kept < 100 and stats.spool_full == 100 - kept
    assert stats.dropped == (100 - kept if dropped else 0)
    assert stats.dead_lettered == (100 - kept if dead else 0)
    assert len(list(read_dead_letters(dead_letter_path))) == stats.dead_lettered if dead else not dead_letter_path.exists()
    again = await replay(spool, dead_letter_path)
    assert [m.payload["i"] for m in memory(again, "events").messages] == list(range(kept))


async def test_block_on_a_full_spool_waits_for_room(tmp_path: Path, dead_letter_path: Path) -> None:
    url = "memory://?name=events&durable=true&spool_max_messages=5&block_timeout=30&batch_size=1"
    async with Notifier.from_url(url, publisher_id="t", spool=tmp_path / "spool",
                                 dead_letters=dead_letter_path) as n:
        transport = memory(n, "events")
        transport.stall()
        for i in range(5):
            await n.info({}, "e.v", {"i": i})
        async with anyio.create_task_group() as tg:
            tg.start_soon(n.info, {}, "e.v", {"i": 5})  # waits: the spool holds 5
            await wait_all_tasks_blocked()
            assert spool_counts(tmp_path / "spool") == {"events": 5}  # the sixth is not written yet
            transport.resume()
    assert [m.payload["i"] for m in transport.messages] == list(range(6))
    assert n.stats()["events"].spool_full == 0 and not dead_letter_path.exists()


async def test_fsync_mode_delivers_and_replays(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_sync": "fsync",
              "transports": {"events": {"url": "memory://", "durable": True}}}
    first = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    assert first.spool is not None and first.spool.sync == "fsync"
    async with first:
        memory(first, "events").stall()
        async with anyio.create_task_group() as tg:  # concurrent callers share fsyncs
            for c in range(4):
                for i in range(10):
                    tg.start_soon(first.info, {}, "e.v", {"c": c, "i": i})
    assert spool_counts(spool) == {"events": 40}
    second = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path)
    async with second:
        await until(lambda: len(memory(second, "events").messages) == 40)
    assert spool_counts(spool) == {}


REPLAYED = 120  # several segments of 4 KiB (spool_max_bytes / 8)


async def test_replay_in_order_per_transport_across_segments(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_max_bytes": 32768,
              "transports": {"a": {"url": "memory://", "durable": True},
                             "b": {"url": "memory://", "overflow": "spill", "queue_size": 3}}}
    first = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    async with first:
        memory(first, "a").stall()
        memory(first, "b").stall()
        for i in range(REPLAYED):
            await first.info({}, "e.v", {"i": i})
    assert len(segments(spool)) > 3
    left = spool_counts(spool)
    assert left["a"] == REPLAYED and REPLAYED - 20 <= left["b"] <= REPLAYED
    second = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path)
    async with second:
        await until(lambda: len(memory(second, "a").messages) == REPLAYED and len(memory(second, "b").messages) == left["b"])
    assert [m.payload["i"] for m in memory(second, "a").messages] == list(range(REPLAYED))
    b = [m.payload["i"] for m in memory(second, "b").messages]
    assert b == sorted(b)
    assert spool_counts(spool) == {} and segments(spool) == []


async def test_inspect_writes_nothing_and_refuses_what_is_not_a_spool(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    await leave_in_spool(spool, dead_letter_path, 7)
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in spool.iterdir()}
    info = Spool.inspect(spool)
    assert (info.counts, info.segments) == ({"events": 7}, 1) and info.bytes > 0
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in spool.iterdir()} == before

    catalog = tmp_path / "catalog.sqlite"  # another program's SQLite file
    db = sqlite3.connect(catalog)
    db.execute("CREATE TABLE backups (id TEXT)")
    db.commit()
    db.close()
    content = catalog.read_bytes()
    for path in (catalog, tmp_path / "missing", dead_letter_path.with_name("notes.txt")):
        if path.name == "notes.txt":
            path.write_text("hello")
        with pytest.raises(ConfigError, match="spool"):
            Spool.inspect(path)
    assert catalog.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == \
        ["catalog.sqlite", "notes.txt", "spool"]

    n = Notifier.from_url("memory://?durable=true", publisher_id="t", spool=catalog, dead_letters=dead_letter_path)
    with pytest.raises(ConfigError, match="not a notifykit spool"):
        await n.start()
    assert catalog.read_bytes() == content


async def test_one_process_per_spool(tmp_path: Path, dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    async with Notifier.from_url("memory://?durable=true", publisher_id="t", spool=spool, dead_letters=dead_letter_path):
        other = Notifier.from_url("memory://?durable=true", publisher_id="t", spool=spool,
                                  dead_letters=dead_letter_path)
        with pytest.raises(ConfigError, match="in use by another Notifier"):
            await other.start()


async def test_spool_options_are_checked() -> None:
    for bad in ({"spool_sync": "sometimes"}, {"spool_max_bytes": 10}, {"spool_max_bytes": "x"}):
        with pytest.raises(ConfigError, match="spool_"):
            NotifierConfig.from_mapping({"transports": {"m": {"url": "memory://"}}, **bad})


async def test_spill_batch_in_flight_at_close_is_replayed_before_the_newer_spilled_ones(
        tmp_path: Path, dead_letter_path: Path) -> None:
    """A spill transport's memory batch is in flight (the peer hangs) when its queue fills and
    spilling starts; the Notifier closes before it is confirmed. The next Notifier must replay
    that batch first: it is older than everything spilled after it (it used to be appended to
    the log at close, behind the newer records)."""
    spool = tmp_path / "spool"
    url = "memory://?name=events&overflow=spill&queue_size=4&max_batch=3"
    first = Notifier.from_url(url, publisher_id="t", spool=spool, dead_letters=dead_letter_path, close_timeout=0.05)
    async with first:
        memory(first, "events").stall()
        await first.info({}, "e.v", {"i": 0})
        await first.info({}, "e.v", {"i": 1})
        await until(lambda: memory(first, "events").attempts == 1)  # [0, 1] in flight, hanging
        for i in range(2, 20):  # 2..5 fill the queue, 6 starts spilling
            await first.info({}, "e.v", {"i": i})
    assert spool_counts(spool) == {"events": 20}
    n = await replay(spool, dead_letter_path, url)
    assert [m.payload["i"] for m in memory(n, "events").messages] == list(range(20))
    assert spool_counts(spool) == {}


async def test_quarantine_file_is_bounded(tmp_path: Path, dead_letter_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """quarantine.jsonl had no size bound: every bad region was appended to it. Past
    QUARANTINE_MAX_BYTES a region is still skipped and counted, but only logged."""
    monkeypatch.setattr("notifykit._spool_recovery.QUARANTINE_MAX_BYTES", 2048)
    spool = tmp_path / "spool"
    await leave_in_spool(spool, dead_letter_path, 40)
    (segment,) = segments(spool)
    data = bytearray(segment.read_bytes())
    for i in range(0, 40, 4):  # ten damaged records, ~300 bytes each, ~550 once quarantined
        at = data.index(f'"i":{i}}}'.encode())
        data[at + 1] = ord("X")
    segment.write_bytes(bytes(data))
    n = await replay(spool, dead_letter_path)
    assert [m.payload["i"] for m in memory(n, "events").messages] == [i for i in range(40) if i % 4]
    assert n.spool is not None and n.spool.quarantined == 10
    assert 0 < len(quarantined(spool)) < 10 and (spool / "quarantine.jsonl").stat().st_size <= 2048
    assert n.spool.quarantine_not_copied == 10 - len(quarantined(spool))
    assert "quarantine.jsonl is full" in caplog.text


async def test_crashed_writers_preallocated_tail_is_no_bad_region_and_is_trimmed(tmp_path: Path) -> None:
    """A segment is preallocated and written through a mapping; a writer that dies leaves
    its unwritten tail of zeros: the end of the log, not garbage to quarantine."""
    path = tmp_path / "spool"
    spool = Spool(path)
    await spool.open()
    for i in range(5):
        spool.append("events", Notification.create("e.v", {"i": i}, publisher_id="t"))
    spool._close()  # as a SIGKILL leaves it: nothing trimmed, nothing confirmed
    (segment,) = segments(path)
    assert segment.stat().st_size > 4096 and segment.read_bytes().endswith(b"\x00" * 1024)
    info = Spool.inspect(path)
    assert (info.counts, info.bad_bytes) == ({"events": 5}, 0)
    again = Spool(path)
    await again.open()
    try:
        assert again.pending_counts() == {"events": 5}
        assert not segment.read_bytes().endswith(b"\x00") and not (path / "quarantine.jsonl").exists()
        read = await again.read("events", 0, 10)
        assert [row.notification.payload["i"] for row in read.rows] == list(range(5))
    finally:
        again._close()


@pytest.mark.parametrize("cap", [{"spool_max_bytes": 8192}, {"spool_max_messages": 10}])
async def test_drop_oldest_on_a_full_spool_drops_the_oldest(tmp_path: Path, dead_letter_path: Path,
                                                            cap: dict[str, int]) -> None:
    """overflow = drop_oldest on a full spool dropped the newest notification instead. Now
    the oldest waiting ones go (never the batch in flight): what is kept is that batch and
    then the newest, in order, and the spool stays within its bound."""
    spool = tmp_path / "spool"
    transport = {"url": "memory://", "durable": True, "overflow": "drop_oldest", "batch_size": 2}
    config = {"spool_path": str(spool), "spool_max_bytes": cap.get("spool_max_bytes", 1 << 20),
              "transports": {"events": {**transport, "spool_max_messages": cap.get("spool_max_messages", 10**6)}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n, "events").stall()
        for i in range(100):
            await n.info({}, "e.v", {"i": i})
            if i == 0:
                await until(lambda: memory(n, "events").attempts == 1)  # [0] in flight, hanging
        assert sum(p.stat().st_size for p in segments(spool)) <= config["spool_max_bytes"]
    stats = n.stats()["events"]
    again = await replay(spool, dead_letter_path)
    kept = [m.payload["i"] for m in memory(again, "events").messages]
    assert 2 <= len(kept) < 100 and kept[0] == 0 and kept[-1] == 99  # the one in flight, and the newest
    assert kept == [0, *range(100 - len(kept) + 1, 100)]  # the oldest waiting ones were dropped, in a row
    assert stats.dropped == stats.spool_full == 100 - len(kept) and stats.dead_lettered == 0


async def test_replay_keeps_every_field_of_every_notification(tmp_path: Path, dead_letter_path: Path) -> None:
    """The log's ``N`` records (fields, not the wire format) give back the same notification:
    message_id (even one holding a NUL, the field separator), timestamp to the microsecond at
    both ends of the datetime range, priority, publisher_id, context and non-ASCII payloads."""
    spool = tmp_path / "spool"
    stamps = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
              datetime(2026, 12, 2, 6, 0, 0, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    sent = [Notification.create("backup.create.end", {"naïve": "日本\x00", "i": i, "nested": [{"x": None}]},
                                priority=priority, publisher_id="backup.höst-1",
                                context={"request_id": "req-é", "user_id": "u\x001"},
                                message_id=f"id-{i}\x00tail", timestamp=stamp)
            for i, (stamp, priority) in enumerate(zip(stamps, ["audit", "error", "sample", "critical"], strict=True))]
    n = Notifier.from_url("memory://?name=events&durable=true", publisher_id="t", spool=spool,
                          dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n, "events").stall()
        for notification in sent:
            await n.emit(notification)
    assert spool_counts(spool) == {"events": len(sent)}
    got = memory(await replay(spool, dead_letter_path), "events").messages
    assert [m.encode(WireFormat.JSON) for m in got] == [m.encode(WireFormat.JSON) for m in sent]
    assert [(m.message_id, m.timestamp, m.priority) for m in got] == [(m.message_id, m.timestamp, m.priority) for m in sent]


async def test_format_1_records_are_still_replayed(tmp_path: Path, dead_letter_path: Path) -> None:
    """A spool an earlier notifykit left (``R`` records: the json wire format, log format 1)."""
    spool = tmp_path / "spool"
    spool.mkdir()
    sent = [Notification.create("e.v", {"i": i}, publisher_id="t") for i in range(3)]
    data = frame(b"C" + json.dumps({"format": 1, "next_seq": 1, "acked": {}}).encode())
    data += b"".join(frame_record(seq, b"events", m.encode(WireFormat.JSON)) for seq, m in enumerate(sent, 1))
    (spool / segment_name(1)).write_bytes(data)
    got = memory(await replay(spool, dead_letter_path), "events").messages
    assert [m.encode(WireFormat.JSON) for m in got] == [m.encode(WireFormat.JSON) for m in sent]
    assert spool_counts(spool) == {}


async def test_a_checked_record_whose_fields_are_no_notification_is_quarantined(tmp_path: Path,
                                                                             dead_letter_path: Path) -> None:
    spool = tmp_path / "spool"
    await leave_in_spool(spool, dead_letter_path, 3)
    (segment,) = segments(spool)
    stamp = struct.pack("<HBBBBBI", 2026, 12, 2, 7, 0, 0, 1)
    bad = [frame(b"N" + struct.pack("<QH", 10 + k, 6) + b"events" + fields) for k, fields in enumerate(
        [b"", stamp + b"only\x00three\x00fields", stamp + b"e.v\x00info\x00t\x00{}\x00[not json\x00id",
         struct.pack("<HBBBBBI", 2026, 13, 2, 7, 0, 0, 1) + b"e.v\x00info\x00t\x00{}\x00{}\x00id"])]
    segment.write_bytes(segment.read_bytes().rstrip(b"\x00") + b"".join(bad))
    n = await replay(spool, dead_letter_path)  # never a crash
    assert [m.payload["i"] for m in memory(n, "events").messages] == [0, 1, 2]
    assert [str(r["reason"]).startswith("not a notification") for r in quarantined(spool)] == [True] * 4
    assert spool_counts(spool) == {}


async def test_the_next_segment_is_made_ready_in_the_background(tmp_path: Path, dead_letter_path: Path) -> None:
    """Once the active segment is half full, a spare segment (preallocated, mapped, faulted in
    by a worker thread) waits next to it, is counted in the spool's size, takes over when the
    active one is full, and is removed at close; one a crash left behind (all zeros) is no
    bad region."""
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_max_bytes": 1 << 20,  # segments of 128 KiB
              "transports": {"events": {"url": "memory://", "durable": True}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        assert n.spool is not None
        memory(n, "events").stall()
        for i in range(300):  # about 50 KB: less than half a segment
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        await wait_all_tasks_blocked()
        assert len(segments(spool)) == 1 and n.spool.size == 128 * 1024  # no spare yet
        for i in range(300, 500):  # past half
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        # Ready, not only created: a segment started while the spare is still being made
        # (faulted in) skips its number, and that spare is discarded (1 run in ~200 here).
        await until(lambda: n.spool is not None and n.spool._spare is not None)
        assert len(segments(spool)) == 2
        _, spare = segments(spool)
        assert spare.stat().st_size == 128 * 1024 and spare.read_bytes().count(0) == 128 * 1024
        assert n.spool.size == 2 * 128 * 1024
        assert n.background_tasks()["spool"].state == "running"
        for i in range(500, 2000):  # about 0.4 MB in all: four segments
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        assert sum(p.stat().st_size for p in segments(spool)) <= n.spool.size <= config["spool_max_bytes"]
    left = segments(spool)
    assert spare in left and len(left) >= 4  # the spare took over from the first segment
    assert all(p.read_bytes()[:2] == b"\xa7K" for p in left)  # and the last spare is gone
    crashed = spool / segment_name(int(left[-1].name[8:20]) + 1)
    crashed.write_bytes(bytes(4096))  # a spare a killed process left
    again = await replay(spool, dead_letter_path)
    assert [m.payload["i"] for m in memory(again, "events").messages] == list(range(2000))
    assert again.spool is not None and again.spool.quarantined == 0 and not crashed.exists()


async def test_append_writes_the_frame_of_the_format(tmp_path: Path) -> None:
    """Spool.append writes its N frames inline (the hot path): the same bytes as
    frame_notification(), the format's definition, for any notification."""
    spool = Spool(tmp_path / "spool")
    await spool.open()
    sent = [Notification.create("e.v", {"i": i, "ü": "\U0001f600"}, publisher_id="p-ö", context=ctx,
                                message_id=f"m\x00{i}") for i, ctx in enumerate([None, {"request_id": "r"}, {"x": [1]}])]
    try:
        seqs = [spool.append("events", n) for n in sent]
    finally:
        await spool.aclose()
    (segment,) = segments(tmp_path / "spool")
    expected = b"".join(frame_notification(seq, b"events", n) for seq, n in zip(seqs, sent, strict=True))
    assert expected in segment.read_bytes()


async def test_without_madvise_the_spare_is_made_all_the_same(tmp_path: Path, dead_letter_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C library has no madvise (or the kernel refuses MADV_POPULATE_WRITE), the
    spare segment is made without faulting its pages in: it still takes over, nothing lost."""
    monkeypatch.setattr("notifykit._spool_segments._madvise", None)
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_max_bytes": 1 << 20,
              "transports": {"events": {"url": "memory://", "durable": True}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.05)
    async with n:
        memory(n, "events").stall()
        for i in range(500):  # past half of the first 128 KiB segment
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        await until(lambda: n.spool is not None and n.spool._spare is not None)
        assert len(segments(spool)) == 2
        for i in range(500, 1500):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
    again = await replay(spool, dead_letter_path)
    assert [m.payload["i"] for m in memory(again, "events").messages] == list(range(1500))
