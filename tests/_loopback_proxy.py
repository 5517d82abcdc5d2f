"""What the tests' loopback proxies share: a server on 127.0.0.1, one upstream connection per
client, and a close that stops every connection. A subclass says only what it does to the
bytes in :meth:`relay`."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

__all__ = ["LoopbackProxy"]


class LoopbackProxy:
    """Forwards 127.0.0.1:``port`` (0: an ephemeral one, in ``self.port`` once entered) to
    127.0.0.1:``target_port``."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port, self.target_port = port, target_port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                    server_r: asyncio.StreamReader, server_w: asyncio.StreamWriter) -> None:
        """Carry one connection both ways until either side closes."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
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
            try:
                server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                client_w.close()
                return
            try:
                await self.relay(client_r, client_w, server_r, server_w)
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # a side closed, or the proxy is stopping: end this connection quietly
            finally:
                for writer in (client_w, server_w):
                    writer.close()
        finally:
            self._tasks.discard(task)
