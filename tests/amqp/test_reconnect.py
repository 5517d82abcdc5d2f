"""Connection loss mid-stream: the transport reconnects and every message arrives at least once."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.transports.amqp import AmqpTransport

from .support import CuttableProxy, Names, consume, queue_length

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

N = 10_000


async def test_cut_connections_mid_stream_lose_nothing(broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
               "&queue_size=20000&retry_initial_delay=0.05&circuit_reset_timeout=0.5&batch_size=500")
        cut_at: list[int] = []
        # close_timeout: the drain after the second cut must not race the default 10 s deadline
        # on a loaded machine (seen in CI-like runs: 500-1,000 dead-lettered at close).
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path,
                                     close_timeout=120) as notifier:
            transport = notifier.transports["amqp"]
            assert isinstance(transport, AmqpTransport)

            async def cut_twice() -> None:
                for threshold in (N // 4, N // 2):
                    while notifier.stats()["amqp"].sent < threshold:
                        await anyio.sleep(0.002)
                    cut_at.append(notifier.stats()["amqp"].sent)
                    assert proxy.cut() >= 2  # the transport's connection, both sides

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cut_twice)
                    ids = [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(N)]
                    assert notifier.stats()["amqp"].sent < N  # the stream was still flowing
        stats = notifier.stats()["amqp"]
    assert len(cut_at) == 2 and all(sent < N for sent in cut_at)
    assert (stats.enqueued, stats.sent, stats.dead_lettered, stats.dropped) == (N, N, 0, 0)
    assert stats.retried > 0  # unconfirmed messages of the cut batches were sent again
    assert transport.connects == 3 and proxy.accepted == 3
    assert not dead_letter_path.exists()
    queued = await queue_length(f"{names.topic}.info")
    assert queued >= N
    got = await consume(f"{names.topic}.info", queued, timeout=30)
    assert len(got) == queued
    assert {m.message_id for m in got} == set(ids)  # every message_id at least once, nothing foreign


async def test_amqps_through_a_real_tls_listener(broker: str, names: Names, dead_letter_path: Path,
                                                 tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    async with CuttableProxy(server_ssl=server) as proxy:
        url = f"amqps://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}&ca_file={cert}"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            sent = await notifier.info({}, "e.tls", {"secure": True})
        assert notifier.stats()["amqps"].sent == 1
        # without our CA the default verification refuses the self-signed certificate
        url = f"amqps://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}&retry_max_attempts=1"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "e.tls", {"secure": False})
        stats = notifier.stats()["amqps"]
        assert (stats.sent, stats.dead_lettered) == (0, 1)
        assert "CERTIFICATE_VERIFY_FAILED" in (stats.last_error or "")
    [got] = await consume(f"{names.topic}.info", 1, timeout=5)
    assert got.message_id == sent.message_id


async def test_unconfirmed_batch_times_out_and_is_sent_again(broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
               "&confirm_timeout=0.3&retry_initial_delay=0.05&heartbeat=0")
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            transport = notifier.transports["amqp"]
            assert isinstance(transport, AmqpTransport)
            await notifier.info({}, "e.t", {"warm": "up"})  # connected, exchange and queue declared
            with anyio.fail_after(10):
                while notifier.stats()["amqp"].sent < 1:
                    await anyio.sleep(0.01)
            proxy.hold()
            ids = {(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(5)}
            with anyio.fail_after(10):
                while notifier.stats()["amqp"].retried < 5:
                    await anyio.sleep(0.01)
            assert notifier.stats()["amqp"].sent == 1
            assert notifier.stats()["amqp"].last_error == "not confirmed within confirm_timeout=0.3s"
            proxy.release()
        stats = notifier.stats()["amqp"]
    assert (stats.sent, stats.dead_lettered) == (6, 0)
    assert transport.connects == 2
    queued = await queue_length(f"{names.topic}.info")
    got = await consume(f"{names.topic}.info", queued, timeout=10)
    assert ids <= {m.message_id for m in got}


async def close_connections_named(connection_name: str) -> int:
    """Have the broker close (CONNECTION_FORCED) only the connections carrying our connection_name."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.skip("rabbitmqctl not found: cannot make the broker close a connection")
    listed = await anyio.run_process([rabbitmqctl, "-q", "list_connections", "pid", "client_properties"], check=False)
    if listed.returncode != 0:
        pytest.skip(f"rabbitmqctl list_connections failed: {listed.stderr.decode().strip()[:200]}")
    closed = 0
    marker = f'{{"connection_name","{connection_name}"}}'
    for line in listed.stdout.decode().splitlines():
        pid, _, properties = line.partition("\t")
        if pid.startswith("<") and marker in properties:
            await anyio.run_process([rabbitmqctl, "-q", "close_connection", pid, "notifykit test"])
            closed += 1
    return closed


async def test_broker_closing_our_connection_mid_stream_loses_nothing(broker: str, names: Names,
                                                                      dead_letter_path: Path) -> None:
    """Like ``rabbitmqctl close_all_connections``, but only for this test's connection (CONNECTION_FORCED)."""
    connection_name = f"notifykit-test-{names.exchange}"
    url = (f"{broker}?exchange={names.exchange}&topic={names.topic}&connection_name={connection_name}"
           "&retry_initial_delay=0.05&batch_size=200")
    ids: list[str] = []
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
        transport = notifier.transports["amqp"]
        assert isinstance(transport, AmqpTransport)
        closed = anyio.Event()
        count = 0

        async def close_once() -> None:
            nonlocal count
            while notifier.stats()["amqp"].sent < 1000:
                await anyio.sleep(0.002)
            count = await close_connections_named(connection_name)
            closed.set()

        async def stream() -> None:
            """Publish in paced chunks until 1,000 more went out after the broker closed the connection."""
            after_close = 0
            while after_close < 1000 and len(ids) < 100_000:
                for _ in range(100):
                    ids.append((await notifier.info({}, "e.t", {"i": len(ids)})).message_id)
                after_close += 100 if closed.is_set() else 0
                while notifier.stats()["amqp"].sent + notifier.stats()["amqp"].retried < len(ids) - 500:
                    await anyio.sleep(0.002)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(close_once)
                await stream()
    stats = notifier.stats()["amqp"]
    assert count == 1
    assert (stats.sent, stats.dead_lettered) == (len(ids), 0)
    assert transport.connects == 2
    queued = await queue_length(f"{names.topic}.info")
    got = await consume(f"{names.topic}.info", queued, timeout=20)
    assert {m.message_id for m in got} == set(ids)


async def test_a_lost_connection_is_reopened_on_the_next_host_first(broker: str, names: Names,
                                                                    dead_letter_path: Path) -> None:
    """Against a cluster, the node whose connection just broke is tried last, not first."""
    async with CuttableProxy() as first, CuttableProxy() as second:
        url = (f"amqp://guest:guest@127.0.0.1:{first.port},127.0.0.1:{second.port}/?exchange={names.exchange}"
               f"&topic={names.topic}&retry_initial_delay=0.01")
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            transport = notifier.transports["amqp"]
            assert isinstance(transport, AmqpTransport)
            ids = [(await notifier.info({}, "e.t", {"i": 0})).message_id]
            with anyio.fail_after(10):
                while notifier.stats()["amqp"].sent < 1:
                    await anyio.sleep(0.01)
            assert transport.peer == f"127.0.0.1:{first.port}"
            assert first.cut() >= 2
            ids += [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(1, 50)]
            with anyio.fail_after(10):
                while notifier.stats()["amqp"].sent < 50:
                    await anyio.sleep(0.01)
            assert transport.peer == f"127.0.0.1:{second.port}"
        assert (first.accepted, second.accepted, transport.connects) == (1, 1, 2)
    got = await consume(f"{names.topic}.info", 50, timeout=10)
    assert {m.message_id for m in got} == set(ids)


async def test_a_channel_the_broker_keeps_nacking_is_replaced_before_the_retry_budget_ends(
        broker: str, names: Names, dead_letter_path: Path) -> None:
    """Reproduction (issue 17, seen on a 3-node cluster after kill -9 of the connected node):
    the broker nacks every publish on the first channel while a fresh channel is confirmed.
    Retried on the same channel, every attempt was nacked until the retry budget dead-lettered
    them; replacing the channel delivers everything."""
    async with CuttableProxy(nack_first_confirm_channel=True) as proxy:
        url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
               "&retry_initial_delay=0.01&retry_max_delay=0.05&retry_max_attempts=4&batch_size=100")
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            ids = [(await notifier.info({}, "e.t", {"i": i})).message_id for i in range(500)]
        stats = notifier.stats()["amqp"]
    assert proxy.poisoned_channel is not None and proxy.nacks_forged > 0  # the broker did nack
    assert (stats.sent, stats.dead_lettered) == (500, 0), stats.last_error
    assert not dead_letter_path.exists()
    queued = await queue_length(f"{names.topic}.info")  # the forged nacks' messages arrived too: duplicates
    got = await consume(f"{names.topic}.info", queued, timeout=10)
    assert len(got) == queued >= 500 and {m.message_id for m in got} == set(ids)
