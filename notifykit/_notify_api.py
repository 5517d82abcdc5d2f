"""What code that emits notifications calls: notify() and one method per priority.

``SupportsNotify`` is the protocol an emitter depends on (a Notifier, a prepared view of
one, a test double); ``PriorityMethods`` derives ``info()``, ``error()`` … from
``notify()``; ``PreparedNotifier`` is a Notifier bound to another publisher_id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ._message import ContextLike, Notification, Priority

__all__ = ["PreparedNotifier", "PriorityMethods", "SupportsNotify", "SupportsNotifyAs"]


class SupportsNotify(Protocol):
    """What code that emits notifications depends on: a Notifier or a prepared view of one."""

    async def notify(
        self,
        ctx: ContextLike,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
    ) -> Notification: ...


class PriorityMethods:
    """One method per priority, as oslo.messaging's Notifier offers."""

    async def notify(
        self,
        ctx: ContextLike,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
    ) -> Notification:
        raise NotImplementedError

    async def audit(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.AUDIT)

    async def debug(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.DEBUG)

    async def info(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.INFO)

    async def warn(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.WARN)

    warning = warn

    async def error(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.ERROR)

    async def critical(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.CRITICAL)

    async def sample(self, ctx: ContextLike, event_type: str, payload: Mapping[str, Any]) -> Notification:
        return await self.notify(ctx, event_type, payload, priority=Priority.SAMPLE)


class SupportsNotifyAs(Protocol):
    """What a PreparedNotifier needs of its parent (a Notifier): notify() for any publisher_id."""

    async def notify(
        self,
        ctx: ContextLike,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
        publisher_id: str | None = None,
    ) -> Notification: ...


class PreparedNotifier(PriorityMethods):
    """A Notifier bound to another publisher_id (like oslo.messaging's ``prepare``)."""

    def __init__(self, parent: SupportsNotifyAs, publisher_id: str) -> None:
        self.parent = parent
        self.publisher_id = publisher_id

    async def notify(
        self,
        ctx: ContextLike,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        priority: Priority | str = Priority.INFO,
    ) -> Notification:
        return await self.parent.notify(ctx, event_type, payload, priority=priority, publisher_id=self.publisher_id)
