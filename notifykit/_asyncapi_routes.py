"""What a transport tells the AsyncAPI document about itself: where each event type goes.

The core knows no transport's addressing (routing keys, topics, subjects, streams): each
transport answers :meth:`Transport.asyncapi_routes` from its own parsed options, with
these plain values, and ``notifykit.asyncapi`` writes them into the document as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._message import Priority

__all__ = ["AsyncApiRoutes", "Route", "events_by_priority"]


@dataclass(frozen=True, slots=True)
class Route:
    """One address (an AsyncAPI channel) and the event types the transport sends there.

    ``address`` None means it is not known in advance; ``bindings`` are the channel's
    AsyncAPI bindings (``{"amqp": {...}}``), written as given.
    """

    address: str | None
    events: tuple[str, ...]
    bindings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AsyncApiRoutes:
    """A configured transport's channels, the bindings of its ``send`` operations, and its
    server's ``pathname`` (a path on the host that is part of the address, as a webhook's)."""

    routes: tuple[Route, ...]
    operation_bindings: dict[str, Any] = field(default_factory=dict)
    pathname: str | None = None


def events_by_priority(events: Sequence[tuple[str, Priority]]) -> dict[Priority, tuple[str, ...]]:
    """The event types of ``events`` (event type, priority) grouped by priority, in first-seen order."""
    grouped: dict[Priority, list[str]] = {}
    for event, priority in events:
        grouped.setdefault(priority, []).append(event)
    return {p: tuple(names) for p, names in grouped.items()}
