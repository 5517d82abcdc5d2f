"""Fixtures: the machine's NATS (skipped when it is not listening) with names of the test's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ..helpers import require_tcp
from .support import MACHINE_NATS, Names, NatsServer, delete_stream


@pytest.fixture
def machine_nats() -> str:
    host, port = MACHINE_NATS.split(":")
    require_tcp(host, int(port), "NATS (JetStream)")
    return MACHINE_NATS


@pytest_asyncio.fixture
async def names(machine_nats: str) -> AsyncIterator[Names]:
    """A unique stream and subject, the stream deleted afterwards."""
    names = Names.unique()
    try:
        yield names
    finally:
        await delete_stream(machine_nats, names.stream)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of the test's own (not started yet), killed by PID at the end."""
    server = NatsServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()
