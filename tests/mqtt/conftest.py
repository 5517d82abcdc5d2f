"""Fixtures of the MQTT tests: the machine's Mosquitto, unique topic prefixes, own brokers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..helpers import require_tcp, unavailable
from .support import HOST, PORT, Mosquitto, Subscriber, fresh_prefix


@pytest.fixture
def broker() -> str:
    """The machine's broker; skips (or fails under NOTIFYKIT_REQUIRE_BROKERS=1) when it is down."""
    require_tcp(HOST, PORT, "Mosquitto")
    return f"mqtt://{HOST}:{PORT}/"


@pytest.fixture
def prefix() -> str:
    return fresh_prefix()


@pytest.fixture
def subscriber(broker: str, prefix: str) -> Iterator[Subscriber]:
    sub = Subscriber(prefix).start()
    yield sub
    sub.stop()


@pytest.fixture
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A mosquitto of the test's own, not yet started; stopped by PID afterwards."""
    if Mosquitto.binary() is None:
        unavailable("mosquitto not installed (apt-get install mosquitto)")
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield server
    server.stop()
