"""A broker that refuses us says why, once, as a configuration error; a silent port leaks no library warning."""

from __future__ import annotations

import gc
import logging
import socket
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from notifykit import Notifier, WireFormat
from notifykit.deadletters import read_dead_letters
from notifykit.transport import PermanentError, TransientError, TransportSettings, parse_url
from notifykit.transports.amqp import AmqpTransport

from ..helpers import FakeClock
from .support import BROKER_HOST, BROKER_PORT

pytestmark = pytest.mark.asyncio


def transport(url: str) -> AmqpTransport:
    parsed = parse_url(url)
    return AmqpTransport.from_settings(TransportSettings.build("amqp", parsed, WireFormat.OSLO, ["notifications"],
                                                               dict(parsed.query)))


@pytest.mark.broker
async def test_a_wrong_vhost_reports_the_brokers_reason(broker: str, caplog: pytest.LogCaptureFixture) -> None:
    vhost = f"nk-missing-{uuid.uuid4().hex[:8]}"
    t = transport(f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{vhost}")
    with caplog.at_level(logging.WARNING, logger="notifykit.amqp"), pytest.raises(PermanentError) as info:
        await t.open()
    message = str(info.value)
    assert f"NOT_ALLOWED - vhost {vhost} not found (AMQP 530)" in message
    assert "Connection.Close object" not in message and "\n" not in message
    [line] = [r.getMessage() for r in caplog.records if vhost in r.getMessage()]
    assert "a configuration error" in line


@pytest.mark.broker
async def test_a_wrong_password_is_not_retried_until_max_elapsed(broker: str, dead_letter_path: Path,
                                                                  fake_clock: FakeClock,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    url = f"amqp://guest:not-the-password-42@{BROKER_HOST}:{BROKER_PORT}/?retry_max_elapsed=3600"
    n = Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path, clock=fake_clock)
    with caplog.at_level(logging.DEBUG):
        with anyio.fail_after(60):
            async with n:
                await n.info({}, "backup.create.end", {"size": 1})
    stats = n.stats()["amqp"]
    assert (stats.sent, stats.retried, stats.dead_lettered) == (0, 0, 1)
    assert "ACCESS_REFUSED - Login was refused" in (stats.last_error or "")
    (letter,) = read_dead_letters(dead_letter_path)
    assert "a configuration error" in letter["reason"] and "ACCESS_REFUSED" in letter["reason"]
    assert "not-the-password-42" not in caplog.text + dead_letter_path.read_text() + str(stats.last_error)
    assert len([r for r in caplog.records if r.name == "notifykit.amqp" and "ACCESS_REFUSED" in r.getMessage()]) == 1


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections that nobody ever reads or answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def test_a_port_that_never_speaks_leaks_no_library_warning(silent_port: int) -> None:
    t = transport(f"amqp://guest:guest@127.0.0.1:{silent_port}/?connect_timeout=0.2")
    gc.disable()  # the failed connection must be collected where a library would notice: in a worker thread
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(TransientError, match=r"no answer within connect_timeout=0\.2s"):
                await t.open()
            await anyio.to_thread.run_sync(gc.collect)
    finally:
        gc.enable()
    leaked = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert leaked == []
