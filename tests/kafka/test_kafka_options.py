"""Kafka URL options, record keys and error classes: no broker needed."""

from __future__ import annotations

from pathlib import Path

import certifi
import pytest
from aiokafka import errors as kafka_errors  # type: ignore[import-untyped]

from notifykit import ConfigError, Notification, Priority, WireFormat
from notifykit._settings import TransportSettings
from notifykit.transport import PermanentError, TransientError, load_transport_class, parse_url
from notifykit.transports.kafka import DEFAULT_KEY_FIELDS, KafkaOptions, KafkaTransport, message_headers, message_key

from .tansu import free_port


def settings(url: str, topics: tuple[str, ...] = ("notifications",)) -> TransportSettings:
    parsed = parse_url(url)
    options: dict[str, list[str]] = {}
    for key, value in parsed.query:
        options.setdefault(key, []).append(value)
    return TransportSettings.build("kafka", parsed, WireFormat.JSON, topics, options)


def parse_options(s: TransportSettings) -> KafkaOptions:
    """The options as the core builds them (``from_settings`` then ``settings.finish()``)."""
    return KafkaTransport.from_settings(s).options


def test_both_schemes_are_registered_entry_points() -> None:
    assert load_transport_class("kafka") is KafkaTransport
    assert load_transport_class("kafka+ssl") is KafkaTransport


def test_defaults_favour_durability_and_throughput() -> None:
    options = parse_options(settings("kafka://k1:9093,k2/"))
    assert options.bootstrap_servers == ["k1:9093", "k2:9092"]
    assert options.producer == {
        "acks": "all", "enable_idempotence": True, "linger_ms": 0, "max_batch_size": 65_536,
        "max_request_size": 1_048_576, "compression_type": None,
    }
    assert options.connection["security_protocol"] == "PLAINTEXT"
    assert options.connection["request_timeout_ms"] == 30_000
    assert options.key_fields == DEFAULT_KEY_FIELDS
    assert options.topic_mode == "per_priority" and options.tail_offset == "latest"


def test_producer_options_keep_aiokafka_names_and_types() -> None:
    options = parse_options(settings(
        "kafka://k/?acks=1&enable_idempotence=false&linger_ms=20&max_batch_size=1000&compression_type=gzip"
        "&request_timeout_ms=500&client_id=svc"))
    assert options.producer["acks"] == 1 and options.producer["enable_idempotence"] is False
    assert options.producer["linger_ms"] == 20 and options.producer["max_batch_size"] == 1000
    assert options.producer["compression_type"] == "gzip"
    assert options.connection["request_timeout_ms"] == 500 and options.connection["client_id"] == "svc"


def test_topics_per_priority_or_single() -> None:
    per_priority = parse_options(settings("kafka://k/", ("notifications", "metering")))
    assert per_priority.topic_names(Priority.ERROR) == ["notifications.error", "metering.error"]
    assert "notifications.sample" in per_priority.all_topic_names()
    assert len(per_priority.all_topic_names()) == 2 * len(Priority)
    single = parse_options(settings("kafka://k/?topic_mode=single"))
    assert single.topic_names(Priority.ERROR) == ["notifications"] == single.all_topic_names()


@pytest.mark.parametrize(
    ("url", "topics", "message"),
    [
        ("kafka://k/?acks=2", ("n",), "option 'acks'"),
        ("kafka://k/?enable_idempotence=true&acks=1", ("n",), "enable_idempotence=true needs acks=all"),
        ("kafka://k/?linger_ms=-1", ("n",), "option 'linger_ms'"),
        ("kafka://k/?max_batch_size=big", ("n",), "option 'max_batch_size' of transport 'kafka'"),
        ("kafka://k/?compression_type=brotli", ("n",), "option 'compression_type'"),
        ("kafka://k/?topic_mode=many", ("n",), "option 'topic_mode'"),
        ("kafka://k/?lingerms=5", ("n",), "unknown option(s) lingerms"),
        ("kafka://k/?ca_file=/etc/hosts", ("n",), "need a TLS URL (https://, amqps://, kafka+ssl://, …)"),
        ("kafka+ssl://k/?ca_file=/nonexistent/ca.pem", ("n",), "no such file '/nonexistent/ca.pem'"),
        ("kafka://k/?sasl_mechanism=GSSAPI&sasl_plain_username=u&sasl_plain_password=p", ("n",), "sasl_mechanism must be one of"),
        ("kafka://k/?sasl_mechanism=PLAIN", ("n",), "needs a user name and password"),
        ("kafka://", ("n",), "name at least one broker"),
        ("kafka://k/topic", ("n",), "takes no path"),
        ("kafka://k/", ("bad topic!",), "is not a valid Kafka topic name"),
    ],
)
def test_bad_options_are_one_clear_error(url: str, topics: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_options(settings(url, topics))
    assert message in str(info.value)


def test_sasl_from_url_credentials_and_secrets_stay_out_of_errors() -> None:
    plain = parse_options(settings("kafka://svc:s3cret@k/"))
    assert plain.connection["security_protocol"] == "SASL_PLAINTEXT"
    assert (plain.connection["sasl_mechanism"], plain.connection["sasl_plain_username"],
            plain.connection["sasl_plain_password"]) == ("PLAIN", "svc", "s3cret")
    scram = parse_options(settings("kafka+ssl://k/?sasl_mechanism=scram-sha-512&sasl_plain_username=svc"
                                   "&sasl_plain_password=s3cret"))
    assert scram.connection["security_protocol"] == "SASL_SSL" and scram.connection["sasl_mechanism"] == "SCRAM-SHA-512"
    with pytest.raises(ConfigError) as info:
        parse_options(settings("kafka://svc:s3cret@k/?acks=7&sasl_plain_password=s3cret"))
    assert "s3cret" not in str(info.value)
    transport = KafkaTransport.from_settings(settings("kafka+ssl://svc:s3cret@k/"))
    assert "s3cret" not in repr(transport)


def test_tls_context_verifies_against_the_given_ca() -> None:
    options = parse_options(settings(f"kafka+ssl://k/?ca_file={certifi.where()}&verify=false"))
    assert options.connection["security_protocol"] == "SSL"
    context = options.tls.load_context()
    assert context.check_hostname is False
    assert context.cert_store_stats()["x509_ca"] > 0
    assert not parse_options(settings("kafka://k/")).tls.enabled


def test_key_is_the_first_resource_id_of_the_payload() -> None:
    assert message_key({"volume_id": "v", "backup_id": "b"}, DEFAULT_KEY_FIELDS) == b"b"
    assert message_key({"volume_id": "v", "id": 3}, DEFAULT_KEY_FIELDS) == b"v"
    assert message_key({"id": 3}, DEFAULT_KEY_FIELDS) == b"3"
    assert message_key({"backup_id": None, "id": ""}, DEFAULT_KEY_FIELDS) is None
    assert message_key({"backup_id": {"nested": 1}, "flag": True}, ("backup_id", "flag")) is None
    assert message_key({"backup_id": "b"}, ()) is None
    assert parse_options(settings("kafka://k/?key_field=")).key_fields == ()
    assert parse_options(settings("kafka://k/?key_field=tenant,backup_id")).key_fields == ("tenant", "backup_id")


def test_headers_name_the_event_without_parsing_the_body() -> None:
    n = Notification.create("backup.create.end", {"backup_id": "b"}, publisher_id="p", priority="warn")
    assert message_headers(n, WireFormat.CLOUDEVENTS) == [
        ("event_type", b"backup.create.end"), ("priority", b"warn"), ("message_id", n.message_id.encode()),
        ("content-type", b"application/cloudevents+json"),
    ]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (kafka_errors.MessageSizeTooLargeError(), PermanentError),
        (kafka_errors.TopicAuthorizationFailedError(), PermanentError),
        (kafka_errors.InvalidTopicError(), PermanentError),
        (kafka_errors.SaslAuthenticationFailed(), PermanentError),
        (kafka_errors.KafkaConnectionError("refused"), TransientError),
        (kafka_errors.KafkaTimeoutError(), TransientError),
        (kafka_errors.NotLeaderForPartitionError(), TransientError),
        (kafka_errors.RequestTimedOutError(), TransientError),
        (kafka_errors.NotEnoughReplicasError(), TransientError),
        (kafka_errors.NodeNotReadyError("node 1"), TransientError),
    ],
)
def test_failures_are_classified_for_the_core(error: Exception, kind: type[Exception]) -> None:
    classified = KafkaTransport.from_settings(settings("kafka://k/")).classify(error)
    assert type(classified) is kind
    assert type(error).__name__ in str(classified)


@pytest.mark.asyncio
async def test_tls_files_that_are_not_certificates_fail_open_permanently(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    transport = KafkaTransport.from_settings(settings(f"kafka+ssl://svc:s3cret@127.0.0.1:1/?ca_file={bogus}"))
    with pytest.raises(PermanentError, match="cannot load TLS files") as info:
        await transport.open()
    assert "s3cret" not in str(info.value)


@pytest.mark.asyncio
async def test_open_with_no_broker_listening_is_transient() -> None:
    port = free_port()  # nothing listens there
    transport = KafkaTransport.from_settings(settings(f"kafka://svc:s3cret@127.0.0.1:{port}/?request_timeout_ms=2000"))
    with pytest.raises(TransientError) as info:
        await transport.open()
    assert f"127.0.0.1:{port}" in str(info.value) and "s3cret" not in str(info.value)
    with pytest.raises(TransientError, match="not open"):
        await transport.send([Notification.create("a.b", {}, publisher_id="p")])
    await transport.aclose()
