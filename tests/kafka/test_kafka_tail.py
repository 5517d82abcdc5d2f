"""``notifykit tail kafka://…`` against the Tansu broker."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

from notifykit import Notifier
from notifykit.cli import main
from notifykit.transport import TransportSettings, decode_message, parse_url
from notifykit.transports.kafka import KafkaTransport

from .records import NO_IDEMPOTENCE, unique_topic
from .tansu import Tansu

pytestmark = pytest.mark.broker


async def emit(url: str, dead_letters: Path, events: list[tuple[str, str]]) -> None:
    async with Notifier.from_url(url, publisher_id="backup.h1", dead_letters=dead_letters) as n:
        for priority, event_type in events:
            await n.notify({}, event_type, {"backup_id": "b-1"}, priority=priority)


def test_cli_tail_prints_every_priority_topic_from_the_beginning(
    kafka_broker: Tansu, dead_letter_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[bool] = []

    class RecordingConsumer(AIOKafkaConsumer):  # type: ignore[misc]
        async def stop(self) -> None:
            await super().stop()
            stopped.append(True)

    monkeypatch.setattr("notifykit.transports.kafka.AIOKafkaConsumer", RecordingConsumer)
    topic = unique_topic()
    url = f"kafka://{kafka_broker.bootstrap}/?topic={topic}&{NO_IDEMPOTENCE}&format=oslo"
    anyio.run(emit, url, dead_letter_path,
              [("info", "backup.create.start"), ("error", "backup.create.error"), ("info", "backup.create.end")])
    assert main(["tail", f"{url}&auto_offset_reset=earliest", "--json", "--event-type", "backup.create.e*",
                 "--limit", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(m["event_type"] for m in lines) == ["backup.create.end", "backup.create.error"]
    assert {m["format"] for m in lines} == {"oslo"}
    assert {m["priority"] for m in lines} == {"info", "error"}
    assert stopped == [True]  # --limit ended the tail and its consumer left the broker


def test_cli_tail_with_no_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from .tansu import free_port

    assert main(["tail", f"kafka://u:s3cret@127.0.0.1:{free_port()}/?request_timeout_ms=2000"]) == 2
    err = capsys.readouterr().err
    assert "notifykit: error: kafka kafka://u:***@127.0.0.1" in err and "s3cret" not in err


@pytest.mark.asyncio
async def test_tail_starts_at_the_end_by_default(kafka_broker: Tansu, dead_letter_path: Path) -> None:
    topic = unique_topic()
    url = f"kafka://{kafka_broker.bootstrap}/?topic={topic}&{NO_IDEMPOTENCE}"
    await emit(url, dead_letter_path, [("warn", "backup.old")])  # same topic and key as the new ones
    parsed = parse_url(url)
    options = {key: [value] for key, value in parsed.query if key != "topic"}
    settings = TransportSettings.build("tail", parsed, KafkaTransport.default_format, (topic,), options)
    seen: list[str] = []
    async with Notifier.from_url(url, publisher_id="p", dead_letters=dead_letter_path) as n:
        tail = KafkaTransport.tail(settings)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                async def keep_emitting() -> None:
                    while True:  # the consumer's position is set when it is assigned: emit until it sees one
                        await n.warn({}, "backup.new", {"backup_id": "b-1"})
                        await anyio.sleep(0.1)

                tg.start_soon(keep_emitting)
                async for body in tail:
                    seen.append(decode_message(body)["event_type"])
                    if len(seen) == 2:
                        break
                tg.cancel_scope.cancel()
        await tail.aclose()  # type: ignore[attr-defined]
    assert seen == ["backup.new", "backup.new"]
