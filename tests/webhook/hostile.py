"""Hostile HTTP peers for the webhook tests: raw sockets on loopback that misbehave on purpose.

uvicorn always answers well-formed and promptly; an attacker (or a broken proxy) does
not. Each peer here reads the request, then does one bad thing until the client hangs
up: trickles the header lines, or trickles the body, one piece per ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """The request head and its Content-Length body (what the webhook transport sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return head + body


def trickle_headers(interval: float) -> Behaviour:
    """Send the status line, then one header line per ``interval``, never the blank line."""

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        for count in range(1_000_000):
            await asyncio.sleep(interval)
            writer.write(f"X-Slow-{count}: {count}\r\n".encode())
            await writer.drain()

    return behave


def trickle_body(interval: float) -> Behaviour:
    """Answer 200 with a long Content-Length, then send its body one byte per ``interval``."""

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
        await writer.drain()
        for _ in range(1_000_000):
            await asyncio.sleep(interval)
            writer.write(b"x")
            await writer.drain()

    return behave


def huge_body() -> Behaviour:
    """Answer 400 with an endless body, as fast as the socket takes it."""

    async def behave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"A" * 65536
        for _ in range(1_000_000):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()

    return behave


class HostilePeer:
    """A TCP server on ``host`` (a free port) running ``behaviour`` for each connection, in its own thread."""

    def __init__(self, behaviour: Behaviour, host: str = "127.0.0.1") -> None:
        self.behaviour = behaviour
        self.host = host
        self.port = 0
        self.connections = 0
        self.hung_up = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.behaviour(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            self.hung_up += 1  # the client gave up on us: what the tests want
        finally:
            writer.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()

        try:
            loop.run_until_complete(serve())
        finally:
            loop.close()

    def __enter__(self) -> HostilePeer:
        self._thread = threading.Thread(target=self._run, name=f"hostile-{self.host}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"hostile peer did not start on {self.host}")
        return self

    def __exit__(self, *exc: object) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None:
            def stop() -> None:
                server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()

            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
