"""Background work never disturbs the caller (issue 13, reproductions 1, 4 and 5).

Each test first runs the caller's code the way the reproduction did (on the old code the
caller's block was cancelled, hung, or got a raw anyio error there), then checks what the
supervisor recorded and that every notification is accounted for.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from notifykit import Notifier
from notifykit.cli import main as notifykit_main
from notifykit.deadletters import read_dead_letters

from ..helpers import FakeClock, assert_accounted
from ..test_notifier import memory, until

pytestmark = pytest.mark.asyncio


def status_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and "status" in r.getMessage()]


# -- reproduction 1: an unwritable status_path --------------------------------------------


def status_config(status: Path) -> dict[str, object]:
    return {"status_path": str(status), "status_interval": 0.001, "transports": {"memory": {"url": "memory://"}}}


@pytest.mark.parametrize("kind", ["parent_is_a_file", "path_is_a_directory"])
async def test_unwritable_status_path_never_cancels_the_caller(
    tmp_path: Path, dead_letter_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="notifykit")
    if kind == "parent_is_a_file":
        (tmp_path / "run").write_text("not a directory")
        status = tmp_path / "run" / "status.json"
    else:
        status = tmp_path / "status.json"
        status.mkdir()
    n = Notifier.from_config(status_config(status), publisher_id="t", dead_letters=dead_letter_path)
    reached_the_end = False
    async with n:
        for i in range(3):  # a backup emitting while the status writer fails under it
            await n.info({}, "backup.createprogress", {"i": i})
            await until(lambda i=i: len(memory(n).messages) == i + 1)  # type: ignore[misc]
        await until(lambda: n.background_tasks()["status"].failures >= 3)  # it keeps trying
        health = n.background_tasks()["status"]
        assert health.state == "retrying"
        assert health.last_error is not None and health.last_error.split(":")[0] in {
            "NotADirectoryError", "FileExistsError", "IsADirectoryError"}
        assert len(status_errors(caplog)) == 1, "logged once per burst, not once per attempt"
        assert status_errors(caplog)[0].exc_info is not None  # with its traceback, once
        if kind == "parent_is_a_file":  # the operator fixes it: the next write succeeds
            (tmp_path / "run").unlink()
            await until(lambda: n.background_tasks()["status"].state == "running")
            assert status.exists()
            assert any("recovered" in r.getMessage() for r in caplog.records)
        await n.info({}, "backup.create.end", {})
        reached_the_end = True
    assert reached_the_end
    assert n.stats()["memory"].sent == 4
    assert_accounted(n, dead_letter_path)
    if kind == "parent_is_a_file":  # the closing write says what happened
        assert notifykit_main(["status", "--file", str(status)]) == 0
    else:  # still unwritable at close: aclose() did not raise either
        assert n.background_tasks()["status"].failures >= 4


async def test_status_writes_on_a_full_disk_are_retried_quietly(
    tmp_path: Path, dead_letter_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notifykit._status

    real = notifykit._status.write_status_file
    disk_full = True

    def write(path: Path, document: Mapping[str, Any]) -> None:
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, document)

    monkeypatch.setattr(notifykit._status, "write_status_file", write)
    caplog.set_level(logging.DEBUG, logger="notifykit")
    status = tmp_path / "status.json"
    async with Notifier.from_config(status_config(status), publisher_id="t", dead_letters=dead_letter_path) as n:
        await n.info({}, "e.v", {})
        await until(lambda: n.background_tasks()["status"].failures >= 5)
        assert n.background_tasks()["status"].last_error == "OSError: [Errno 28] No space left on device"
        assert len(status_errors(caplog)) == 1
        disk_full = False  # space freed: the next write succeeds and ends the burst
        await until(lambda: status.exists())
    assert '"closed": true' in status.read_text()
    assert_accounted(n, dead_letter_path)


async def test_status_file_shows_failing_tasks(tmp_path: Path, dead_letter_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").write_text("x")
    status = tmp_path / "run" / "status.json"
    async with Notifier.from_config(status_config(status), publisher_id="t", dead_letters=dead_letter_path) as n:
        await until(lambda: n.background_tasks()["status"].failures >= 1)
        (tmp_path / "run").unlink()
        await until(lambda: status.exists())
    assert notifykit_main(["status", "--file", str(status)]) == 0
    out = capsys.readouterr().out
    assert "task status: stopped failures=" in out and "FileExistsError" in out


# -- a crashing worker is restarted; other transports never notice ------------------------


async def test_crashing_worker_is_restarted_and_never_cancels_the_caller(
    dead_letter_path: Path, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="notifykit")
    config = {"transports": {"flaky": {"url": "memory://flaky"}, "steady": {"url": "memory://steady"}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, clock=fake_clock)
    flaky = next(d for d in n._dispatchers if d.name == "flaky")
    real_take = flaky._take_queued
    crashes = 0

    def take_crashing() -> list[object]:  # an internal bug: the worker raises outside a send
        nonlocal crashes
        if crashes < 3:
            crashes += 1
            raise RuntimeError("worker bug")
        return real_take()  # type: ignore[return-value]

    flaky._take_queued = take_crashing  # type: ignore[method-assign]
    async with n:
        for i in range(10):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: len(memory(n, "flaky").messages) == 10)
        await until(lambda: len(memory(n, "steady").messages) == 10)
        worker = n.background_tasks()["worker:flaky"]
        assert (worker.failures, worker.state) == (3, "running")
        assert worker.last_error == "RuntimeError: worker bug"
        assert n.stats()["flaky"].state == "connected"  # it delivered again
        assert n.background_tasks()["worker:steady"].failures == 0
        assert_accounted(n, dead_letter_path)
    crashed = [r for r in caplog.records if r.levelno >= logging.ERROR and "worker:flaky" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].exc_info is not None
    assert [m.payload["i"] for m in memory(n, "flaky").messages] == list(range(10))
    assert fake_clock.sleeps[:3] == [0.1, 0.2, 0.4]  # restart backoff, on the Notifier's clock
    assert_accounted(n, dead_letter_path)


async def test_a_crash_shows_as_failed_until_the_worker_delivers_again(dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://", publisher_id="t", dead_letters=dead_letter_path)
    dispatcher = n._dispatchers[0]
    gate = anyio.Event()
    real_take = dispatcher._take_queued

    def take(*_: object) -> list[object]:
        if not gate.is_set():
            raise OSError(5, "Input/output error")
        return real_take()  # type: ignore[return-value]

    dispatcher._take_queued = take  # type: ignore[method-assign]
    async with n:
        await n.info({}, "e.v", {})
        await until(lambda: n.stats()["memory"].state == "failed")
        assert n.stats()["memory"].last_error == "OSError: [Errno 5] Input/output error"
        assert n.background_tasks()["worker:memory"].state in {"retrying", "running"}
        assert_accounted(n, dead_letter_path)  # it is still queued, not lost
        gate.set()
        await until(lambda: n.stats()["memory"].sent == 1)
        assert n.stats()["memory"].state == "connected"
    assert_accounted(n, dead_letter_path)


async def test_a_crash_after_a_confirmed_send_does_not_send_it_again(dead_letter_path: Path,
                                                                   fake_clock: FakeClock) -> None:
    n = Notifier.from_url("memory://", publisher_id="t", dead_letters=dead_letter_path, clock=fake_clock)
    dispatcher = n._dispatchers[0]
    real = dispatcher._succeeded
    crashed = False

    def succeeded() -> None:  # a bug right after the transport confirmed the batch
        nonlocal crashed
        if not crashed:
            crashed = True
            raise RuntimeError("bug after send")
        real()

    dispatcher._succeeded = succeeded  # type: ignore[method-assign]
    async with n:
        for i in range(3):
            await n.info({}, "e.v", {"i": i})
        await until(lambda: n.background_tasks()["worker:memory"].failures == 1)
        await n.info({}, "e.v", {"i": 3})
    assert [m.payload["i"] for m in memory(n).messages] == [0, 1, 2, 3]
    assert_accounted(n, dead_letter_path)


# -- reproduction 4: a cancelled notify() and another transport's spill reservation -------


async def test_cancelled_notify_leaves_no_spill_reservation(tmp_path: Path, dead_letter_path: Path) -> None:
    config = {"close_timeout": 5,
              "transports": {"slow": {"url": "memory://slow", "queue_size": 1, "block_timeout": "none"},
                             "spill": {"url": "memory://spill", "queue_size": 1, "overflow": "spill"}}}
    n = Notifier.from_config(config, publisher_id="t", dead_letters=dead_letter_path, spool=tmp_path / "s.sqlite")
    slow, spill = memory(n, "slow"), memory(n, "spill")
    spilling = next(d for d in n._dispatchers if d.name == "spill")
    with anyio.fail_after(60):  # a hang guard
        async with n:
            slow.stall()
            spill.stall()
            await n.info({}, "e.v", {"i": 0})  # in flight on both (stalled)
            await wait_all_tasks_blocked()
            await n.info({}, "e.v", {"i": 1})  # both queues full now
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    async def give_up() -> None:  # the caller is cancelled while "slow" makes it wait
                        await wait_all_tasks_blocked()
                        scope.cancel()
                    tg.start_soon(give_up)
                    await n.info({}, "e.v", {"i": 2})
            assert scope.cancelled_caught
            # The old code left a reservation here: "spill" kept spilling and its worker
            # never finished, so aclose() always waited the whole close_timeout.
            assert spilling._reserved == 0
            slow.resume()
            spill.resume()
    assert [m.payload["i"] for m in spill.messages] == [0, 1, 2]  # spooled before "slow" made it wait
    assert [m.payload["i"] for m in slow.messages] == [0, 1]
    assert_accounted(n, dead_letter_path)


# -- reproduction 5: a caller blocked under ``block`` while aclose() runs -----------------


async def test_caller_blocked_at_close_is_drained_not_raised_at(dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://?queue_size=1&block_timeout=none", publisher_id="t",
                          dead_letters=dead_letter_path, close_timeout=3600)
    transport = memory(n)
    outcome: list[object] = []

    async def blocked_caller(i: int) -> None:
        try:
            outcome.append((await n.info({}, "e.v", {"i": i})).payload["i"])
        except BaseException as exc:  # the old code: anyio.ClosedResourceError
            outcome.append(exc)
            raise

    async def resume_once_closing() -> None:
        await wait_all_tasks_blocked()  # aclose() below is waiting for the drain
        transport.resume()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg, n:
            transport.stall()
            await n.info({}, "e.v", {"i": 0})
            await wait_all_tasks_blocked()
            await n.info({}, "e.v", {"i": 1})
            tg.start_soon(blocked_caller, 2)
            await wait_all_tasks_blocked()
            tg.start_soon(blocked_caller, 3)
            await wait_all_tasks_blocked()
            tg.start_soon(resume_once_closing)
    assert sorted(outcome) == [2, 3]  # type: ignore[type-var]
    assert [m.payload["i"] for m in transport.messages] == [0, 1, 2, 3]  # arrival order kept
    assert_accounted(n, dead_letter_path)


async def test_caller_blocked_past_the_close_deadline_is_dead_lettered(dead_letter_path: Path) -> None:
    n = Notifier.from_url("memory://?queue_size=1&block_timeout=none", publisher_id="t",
                          dead_letters=dead_letter_path, close_timeout=0)
    transport = memory(n)
    outcome: list[object] = []

    async def blocked_caller() -> None:
        try:
            outcome.append((await n.info({}, "e.v", {"i": 2})).payload["i"])
        except BaseException as exc:
            outcome.append(exc)
            raise

    async with anyio.create_task_group() as tg, n:
        transport.stall()  # stays stuck: nothing is delivered before the deadline
        await n.info({}, "e.v", {"i": 0})
        await wait_all_tasks_blocked()
        await n.info({}, "e.v", {"i": 1})
        tg.start_soon(blocked_caller)
        await wait_all_tasks_blocked()
    assert outcome == [2]  # notify() returned: its notification is accounted for
    assert sorted(r["message"]["payload"]["i"] for r in read_dead_letters(dead_letter_path)) == [0, 1, 2]
    rows = assert_accounted(n, dead_letter_path)
    assert (rows["memory"]["enqueued"], rows["memory"]["dead_lettered"]) == (3, 3)
