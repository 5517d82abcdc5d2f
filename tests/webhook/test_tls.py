"""https:// against a real TLS receiver: CA file, verify=false, mutual TLS, HTTP/2 offered."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from notifykit import Notification, Notifier
from notifykit.signing import verify
from notifykit.transport import TransientError
from notifykit.transports.webhook import WebhookTransport

from .h2_receiver import H2Receiver
from .receiver import Receiver

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pki(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    paths = {name: folder / f"{name}.pem" for name in ("ca", "server", "client")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    ca.issue_cert("notifykit-client@example").private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return paths


@pytest.fixture(scope="module")
def tls_receiver(pki: dict[str, Path]) -> Iterator[Receiver]:
    server = Receiver(tls={"ssl_certfile": str(pki["server"])})
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mtls_receiver(pki: dict[str, Path]) -> Iterator[Receiver]:
    server = Receiver(tls={"ssl_certfile": str(pki["server"]), "ssl_ca_certs": str(pki["ca"]),
                           "ssl_cert_reqs": ssl.CERT_REQUIRED})
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def send_one(url: str, tmp_path: Path) -> Notification:
    notifier = Notifier.from_url(url, publisher_id="p", dead_letters=tmp_path / "dl.jsonl")
    transport = notifier.transports["https"]
    assert isinstance(transport, WebhookTransport)
    n = Notification.create("backup.create.end", {"size": 1}, publisher_id="p")
    await transport.open()
    try:
        await transport.send([n])
    finally:
        await transport.aclose()
    return n


async def test_server_certificate_checked_against_ca_file(tls_receiver: Receiver, pki: dict[str, Path],
                                                          tmp_path: Path) -> None:
    n = await send_one(f"{tls_receiver.url}?ca_file={pki['ca']}", tmp_path)
    assert tls_receiver.requests[-1].body == n.encode("cloudevents")


async def test_unknown_ca_is_refused_unless_verify_false(tls_receiver: Receiver, tmp_path: Path) -> None:
    before = len(tls_receiver.requests)
    with pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        await send_one(tls_receiver.url, tmp_path)  # the certifi bundle does not know the test CA
    assert len(tls_receiver.requests) == before
    await send_one(f"{tls_receiver.url}?verify=false", tmp_path)
    assert len(tls_receiver.requests) == before + 1


async def test_http2_offered_falls_back_to_http11(tls_receiver: Receiver, pki: dict[str, Path], tmp_path: Path) -> None:
    # uvicorn speaks HTTP/1.1 only: ALPN must settle on it and the request still go through.
    n = await send_one(f"{tls_receiver.url}?ca_file={pki['ca']}&http2=true", tmp_path)
    assert tls_receiver.requests[-1].body == n.encode("cloudevents")
    assert tls_receiver.requests[-1].http_version == "1.1"


async def test_http2_when_enabled_and_only_then(pki: dict[str, Path], tmp_path: Path) -> None:
    server = H2Receiver(pki["server"])
    server.start()
    try:
        n = await send_one(f"{server.url}?ca_file={pki['ca']}&http2=true&secret=k", tmp_path)
        await send_one(f"{server.url}?ca_file={pki['ca']}", tmp_path)
        h2, h11 = server.requests
    finally:
        server.stop()
    assert (h2.http_version, h11.http_version) == ("2", "1.1")
    assert h2.body == n.encode("cloudevents") and h2.headers["content-type"] == "application/cloudevents+json"
    verify(h2.headers, h2.body, "k")  # HTTP/2 lower-cases header names: verify does not mind


async def test_mutual_tls_client_certificate(mtls_receiver: Receiver, pki: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TransientError):
        await send_one(f"{mtls_receiver.url}?ca_file={pki['ca']}", tmp_path)  # no client certificate
    assert not mtls_receiver.requests
    await send_one(f"{mtls_receiver.url}?ca_file={pki['ca']}&cert_file={pki['client']}", tmp_path)
    assert len(mtls_receiver.requests) == 1
