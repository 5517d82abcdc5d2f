"""The ``notifykit`` CLI: clear errors, and tail's output forms."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier, NotifierConfig, TransportConfig
from notifykit.cli import _one_line, main
from notifykit.deadletters import read_dead_letters
from notifykit.testing import MemoryTransport


def test_tail_of_untailable_transport_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "memory://"]) == 2
    assert "transport 'memory' cannot be tailed" in capsys.readouterr().err


def test_tail_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", "nope://x"]) == 2
    assert "unknown transport scheme 'nope'" in capsys.readouterr().err


def test_one_line_form() -> None:
    line = _one_line({"timestamp": "t", "priority": "info", "event_type": "backup.create.end",
                      "publisher_id": "backup.h", "payload": {"size": 1}})
    assert line == 't INFO     backup.create.end [backup.h] {"size":1}'


def make_dead_letters(tmp_path: Path) -> Path:
    """Two notifications rejected by a transport named 'billing', one good one delivered."""
    path = tmp_path / "dead.jsonl"

    async def run() -> None:
        async with Notifier.from_url("memory://?name=billing&reject=bad.*", publisher_id="t", dead_letters=path) as n:
            await n.info({}, "bad.one", {"i": 1})
            await n.info({}, "good.one", {"i": 2})
            await n.info({}, "bad.two", {"i": 3})

    anyio.run(run)
    return path


def test_deadletters_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_dead_letters(tmp_path)
    assert main(["deadletters", "list", "--file", str(path)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and "billing bad.one" in lines[0] and "rejected by memory transport" in lines[0]
    assert "# 2 dead letter(s)" in captured.err
    assert main(["deadletters", "list", "--file", str(path), "--transport", "other"]) == 0
    assert capsys.readouterr().out == ""


def test_deadletters_replay_removes_delivered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_dead_letters(tmp_path)
    ids = [r["message"]["message_id"] for r in read_dead_letters(path)]
    out = tmp_path / "redriven.jsonl"
    assert main(["deadletters", "replay", "--file", str(path), "--url", f"log://{out}?name=billing"]) == 0
    assert "replayed 2: 2 delivered, 0 dead-lettered again" in capsys.readouterr().out
    redriven = [json.loads(line) for line in out.read_text().splitlines()]
    assert [m["message_id"] for m in redriven] == ids  # same ids: consumers can de-duplicate
    assert list(read_dead_letters(path)) == []


def test_deadletters_replay_that_fails_again_keeps_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_dead_letters(tmp_path)
    assert main(["deadletters", "replay", "--file", str(path), "--url", "memory://?name=billing&reject=bad.two"]) == 1
    assert "replayed 2: 1 delivered, 1 dead-lettered again" in capsys.readouterr().out
    (left,) = list(read_dead_letters(path))
    assert left["message"]["event_type"] == "bad.two"


def test_deadletters_purge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = make_dead_letters(tmp_path)
    assert main(["deadletters", "purge", "--file", str(path)]) == 0
    assert "2 dead letter(s) would be purged" in capsys.readouterr().out
    assert len(list(read_dead_letters(path))) == 2
    assert main(["deadletters", "purge", "--file", str(path), "--yes"]) == 0
    assert "purged 2" in capsys.readouterr().out
    assert list(read_dead_letters(path)) == []


def test_status_file_and_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status_path = tmp_path / "status.json"
    spool = tmp_path / "spool.sqlite"

    async def run() -> None:
        n = Notifier.from_url("memory://?name=rabbit&durable=true", publisher_id="t", spool=spool,
                              status_path=status_path, dead_letters=tmp_path / "dl.jsonl", close_timeout=0.05)
        async with n:
            transport = n.transports["rabbit"]
            assert isinstance(transport, MemoryTransport)
            await n.info({}, "e.v", {})
            with anyio.fail_after(10):
                while transport.delivered < 1:
                    await anyio.sleep(0.001)
            transport.stall()
            for _ in range(3):
                await n.info({}, "e.v", {})

    anyio.run(run)
    assert main(["status", "--file", str(status_path), "--spool", str(spool)]) == 0
    out = capsys.readouterr().out
    assert "closed" in out and "rabbit: closed enqueued=4 sent=1" in out and "spooled=3" in out
    assert f"spool {spool}: rabbit=3" in out
    assert main(["status", "--file", str(status_path), "--prometheus"]) == 0
    prom = capsys.readouterr().out
    assert 'notifykit_sent_total{transport="rabbit"} 1' in prom
    assert 'notifykit_spooled{transport="rabbit"} 3' in prom


def test_status_needs_a_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 2
    assert "status needs --file" in capsys.readouterr().err


def test_status_of_a_running_notifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status_path = tmp_path / "status.json"

    async def run() -> None:
        config = NotifierConfig(transports=(TransportConfig.from_url("memory://"),), publisher_id="live",
                                status_path=status_path, status_interval=0.01)
        async with Notifier(config, dead_letters=tmp_path / "dl.jsonl") as n:
            await n.info({}, "e.v", {})
            with anyio.fail_after(10):
                while '"sent": 1' not in (status_path.read_text() if status_path.exists() else ""):
                    await anyio.sleep(0.01)
            assert main(["status", "--file", str(status_path)]) == 0

    anyio.run(run)
    out = capsys.readouterr().out
    assert "publisher live running" in out and "memory: connected enqueued=1 sent=1" in out
