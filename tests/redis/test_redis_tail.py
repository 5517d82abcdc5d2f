"""``notifykit tail redis://…``: XREAD from the end (or the start) of every stream of the URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.cli import main
from notifykit.transport import TransportSettings, decode_message, parse_url
from notifykit.transports.redis import RedisTransport

from .support import free_port

pytestmark = pytest.mark.broker


async def emit(url: str, dead_letters: Path, events: list[tuple[str, str]]) -> None:
    async with Notifier.from_url(url, publisher_id="backup.h1", dead_letters=dead_letters) as n:
        for priority, event_type in events:
            await n.notify({}, event_type, {"backup_id": "b-1"}, priority=priority)


def test_cli_tail_from_the_start_prints_the_matching_entries(
        machine_redis: str, keys: Callable[[str], str], dead_letter_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stream = keys("s")
    url = f"{machine_redis}?stream={stream}&format=oslo"
    anyio.run(emit, url, dead_letter_path,
              [("info", "backup.create.start"), ("error", "backup.create.error"), ("info", "backup.create.end")])
    assert main(["tail", f"{url}&tail_from=earliest", "--json", "--event-type", "backup.create.e*", "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["event_type"] for m in lines] == ["backup.create.error", "backup.create.end"]
    assert {m["format"] for m in lines} == {"oslo"}


def test_cli_tail_with_no_server_is_a_clear_error_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0?connect_timeout=1"]) == 2
    err = capsys.readouterr().err
    assert "notifykit: error: redis redis://:***@127.0.0.1" in err and "s3cret" not in err


@pytest.mark.asyncio
async def test_tail_starts_at_the_end_by_default(machine_redis: str, keys: Callable[[str], str],
                                                 dead_letter_path: Path) -> None:
    stream = keys("s")
    url = f"{machine_redis}?stream={stream}"
    await emit(url, dead_letter_path, [("warn", "backup.old")])
    parsed = parse_url(url)
    settings = TransportSettings.build("tail", parsed, RedisTransport.default_format, ("notifications",),
                                       {"stream": stream})
    seen: list[str] = []
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as n:
        tail = RedisTransport.tail(settings)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                async def keep_emitting() -> None:
                    while True:  # the reader's position is taken when it starts: emit until it sees two
                        await n.warn({}, "backup.new", {"backup_id": "b-1"})
                        await anyio.sleep(0.05)

                tg.start_soon(keep_emitting)
                async for body in tail:
                    seen.append(decode_message(body)["event_type"])
                    if len(seen) == 2:
                        break
                tg.cancel_scope.cancel()
        await tail.aclose()  # type: ignore[attr-defined]
    assert seen == ["backup.new", "backup.new"]
