"""Helpers for the AMQP tests: unique names, a consumer, and a TCP proxy the test can cut."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import aio_pika.abc

from notifykit import Priority

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 5672
BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/"


def free_port() -> int:
    """A loopback port nothing listens on (for unreachable-broker tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Names:
    """An exchange and topics of one test, unique so parallel tests never see each other."""

    exchange: str
    topic: str
    topic2: str

    @classmethod
    def fresh(cls) -> Names:
        suffix = uuid.uuid4().hex[:12]
        return cls(f"nk_test_x_{suffix}", f"nk_test_t_{suffix}", f"nk_test_u_{suffix}")

    def queues(self) -> list[str]:
        return [f"{topic}.{p.value}" for topic in (self.topic, self.topic2) for p in Priority]


async def delete_all(names: Names, extra_queues: tuple[str, ...] = ()) -> None:
    """Delete every queue and the exchange a test may have declared (missing ones are fine)."""
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await (await connection.channel()).get_underlay_channel()
        for queue in [*names.queues(), *extra_queues]:
            await channel.queue_delete(queue)
        await channel.exchange_delete(names.exchange)
    finally:
        await connection.close()


async def consume(queue_name: str, count: int, timeout: float) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Read messages from ``queue_name`` until ``count`` arrived or ``timeout`` passed, then a short grace."""
    received: list[aio_pika.abc.AbstractIncomingMessage] = []
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        queue = await channel.declare_queue(queue_name, passive=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with queue.iterator(no_ack=True) as messages:
                    async for message in messages:
                        received.append(message)
                        if len(received) >= count:
                            break
    finally:
        await connection.close()
    return received


async def queue_length(queue_name: str) -> int:
    connection = await aio_pika.connect(BROKER_URL)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


class CuttableProxy:
    """A loopback TCP proxy to the broker (optionally TLS on the client side) whose connections can be cut.

    Cutting only this proxy's sockets resets the transport's connection without touching
    any other client of the shared broker.
    """

    def __init__(self, server_ssl: ssl.SSLContext | None = None, *, nack_first_confirm_channel: bool = False) -> None:
        self._server_ssl = server_ssl
        # Turn every publisher confirm (basic.ack) on the first confirm-mode channel of the first
        # connection into a basic.nack, as a broker whose quorum queue names a dead leader does.
        self._poison = nack_first_confirm_channel
        self.poisoned_channel: int | None = None
        self.nacks_forged = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._server_ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            broker_r, broker_w = await asyncio.open_connection(BROKER_HOST, BROKER_PORT)
        except OSError:
            client_w.close()
            return
        self._writers.update((client_w, broker_w))
        rewrite = self._poison and self.accepted == 1
        for reader, writer, held in ((client_r, broker_w, False), (broker_r, client_w, True)):
            pipe = self._rewriting_pipe(reader, writer) if held and rewrite else self._pipe(reader, writer, held)
            task = asyncio.get_running_loop().create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, held: bool) -> None:
        try:
            while data := await reader.read(65536):
                if held:
                    await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _rewriting_pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Broker → client, frame by frame (type, channel, size, payload, 0xCE): after the first
        confirm.select-ok (class 85, method 11), that channel's basic.ack (60, 80) frames become
        basic.nack (60, 120) with the same delivery tag and ``multiple`` bit (same size)."""
        try:
            while True:
                header = await reader.readexactly(7)
                channel, size = int.from_bytes(header[1:3], "big"), int.from_bytes(header[3:7], "big")
                payload = bytearray(await reader.readexactly(size + 1))
                if header[0] == 1 and size >= 4:
                    method = (int.from_bytes(payload[0:2], "big"), int.from_bytes(payload[2:4], "big"))
                    if method == (85, 11) and self.poisoned_channel is None:
                        self.poisoned_channel = channel
                    elif method == (60, 80) and channel == self.poisoned_channel:
                        payload[2:4] = (120).to_bytes(2, "big")
                        self.nacks_forged += 1
                writer.write(header + payload)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def hold(self) -> None:
        """Stop forwarding what the broker sends (confirms included): a stuck broker or network."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def cut(self) -> int:
        """Reset every proxied connection (both sides); returns how many sockets were cut."""
        writers, self._writers = list(self._writers), set()
        for writer in writers:
            transport = writer.transport
            if transport is not None:
                transport.abort()
        return len(writers)


@contextlib.asynccontextmanager
async def amqp_connection() -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(BROKER_URL)
    try:
        yield connection
    finally:
        await connection.close()
