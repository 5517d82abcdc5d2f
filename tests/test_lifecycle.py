"""start() and aclose() by anyio's rules: from any task, under any cancel scope, never leaking either.

The reproductions of issue 23 (1, 2, 4, 9, 10): each failed when the Notifier's task group
was entered by start() in the caller's task and left by aclose() wherever that ran.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from notifykit import Notifier, NotifierClosedError
from notifykit.testing import MemoryTransport


def memory_notifier(tmp_path: Path, url: str = "memory://", **kw: object) -> Notifier:
    return Notifier.from_url(url, publisher_id="backup.h", dead_letters=tmp_path / "dl.jsonl", **kw)  # type: ignore[arg-type]


def sent(notifier: Notifier) -> list[str]:
    transport = notifier.transports["memory"]
    assert isinstance(transport, MemoryTransport)
    return transport.event_types


@pytest.mark.asyncio
async def test_start_under_a_deadline_leaks_no_scope_into_the_caller(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    with anyio.move_on_after(0.5):
        await notifier.start()
    await notifier.info({}, "a.after_scope", {})
    with anyio.fail_after(5):
        await anyio.sleep(1.0)  # the 0.5 s deadline of the scope around start() must not reach here
    await notifier.aclose()
    assert sent(notifier) == ["a.after_scope"]


@pytest.mark.asyncio
async def test_start_inside_a_scope_and_aclose_after_it(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    with anyio.move_on_after(5):
        await notifier.start()
    await notifier.info({}, "a.b", {})
    await notifier.aclose()  # RuntimeError: exit a cancel scope that isn't the current task's, before
    assert sent(notifier) == ["a.b"]


@pytest.mark.asyncio
async def test_aclose_from_another_task_leaves_the_starting_task_alone(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    await notifier.start()
    await notifier.info({}, "a.b", {})
    closed = anyio.Event()

    async def closer() -> None:
        await notifier.aclose()
        closed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(closer)
        with anyio.fail_after(5):
            await closed.wait()
        await anyio.sleep(0.05)  # the starting task is not cancelled: this returns
    assert sent(notifier) == ["a.b"]
    with pytest.raises(NotifierClosedError):
        await notifier.info({}, "a.late", {})


@pytest.mark.asyncio
async def test_aclose_from_a_child_does_not_cancel_its_siblings(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    await notifier.start()
    finished: list[int] = []
    notified = [anyio.Event() for _ in range(3)]

    async def sibling(k: int) -> None:
        for i in range(20):
            await notifier.info({}, "a.sibling", {"k": k, "i": i})
            await anyio.lowlevel.checkpoint()
        notified[k].set()
        await anyio.sleep(0.2)  # still running when the closer closes: must not be cancelled
        finished.append(k)

    async def closer() -> None:
        for event in notified:
            await event.wait()
        await notifier.aclose()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for k in range(3):
                group.start_soon(sibling, k)
            group.start_soon(closer)
    assert sorted(finished) == [0, 1, 2]
    assert sent(notifier).count("a.sibling") == 60


@pytest.mark.asyncio
async def test_aclose_is_idempotent_and_concurrent_calls_wait_for_the_first(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    await notifier.start()
    await notifier.info({}, "a.b", {})
    results: list[int] = []

    async def close() -> None:
        results.append(sum(s.sent for s in (await notifier.aclose()).values()))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(close)
    assert results == [1, 1, 1]
    assert sum(s.sent for s in (await notifier.aclose()).values()) == 1


@pytest.mark.asyncio
async def test_aclose_under_a_cancelled_scope_still_drains(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)
    await notifier.start()
    await notifier.info({}, "a.b", {})
    with anyio.CancelScope() as scope:
        scope.cancel()
        await notifier.aclose()  # shielded: it finishes its work
    assert sent(notifier) == ["a.b"]


def test_a_closed_notifier_used_in_a_second_run_is_one_clear_error(tmp_path: Path) -> None:
    notifier = memory_notifier(tmp_path)

    async def first() -> None:
        async with notifier:
            await notifier.info({}, "a.b", {})

    async def second() -> None:
        with pytest.raises(NotifierClosedError, match="closed"):
            await notifier.info({}, "a.b", {})
        with pytest.raises(NotifierClosedError, match="make a new one"):
            async with notifier:
                pass
        await notifier.aclose()  # no error: it is closed already

    anyio.run(first)
    anyio.run(second)


def test_a_notifier_left_unclosed_says_what_it_lost(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The program returns without aclose(): one warning names the transport and the count."""
    url = "memory://?retry_initial_delay=30&retry_max_attempts=5"
    notifier = Notifier.from_url(url, publisher_id="backup.h", dead_letters=tmp_path / "dl.jsonl")

    async def main() -> None:
        await notifier.start()
        transport = notifier.transports["memory"]
        assert isinstance(transport, MemoryTransport)
        transport.fail_next(1000)
        for i in range(5):
            await notifier.info({}, "a.b", {"i": i})
        await anyio.sleep(0.05)

    caplog.set_level(logging.WARNING, logger="notifykit")
    anyio.run(main)
    warnings = [r.getMessage() for r in caplog.records if "was not closed" in r.getMessage()]
    assert len(warnings) == 1
    assert "'memory' (5)" in warnings[0] and "lost" in warnings[0]


@pytest.mark.asyncio
async def test_close_deadline_dead_letters_keep_the_last_error(tmp_path: Path) -> None:
    notifier = Notifier.from_url("memory://?retry_initial_delay=0.01&retry_max_delay=0.01", publisher_id="backup.h",
                                 dead_letters=tmp_path / "dl.jsonl", close_timeout=0.3)
    async with notifier:
        transport = notifier.transports["memory"]
        assert isinstance(transport, MemoryTransport)
        transport.fail_next(10_000)
        await notifier.info({}, "a.b", {})
        await anyio.sleep(0.1)
    [letter] = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert "close deadline" in letter["reason"]
    assert "last error: memory transport told to fail" in letter["reason"]


SERVICE = textwrap.dedent("""
    import signal, sys
    import anyio
    from notifykit import Notifier

    async def main():
        notifier = Notifier.from_url("log://" + sys.argv[1], publisher_id="svc.h", dead_letters=sys.argv[2])
        async with notifier:
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                print("ready", flush=True)
                i = 0
                async with anyio.create_task_group() as group:
                    async def work():
                        nonlocal i
                        while True:
                            await notifier.info({}, "svc.tick", {"i": i})
                            i += 1
                            await anyio.sleep(0.001)
                    group.start_soon(work)
                    async for _ in signals:
                        group.cancel_scope.cancel()
                        break
        print(sum(s.sent for s in notifier.stats().values()), flush=True)

    anyio.run(main)
""")


def test_a_service_that_stops_on_sigterm_delivers_everything(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", SERVICE, str(events), str(tmp_path / "dl.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    anyio.run(anyio.sleep, 0.3)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    delivered = int(out.strip())
    lines = events.read_text().splitlines()
    assert delivered > 0 and len(lines) == delivered
    assert [json.loads(line)["payload"]["i"] for line in lines] == list(range(delivered))
