"""Faults against redis-servers the tests start themselves: killed mid-stream, down at start,
refusing writes (OOM, READONLY), refusing the password."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit._spool import Spool
from notifykit.deadletters import read_dead_letters

from ..helpers import run_publisher_then_sigkill
from .support import RedisServer, duplicates, free_port, read_stream

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

STREAM = "notifications"
FAST_RETRY = "retry_initial_delay=0.02&retry_max_delay=0.2&circuit_reset_timeout=0.2"


async def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def test_server_killed_mid_stream_and_restarted_loses_nothing(
        redis_server: Callable[..., RedisServer], dead_letter_path: Path) -> None:
    server = redis_server()  # appendonly yes: what Redis acknowledged survives its SIGKILL
    n = 6000
    url = f"{server.url}?stream={STREAM}&queue_size=10000&batch_size=200&retry_max_elapsed=120&{FAST_RETRY}"
    killed_at: list[int] = []
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, close_timeout=60) as notifier:
        stats = notifier.stats

        async def kill_and_restart() -> None:
            await wait_until(lambda: stats()["redis"].sent >= n // 4, 30)
            server.kill()
            killed_at.append(stats()["redis"].sent)
            await wait_until(lambda: stats()["redis"].retried > 0, 30)  # the transport saw it down
            await anyio.to_thread.run_sync(server.start)

        with anyio.fail_after(90):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_and_restart)
                ids = []
                for i in range(n):
                    ids.append((await notifier.info({}, "e.t", {"i": i})).message_id)
                    if i % 500 == 0:
                        await anyio.sleep(0.01)  # paced, so the kill lands mid-stream
    final = notifier.stats()["redis"]
    assert killed_at and killed_at[0] < n
    assert (final.enqueued, final.sent, final.dead_lettered, final.dropped) == (n, n, 0, 0)
    assert final.retried > 0
    entries = await anyio.to_thread.run_sync(read_stream, server.port, STREAM)
    assert {e.message_id for e in entries} == set(ids)  # every accepted notification, nothing foreign
    extra = duplicates(entries)
    assert len(entries) == n + extra
    print(f"redis killed at sent={killed_at[0]}: {len(entries)} entries for {n} notifications, {extra} duplicate(s)")


async def test_server_down_at_start_does_not_disturb_notify_and_delivery_begins_when_it_comes_up(
        redis_server: Callable[..., RedisServer], dead_letter_path: Path) -> None:
    server = redis_server(start=False)
    url = f"{server.url}?stream={STREAM}&connect_timeout=1&retry_max_elapsed=120&{FAST_RETRY}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        with anyio.fail_after(10):  # notify() only queues: no connection attempt delays it
            ids = [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(200)]
        await wait_until(lambda: notifier.stats()["redis"].retried > 0, 10)
        stats = notifier.stats()["redis"]
        assert stats.sent == 0 and "Error 111 connecting to" in (stats.last_error or "")
        await anyio.to_thread.run_sync(server.start)
        await wait_until(lambda: notifier.stats()["redis"].sent == 200, 30)
    assert notifier.stats()["redis"].dead_lettered == 0
    entries = await anyio.to_thread.run_sync(read_stream, server.port, STREAM)
    assert [e.message_id for e in entries] == ids  # one retried batch: in order, each once


async def test_out_of_memory_is_transient_in_the_servers_words_and_delivery_resumes(
        redis_server: Callable[..., RedisServer], dead_letter_path: Path) -> None:
    server = redis_server(appendonly=False)
    admin = server.client()
    url = f"{server.url}?stream={STREAM}&retry_max_elapsed=120&{FAST_RETRY}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        first = await notifier.info({}, "e.t", {"i": 0})
        await wait_until(lambda: notifier.stats()["redis"].sent == 1, 10)
        await admin.config_set("maxmemory", "1")  # our own server: every write is refused now
        refused = [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(1, 11)]
        await wait_until(lambda: notifier.stats()["redis"].retried >= 20, 10)
        stats = notifier.stats()["redis"]
        assert (stats.sent, stats.dead_lettered) == (1, 0)
        assert stats.last_error == (f"redis {server.url}?stream={STREAM} stream {STREAM!r}: "
                                    "OOM command not allowed when used memory > 'maxmemory'.")
        await admin.config_set("maxmemory", "0")
        await wait_until(lambda: notifier.stats()["redis"].sent == 11, 10)
    await admin.aclose()
    entries = await anyio.to_thread.run_sync(read_stream, server.port, STREAM)
    assert [e.message_id for e in entries] == [first.message_id, *refused]


async def test_a_read_only_replica_is_transient_in_the_servers_words_and_delivery_resumes_once_promoted(
        redis_server: Callable[..., RedisServer], dead_letter_path: Path) -> None:
    server = redis_server(appendonly=False)
    admin = server.client()
    await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a primary that is not there
    url = f"{server.url}?stream={STREAM}&retry_max_elapsed=120&{FAST_RETRY}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        ids = [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(5)]
        await wait_until(lambda: notifier.stats()["redis"].retried >= 10, 10)
        stats = notifier.stats()["redis"]
        assert (stats.sent, stats.dead_lettered) == (0, 0)
        assert stats.last_error == (f"redis {server.url}?stream={STREAM} stream {STREAM!r}: "
                                    "READONLY You can't write against a read only replica.")
        await admin.execute_command("REPLICAOF", "NO", "ONE")  # promoted, as after a failover
        await wait_until(lambda: notifier.stats()["redis"].sent == 5, 10)
    await admin.aclose()
    entries = await anyio.to_thread.run_sync(read_stream, server.port, STREAM)
    assert [e.message_id for e in entries] == ids


async def test_a_refused_password_is_permanent_and_the_password_is_never_shown(
        redis_server: Callable[..., RedisServer], dead_letter_path: Path) -> None:
    server = redis_server(appendonly=False, extra=("--requirepass", "right-password-1"))
    url = f"redis://:wrong-password-2@127.0.0.1:{server.port}/0?stream={STREAM}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        await notifier.info({}, "e.t", {"i": 0})
    stats = notifier.stats()["redis"]
    assert (stats.sent, stats.dead_lettered, stats.retried) == (0, 1, 0)
    [letter] = read_dead_letters(dead_letter_path)
    assert "WRONGPASS invalid username-password pair or user is disabled." in letter["reason"]
    assert "wrong-password-2" not in json.dumps(letter) and "wrong-password-2" not in (stats.last_error or "")
    assert "wrong-password-2" not in repr(notifier.transports["redis"])
    # the right password delivers
    url = f"redis://:right-password-1@127.0.0.1:{server.port}/0?stream={STREAM}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        sent = await notifier.info({}, "e.t", {"i": 1})
    admin = server.client()
    raw = await admin.xrange(STREAM)
    await admin.aclose()
    assert [fields[b"message_id"].decode() for _, fields in raw] == [sent.message_id]


async def test_a_durable_publisher_sigkilled_mid_stream_loses_nothing_on_replay(
        redis_server: Callable[..., RedisServer], tmp_path: Path, dead_letter_path: Path) -> None:
    """At-least-once across a crash of the publishing process: every notification whose notify()
    returned is in the stream after the spool's replay; the re-sent ones are counted."""
    server = redis_server()
    spool = tmp_path / "spool"
    url = f"{server.url}?stream={STREAM}&name=redis&durable=true&batch_size=200"
    returned = set(await run_publisher_then_sigkill(url, spool, dead_letter_path, lines=15000))
    left = Spool.inspect(spool).counts.get("redis", 0)
    async with Notifier.from_url(url, publisher_id="replay", spool=spool, dead_letters=dead_letter_path,
                                 close_timeout=120) as notifier:
        pass
    stats = notifier.stats()["redis"]
    assert (stats.replayed, stats.sent, stats.dead_lettered) == (left, left, 0)
    assert Spool.inspect(spool).counts == {}
    entries = await anyio.to_thread.run_sync(read_stream, server.port, STREAM)
    assert returned <= {e.message_id for e in entries}, "a notification acknowledged to the caller was lost"
    print(f"durable publisher SIGKILLed after {len(returned)} notify() returned: {left} replayed from the spool, "
          f"{len(entries)} entries, {duplicates(entries)} duplicate(s)")
