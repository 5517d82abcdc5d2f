"""Where a configured transport puts each event type: its server and addresses (routing keys,
topics, subjects, streams), for the AsyncAPI document of ``notifykit.asyncapi``.

The transport is built from its configuration exactly as a Notifier builds it (its options
parsed and checked, nothing connected), and the transport itself says the rest: its
class's ``asyncapi_protocols`` (by URL scheme) and its ``asyncapi_routes()``, from its
parsed options. The core knows no transport's addressing; one that declares nothing (``log``,
``memory``, a plugin) gets one channel with no address and no server: AsyncAPI's way of
saying the address is not known in advance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._asyncapi_routes import Route
from ._config import TransportConfig
from ._formats import WireFormat
from ._loading import resolve_transport
from ._message import Priority
from ._url import parse_url

__all__ = ["Destination", "Route", "destination", "transport_name"]


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
    protocol = cls.asyncapi_protocols.get(url.scheme)
    host = None
    if protocol is not None and url.hosts:
        host = ",".join(f"{h.host}:{h.port}" if h.port else str(h.host) for h in url.hosts)
    said = transport.asyncapi_routes(events)
    return Destination(name=name, scheme=url.scheme, protocol=protocol, host=host, pathname=said.pathname,
                       format=settings.format, routes=said.routes, operation_bindings=said.operation_bindings)
