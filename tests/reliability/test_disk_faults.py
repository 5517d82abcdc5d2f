"""Disk faults of the spool handled as states, not per record (issue 23, reproductions 6, 7, 8).

A real small tmpfs (mounted here, as root) for a full disk, a read-only bind mount of it for
a read-only file system, ``rm -rf`` for a deleted spool directory, and an injected EIO.
Each test counts the log lines the fault produced: one when the degraded state starts,
one when it ends, never one per notification.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from notifykit import Notifier, QueueFullError, render_prometheus
from notifykit._spool import Spool
from notifykit.deadletters import read_dead_letters

from ..test_notifier import memory, until

pytestmark = pytest.mark.asyncio

URL = "memory://?name=events&durable=true"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "notifykit" and r.levelno >= logging.WARNING]


def degraded_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    lines = warnings_of(caplog)
    return [m for m in lines if "spool" in m and " degraded (" in m], [m for m in lines if "works again" in m]


def _mount(*args: str) -> str | None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=20, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``disks(size)`` mounts a tmpfs of ``size`` bytes; ``disks(source, read_only=…)`` a bind
    mount of ``source``. All unmounted at the end (skipped where mount is not permitted)."""
    mounted: list[Path] = []

    def mount(what: int | Path, name: str = "disk") -> Path:
        point = tmp_path / name
        point.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        error = (_mount("-t", "tmpfs", "-o", f"size={what},mode=0700", "tmpfs", str(point)) if isinstance(what, int)
                 else _mount("--bind", str(what), str(point)))
        if error is not None:
            pytest.skip(f"cannot mount here: {error}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=20, check=False)


def set_read_only(point: Path, source: Path, read_only: bool) -> None:
    """Make the bind mount ``point`` of ``source`` read-only (or writable again) under our feet.
    A remount is refused while files are open for writing on it (the spool's segments are),
    so the mount is detached (what is open keeps it) and a new one takes its place."""
    subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=20, check=True)
    error = _mount("--bind", str(source), str(point))
    if error is None and read_only:
        error = _mount("-o", "remount,bind,ro", str(point))
    assert error is None, error


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes with a file of its own (outside the spool)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = bytes(4096)
        while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
            try:
                os.write(fd, block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def notifier(spool: Path, dead: Path, **transport: Any) -> Notifier:
    config = {"spool_path": str(spool), "spool_max_bytes": transport.pop("spool_max_bytes", 256 * 1024),
              "transports": {"events": {"url": "memory://", "durable": True, **transport}}}
    return Notifier.from_config(config, publisher_id="t", dead_letters=dead, close_timeout=0.05)


async def replayed(spool: Path, dead: Path) -> list[int]:
    async with Notifier.from_url(URL, publisher_id="t", spool=spool, dead_letters=dead, close_timeout=1) as again:
        await until(lambda: again.stats()["events"].spooled == 0)
    return [m.payload["i"] for m in memory(again, "events").messages]


async def test_deleted_spool_directory_is_recreated_and_nothing_is_lost(tmp_path: Path, dead_letter_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Reproduction 6: ``rm -rf`` of the spool directory while running dead-lettered every
    later record with one ERROR line each, and at close reported 50 kept that the next
    Notifier never found. Now the directory is recreated with every live segment written
    back (read through the descriptors the spool keeps): all of them are replayed."""
    spool = tmp_path / "spool"
    n = notifier(spool, dead_letter_path)
    async with n:
        memory(n, "events").stall()  # a stuck broker: everything waits in the spool
        for i in range(600):  # ~60 KB: several segments of 8 KiB
            await n.info({}, "e.v", {"i": i, "pad": "x" * 40})
        shutil.rmtree(spool)
        for i in range(600, 700):  # into the mapping of a deleted file, then past it
            await n.info({}, "e.v", {"i": i, "pad": "x" * 40})
        await until(lambda: spool.is_dir() and n.stats()["events"].degraded is None)
        for i in range(700, 800):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 40})
        stats = n.stats()["events"]
    # Until the directory is back, the ones that did not fit the active segment wait in memory
    # (unspooled); at close they go to the spool too: all 800 are on disk, none lost.
    assert (stats.enqueued, stats.dead_lettered, stats.dropped) == (800, 0, 0) and stats.unspooled < 100
    assert Spool.inspect(spool).counts == {"events": 800}  # the batch in flight included
    assert sorted(await replayed(spool, dead_letter_path)) == list(range(800))
    started, ended = degraded_lines(caplog)
    assert len(started) == 1 and "(deleted)" in started[0] and len(ended) == 1
    assert not dead_letter_path.exists()


async def test_deleted_spool_directory_that_cannot_be_recreated_is_not_reported_kept(
        tmp_path: Path, dead_letter_path: Path, disks: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    """The directory is deleted and its parent has become read-only: it cannot be recreated.
    What waited in it is not on disk, so at close it is dead-lettered (on a working disk),
    never reported as kept for a next Notifier that would find nothing; new notifications
    are kept in memory meanwhile."""
    disk = disks(8 << 20)
    view = disks(disk, name="view")
    spool = view / "spool"
    n = notifier(spool, dead_letter_path)
    async with n:
        memory(n, "events").stall()
        for i in range(300):
            await n.info({}, "e.v", {"i": i})
        shutil.rmtree(spool)
        set_read_only(view, disk, True)
        await until(lambda: n.stats()["events"].degraded is not None and not n.spool.writable)  # type: ignore[union-attr]
        for i in range(300, 320):
            await n.info({}, "e.v", {"i": i})
        stats = n.stats()["events"]
        assert stats.unspooled == 20 and stats.degraded is not None and stats.degraded.startswith("deleted")
    final = n.stats()["events"]
    assert final.spooled == 0 and final.unaccounted() == 0
    letters = list(read_dead_letters(dead_letter_path))
    assert sorted(r["message"]["payload"]["i"] for r in letters) == list(range(320))  # the stuck batch too
    assert final.dead_lettered == 320 and final.in_flight == 0 and final.dead_letter_failed == 0
    assert not spool.exists()
    assert not any("kept in" in line for line in warnings_of(caplog))
    started, _ = degraded_lines(caplog)
    assert len(started) == 1


async def test_a_notifier_starts_on_a_full_disk_replays_and_recovers(tmp_path: Path, dead_letter_path: Path,
                                                                     disks: Callable[..., Path],
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Reproduction 7: on a full tmpfs start() raised a bare ``OSError: [Errno 28]`` naming no
    path (preallocation before replay), and with a little room there were thousands of log
    lines. Now it starts degraded (disk_full), replays what the spool holds, keeps new
    notifications in memory (counted unspooled, never spooled), logs one line, and leaves
    the state (one line) once the disk has room again."""
    disk = disks(1 << 20)
    spool = disk / "spool"
    first = notifier(spool, dead_letter_path)
    async with first:
        memory(first, "events").stall()
        for i in range(50):
            await first.info({}, "e.v", {"i": i})
    assert Spool.inspect(spool).counts == {"events": 50}
    filler = fill(disk)
    caplog.clear()
    n = notifier(spool, dead_letter_path, queue_size=100)
    async with n:
        stats = n.stats()["events"]
        assert stats.degraded is not None and stats.degraded.startswith("disk_full") and "No space left" in stats.degraded
        await until(lambda: len(memory(n, "events").messages) == 50)  # replayed from the full disk
        for i in range(50, 130):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: len(memory(n, "events").messages) == 130)
        stats = n.stats()["events"]
        assert stats.unspooled == 80 and stats.spooled == 0 and stats.sent == 130
        assert 'notifykit_degraded{transport="events"} 1' in render_prometheus(n.stats())
        health = n.background_tasks()["spool"]
        assert health.state == "retrying" and (health.last_error or "").startswith("degraded (disk_full)")
        filler.unlink()
        await until(lambda: n.stats()["events"].degraded is None, timeout=15)
        memory(n, "events").stall()
        for i in range(130, 150):
            await n.info({}, "e.v", {"i": i})
        assert n.stats()["events"].unspooled == 80  # spooled again
        assert n.background_tasks()["spool"].state == "running"
    assert Spool.inspect(spool).counts == {"events": 20}
    started, ended = degraded_lines(caplog)
    assert len(started) == 1 and "(disk_full)" in started[0] and str(spool) in started[0] and len(ended) == 1
    assert len(warnings_of(caplog)) <= 4


async def test_a_full_disk_keeps_in_memory_up_to_the_queue_bound_under_the_overflow_policy(
        tmp_path: Path, dead_letter_path: Path, disks: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    """With the transport stuck and the disk full, the in-memory queue fills and the policy
    decides, as for an in-memory transport: ``block`` refuses (QueueFullError, counted
    refused), ``drop_newest`` drops; counted, one line for the state, nothing claimed spooled."""
    disk = disks(1 << 20)
    fill(disk)
    for policy in ("block", "drop_newest"):
        spool = disk / f"spool-{policy}"
        n = notifier(spool, tmp_path / f"dead-{policy}.jsonl", queue_size=10, overflow=policy, block_timeout=0.01)
        async with n:
            memory(n, "events").stall()
            refused = 0
            for i in range(30):
                try:
                    await n.info({}, "e.v", {"i": i})
                except QueueFullError:
                    refused += 1
            stats = n.stats()["events"]
            kept = stats.queue_depth + stats.in_flight  # the queue, and the batch the stuck transport holds
            assert stats.spooled == 0 and stats.queue_depth == 10 and stats.unspooled == kept
            assert stats.unaccounted() == 0
            if policy == "block":
                assert refused == stats.refused == 30 - kept and stats.dropped == 0
            else:
                assert refused == 0 and stats.dropped == 30 - kept
        final = n.stats()["events"]
        assert final.unaccounted() == 0 and final.spooled == 0
    started, _ = degraded_lines(caplog)
    assert len(started) == 2  # one per Notifier (each its own spool)


async def test_read_only_spool_mid_run_is_one_state_and_nothing_is_lost(tmp_path: Path, dead_letter_path: Path,
                                                                        disks: Callable[..., Path],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """Reproduction 8: a spool made read-only mid-run (a read-only bind mount) lost nothing
    but logged 1,283 ERROR lines. Now: one line when it starts, one when it ends."""
    disk = disks(16 << 20)
    view = disks(disk, name="view")
    n = notifier(view / "spool", dead_letter_path, queue_size=100_000, batch_size=50)
    async with n:
        transport = memory(n, "events")
        for i in range(500):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        set_read_only(view, disk, True)
        for i in range(500, 3000):  # ~400 KB: far past the active segment
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        await until(lambda: n.stats()["events"].degraded is not None)
        assert n.stats()["events"].degraded.startswith("read_only")  # type: ignore[union-attr]
        await until(lambda: len(transport.messages) == 3000)
        set_read_only(view, disk, False)
        await until(lambda: n.stats()["events"].degraded is None, timeout=15)
        for i in range(3000, 3100):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 100})
        await until(lambda: len(transport.messages) == 3100)
    stats = n.stats()["events"]
    assert (stats.sent, stats.dead_lettered, stats.dropped) == (3100, 0, 0) and stats.unspooled > 0
    assert sorted(m.payload["i"] for m in transport.messages) == list(range(3100))
    started, ended = degraded_lines(caplog)
    assert len(started) == 1 and "(read_only)" in started[0] and len(ended) == 1
    assert len(warnings_of(caplog)) <= 4


async def test_eio_is_a_state_shown_in_stats_status_prometheus_and_task_health(
        tmp_path: Path, dead_letter_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An I/O error starting a segment: degraded (io_error) in stats(), the status file, the
    Prometheus text and the spool task's TaskHealth; one line in, one line out."""
    failing = True
    original = Spool._make_segment

    def make_segment(self: Spool, number: int, capacity: int) -> Any:
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        return original(self, number, capacity)

    status = tmp_path / "status.json"
    spool = tmp_path / "spool"
    config = {"spool_path": str(spool), "spool_max_bytes": 64 * 1024, "status_path": str(status), "status_interval": 0.05,
              "transports": {"events": {"url": "memory://", "durable": True, "queue_size": 10_000}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, close_timeout=0.5)
    monkeypatch.setattr(Spool, "_make_segment", make_segment)
    async with n:
        for i in range(2000):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 40})
        stats = n.stats()["events"]
        assert stats.degraded == "io_error: starting segment-000000000001.log: Input/output error"
        assert 'notifykit_degraded{transport="events"} 1' in render_prometheus(n.stats())
        await until(lambda: status.exists() and json.loads(status.read_text())["transports"]["events"]["degraded"])
        assert json.loads(status.read_text())["tasks"]["spool"]["last_error"].startswith("degraded (io_error)")
        await until(lambda: len(memory(n, "events").messages) == 2000)
        failing = False
        await until(lambda: n.stats()["events"].degraded is None, timeout=15)
        for i in range(2000, 2100):
            await n.info({}, "e.v", {"i": i, "pad": "x" * 40})
        assert 'notifykit_degraded{transport="events"} 0' in render_prometheus(n.stats())
    stats = n.stats()["events"]
    assert (stats.sent, stats.unspooled, stats.dead_lettered) == (2100, 2000, 0)
    started, ended = degraded_lines(caplog)
    assert len(started) == 1 and len(ended) == 1
    assert len(warnings_of(caplog)) <= 3


async def test_a_dead_letter_file_on_a_full_disk_is_a_degraded_state_too(tmp_path: Path, disks: Callable[..., Path],
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """The dead-letter file's disk full: the letters are kept (in flight) and written again;
    the transport shows it (``degraded = "dead_letters: …"``, the Prometheus gauge) while it
    lasts, with one line when it starts and one when it ends."""
    disk = disks(1 << 20)
    dead = disk / "deadletters.jsonl"
    filler = fill(disk)
    n = Notifier.from_url("memory://?name=events", publisher_id="t", dead_letters=dead, close_timeout=5)
    async with n:
        memory(n, "events").fail_next(10**6, permanent=True)
        for i in range(200):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.stats()["events"].degraded is not None)
        stats = n.stats()["events"]
        assert stats.degraded is not None and stats.degraded.startswith("dead_letters: ")
        assert "No space left" in stats.degraded and stats.dead_lettered == 0 and stats.unaccounted() == 0
        assert 'notifykit_degraded{transport="events"} 1' in render_prometheus(n.stats())
        filler.unlink()
        await until(lambda: n.stats()["events"].dead_lettered == 200, timeout=30)
        assert n.stats()["events"].degraded is None
    assert len(list(read_dead_letters(dead))) == 200
    lines = warnings_of(caplog)
    assert len([m for m in lines if "could not write" in m]) == 1 and len([m for m in lines if "written to" in m]) == 1
