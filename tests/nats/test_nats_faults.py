"""Faults against a nats-server the test starts itself: killed mid-stream, absent at start, a publisher SIGKILLed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.transports.nats import NatsTransport

from .support import Names, NatsServer, read_stream, run_publisher_until_stored

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

N = 6000
FAST_RETRY = "&retry_initial_delay=0.05&retry_max_delay=0.5&circuit_reset_timeout=0.5&reconnect_time_wait=0.2"


def ids_in(got: list) -> Counter[str]:  # type: ignore[type-arg]
    return Counter(m.headers["Nats-Msg-Id"] for m in got if m.headers)


async def test_server_killed_mid_stream_and_restarted_every_accepted_notification_arrives(
        own_server: NatsServer, dead_letter_path: Path) -> None:
    own_server.start()
    names = Names.unique()
    url = (f"nats://{own_server.address}/?stream={names.stream}&subject={names.subject}&queue_size={N}"
           f"&batch_size=200&ack_timeout=5{FAST_RETRY}")
    kills: list[int] = []
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, close_timeout=120) as notifier:
        transport = notifier.transports["nats"]
        assert isinstance(transport, NatsTransport)

        async def kill_and_restart() -> None:
            for threshold in (N // 4, N // 2):
                while notifier.stats()["nats"].sent < threshold:
                    await anyio.sleep(0.002)
                kills.append(notifier.stats()["nats"].sent)
                own_server.stop()  # SIGKILL: no goodbye to the client, PubAcks of the batch in flight lost
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(own_server.start)

        with anyio.fail_after(180):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_and_restart)
                ids = []
                for i in range(N):
                    ids.append((await notifier.info({}, "backup.createprogress", {"i": i})).message_id)
                    if i % 500 == 0:
                        await anyio.sleep(0.01)  # keep the stream flowing while the server is gone
    stats = notifier.stats()["nats"]
    assert len(kills) == 2 and max(kills) < N
    assert (stats.enqueued, stats.sent, stats.dead_lettered, stats.dropped) == (N, N, 0, 0)
    assert transport.connects >= 1
    got = ids_in(await read_stream(own_server.address, names.stream))
    assert set(got) == set(ids)  # every accepted notification arrived, nothing foreign
    duplicates = sum(got.values()) - len(got)
    assert duplicates == 0, f"{duplicates} stored twice: the duplicate window should drop every re-send"
    print(f"retried={stats.retried} pubacks-marked-duplicate={transport.duplicates}")


async def test_server_unreachable_at_start_notify_is_not_disturbed_and_delivery_begins_when_it_comes_up(
        own_server: NatsServer, dead_letter_path: Path) -> None:
    names = Names.unique()
    url = f"nats://{own_server.address}/?stream={names.stream}&subject={names.subject}&connect_timeout=0.5{FAST_RETRY}"
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, close_timeout=60) as notifier:
        with anyio.fail_after(10):  # notify() only enqueues: no server needed for it to return
            ids = [(await notifier.info({}, "backup.create.end", {"i": i})).message_id for i in range(200)]
        with anyio.fail_after(30):  # the dispatcher tries, fails and reports it
            while notifier.stats()["nats"].last_error is None:
                await anyio.sleep(0.05)
        stats = notifier.stats()["nats"]
        assert stats.sent == 0 and stats.dead_lettered == 0 and "Connect call failed" in (stats.last_error or "")
        await anyio.to_thread.run_sync(own_server.start)
        with anyio.fail_after(60):
            while notifier.stats()["nats"].sent < 200:
                await anyio.sleep(0.05)
    assert notifier.stats()["nats"].dead_lettered == 0
    assert ids_in(await read_stream(own_server.address, names.stream)) == Counter(ids)


async def test_durable_publisher_sigkilled_and_restarted_stream_holds_each_message_id_exactly_once(
        own_server: NatsServer, tmp_path: Path, dead_letter_path: Path) -> None:
    own_server.start()
    names = Names.unique()
    spool = tmp_path / "spool"
    url = f"nats://{own_server.address}/?stream={names.stream}&subject={names.subject}&name=nats&durable=true&batch_size=200"
    # Killed while delivering: PubAcks of the batch in flight received, the spool not yet told.
    returned = set(await run_publisher_until_stored(url, spool, dead_letter_path, own_server.address, names.stream,
                                                    stored=3000))
    async with Notifier.from_url(url, publisher_id="replay", spool=spool, dead_letters=dead_letter_path,
                                 close_timeout=120) as n:
        pass
    stats = n.stats()["nats"]
    replay = n.transports["nats"]
    assert isinstance(replay, NatsTransport)
    assert stats.sent == stats.replayed and stats.dead_lettered == 0
    got = ids_in(await read_stream(own_server.address, names.stream))
    assert returned <= set(got), "a notification acknowledged to the caller was lost"
    assert max(got.values()) == 1, f"stored twice: {[k for k, v in got.items() if v > 1][:5]}"
    print(f"returned={len(returned)} stored={len(got)} replayed={stats.replayed} "
          f"replayed-but-already-stored={replay.duplicates}")
