"""URL parsing, redaction, and configuration from URLs and TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifykit import (
    ConfigError,
    Notifier,
    NotifierConfig,
    OverflowPolicy,
    Priority,
    TransportConfig,
    WireFormat,
)
from notifykit.transport import parse_url, redact_url


def test_parse_multi_host_url() -> None:
    url = parse_url("kafka://a:9092,b:9093/?topic=x&topic=y")
    assert [(h.host, h.port) for h in url.hosts] == [("a", 9092), ("b", 9093)]
    assert url.query == (("topic", "x"), ("topic", "y"))


def test_a_host_as_a_client_library_writes_it() -> None:
    url = parse_url("nats://[::1]:4223,b,[fe80::1]/")
    assert [h.netloc(4222) for h in url.hosts] == ["[::1]:4223", "b:4222", "[fe80::1]:4222"]
    assert [h.netloc() for h in url.hosts] == ["[::1]:4223", "b", "[fe80::1]"]


def test_password_never_in_repr_or_errors() -> None:
    url = parse_url("amqp://guest:s3cr3t@localhost:5672/%2F?api_key=k3y")
    assert url.password == "s3cr3t"
    assert "s3cr3t" not in repr(url) and "k3y" not in url.redacted
    assert url.redacted == "amqp://guest:***@localhost:5672/%2F?api_key=***"
    with pytest.raises(ConfigError) as err:
        parse_url("amqp://guest:s3cr3t@localhost:notaport/")
    assert "s3cr3t" not in str(err.value) and "port 'notaport'" in str(err.value)
    config = TransportConfig.from_url("memory://x?secret=abc")
    assert "abc" not in repr(config)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("localhost:5672", "expected scheme://"),
        ("1amqp://x", "invalid scheme"),
        ("amqp://h:99999/", "1-65535"),
        ("amqp://h/#frag", "fragments"),
        ("memory://?a=1&&=&b", "key=value"),
    ],
)
def test_malformed_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_url(url)


def test_redact_survives_garbage() -> None:
    assert "pw" not in redact_url("amqp://u:pw@[::1")


def test_core_keys_split_from_transport_options() -> None:
    config = TransportConfig.from_url(
        "memory://t?format=oslo&topic=a&topic=b&queue_size=5&overflow=drop_oldest&retry_max_elapsed=3"
        "&circuit_failure_threshold=2&min_priority=warn&event_types=backup.*&delay=0.1"
    )
    assert config.format is WireFormat.OSLO
    assert config.topics == ("a", "b")
    assert config.queue_size == 5
    assert config.overflow is OverflowPolicy.DROP_OLDEST
    assert config.retry.max_elapsed == 3.0
    assert config.circuit.failure_threshold == 2
    assert config.filter.min_priority is Priority.WARN
    assert config.filter.event_types == ("backup.*",)
    assert config.options == {"delay": ["0.1"]}
    assert config.url == "memory://t?delay=0.1"


def test_bad_core_value_in_url() -> None:
    with pytest.raises(ConfigError, match="queue_size must be an integer"):
        TransportConfig.from_url("memory://?queue_size=lots")
    with pytest.raises(ConfigError, match="unknown overflow policy 'explode'"):
        TransportConfig.from_url("memory://?overflow=explode")


def test_unknown_transport_option_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) colour for transport 'memory'"):
        Notifier.from_url("memory://?colour=blue", publisher_id="x")


TOML = """
publisher_id = "backup.host1"
max_payload_bytes = 65536
close_timeout = 3

[transports.audit]
url = "memory://audit"
format = "cloudevents"
topics = ["notifications", "billing"]
queue_size = 100
overflow = "drop_newest"
[transports.audit.filter]
event_types = ["backup.*.end"]
min_priority = "info"
[transports.audit.retry]
initial_delay = 0.5
max_elapsed = 60
[transports.audit.circuit]
failure_threshold = 3
reset_timeout = 10

[transports.trace]
url = "log://stderr"
[transports.trace.options]
fsync = false
"""


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "notifykit.toml"
    path.write_text(TOML)
    config = NotifierConfig.from_toml(path)
    assert config.publisher_id == "backup.host1"
    assert config.max_payload_bytes == 65536
    audit, trace = config.transports
    assert audit.name == "audit" and audit.format is WireFormat.CLOUDEVENTS
    assert audit.topics == ("notifications", "billing")
    assert audit.overflow is OverflowPolicy.DROP_NEWEST
    assert audit.filter.accepts("backup.create.end", Priority.INFO)
    assert not audit.filter.accepts("backup.create.start", Priority.INFO)
    assert not audit.filter.accepts("backup.create.end", Priority.DEBUG)
    assert audit.retry.initial_delay == 0.5 and audit.retry.max_elapsed == 60
    assert audit.circuit.reset_timeout == 10
    assert trace.options == {"fsync": "false"}
    notifier = Notifier.from_config(path)
    assert set(notifier.transports) == {"audit", "trace"}


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('publisher_id = "x"\n[transports.a\nurl = 1\n')
    with pytest.raises(ConfigError, match=r"invalid TOML in .*broken.toml.*line 2"):
        NotifierConfig.from_toml(path)


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        NotifierConfig.from_toml(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "at least one"),
        ({"transports": {"a": {}}}, "'url' is required"),
        ({"transports": {"a": {"url": "memory://", "colour": 1}}}, r"unknown key\(s\) colour"),
        ({"transports": {"a": {"url": "memory://", "retry": {"forever": True}}}}, r"\[retry\]: unknown key"),
        ({"transports": {"a": {"url": "memory://", "queue_size": 0}}}, "queue_size must be an integer >= 1"),
        ({"transports": {"a": {"url": "memory://"}}, "publisher": "x"}, r"unknown key\(s\) publisher"),
        ({"transports": {"a": {"url": "memory://", "filter": {"min_priority": "loud"}}}}, "min_priority"),
    ],
)
def test_bad_mappings(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NotifierConfig.from_mapping(data)


def test_log_url_errors(dead_letter_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected log://"):
        Notifier.from_url("log://somewhere", publisher_id="x", dead_letters=dead_letter_path)


