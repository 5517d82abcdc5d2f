"""The same recording receiver served by hypercorn over TLS, which (unlike uvicorn) speaks HTTP/2."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .receiver import Receiver


class H2Receiver(Receiver):
    """https on 127.0.0.1 offering h2 and http/1.1 by ALPN; started and stopped in a thread."""

    def __init__(self, cert_and_key: Path) -> None:
        super().__init__(tls={"ssl_certfile": str(cert_and_key)})
        self._cert = str(cert_and_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._h2_thread: threading.Thread | None = None

    async def _serve(self) -> None:
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = config.keyfile = self._cert
        config.alpn_protocols = ["h2", "http/1.1"]
        config.loglevel = "WARNING"
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        await serve(self, config, shutdown_trigger=self._stop_event.wait)  # type: ignore[arg-type]

    def start(self) -> None:
        self._h2_thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name="h2-receiver", daemon=True)
        self._h2_thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if not self._h2_thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"hypercorn did not start on 127.0.0.1:{self.port}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self.reset()
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._h2_thread is not None:
            self._h2_thread.join(timeout=10)
            self._h2_thread = None
