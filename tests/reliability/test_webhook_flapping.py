"""A webhook receiver that flaps (500s, timeouts, connection refused): everything arrives
after recovery; what it rejects with 4xx is dead-lettered with its reason and re-drivable."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from notifykit import Notifier
from notifykit.cli import main as cli_main
from notifykit.deadletters import read_dead_letters

from ..webhook.receiver import Received, Receiver, Reply

pytestmark = pytest.mark.asyncio


class FlappingReceiver(Receiver):
    """Answers by ``mode``: ``ok`` (200), ``error`` (503), ``slow`` (200 past the client's
    timeout); poison events always get 400 until ``accept_poison``. Records what it
    accepted (answered 200)."""

    def __init__(self, delivered: list[str], port: int | None = None) -> None:
        super().__init__(port)
        self.mode = "ok"
        self.accept_poison = False
        self.delivered = delivered  # shared by the receivers that follow each other on one port

    def _reply_for(self, request: Received) -> Reply:
        event = json.loads(request.body)
        if event["type"] == "backup.poison" and not self.accept_poison:
            return Reply(400, body=b'{"error": "schema violation: no volume_id"}')
        if self.mode == "error":
            return Reply(503, headers={"Retry-After": "0"})
        self.delivered.append(event["id"])  # accepted: answered 200 (maybe too late for the client)
        if self.mode == "slow":
            return Reply(200, delay=1.0)  # past the client's 0.3 s timeout: it retries (at least once)
        return Reply(200)


async def test_flapping_receiver_loses_nothing(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    delivered: list[str] = []
    receiver = FlappingReceiver(delivered)
    url = (f"{receiver.url}?timeout=0.3&max_concurrency=4&retry_initial_delay=0.01&retry_max_delay=0.2"
           "&retry_max_elapsed=120&circuit_failure_threshold=5&circuit_reset_timeout=0.2")
    emitted: set[str] = set()
    poison: set[str] = set()
    notifier = Notifier.from_url(url, publisher_id="backup.h", dead_letters=dead)
    try:
        async with notifier as n:

            async def emit(count: int, tag: str) -> None:
                for i in range(count):
                    event = "backup.poison" if i % 10 == 9 else "backup.createprogress"
                    note = await n.info({}, event, {"phase": tag, "i": i})
                    (poison if event == "backup.poison" else emitted).add(note.message_id)

            await emit(40, "refused")  # nothing listens yet: connection refused
            await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(receiver.start)
            for mode in ("error", "slow", "error", "ok", "slow"):
                receiver.mode = mode
                await emit(20, mode)
                await anyio.sleep(0.3)
            await anyio.to_thread.run_sync(receiver.stop)  # refused again
            await emit(20, "down-again")
            await anyio.sleep(0.3)
            receiver = FlappingReceiver(delivered, receiver.port)  # back on the same port, healthy
            await anyio.to_thread.run_sync(receiver.start)
            with anyio.fail_after(60):
                while n.stats()["http"].sent + n.stats()["http"].dead_lettered < len(emitted) + len(poison):
                    await anyio.sleep(0.05)
        stats = notifier.stats()["http"]
        assert stats.retried > 0
        assert stats.sent == len(emitted) and stats.dead_lettered == len(poison)
        assert set(delivered) >= emitted  # every one accepted by the receiver, at least once
        assert not set(delivered) & poison
        records = list(read_dead_letters(dead))
        assert {r["message"]["message_id"] for r in records} == poison
        assert all("400" in r["reason"] and "schema violation" in r["reason"] for r in records)

        # Re-drive: the receiver now accepts them; the dead-letter file empties.
        receiver.accept_poison = True
        code = await anyio.to_thread.run_sync(cli_main, ["deadletters", "replay", "--file", str(dead), "--url", url])
        assert code == 0
        assert poison <= set(delivered)
        assert list(read_dead_letters(dead)) == []
    finally:
        receiver.stop()
