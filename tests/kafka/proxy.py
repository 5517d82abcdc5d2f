"""A loopback Kafka proxy that loses acknowledgements: the broker writes a Produce request,
the proxy swallows its answer, so the client times out and resends the same batch.

Kafka frames are a 4-byte big-endian size and a body; a request body starts with
api_key (int16), api_version (int16), correlation_id (int32), a response body with the
correlation_id. The broker must advertise the proxy's port so every connection passes here.
"""

from __future__ import annotations

import asyncio
import struct

from .._loopback_proxy import LoopbackProxy

__all__ = ["AckDroppingProxy"]

PRODUCE = 0


async def _frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(struct.unpack(">i", head)[0])


class AckDroppingProxy(LoopbackProxy):
    """Forwards 127.0.0.1:``port`` to the broker; drops the answers of the first ``drop`` Produce requests."""

    def __init__(self, port: int, broker_port: int, drop: int) -> None:
        super().__init__(port, broker_port)
        self.drop = drop
        self.produce_requests = 0
        self.dropped = 0

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                    server_r: asyncio.StreamReader, server_w: asyncio.StreamWriter) -> None:
        produce_ids: set[int] = set()
        await asyncio.gather(self._requests(client_r, server_w, produce_ids),
                             self._responses(server_r, client_w, produce_ids))

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, produce_ids: set[int]) -> None:
        while True:
            frame = await _frame(reader)
            api_key, _version, correlation = struct.unpack(">hhi", frame[4:12])
            if api_key == PRODUCE:
                self.produce_requests += 1
                if self.dropped < self.drop:
                    self.dropped += 1
                    produce_ids.add(correlation)
            writer.write(frame)
            await writer.drain()

    async def _responses(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, produce_ids: set[int]) -> None:
        while True:
            frame = await _frame(reader)
            correlation = struct.unpack(">i", frame[4:8])[0]
            if correlation in produce_ids:
                produce_ids.discard(correlation)  # written by the broker, never acknowledged to the client
                continue
            writer.write(frame)
            await writer.drain()
