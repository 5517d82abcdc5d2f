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

from .._loopback_proxy import LoopbackProxy

__all__ = ["CorruptingProxy"]


class CorruptingProxy(LoopbackProxy):
    """Forwards 127.0.0.1:<ephemeral port> (``self.port`` once entered) to ``target_port``."""

    def __init__(self, target_port: int, *, damage: int = 1, min_body: int = 1024) -> None:
        super().__init__(0, target_port)
        self.damage, self.min_body = damage, min_body
        self.damaged: list[str] = []  # request lines of the PUTs whose body was damaged
        self.puts = 0

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                    server_r: asyncio.StreamReader, server_w: asyncio.StreamWriter) -> None:
        await asyncio.gather(self._requests(client_r, server_w), self._pipe(server_r, client_w))

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
