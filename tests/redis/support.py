"""Helpers of the Redis tests: unique stream keys, an independent XRANGE reader, and a
redis-server of the test's own (free loopback port, own data directory, stopped by PID)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from notifykit.transport import decode_message

HOST = "127.0.0.1"
PORT = 6379


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def unique_key(kind: str = "s") -> str:
    return f"nk_test_{kind}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Entry:
    """One stream entry as an independent reader sees it: its id, fields (str) and decoded body."""

    entry_id: str
    fields: dict[str, str]
    message: dict[str, Any]

    @property
    def message_id(self) -> str:
        return self.fields["message_id"]


def read_stream(port: int, key: str) -> list[Entry]:
    """Every entry of ``key`` with plain synchronous redis-py (XRANGE in pages), not the code under test."""
    client = redis.Redis(host=HOST, port=port, socket_timeout=30)
    entries: list[Entry] = []
    start = "-"
    try:
        while True:
            page = client.xrange(key, min=start, count=10_000)
            for entry_id, raw in page:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                entries.append(Entry(entry_id.decode(), fields, decode_message(raw[b"body"])))
            if len(page) < 10_000:
                return entries
            start = "(" + page[-1][0].decode()
    finally:
        client.close()


def duplicates(entries: list[Entry]) -> int:
    """How many entries repeat a message_id already in the stream (at-least-once resends)."""
    return sum(count - 1 for count in Counter(e.message_id for e in entries).values())


class RedisServer:
    """``redis-server`` on a free loopback port with its own data directory; stopped by PID."""

    def __init__(self, folder: Path, *, appendonly: bool = True, port: int | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 20) -> None:
        binary = self.binary()
        assert binary is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        # appendfsync always: an acknowledged XADD is on disk before the reply, so a SIGKILL loses
        # nothing and the test checks the transport, not the server's everysec window.
        args = [binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.folder), "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
                "--daemonize", "no", "--logfile", str(self.folder / "redis.log"), *self.extra]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log}")
            try:
                with redis.Redis(host=HOST, port=self.port, socket_timeout=2, password=self._password()) as client:
                    if client.ping():
                        return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")
            time.sleep(0.05)

    def _password(self) -> str | None:
        if "--requirepass" in self.extra:
            return self.extra[self.extra.index("--requirepass") + 1]
        return None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no final save."""
        self.stop(sig=signal.SIGKILL)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)

    def client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis(host=HOST, port=self.port, password=self._password(), socket_timeout=10)


class TlsProxy:
    """A TLS listener on a free loopback port that forwards the plain bytes to a Redis: a real
    TLS handshake for ``rediss://`` (Debian's redis-server is built without TLS)."""

    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self.context = context
        self.target_port = target_port
        self.port = 0
        self.handshakes = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TlsProxy:
        self._server = await asyncio.start_server(self._serve, HOST, 0, ssl=self.context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(HOST, self.target_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer), return_exceptions=True)
