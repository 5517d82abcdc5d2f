"""AMQP publishes are children of send()'s task group (issue 23, reproduction 12).

send() created one raw asyncio task per (message, topic); when the caller was cancelled it
cancelled them but did not wait for them, and they lived outside any task group. Now a
cancelled or timed-out send() returns only once every publish it started has ended.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from notifykit import Notification, Notifier
from notifykit.transport import BatchError
from notifykit.transports.amqp import AmqpTransport

from .support import CuttableProxy, Names

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


def publishes_running() -> list[asyncio.Task[object]]:
    """Tasks of this loop still running a publish (ours, or aiormq's basic_publish)."""
    return [task for task in asyncio.all_tasks() if not task.done()
            and getattr(task.get_coro(), "__qualname__", "").endswith(("basic_publish", "_publish_one"))]


async def transport_through(proxy: CuttableProxy, names: Names, dead_letter_path: Path, **options: str) -> AmqpTransport:
    query = "&".join(f"{k}={v}" for k, v in {"exchange": names.exchange, "topic": names.topic, **options}.items())
    notifier = Notifier.from_url(f"amqp://guest:guest@127.0.0.1:{proxy.port}/?{query}", publisher_id="p",
                                 dead_letters=dead_letter_path)
    transport = notifier.transports["amqp"]
    assert isinstance(transport, AmqpTransport)
    await transport.open()
    await transport.send([Notification.create("e.t", {"warm": True}, publisher_id="p")])  # queues declared
    return transport


async def test_a_cancelled_send_leaves_no_publish_running(broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        transport = await transport_through(proxy, names, dead_letter_path, confirm_timeout="30")
        try:
            batch = [Notification.create("e.t", {"i": i}, publisher_id="p") for i in range(200)]
            proxy.hold()  # no confirm comes back: every publish waits for one
            with anyio.move_on_after(0.5) as scope:
                await transport.send(batch)
            assert scope.cancelled_caught
            assert publishes_running() == []  # all ended before send() gave the cancellation back
            assert transport.connects == 1  # the cancellation happened while publishing, not connecting
        finally:
            proxy.release()
            await transport.aclose()


async def test_a_timed_out_send_reports_each_message_and_leaves_no_publish_running(
        broker: str, names: Names, dead_letter_path: Path) -> None:
    async with CuttableProxy() as proxy:
        transport = await transport_through(proxy, names, dead_letter_path, confirm_timeout="0.3")
        try:
            batch = [Notification.create("e.t", {"i": i}, publisher_id="p") for i in range(50)]
            proxy.hold()
            with anyio.fail_after(10), pytest.raises(BatchError) as info:
                await transport.send(batch)
            assert sorted(info.value.failures) == list(range(50))
            assert {str(e) for e in info.value.failures.values()} == {"not confirmed within confirm_timeout=0.3s"}
            assert publishes_running() == []
        finally:
            proxy.release()
            await transport.aclose()
