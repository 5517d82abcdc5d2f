"""``notifykit tail amqp://…``: a temporary queue sees what is published, filtered by event type."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import aio_pika
import anyio
import pytest

from notifykit import Notifier
from notifykit.cli import main, tail

from .support import Names, amqp_connection, free_port

pytestmark = [pytest.mark.broker]


async def publish_until(done: anyio.Event, url: str, dead_letter_path: Path) -> None:
    """Publish a matching and a non-matching event every few ms until the tail has what it wants."""
    async with Notifier.from_url(url, publisher_id="backup.h", dead_letters=dead_letter_path) as notifier:
        i = 0
        while not done.is_set():
            await notifier.info({}, "volume.attach", {"i": i})
            await notifier.error({}, "backup.create.error", {"i": i})
            i += 1
            await anyio.sleep(0.02)


@pytest.mark.asyncio
@pytest.mark.parametrize("exchange_exists", ["no", "non-durable"])
async def test_tail_prints_matching_notifications_as_json(broker: str, names: Names, dead_letter_path: Path,
                                                         exchange_exists: str) -> None:
    if exchange_exists == "non-durable":  # as oslo.messaging declares it by default
        async with amqp_connection() as connection:
            channel = await connection.channel()
            await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=False)
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}"
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
            await publish_until(done, url, dead_letter_path)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == 3 and len(lines) == 3
    assert {m["event_type"] for m in lines} == {"backup.create.error"}
    assert {m["priority"] for m in lines} == {"error"}
    assert {m["format"] for m in lines} == {"oslo"}
    assert [m["payload"]["i"] for m in lines] == sorted(m["payload"]["i"] for m in lines)


@pytest.mark.asyncio
async def test_tail_command_line_one_line_form(broker: str, names: Names, dead_letter_path: Path) -> None:
    url = f"{broker}?exchange={names.exchange}&topic={names.topic}&format=cloudevents"
    done = anyio.Event()
    command = [sys.executable, "-m", "notifykit.cli", "tail", url, "--event-type", "volume.*", "--lines", "--limit", "2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result: subprocess.CompletedProcess[bytes] | None = None

    async def run_cli() -> None:
        nonlocal result
        result = await anyio.run_process(command, env=env, check=False)
        done.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_cli)
            await publish_until(done, url, dead_letter_path)
    assert result is not None
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert " INFO     volume.attach [backup.h] {\"i\":" in line
    assert b"guest:guest" not in result.stderr


def test_tail_of_unreachable_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["tail", f"amqp://guest:hunter2@127.0.0.1:{port}/?connect_timeout=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"notifykit: error: cannot connect to amqp://guest:***@127.0.0.1:{port}/")
    assert "hunter2" not in err
