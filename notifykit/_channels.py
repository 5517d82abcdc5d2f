"""Where a configured transport puts each event type: its server and addresses (routing keys,
topics, subjects, streams), for the AsyncAPI document of ``notifykit.asyncapi``.

The transport is built from its configuration exactly as a Notifier builds it (its options
parsed and checked, nothing connected), and its parsed options give the addresses. A
transport this module does not know (``log``, ``memory``, a plugin) gets one channel with
no address: AsyncAPI's way of saying the address is not known in advance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import TransportConfig
from ._formats import WireFormat
from ._loading import resolve_transport
from ._message import Priority
from ._url import parse_url

__all__ = ["Destination", "Route", "destination", "transport_name"]

#: AsyncAPI's protocol names (its server ``protocol`` field) by URL scheme.
PROTOCOLS = {
    "amqp": "amqp", "amqps": "amqps", "kafka": "kafka", "kafka+ssl": "kafka-secure", "nats": "nats",
    "nats+tls": "nats", "redis": "redis", "rediss": "redis", "mqtt": "mqtt", "mqtts": "secure-mqtt",
    "http": "http", "https": "https",
}


@dataclass(frozen=True, slots=True)
class Route:
    """One address and the event types the transport sends there."""

    address: str | None
    events: tuple[str, ...]
    bindings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Destination:
    """One transport: its server (None for ``log``/``memory``), wire format and routes."""

    name: str
    scheme: str
    protocol: str | None
    host: str | None
    pathname: str | None
    format: WireFormat
    routes: tuple[Route, ...]
    operation_bindings: dict[str, Any] = field(default_factory=dict)


def transport_name(config: TransportConfig, taken: set[str]) -> str:
    """The name a Notifier gives this transport (its ``name``, else its scheme; ``-2``… when taken)."""
    base = config.name or parse_url(config.url).scheme
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def destination(name: str, config: TransportConfig, events: Sequence[tuple[str, Priority]]) -> Destination:
    """The transport ``config`` as a Notifier would build it, and where each of ``events``
    (event type, priority) goes. Raises ConfigError for a bad URL or option, as the Notifier would."""
    cls, settings = resolve_transport(name, config)
    transport = cls.from_settings(settings)  # parses and checks its options; connects nothing
    url = settings.url
    protocol = PROTOCOLS.get(url.scheme)
    host = None
    if protocol is not None and url.hosts:
        host = ",".join(f"{h.host}:{h.port}" if h.port else str(h.host) for h in url.hosts)
    pathname = url.path if protocol in ("http", "https") and url.path not in ("", "/") else None
    routes, operation_bindings = _routes(url.scheme, settings.topics, transport.options, events)
    return Destination(name=name, scheme=url.scheme, protocol=protocol, host=host, pathname=pathname,
                       format=settings.format, routes=routes, operation_bindings=operation_bindings)


def _by_priority(events: Sequence[tuple[str, Priority]]) -> dict[Priority, tuple[str, ...]]:
    grouped: dict[Priority, list[str]] = {}
    for event, priority in events:
        grouped.setdefault(priority, []).append(event)
    return {p: tuple(names) for p, names in grouped.items()}


def _routes(scheme: str, topics: Sequence[str], options: Any, events: Sequence[tuple[str, Priority]],
            ) -> tuple[tuple[Route, ...], dict[str, Any]]:
    """The transports' own addressing rules (see docs/transports/*.md), from their parsed options."""
    every = tuple(e for e, _ in events)
    by_priority = _by_priority(events)
    if scheme in ("amqp", "amqps"):
        exchange = {"name": options.exchange, "type": "topic", "durable": bool(options.entities_durable),
                    "autoDelete": False, "vhost": options.vhost}
        return tuple(Route(f"{topic}.{p.value}", names, {"amqp": {"is": "routingKey", "exchange": exchange,
                                                                   "bindingVersion": "0.3.0"}})
                     for topic in topics for p, names in by_priority.items()), {}
    if scheme.startswith("kafka"):
        if options.topic_mode == "single":
            pairs = [(topic, every) for topic in options.topics]
        else:
            pairs = [(f"{topic}.{p.value}", names) for topic in options.topics for p, names in by_priority.items()]
        return tuple(Route(address, names, {"kafka": {"topic": address, "bindingVersion": "0.5.0"}})
                     for address, names in pairs), {}
    if scheme.startswith("nats"):
        return tuple(Route(f"{options.subject}.{event}", (event,)) for event in every), {}
    if scheme.startswith("redis"):
        return tuple(Route(stream, every) for stream in options.streams), {}
    if scheme.startswith("mqtt"):
        return tuple(Route(f"{topic}/{priority.value}/{event}", (event,))
                     for topic in options.topics for event, priority in events), {}
    if scheme in ("http", "https"):
        return (Route(parse_url(options.target).path or "/", every),), {"http": {"method": "POST", "bindingVersion": "0.3.0"}}
    return (Route(None, every),), {}
