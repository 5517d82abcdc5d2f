"""``rediss://`` through a real TLS handshake (a TLS listener in front of the machine's Redis)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from notifykit import Notifier
from notifykit.deadletters import read_dead_letters

from .support import PORT, TlsProxy, read_stream

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


def server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


async def test_rediss_with_the_ca_file_delivers(machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path,
                                                ca: tuple[trustme.CA, Path]) -> None:
    authority, ca_file = ca
    stream = keys("s")
    async with TlsProxy(server_context(authority), PORT) as proxy:
        url = f"rediss://127.0.0.1:{proxy.port}/0?stream={stream}&ca_file={ca_file}"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            sent = [await notifier.info({}, "e.tls", {"i": i}) for i in range(20)]
        assert proxy.handshakes >= 1
    assert notifier.stats()["rediss"].sent == 20
    assert [e.message_id for e in read_stream(PORT, stream)] == [s.message_id for s in sent]


async def test_rediss_without_our_ca_refuses_the_certificate_and_never_shows_the_password(
        machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path, ca: tuple[trustme.CA, Path]) -> None:
    authority, _ = ca
    stream = keys("s")
    async with TlsProxy(server_context(authority), PORT) as proxy:
        url = f"rediss://:tls-secret-9@127.0.0.1:{proxy.port}/0?stream={stream}&retry_max_attempts=1"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "e.tls", {"i": 0})
    stats = notifier.stats()["rediss"]
    assert (stats.sent, stats.dead_lettered) == (0, 1)
    [letter] = read_dead_letters(dead_letter_path)
    assert "CERTIFICATE_VERIFY_FAILED" in letter["reason"] and "tls-secret-9" not in letter["reason"]
    assert read_stream(PORT, stream) == []
