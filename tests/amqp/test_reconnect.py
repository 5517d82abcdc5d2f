"""Connection loss mid-stream: the transport reconnects and every message arrives at least once."""

from __future__ import annotations

import ssl
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from transports.amqp import AmqpTransport

from .support import CuttableProxy, Names, consume, queue_length

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]

N = 10_000


async def test_cut_connections_mid_stream_lose_nothing(broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        url = (f"amqp://guest:guest@127.0.0.1:{proxy.port}/?exchange={names.exchange}&topic={names.topic}"
               "&queue_size=20000&retry_initial_delay=0.05&circuit_reset_timeout=0.5&batch_size=500")
        cut_at: list[int] = []
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
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
