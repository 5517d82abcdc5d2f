"""NATS test support: unique stream names, an independent nats-py reader, a nats-server of the test's own."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
import nats.js.errors
from anyio.streams.text import TextReceiveStream
from nats.aio.msg import Msg

from ..helpers import CRASHING_PUBLISHER, unavailable

MACHINE_NATS = "127.0.0.1:4222"


@dataclass(frozen=True)
class Names:
    """A stream and subject prefix of the test's own."""

    stream: str
    subject: str

    @classmethod
    def unique(cls) -> Names:
        token = uuid.uuid4().hex[:10]
        return cls(stream=f"NKTEST_{token}", subject=f"nktest.{token}")


async def read_stream(server: str, stream: str, *, timeout: float = 30) -> list[Msg]:
    """Every message of ``stream``, in stream order, read by a plain nats-py consumer of its own
    (an ephemeral pull consumer: nothing of notifykit's code in the way)."""
    nc = await nats.connect(f"nats://{server}", connect_timeout=5)
    try:
        js = nc.jetstream(timeout=timeout)
        total = (await js.stream_info(stream)).state.messages
        sub = await js.pull_subscribe("", stream=stream)  # filter "": every subject of the stream
        got: list[Msg] = []
        deadline = time.monotonic() + timeout
        while len(got) < total and time.monotonic() < deadline:
            with contextlib.suppress(nats.errors.TimeoutError):
                for msg in await sub.fetch(min(1000, total - len(got)), timeout=2):
                    await msg.ack()
                    got.append(msg)
        return got
    finally:
        await nc.close()


async def delete_stream(server: str, stream: str) -> None:
    with contextlib.suppress(Exception):
        nc = await nats.connect(f"nats://{server}", connect_timeout=5)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()


async def stream_config(server: str, stream: str) -> Any:
    nc = await nats.connect(f"nats://{server}", connect_timeout=5)
    try:
        return (await nc.jetstream().stream_info(stream)).config
    finally:
        await nc.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    """``nats-server -js`` on a free loopback port with its own data directory; stopped by PID.

    ``stop()`` then ``start()`` brings the same server back (same port, same store)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            unavailable("nats-server not installed (apt-get install nats-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> None:
        log = open(self.directory / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "-js", "-sd", str(self.directory / "store"), "-p", str(self.port), "-a", "127.0.0.1",
             "--http_port", "0", *self.extra], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.directory}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"nats-server did not listen on {self.address} within {timeout}s")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, sig)
            process.wait(timeout=20)


async def stored_count(server: str, stream: str) -> int:
    """Messages in ``stream`` (0 while it does not exist yet)."""
    nc = await nats.connect(f"nats://{server}", connect_timeout=5)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await nc.close()


async def run_publisher_until_stored(url: str, spool: Path, dead_letters: Path, server: str, stream: str,
                                     stored: int, timeout: float = 120) -> list[str]:
    """tests/helpers.py's CRASHING_PUBLISHER, SIGKILLed once ``stream`` holds ``stored`` messages
    (so it dies mid-delivery, not before its first batch); returns the ids whose notify() returned."""
    script = spool.with_name(f"publisher-{os.getpid()}.py")
    script.write_text(CRASHING_PUBLISHER)
    proc = await anyio.open_process([sys.executable, str(script), url, str(spool), str(dead_letters)])
    assert proc.stdout is not None
    chunks: list[str] = []

    async def read_ids() -> None:
        assert proc.stdout is not None
        async for chunk in TextReceiveStream(proc.stdout):
            chunks.append(chunk)

    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_ids)
                while await stored_count(server, stream) < stored:
                    await anyio.sleep(0.02)
                proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return "".join(chunks).split("\n")[:-1]
