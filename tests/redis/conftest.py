"""Fixtures of the Redis tests: the machine's Redis with unique keys deleted afterwards, and
redis-servers a test starts itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from ..helpers import require_tcp, unavailable
from .support import HOST, PORT, RedisServer, unique_key


@pytest.fixture
def machine_redis() -> str:
    """The machine's Redis URL; skips (or fails under NOTIFYKIT_REQUIRE_BROKERS=1) when it is down."""
    require_tcp(HOST, PORT, "Redis")
    return f"redis://{HOST}:{PORT}/0"


@pytest.fixture
def keys(machine_redis: str) -> Iterator[Callable[[str], str]]:
    """Unique key names for this test; every key handed out is deleted afterwards (and only those)."""
    made: list[str] = []

    def make(kind: str = "s") -> str:
        made.append(unique_key(kind))
        return made[-1]

    yield make
    if made:
        with redis.Redis(host=HOST, port=PORT) as client:
            client.delete(*made)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start redis-servers of this test's own; each is stopped by PID afterwards."""
    if RedisServer.binary() is None:
        unavailable("redis-server not installed (apt-get install redis-server)")
    servers: list[RedisServer] = []

    def make(*, start: bool = True, appendonly: bool = True, extra: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", appendonly=appendonly, extra=extra)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()
