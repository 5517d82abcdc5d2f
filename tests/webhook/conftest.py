"""Fixtures for the webhook tests: a real receiver on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .receiver import Receiver


@pytest.fixture(scope="session")
def _shared_receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def receiver(_shared_receiver: Receiver) -> Iterator[Receiver]:
    """The session's receiver, emptied for this test (starting uvicorn per test costs more than the tests)."""
    _shared_receiver.reset()
    yield _shared_receiver
    _shared_receiver.reset()


@pytest.fixture
def idle_receiver() -> Iterator[Receiver]:
    """A receiver on a reserved port that the test starts itself (server down, then up)."""
    server = Receiver()
    try:
        yield server
    finally:
        server.stop()
