"""mqtts:// against a mosquitto of the test's own with a trustme CA, and a refused login."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.deadletters import read_dead_letters

from .support import Mosquitto, fresh_prefix

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


def tls_broker(broker: Mosquitto) -> Path:
    """Turn ``broker`` into a TLS-only one (a trustme CA and a certificate for 127.0.0.1); returns the CA file."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = broker.folder / "ca.pem", broker.folder / "cert.pem", broker.folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    broker.config.write_text(broker.config.read_text() + f"certfile {cert_file}\nkeyfile {key_file}\n")
    return ca_file


async def test_mqtts_with_the_ca_is_acknowledged_and_without_it_is_a_permanent_error(
        own_broker: Mosquitto, dead_letter_path: Path) -> None:
    ca_file = tls_broker(own_broker)
    own_broker.start()
    prefix = fresh_prefix()
    with anyio.fail_after(30):
        url = f"mqtts://127.0.0.1:{own_broker.port}/?topic={prefix}&ca_file={ca_file}"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            ids = {(await notifier.info({}, "volume.attach", {"i": i})).message_id for i in range(200)}
        assert notifier.stats()["mqtts"].sent == 200
        # Without the CA: the certificate does not verify, which no retry fixes.
        url = f"mqtts://127.0.0.1:{own_broker.port}/?topic={prefix}&retry_max_attempts=3"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "volume.attach", {"i": -1})
        assert notifier.stats()["mqtts"].dead_lettered == 1
        letters = list(read_dead_letters(dead_letter_path))
        assert "permanent" in str(letters[0]["reason"]) and "CERTIFICATE_VERIFY_FAILED" in str(letters[0]["reason"])
        # verify=false: no certificate check at all (a test broker's self-signed certificate)
        url = f"mqtts://127.0.0.1:{own_broker.port}/?topic={prefix}&verify=false"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "volume.attach", {"i": -2})
        assert notifier.stats()["mqtts"].sent == 1
    assert len(ids) == 200


async def test_a_refused_login_is_permanent_with_the_brokers_reason(own_broker: Mosquitto,
                                                                    dead_letter_path: Path) -> None:
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.skip("mosquitto_passwd not installed")
    password_file = own_broker.folder / "passwords"
    await anyio.run_process([passwd, "-c", "-b", str(password_file), "cinder", "right-pw"])
    own_broker.config.write_text(own_broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
                                 + f"password_file {password_file}\n")
    own_broker.start()
    prefix = fresh_prefix()
    with anyio.fail_after(30):
        url = f"mqtt://cinder:wrong-pw@127.0.0.1:{own_broker.port}/?topic={prefix}&retry_max_attempts=3"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "volume.attach", {})
        assert notifier.stats()["mqtt"].dead_lettered == 1
        reason = str(next(iter(read_dead_letters(dead_letter_path)))["reason"])
        # Mosquitto answers a wrong password with "Not authorized"; "Bad user name or password" is permanent too.
        assert "the broker refused the connection: Not authorized (0x87)" in reason
        assert "permanent" in reason and "wrong-pw" not in reason
        url = f"mqtt://cinder:right-pw@127.0.0.1:{own_broker.port}/?topic={prefix}"
        async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as notifier:
            await notifier.info({}, "volume.attach", {})
        assert notifier.stats()["mqtt"].sent == 1

