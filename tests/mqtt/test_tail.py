"""``notifykit tail mqtt://…``: a subscription of its own sees what is published, filtered by event type."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.cli import tail

pytestmark = [pytest.mark.asyncio, pytest.mark.broker]


async def test_tail_prints_matching_notifications_and_leaves_other_subscribers_theirs(
        broker: str, prefix: str, dead_letter_path: Path) -> None:
    url = f"{broker}?topic={prefix}"
    out = io.StringIO()
    done = anyio.Event()
    printed = 0

    async def run_tail() -> None:
        nonlocal printed
        printed = await tail(url, "backup.*", True, out, limit=3)
        done.set()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_tail)
            async with Notifier.from_url(url, publisher_id="backup.h", dead_letters=dead_letter_path) as notifier:
                i = 0
                while not done.is_set():
                    await notifier.info({}, "volume.attach", {"i": i})
                    await notifier.error({}, "backup.create.error", {"i": i})
                    i += 1
                    await anyio.sleep(0.02)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == 3 and len(lines) == 3
    assert {m["event_type"] for m in lines} == {"backup.create.error"}
    assert {m["priority"] for m in lines} == {"error"}
