"""A loopback Kafka proxy that loses acknowledgements: the broker writes a Produce request,
the proxy swallows its answer, so the client times out and resends the same batch.

Kafka frames are a 4-byte big-endian size and a body; a request body starts with
api_key (int16), api_version (int16), correlation_id (int32), a response body with the
correlation_id. The broker must advertise the proxy's port so every connection passes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

__all__ = ["AckDroppingProxy"]

PRODUCE = 0


async def _frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    return head + await reader.readexactly(struct.unpack(">i", head)[0])


class AckDroppingProxy:
    """Forwards 127.0.0.1:``port`` to the broker; drops the answers of the first ``drop`` Produce requests."""

    def __init__(self, port: int, broker_port: int, drop: int) -> None:
        self.port, self.broker_port, self.drop = port, broker_port, drop
        self.produce_requests = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> AckDroppingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
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
        produce_ids: set[int] = set()
        try:
            broker_r, broker_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(self._requests(client_r, broker_w, produce_ids),
                                 self._responses(broker_r, client_w, produce_ids))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # either side closed, or the proxy is stopping: end this connection quietly
        finally:
            for writer in (client_w, broker_w):
                writer.close()
            self._tasks.discard(task)

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
