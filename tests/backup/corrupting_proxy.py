"""A loopback HTTP/1.1 proxy that damages request bodies in transit: it flips one byte in the
body of the first ``damage`` PUT requests whose body is at least ``min_body`` bytes, and
passes everything else through unchanged. The object stores' integrity checks (Swift's ETag,
S3's signed payload sha256) must make the server refuse those bodies, and the store send
them again.

It frames requests by their headers and ``Content-Length`` (what the stores' clients send;
a chunked request body is passed through without damage), so keep-alive connections work.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CorruptingProxy"]


class CorruptingProxy:
    """Forwards 127.0.0.1:<ephemeral port> (``self.port`` once entered) to ``target_port``."""

    def __init__(self, target_port: int, *, damage: int = 1, min_body: int = 1024) -> None:
        self.target_port, self.damage, self.min_body = target_port, damage, min_body
        self.port = 0
        self.damaged: list[str] = []  # request lines of the PUTs whose body was damaged
        self.puts = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CorruptingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            self._tasks.discard(task)
            return
        try:
            await asyncio.gather(self._requests(client_r, server_w), self._pipe(server_r, client_w))
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a connection closed, or the proxy stopped: nothing to report
        finally:
            for writer in (client_w, server_w):
                writer.close()
            self._tasks.discard(task)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                writer.write_eof()
                return
            writer.write(head)
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if lines[0].startswith("PUT "):
                self.puts += 1
            flip = lines[0].startswith("PUT ") and length >= self.min_body and len(self.damaged) < self.damage
            if flip:
                self.damaged.append(lines[0])
            done = 0
            while done < length:
                piece = bytearray(await reader.read(min(65536, length - done)))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", length - done)
                if flip and done <= length // 2 < done + len(piece):
                    piece[length // 2 - done] ^= 0xFF
                done += len(piece)
                writer.write(piece)
                await writer.drain()
            await writer.drain()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
