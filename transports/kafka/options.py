"""Reading a ``kafka://`` / ``kafka+ssl://`` URL into typed producer and routing options.

Producer settings keep aiokafka's own names (``acks``, ``linger_ms``, …) so that what an
operator knows about Kafka clients applies as is; every value is checked here, so a typo
is one clear ConfigError when the Notifier is built, not a failure at the first send.
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from notifykit.transport import ConfigError, Priority, TransportSettings

__all__ = ["DEFAULT_KEY_FIELDS", "KafkaOptions", "parse_options"]

#: Payload fields tried in order for the message key: one resource's events share a partition.
DEFAULT_KEY_FIELDS = ("backup_id", "volume_id", "instance_id", "resource_id", "id")
DEFAULT_PORT = 9092
_TOPIC = re.compile(r"^[A-Za-z0-9._\-]{1,249}$")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Everything the transport needs, validated; ``connection`` is shared by producer and tail consumer."""

    bootstrap_servers: list[str]
    topics: tuple[str, ...]
    topic_mode: str
    key_fields: tuple[str, ...]
    producer: dict[str, Any]
    connection: dict[str, Any]
    ssl_files: dict[str, str | None] = field(default_factory=dict)
    ssl_check_hostname: bool = True
    tail_offset: str = "latest"

    def topic_names(self, priority: Priority) -> list[str]:
        """Where a notification of ``priority`` goes: ``<topic>.<priority>`` or ``<topic>``."""
        if self.topic_mode == "single":
            return list(self.topics)
        return [f"{topic}.{priority.value}" for topic in self.topics]

    def all_topic_names(self) -> list[str]:
        """Every topic this URL can write to (what ``tail`` subscribes to)."""
        if self.topic_mode == "single":
            return list(self.topics)
        return [f"{topic}.{p.value}" for topic in self.topics for p in Priority]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``kafka+ssl://`` (reads the CA/cert files: call it off the event loop)."""
        if not self.ssl_files:
            return None
        context = ssl.create_default_context(cafile=self.ssl_files.get("cafile"))
        certfile = self.ssl_files.get("certfile")
        if certfile:
            context.load_cert_chain(certfile, self.ssl_files.get("keyfile"), self.ssl_files.get("password"))
        # Turning the host name check off still verifies the chain against the CA.
        context.check_hostname = self.ssl_check_hostname
        return context


def _where(settings: TransportSettings) -> str:
    return f"transport {settings.name!r} ({settings.url.redacted})"


def _bootstrap(settings: TransportSettings) -> list[str]:
    url = settings.url
    if not url.hosts:
        raise ConfigError(f"{_where(settings)}: name at least one broker, e.g. kafka://127.0.0.1:9092/")
    if url.path not in ("", "/"):
        raise ConfigError(f"{_where(settings)}: a Kafka URL takes no path; name topics with ?topic=…")
    servers = []
    for hp in url.hosts:
        host = f"[{hp.host}]" if ":" in hp.host else hp.host
        servers.append(f"{host}:{hp.port or DEFAULT_PORT}")
    return servers


def _topics(settings: TransportSettings) -> tuple[str, ...]:
    for topic in settings.topics:
        # <topic>.<priority> must stay within Kafka's 249 characters too.
        if not _TOPIC.match(topic) or len(topic) > 240:
            raise ConfigError(
                f"{_where(settings)}: topic {topic!r} is not a valid Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 240 characters)"
            )
    return tuple(settings.topics)


def _acks(settings: TransportSettings) -> int | str:
    text = settings.take_choice("acks", ("all", "-1", "1", "0"), "all")
    return "all" if text in ("all", "-1") else int(text)


def _compression(settings: TransportSettings) -> str | None:
    name = settings.take_choice("compression_type", _COMPRESSIONS, "none")
    if name in ("snappy", "lz4", "zstd"):
        try:
            import cramjam  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{_where(settings)}: compression_type={name} needs the 'cramjam' package "
                "(pip install 'notifykit[kafka]')"
            ) from None
    return None if name == "none" else name


def _ms(settings: TransportSettings, key: str, default: int, minimum: int = 0) -> int:
    value = settings.take_int(key, default, minimum=minimum)
    assert value is not None
    return value


def _security(settings: TransportSettings, use_ssl: bool) -> tuple[dict[str, Any], dict[str, str | None], bool]:
    """security_protocol and SASL from the scheme, URL credentials and options; TLS file paths checked."""
    url = settings.url
    mechanism = settings.take_str("sasl_mechanism")
    username = settings.take_str("sasl_plain_username", url.username)
    password = settings.take_str("sasl_plain_password", url.password)
    cafile = settings.take_str("ssl_cafile")
    certfile = settings.take_str("ssl_certfile")
    keyfile = settings.take_str("ssl_keyfile")
    key_password = settings.take_str("ssl_password")
    check_hostname = settings.take_bool("ssl_check_hostname", True)
    if not use_ssl and (cafile or certfile or keyfile or key_password):
        raise ConfigError(f"{_where(settings)}: ssl_* options need a kafka+ssl:// URL")
    for key, path in (("ssl_cafile", cafile), ("ssl_certfile", certfile), ("ssl_keyfile", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{_where(settings)}: {key} {path!r} is not a readable file")
    if keyfile and not certfile:
        raise ConfigError(f"{_where(settings)}: ssl_keyfile needs ssl_certfile")
    if mechanism is None and (username or password):
        mechanism = "PLAIN"
    connection: dict[str, Any] = {}
    if mechanism is not None:
        mechanism = mechanism.upper()
        if mechanism not in _SASL_MECHANISMS:
            raise ConfigError(
                f"{_where(settings)}: sasl_mechanism must be one of {', '.join(_SASL_MECHANISMS)}, got {mechanism!r}"
            )
        if not username or password is None:
            raise ConfigError(
                f"{_where(settings)}: SASL {mechanism} needs a user name and password "
                "(kafka://user:pass@host/ or sasl_plain_username / sasl_plain_password)"
            )
        connection.update(sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password)
        connection["security_protocol"] = "SASL_SSL" if use_ssl else "SASL_PLAINTEXT"
    else:
        connection["security_protocol"] = "SSL" if use_ssl else "PLAINTEXT"
    files: dict[str, str | None] = {}
    if use_ssl:
        files = {"cafile": cafile, "certfile": certfile, "keyfile": keyfile, "password": key_password}
    return connection, files, check_hostname


def parse_options(settings: TransportSettings) -> KafkaOptions:
    """Take every Kafka option from ``settings`` (and call ``finish()``), or raise ConfigError."""
    use_ssl = settings.url.scheme == "kafka+ssl"
    servers = _bootstrap(settings)
    topics = _topics(settings)
    topic_mode = settings.take_choice("topic_mode", ("per_priority", "single"), "per_priority")
    key_fields = tuple(settings.take_list("key_field", DEFAULT_KEY_FIELDS))
    acks = _acks(settings)
    idempotence = settings.take_bool("enable_idempotence", True)
    if idempotence and acks != "all":
        raise ConfigError(f"{_where(settings)}: enable_idempotence=true needs acks=all (got acks={acks})")
    connection, ssl_files, check_hostname = _security(settings, use_ssl)
    connection.update(
        client_id=settings.take_str("client_id", "notifykit"),
        request_timeout_ms=_ms(settings, "request_timeout_ms", 30_000, 1),
        retry_backoff_ms=_ms(settings, "retry_backoff_ms", 100),
        metadata_max_age_ms=_ms(settings, "metadata_max_age_ms", 300_000, 1),
        connections_max_idle_ms=_ms(settings, "connections_max_idle_ms", 540_000, 1),
    )
    producer = dict(
        acks=acks,
        enable_idempotence=idempotence,
        linger_ms=_ms(settings, "linger_ms", 0),
        max_batch_size=_ms(settings, "max_batch_size", 65_536, 1),
        max_request_size=_ms(settings, "max_request_size", 1_048_576, 1),
        compression_type=_compression(settings),
    )
    tail_offset = settings.take_choice("auto_offset_reset", ("latest", "earliest"), "latest")
    settings.finish()
    return KafkaOptions(
        bootstrap_servers=servers,
        topics=topics,
        topic_mode=topic_mode,
        key_fields=key_fields,
        producer=producer,
        connection=connection,
        ssl_files=ssl_files,
        ssl_check_hostname=check_hostname,
        tail_offset=tail_offset,
    )
