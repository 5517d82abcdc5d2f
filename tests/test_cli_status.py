"""``notifykit status --json`` and ``--watch``: the same sources, as one JSON line, and redrawn
until Ctrl-C (a real process, stopped with SIGINT)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from notifykit import Notifier
from notifykit.cli import main, watch_status
from notifykit.testing import MemoryTransport


def make_status(tmp_path: Path) -> tuple[Path, Path]:
    """A closed Notifier's status file and its spool with 3 notifications left in it."""
    status_path, spool = tmp_path / "status.json", tmp_path / "spool.sqlite"

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
    return status_path, spool


def test_status_json_is_one_line_with_the_document_and_the_spool(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    status_path, spool = make_status(tmp_path)
    assert main(["status", "--file", str(status_path), "--spool", str(spool), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    data = json.loads(out)
    assert data["status"] == json.loads(status_path.read_text(encoding="utf-8"))
    assert data["status"]["transports"]["rabbit"]["sent"] == 1 and data["status"]["closed"] is True
    assert data["spool"]["counts"] == {"rabbit": 3} and data["spool"]["path"] == str(spool)
    assert main(["status", "--spool", str(spool), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] is None


@pytest.mark.parametrize("argv", [["--json", "--prometheus"], ["--watch", "--interval", "0"],
                                  ["--watch", "--interval", "nan"]])
def test_status_refuses_bad_options(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--file", str(tmp_path / "s.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("notifykit: error: status: ") and err.count("\n") == 1


def test_watch_redraws_on_a_terminal_and_reports_a_source_that_goes_away(tmp_path: Path) -> None:
    status_path, _ = make_status(tmp_path)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

        def flush(self) -> None:
            super().flush()
            status_path.unlink(missing_ok=True)  # gone after the first frame

    out = Terminal()
    watch_status(status_path, None, False, False, 0.001, out, frames=2)
    first, second = out.getvalue().split("\x1b[H\x1b[2J")[1:]
    assert "rabbit: closed enqueued=4 sent=1" in first
    assert "notifykit: error: cannot read status file" in second


def test_watch_of_a_missing_file_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--file", str(tmp_path / "none.json"), "--watch"]) == 2
    assert "cannot read status file" in capsys.readouterr().err


def test_watch_follows_the_file_until_sigint(tmp_path: Path) -> None:
    status_path, _ = make_status(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "notifykit.cli", "status", "--file", str(status_path),
                             "--json", "--watch", "--interval", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["status"]["transports"]["rabbit"]["sent"] == 1
        document = json.loads(status_path.read_text(encoding="utf-8"))
        document["transports"]["rabbit"]["sent"] = 2
        tmp = status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document), encoding="utf-8")
        tmp.replace(status_path)  # as a Notifier writes it
        for _ in range(200):  # the next frames read the new file
            if json.loads(proc.stdout.readline())["status"]["transports"]["rabbit"]["sent"] == 2:
                break
        else:
            pytest.fail("--watch never showed the new status")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
