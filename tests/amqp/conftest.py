"""Fixtures of the AMQP tests: a reachable broker, unique names cleaned up afterwards, TLS files."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from ..helpers import require_tcp
from .support import BROKER_HOST, BROKER_PORT, Names, delete_all


@pytest.fixture
def broker() -> str:
    """The broker URL; skips (or fails under NOTIFYKIT_REQUIRE_BROKERS=1) when RabbitMQ is down."""
    require_tcp(BROKER_HOST, BROKER_PORT, "RabbitMQ")
    return f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/"


@pytest_asyncio.fixture
async def names(broker: str) -> AsyncIterator[Names]:
    """A unique exchange and topics; their queues and exchange are deleted after the test."""
    fresh = Names.fresh()
    yield fresh
    await delete_all(fresh)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the cert doubles as the CA file)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found: cannot make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key
