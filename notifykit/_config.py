"""Explicit configuration objects, built from a URL or a TOML file/mapping."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ._deadletter import DEFAULT_DEAD_LETTER_MAX_BYTES
from ._errors import ConfigError, InvalidNotificationError
from ._formats import WireFormat
from ._message import Priority, validate_publisher_id
from ._numbers import check_number
from ._policies import CircuitPolicy, Filter, OverflowPolicy, RetryPolicy
from ._settings import FALSE_WORDS, TRUE_WORDS
from ._spool import DEFAULT_SPOOL_MAX_BYTES, SpoolSync
from ._url import parse_url, redact_url

__all__ = ["NotifierConfig", "TransportConfig"]

DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_BLOCK_TIMEOUT = 5.0
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_CLOSE_TIMEOUT = 10.0
DEFAULT_TOPICS = ("notifications",)
DEFAULT_SPOOL_MAX_MESSAGES = 1_000_000


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """One transport: where (URL), how (format, topics, options) and the delivery policies.

    The URL may carry secrets; ``repr`` shows it redacted.
    """

    url: str
    name: str | None = None
    format: WireFormat | None = None
    topics: tuple[str, ...] = DEFAULT_TOPICS
    filter: Filter = field(default_factory=Filter)
    queue_size: int = DEFAULT_QUEUE_SIZE
    overflow: OverflowPolicy = OverflowPolicy.BLOCK
    block_timeout: float | None = DEFAULT_BLOCK_TIMEOUT
    batch_size: int | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    options: Mapping[str, str | Sequence[str]] = field(default_factory=dict)
    durable: bool = False
    spool_max_messages: int = DEFAULT_SPOOL_MAX_MESSAGES

    def __post_init__(self) -> None:
        # Every way of building one (URL, TOML, from_config, keyword overrides through
        # replace()) ends here: a value of the wrong kind is parsed or refused, never passed on.
        object.__setattr__(self, "overflow", OverflowPolicy.parse(self.overflow))  # ConfigError names it
        if self.format is not None:
            try:
                object.__setattr__(self, "format", WireFormat.parse(self.format))
            except ValueError as exc:
                raise ConfigError(f"format: {exc}") from None
        for key, kind in (("retry", RetryPolicy), ("circuit", CircuitPolicy), ("filter", Filter)):
            if not isinstance(getattr(self, key), kind):
                raise ConfigError(f"{key} must be a {kind.__name__}, got {type(getattr(self, key)).__name__}"
                                  f" (in a URL or table, use the {key}_* keys)")
        if isinstance(self.topics, str) or not all(isinstance(t, str) for t in self.topics):
            raise ConfigError(f"topics must be a sequence of strings, got {self.topics!r}")
        object.__setattr__(self, "topics", tuple(self.topics))
        if not isinstance(self.durable, bool):
            raise ConfigError(f"durable must be true or false, got {self.durable!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ConfigError(f"name must be a string, got {self.name!r}")
        if not isinstance(self.options, Mapping):
            raise ConfigError("options must be a mapping of option names to strings")
        check_number("spool_max_messages", self.spool_max_messages, kind=int, minimum=1)
        check_number("queue_size", self.queue_size, kind=int, minimum=1)
        if self.batch_size is not None:
            check_number("batch_size", self.batch_size, kind=int, minimum=1)
        if self.block_timeout is not None:  # 0: refuse at once when the queue is full
            check_number("block_timeout", self.block_timeout, minimum=0)
        if not self.topics:
            raise ConfigError("topics must name at least one topic")

    def __repr__(self) -> str:
        return f"TransportConfig(name={self.name!r}, url={redact_url(self.url)!r}, format={self.format})"

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> TransportConfig:
        """Core keys in the query string (format, topics, queue_size, overflow, retry_*,
        circuit_*, event_types, min_priority, …) set policies; the rest are the transport's."""
        parsed = parse_url(url)
        core: dict[str, Any] = {}
        keys: list[str] = []
        for key, value in parsed.query:
            if key in _URL_KEYS:
                keys.append(key)
                core.setdefault(key, []).append(value)
        table: dict[str, Any] = {}
        for key, values in core.items():
            table[key] = values if key in _LIST_KEYS else values[-1]
        remaining = [(k, v) for k, v in parsed.query if k not in _URL_KEYS]
        options: dict[str, list[str]] = {}
        for key, value in remaining:
            options.setdefault(key, []).append(value)
        base = _strip_query(url, set(keys))
        config = _transport_from_table(table | {"url": base}, where=parsed.redacted, coerce_strings=True)
        config = replace(config, options=options)
        if not overrides:
            return config
        fields = set(cls.__dataclass_fields__)
        for key in overrides:
            if key in NotifierConfig.__dataclass_fields__ and key not in fields:
                raise ConfigError(f"{key!r} is a Notifier-wide setting, not a transport's: set it in NotifierConfig"
                                  f" (Notifier.from_config) or at the top level of the TOML file")
            if key not in fields:
                raise ConfigError(f"unknown keyword {key!r} for a transport ({parsed.redacted}); allowed:"
                                  f" {', '.join(sorted(fields - {'url'}))}")
        with _located(parsed.redacted):
            return replace(config, **overrides)


def _strip_query(url: str, core_keys: set[str]) -> str:
    """The URL without the core's own query keys (the transport sees only its options)."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [pair for pair in query.split("&") if pair and pair.split("=", 1)[0] not in core_keys]
    return f"{head}?{'&'.join(kept)}" if kept else head


# The keys each form accepts, read from the dataclasses' own fields (one source of truth: a
# field added to a config object is a TOML key and, if it is a scalar, a URL key at once).
_RETRY_KEYS = {f.name for f in fields(RetryPolicy)}
_CIRCUIT_KEYS = {f.name for f in fields(CircuitPolicy)}
_FILTER_KEYS = {f.name for f in fields(Filter)}
_TABLE_KEYS = {f.name for f in fields(TransportConfig)}
# URL query: TransportConfig's scalar fields, the filter's, retry_*/circuit_* and "topic" (one of topics)
_URL_KEYS = ((_TABLE_KEYS - {"url", "options", "filter", "retry", "circuit"}) | {"topic"} | _FILTER_KEYS
             | {f"retry_{key}" for key in _RETRY_KEYS} | {f"circuit_{key}" for key in _CIRCUIT_KEYS})
_LIST_KEYS = {"topic", "topics", "event_types"}


def _number(value: Any, key: str, where: str, kind: type[int] | type[float], *, none_ok: bool = False) -> Any:
    """Coerce a TOML or URL value to ``kind``. A value that is not one is passed through
    unchanged: the config object's check then names the option and its allowed range."""
    if none_ok and (value is None or (isinstance(value, str) and value.strip().lower() in {"none", "never", ""})):
        return None
    if isinstance(value, bool) or value is None:
        return value
    if kind is int and isinstance(value, float):
        return int(value) if value.is_integer() else value
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return value


def _str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise ConfigError(f"{where}: {key} must be a list of strings")
            items.extend(item.split(","))
    else:
        raise ConfigError(f"{where}: {key} must be a string or a list of strings")
    result = tuple(item.strip() for item in items if item.strip())
    if not result:
        raise ConfigError(f"{where}: {key} is empty")
    return result


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _sub_table(table: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _transport_from_table(table: Mapping[str, Any], *, where: str, coerce_strings: bool = False) -> TransportConfig:
    """Build a TransportConfig from a TOML table or from URL query keys (``retry_*``)."""
    flat = dict(table)
    nested_retry = dict(_sub_table(flat, "retry", where))
    nested_circuit = dict(_sub_table(flat, "circuit", where))
    nested_filter = dict(_sub_table(flat, "filter", where))
    if coerce_strings:  # URL form: retry_initial_delay=… etc.
        for key in list(flat):
            if key.startswith("retry_"):
                nested_retry[key[len("retry_"):]] = flat.pop(key)
            elif key.startswith("circuit_"):
                nested_circuit[key[len("circuit_"):]] = flat.pop(key)
            elif key in _FILTER_KEYS:
                nested_filter[key] = flat.pop(key)
        if "topic" in flat:
            flat["topics"] = list(flat.pop("topic")) + list(flat.pop("topics", []))
        flat.pop("retry", None), flat.pop("circuit", None), flat.pop("filter", None)
    else:
        _check_keys(flat, _TABLE_KEYS, where)
    _check_keys(nested_retry, _RETRY_KEYS, f"{where} [retry]")
    _check_keys(nested_circuit, _CIRCUIT_KEYS, f"{where} [circuit]")
    _check_keys(nested_filter, _FILTER_KEYS, f"{where} [filter]")

    url = flat.get("url")
    if not isinstance(url, str) or not url:
        raise ConfigError(f"{where}: 'url' is required and must be a string")
    parse_url(url)  # malformed URLs fail here, at configuration time

    with _located(where):
        retry = RetryPolicy(**_policy_fields(nested_retry, RetryPolicy(), "retry", where,
                                             {"max_attempts": int}, nullable={"max_elapsed", "max_attempts"}))
        circuit = CircuitPolicy(**_policy_fields(nested_circuit, CircuitPolicy(), "circuit", where,
                                                 {"failure_threshold": int}))
    min_priority = nested_filter.get("min_priority")
    flt = Filter(
        event_types=_str_list(nested_filter["event_types"], "event_types", where) if "event_types" in nested_filter else ("*",),
        min_priority=None if min_priority is None else _priority(min_priority, where),
    )
    options = flat.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"{where}: [options] must be a table")
    name = flat.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{where}: name must be a string")
    fmt = flat.get("format")
    fields: dict[str, Any] = dict(
        url=url,
        name=name,
        format=None if fmt is None else WireFormat.parse(fmt),
        topics=_str_list(flat["topics"], "topics", where) if "topics" in flat else DEFAULT_TOPICS,
        filter=flt,
        queue_size=_number(flat.get("queue_size", DEFAULT_QUEUE_SIZE), "queue_size", where, int),
        overflow=OverflowPolicy.parse(flat.get("overflow", OverflowPolicy.BLOCK)),
        block_timeout=_number(flat.get("block_timeout", DEFAULT_BLOCK_TIMEOUT), "block_timeout", where, float, none_ok=True),
        batch_size=_number(flat.get("batch_size"), "batch_size", where, int, none_ok=True),
        retry=retry,
        circuit=circuit,
        options={str(k): _option_value(v, str(k), where) for k, v in options.items()},
        durable=_boolean(flat.get("durable", False), "durable", where),
        spool_max_messages=_number(flat.get("spool_max_messages", DEFAULT_SPOOL_MAX_MESSAGES), "spool_max_messages",
                                   where, int),
    )
    with _located(where):
        return TransportConfig(**fields)


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Prefix a range error raised by a config object with the file or URL it came from."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _boolean(value: Any, key: str, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")


def _policy_fields(table: Mapping[str, Any], defaults: Any, prefix: str, where: str,
                   kinds: Mapping[str, type[int]], nullable: set[str] | None = None) -> dict[str, Any]:
    """Typed policy fields from a TOML/URL table, falling back to the dataclass defaults."""
    values: dict[str, Any] = {}
    for name in defaults.__dataclass_fields__:
        raw = table.get(name, getattr(defaults, name))
        kind: type[int] | type[float] = kinds.get(name, float)
        values[name] = _number(raw, f"{prefix}.{name}", where, kind, none_ok=name in (nullable or set()))
    return values


def _priority(value: Any, where: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: min_priority: {exc}") from None


def _option_value(value: Any, key: str, where: str) -> str | list[str]:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{where}: option {key!r} must be a string, number, boolean or list of them")


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """Everything a Notifier needs: its transports and the notifier-wide settings."""

    transports: tuple[TransportConfig, ...]
    publisher_id: str = "notifykit"
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    dead_letter_path: Path | None = None
    dead_letter_max_bytes: int = DEFAULT_DEAD_LETTER_MAX_BYTES
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT
    spool_path: Path | None = None
    spool_sync: str = "write"
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    status_path: Path | None = None
    status_interval: float = 5.0

    def __post_init__(self) -> None:
        if not self.transports:
            raise ConfigError("a Notifier needs at least one transport")
        check_number("max_payload_bytes", self.max_payload_bytes, kind=int, minimum=1)
        check_number("close_timeout", self.close_timeout, minimum=0)  # 0: no drain, leftovers kept/dead-lettered
        check_number("status_interval", self.status_interval, minimum=0, above=True)
        try:
            validate_publisher_id(self.publisher_id)
        except InvalidNotificationError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "spool_sync", SpoolSync.parse(self.spool_sync).value)
        check_number("spool_max_bytes", self.spool_max_bytes, kind=int, minimum=4096)
        check_number("dead_letter_max_bytes", self.dead_letter_max_bytes, kind=int, minimum=4096)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "configuration") -> NotifierConfig:
        """Top-level keys publisher_id, max_payload_bytes, dead_letter_path, close_timeout,
        and a ``[transports.NAME]`` table per transport."""
        _check_keys(data, _NOTIFIER_KEYS, where)
        tables = data.get("transports")
        if not isinstance(tables, Mapping) or not tables:
            raise ConfigError(f"{where}: needs at least one [transports.NAME] table with a url")
        transports = []
        for name, table in tables.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"{where}: [transports.{name}] must be a table")
            config = _transport_from_table(table, where=f"{where} [transports.{name}]")
            transports.append(replace(config, name=str(name)))
        dead = data.get("dead_letter_path")
        spool = data.get("spool_path")
        publisher_id = data.get("publisher_id", "notifykit")
        if not isinstance(publisher_id, str):
            raise ConfigError(f"{where}: publisher_id must be a string")
        fields: dict[str, Any] = dict(
            transports=tuple(transports),
            publisher_id=publisher_id,
            max_payload_bytes=_number(data.get("max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES), "max_payload_bytes", where, int),
            dead_letter_path=None if dead is None else Path(str(dead)),
            dead_letter_max_bytes=_number(data.get("dead_letter_max_bytes", DEFAULT_DEAD_LETTER_MAX_BYTES),
                                          "dead_letter_max_bytes", where, int),
            close_timeout=_number(data.get("close_timeout", DEFAULT_CLOSE_TIMEOUT), "close_timeout", where, float),
            spool_path=None if spool is None else Path(str(spool)),
            spool_sync=str(data.get("spool_sync", "write")),
            spool_max_bytes=_number(data.get("spool_max_bytes", DEFAULT_SPOOL_MAX_BYTES), "spool_max_bytes", where, int),
            status_path=None if data.get("status_path") is None else Path(str(data["status_path"])),
            status_interval=_number(data.get("status_interval", 5.0), "status_interval", where, float),
        )
        with _located(where):
            return cls(**fields)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> NotifierConfig:
        """Read a TOML file; a syntax error names the file and the line."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {str(path)!r}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text"
                              f" (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {str(path)!r}: {exc}") from None
        return cls.from_mapping(data, where=str(path))


_NOTIFIER_KEYS = {f.name for f in fields(NotifierConfig)}
