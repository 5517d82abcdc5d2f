"""A real HTTP receiver for the webhook tests: a tiny ASGI app served by uvicorn on 127.0.0.1.

It runs in a background thread with its own event loop, records every request and
answers from a script (status, headers, body, an optional gate to hold the answer),
so tests exercise httpx, sockets and HTTP parsing for real — no mocking.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: When set, the answer waits until the test sets it (a slow or stuck receiver).
    gate: threading.Event | None = None
    #: Seconds to wait before answering (for client timeouts).
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str = "1.1"
    answered: bool = False


class Receiver:
    """Serve on host:port (127.0.0.1 unless told, e.g. 127.0.0.2 as "another host");
    ``script()`` queues replies, ``when()`` answers matching bodies."""

    def __init__(self, port: int | None = None, tls: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        #: uvicorn ssl_* settings (ssl_certfile, ssl_keyfile, ssl_ca_certs, ssl_cert_reqs) to serve https.
        self.tls = tls or {}
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._script: list[Reply] = []
        self._rules: list[tuple[Callable[[Received], bool], Reply]] = []
        self._gates: list[threading.Event] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/hook"

    # -- scripting -----------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in arrival order; then 200."""
        with self._lock:
            self._script.extend(replies)
            self._gates.extend(r.gate for r in replies if r.gate)

    def when(self, predicate: Callable[[Received], bool], reply: Reply) -> None:
        """Answer every request matching ``predicate`` with ``reply`` (before the script)."""
        with self._lock:
            self._rules.append((predicate, reply))
            if reply.gate:
                self._gates.append(reply.gate)

    def reset(self) -> None:
        """Forget requests and scripts (one server serves many tests); release held answers."""
        with self._lock:
            for gate in self._gates:
                gate.set()
            self.requests.clear()
            self._script.clear()
            self._rules.clear()
            self._gates.clear()

    def _reply_for(self, request: Received) -> Reply:
        with self._lock:
            for predicate, reply in self._rules:
                if predicate(request):
                    return reply
            return self._script.pop(0) if self._script else Reply()

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.requests]

    def answered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.answered]

    async def wait_for(self, count: int, timeout: float = 10.0, *, answered: bool = False) -> list[Received]:
        with anyio.fail_after(timeout):
            while True:
                with self._lock:
                    done = [r for r in self.requests if r.answered or not answered]
                if len(done) >= count:
                    return done
                await anyio.sleep(0.01)

    # -- the ASGI app --------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request = Received(scope["method"], scope["path"], headers, body, scope.get("http_version", "1.1"))
        with self._lock:
            self.requests.append(request)
        reply = self._reply_for(request)
        if reply.gate is not None:
            while not reply.gate.is_set():
                await asyncio.sleep(0.01)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in reply.headers.items()]
        raw_headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": reply.body})
        request.answered = True

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        config = uvicorn.Config(
            self, host=self.host, port=self.port, log_level="warning", lifespan="off",
            access_log=False, timeout_graceful_shutdown=1, **self.tls,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"receiver-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test receiver did not start on {self.host}:{self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        with self._lock:
            for gate in self._gates:
                gate.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None
            self._thread = None
