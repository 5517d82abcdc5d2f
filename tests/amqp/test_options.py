"""URL options of the AMQP transport: defaults, validation, TLS, and secrets kept out of messages."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest

from notifykit import ConfigError, WireFormat
from notifykit.transport import (
    PermanentError,
    TransientError,
    TransportSettings,
    load_transport_class,
    parse_url,
)
from notifykit.transports.amqp import AmqpTransport

from .support import free_port

SECRET = "s3cr3t-pw"


def build(url: str, topics: tuple[str, ...] = ("notifications",), **options: str) -> AmqpTransport:
    parsed = parse_url(url)
    query: dict[str, list[str]] = {}
    for key, value in parsed.query:
        query.setdefault(key, []).append(value)
    for key, value in options.items():
        query.setdefault(key, []).append(value)
    settings = TransportSettings.build("amqp", parsed, WireFormat.OSLO, topics, query)
    return AmqpTransport.from_settings(settings)


def test_both_schemes_are_registered() -> None:
    assert load_transport_class("amqp") is AmqpTransport
    assert load_transport_class("amqps") is AmqpTransport
    assert AmqpTransport.default_format is WireFormat.OSLO


def test_defaults() -> None:
    t = build("amqp://127.0.0.1/")
    o = t.options
    assert o.hosts == (("127.0.0.1", 5672),)
    assert (o.username, o.password, o.vhost) == ("guest", "guest", "/")
    assert o.exchange == "openstack"
    assert not o.durable and not o.quorum  # oslo.messaging's defaults: a stock consumer declares the same
    assert o.declare_queues and o.mandatory and o.persistent
    assert (o.confirm_timeout, o.connect_timeout, o.heartbeat) == (30.0, 10.0, 60)
    assert o.connection_name == "notifykit amqp"
    assert not o.tls.enabled


def test_every_option_is_taken() -> None:
    t = build("amqp://u:p@h1:1234,h2/vh?exchange=nova&durable_queues=true&quorum_queues=yes&declare_queues=no"
              "&mandatory=0&persistent=off&confirm_timeout=2.5&connect_timeout=1&heartbeat=0&connection_name=me")
    o = t.options
    assert o.hosts == (("h1", 1234), ("h2", 5672))
    assert (o.username, o.password, o.vhost, o.exchange) == ("u", "p", "vh", "nova")
    assert o.durable and o.quorum and o.queue_arguments == {"x-queue-type": "quorum"}
    assert not (o.declare_queues or o.mandatory or o.persistent)
    assert (o.confirm_timeout, o.connect_timeout, o.heartbeat, o.connection_name) == (2.5, 1.0, 0, "me")


def test_amqps_default_port_and_verification_on() -> None:
    t = build("amqps://broker.example/")
    assert t.options.hosts == (("broker.example", 5671),)
    context = t.options.tls.load_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_amqps_with_ca_client_cert_and_verify_off(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    t = build(f"amqps://h/?ca_file={cert}&cert_file={cert}&key_file={key}&verify=false")
    context = t.options.tls.load_context()
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname
    # the CA file was loaded: our self-signed certificate is among the trusted ones
    assert any(c.get("subject") == ((("commonName", "127.0.0.1"),),) for c in context.get_ca_certs())


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://h/?ca_file=/x.pem", "option(s) ca_file of transport 'amqp' (amqp://h/?ca_file=/x.pem) need a TLS URL"),
        ("amqps://h/?ca_file=/nonexistent.pem", "option 'ca_file' of transport 'amqp' (amqps://h/?ca_file=/nonexistent.pem): "
                                                "no such file '/nonexistent.pem'"),
        ("amqp://h/?verify=maybe", "must be true or false, got 'maybe'"),
        ("amqp://h/?confirm_timeout=0", "option 'confirm_timeout'"),
        ("amqp://h/?heartbeat=x", "option 'heartbeat' of transport 'amqp' (amqp://h/?heartbeat=x) must be an integer"),
        ("amqp://h/?exchange=amq.topic", "must be a non-empty name not starting with 'amq.'"),
        ("amqp://h/?exchnage=x", "unknown option(s) exchnage for transport 'amqp'"),
    ],
)
def test_bad_options_are_one_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(url)
    assert message in str(info.value)


def test_key_file_needs_cert_file(tls_files: tuple[Path, Path]) -> None:
    _, key = tls_files
    with pytest.raises(ConfigError, match=r"'key_file' of .* needs 'cert_file'"):
        build(f"amqps://h/?key_file={key}")


@pytest.mark.asyncio
async def test_bad_certificate_file_is_permanent(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    t = build(f"amqps://u:{SECRET}@h/?ca_file={junk}")
    with pytest.raises(PermanentError, match=r"^amqp 'amqp' amqps://u:\*+@h/.*: cannot load TLS files: ") as info:
        await t.open()  # a retry would not make the file load
    assert SECRET not in str(info.value)


def test_wildcard_topics_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"topic 'a\.#' of transport 'amqp'"):
        build("amqp://h/", topics=("a.#",))


def test_password_never_in_repr_or_errors(tls_files: tuple[Path, Path]) -> None:
    t = build(f"amqp://user:{SECRET}@127.0.0.1/")
    assert SECRET not in repr(t)
    assert SECRET not in repr(t.options)
    assert "user:***@127.0.0.1" in repr(t)
    with pytest.raises(ConfigError) as info:
        build(f"amqp://user:{SECRET}@h/?nope=1")
    assert SECRET not in str(info.value)


@pytest.mark.asyncio
async def test_unreachable_broker_is_transient_without_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    t = build(f"amqp://user:{SECRET}@127.0.0.1:{port}/?connect_timeout=5")
    with pytest.raises(TransientError) as info:
        await t.open()
    text = str(info.value)
    assert text.startswith(f"cannot connect to amqp://user:***@127.0.0.1:{port}/")
    assert f"127.0.0.1:{port}:" in text
    assert SECRET not in text
    assert SECRET not in caplog.text
    await t.aclose()


@pytest.mark.parametrize(("path", "vhost"), [("", "/"), ("/", "/"), ("/%2F", "/"), ("/prod", "prod"), ("/a%2Fb", "a/b")])
def test_vhost_from_path(path: str, vhost: str) -> None:
    assert build(f"amqp://h{path}").options.vhost == vhost


@pytest.mark.asyncio
@pytest.mark.broker
async def test_wrong_password_is_a_configuration_error_and_not_echoed(broker: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = build(f"amqp://guest:{SECRET}@127.0.0.1:5672/")
    with pytest.raises(PermanentError) as info:
        await t.open()
    assert str(info.value).startswith("AMQP broker refused the connection to amqp://guest:***@127.0.0.1:5672/ "
                                      "(a configuration error")
    assert "127.0.0.1:5672: authentication refused: ACCESS_REFUSED - Login was refused" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text
    await t.aclose()
