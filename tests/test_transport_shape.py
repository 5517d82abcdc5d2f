"""Every transport has the one shape: options dataclass, classify, open/send/aclose, shared TLS options."""

from __future__ import annotations

import dataclasses
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from notifykit import ConfigError, Notifier
from notifykit.transport import PermanentError, Tailable, Transport, load_transport_class

SCHEMES = sorted({ep.name for ep in entry_points(group="notifykit.transports") if ep.value.startswith("notifykit.transports.")})
TLS_SCHEMES = {"amqps": "amqps://127.0.0.1:5671/", "https": "https://127.0.0.1:9/hook",
               "kafka+ssl": "kafka+ssl://127.0.0.1:9093/", "nats+tls": "nats+tls://127.0.0.1:4222/"}
PLAIN_SCHEMES = {"amqp": "amqp://127.0.0.1:5672/", "http": "http://127.0.0.1:9/hook",
                 "kafka": "kafka://127.0.0.1:9092/", "nats": "nats://127.0.0.1:4222/"}
TLS_SCHEMES["rediss"] = "rediss://127.0.0.1:6380/0"
PLAIN_SCHEMES["redis"] = "redis://127.0.0.1:6379/0"
TLS_SCHEMES["mqtts"] = "mqtts://127.0.0.1:8883/"
PLAIN_SCHEMES["mqtt"] = "mqtt://127.0.0.1:1883/"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_transport_has_the_one_shape(scheme: str) -> None:
    cls = load_transport_class(scheme)
    assert issubclass(cls, Transport)
    options = cls.Options
    assert dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen, f"{scheme}: Options not frozen"  # type: ignore[attr-defined]
    assert "from_settings" not in vars(cls), f"{scheme}: builds itself; the core must call settings.finish()"
    assert "close" not in vars(cls), f"{scheme}: close() instead of aclose()"
    for method in ("send", "open", "aclose", "classify"):
        assert callable(getattr(cls, method))
    [ep] = [ep for ep in entry_points(group="notifykit.transports", name=scheme)]
    module = ep.value.split(":")[0]  # memory's class lives in the core (notifykit.testing); its module re-exports it
    assert module.count(".") == 2, f"{scheme}: {module} is not one module under transports/"


def test_tail_is_its_own_capability() -> None:
    tailable = {scheme for scheme in SCHEMES if isinstance(load_transport_class(scheme), Tailable)}
    assert tailable == {"amqp", "amqps", "kafka", "kafka+ssl", "nats", "nats+tls", "redis", "rediss", "mqtt", "mqtts"}
    assert not hasattr(Transport, "tail")


@pytest.mark.parametrize("scheme", sorted(TLS_SCHEMES))
def test_tls_options_have_one_name_and_one_error_everywhere(scheme: str) -> None:
    url = TLS_SCHEMES[scheme]
    with pytest.raises(ConfigError, match=r"option 'ca_file' of transport '[\w+]+' \(.*\): no such file '/nonexistent.pem'"):
        Notifier.from_url(f"{url}?ca_file=/nonexistent.pem", publisher_id="p")
    with pytest.raises(ConfigError, match=r"option 'key_file' of transport .* needs 'cert_file'"):
        Notifier.from_url(f"{url}?key_file={__file__}", publisher_id="p")
    transport = next(iter(Notifier.from_url(f"{url}?ca_file={__file__}&verify=false",
                                            publisher_id="p").transports.values()))
    tls = transport.options.tls
    assert (tls.enabled, tls.ca_file, tls.verify) == (True, __file__, False)


@pytest.mark.parametrize("scheme", sorted(PLAIN_SCHEMES))
def test_tls_options_on_a_plain_url_are_refused_the_same_way(scheme: str) -> None:
    with pytest.raises(ConfigError, match=r"option\(s\) cert_file of transport .* need a TLS URL"):
        Notifier.from_url(f"{PLAIN_SCHEMES[scheme]}?cert_file={__file__}", publisher_id="p")


@pytest.mark.parametrize("old", ["cafile", "certfile", "keyfile", "cert", "key", "ssl_cafile", "ssl_check_hostname"])
def test_the_old_per_transport_tls_names_are_unknown_options(old: str) -> None:
    for url in TLS_SCHEMES.values():
        with pytest.raises(ConfigError, match=f"unknown option.*{old}"):
            Notifier.from_url(f"{url}?{old}=x", publisher_id="p")


KEY_PASSWORD = "kp-Wq93-key-password"


@pytest.fixture(scope="module")
def encrypted_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A client certificate and its key, encrypted with another password than KEY_PASSWORD."""
    leaf = trustme.CA().issue_cert("client.example")
    folder = tmp_path_factory.mktemp("client-tls")
    cert, key = folder / "client.pem", folder / "client.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption(b"the-right-password")))
    return cert, key


@pytest.mark.asyncio
@pytest.mark.parametrize("scheme", sorted(TLS_SCHEMES))
async def test_key_password_is_a_secret_in_every_error_and_repr(scheme: str, encrypted_key: tuple[Path, Path]) -> None:
    """``key_password`` is taken as a secret: no ConfigError, repr or load error shows it, whatever
    the transport (the file loading in open() fails before any connection is tried)."""
    cert, key = encrypted_key
    url = TLS_SCHEMES[scheme]
    plain = next(u for s, u in PLAIN_SCHEMES.items() if scheme.startswith(s.removesuffix("s")) and s != scheme)
    for bad, match in ((f"{plain}?key_password={KEY_PASSWORD}", "key_password of transport .* need a TLS URL"),
                       (f"{url}?key_password={KEY_PASSWORD}", "option 'key_password' of transport .* needs 'cert_file'")):
        with pytest.raises(ConfigError, match=match) as refused:
            Notifier.from_url(bad, publisher_id="p")
        assert KEY_PASSWORD not in str(refused.value)
    notifier = Notifier.from_url(f"{url}?cert_file={cert}&key_file={key}&key_password={KEY_PASSWORD}", publisher_id="p")
    transport = next(iter(notifier.transports.values()))
    assert transport.options.tls.key_password == KEY_PASSWORD and "key_password" in transport.settings.secrets
    assert KEY_PASSWORD not in repr(notifier) + repr(transport) + repr(transport.options) + repr(transport.settings)
    with pytest.raises(PermanentError) as unloadable:  # the wrong password for that key
        await transport.open()
    assert KEY_PASSWORD not in str(unloadable.value)
    await transport.aclose()
